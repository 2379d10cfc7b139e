"""Muon: Nesterov momentum, then Newton–Schulz orthogonalisation of each gradient matrix.

Exactly ``torch.optim.Muon`` (torch 2.9+), for one matrix ``p`` (conv kernels viewed as
``(out, in·kh·kw)``) with gradient ``g``:

    b  ← μ·b + (1 − μ)·g                       (b₀ = 0; torch writes it ``b.lerp_(g, 1 − μ)``)
    u  ← (1 − μ)·g + μ·b  if nesterov else b   (``g.lerp(b, μ)``)
    O  ← NS_k^{(a,b,c)}(u; ε)                  (≈ U·Vᵀ of u = U·S·Vᵀ, see :func:`newton_schulz`)
    p  ← p·(1 − η·λ) − η'·O                    (decoupled decay with the *unadjusted* η)

η = lr, μ = momentum, λ = weight_decay, k = ns_steps, η' = :func:`adjusted_lr` (η, shape):
``"original"`` (default) η·√max(1, A/B), ``"match_rms_adamw"`` 0.2·η·√max(A, B) for an A×B matrix.

With ``cautious_weight_decay`` the decay applies only where the parameter and the update agree in sign
(Cautious Weight Decay, arXiv 2510.12402): ``p ← p − η·λ·p·[p·O ≥ 0] − η'·O``.

Newton–Schulz (quintic; step t uses the coefficients (a_t, b_t, c_t)):

    X ← u / max(‖u‖_F, ε)        (transposed first when A > B, so X X ᵀ is the small Gram matrix)
    for t = 1..k:  M ← X Xᵀ;   X ← a_t·X + (b_t·M + c_t·M²)·X

The coefficients (:data:`NS_COEFFICIENT_SETS`): ``"jordan"`` (Keller Jordan's Muon, the same triple every
step, torch's default) or ``"polar_express"`` (arXiv 2505.16932, five per-step triples, with its own
normalisation X ← u / (1.02·‖u‖_F + 10⁻⁶) in place of the ε floor), or any triple / list of per-step triples.

Gram Newton–Schulz (``method="gram"``; Zhang, Amsel, Chen & Dao 2026) computes the same polynomial through
the small Gram matrix: each step is X ← P_t·X with P_t = a_t·I + b_t·R + c_t·R², R = X Xᵀ, and since every
P_t is a polynomial in R₀ they commute, so it keeps R ← P_t·R·P_t and Q ← P_t·Q and forms X = Q·X₀ once at
the end: ~4m³ per step on an m×n (m ≤ n) matrix instead of 2m²n + m³. In 16-bit dtypes rounding gives R
spurious negative eigenvalues that each step's polynomial multiplies by P_t(λ)² (66 × in Polar Express's first
step), so there it restarts (X ← Q·X, R ← X Xᵀ, Q ← I) before every second step from step 1
(:func:`gram_restarts`): no rounding error of R is carried through more than two steps.

This module is the readable statement (``backend="eager"`` runs :func:`update` matrix by matrix). The
batched step (:mod:`nesterov.optim.muon`) restates :func:`nesterov_momentum` as foreach lerps over the
group's matrices and runs :func:`newton_schulz` over stacks of same-shaped matrices and :func:`descend_` per
matrix; ``tests/test_muon.py`` ties it to :func:`update` and to torch.optim.Muon.
"""

from __future__ import annotations

import math
import os

import torch

JORDAN = (3.4445, -4.775, 2.0315)
# Polar Express (arXiv 2505.16932), the five steps as modded-nanogpt and dion run them (safety factor 1.02,
# cushion 2); the set comes with its own normalisation u / (1.02·‖u‖_F + 10⁻⁶).
POLAR_EXPRESS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
POLAR_EXPRESS_NORM = (1.02, 1e-6)  # (scale, offset): X ← u / (scale·‖u‖_F + offset)
NS_COEFFICIENT_SETS = {"jordan": JORDAN, "polar_express": POLAR_EXPRESS}
NS_COEFFICIENTS = JORDAN  # the default; a triple (not its name), so torch.optim.Muon loads our state_dict
NS_STEPS = 5
NS_METHODS = ("standard", "gram", "auto")
EPS = 1e-7
ADJUST_LR_FNS = (None, "original", "match_rms_adamw")


def matrix_shape(shape) -> tuple[int, int]:
    """The 2-D shape Muon works on: ``(shape[0], prod(shape[1:]))`` (conv kernels flattened)."""
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(f"Muon works on matrices (2 or more dimensions); got shape {shape}")
    return shape[0], math.prod(shape[1:])


def as_matrix(t: torch.Tensor) -> torch.Tensor:
    """``t`` viewed (or, if its strides do not allow a view, copied) as its :func:`matrix_shape`."""
    return t.reshape(matrix_shape(t.shape))


def adjusted_lr(lr: float, adjust_lr_fn: str | None, shape) -> float:
    """torch.optim.Muon's learning-rate adjustment for a matrix of ``shape`` (A, B)."""
    a, b = matrix_shape(shape)
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1.0, a / b))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(a, b))
    raise ValueError(f"adjust_lr_fn must be one of {ADJUST_LR_FNS}, got {adjust_lr_fn!r}")


def nesterov_momentum(g: torch.Tensor, buf: torch.Tensor, *, momentum: float, nesterov: bool):
    """``(b_new, u)``: the momentum buffer after this gradient and the direction to orthogonalise.

    Elementwise, so it runs on any tensor.
    """
    buf = buf.lerp(g, 1 - momentum)
    u = g.lerp(buf, momentum) if nesterov else buf
    return buf, u


def is_schedule(coefficients) -> bool:
    """Whether ``coefficients`` is a sequence of per-step triples (rather than one triple or a name)."""
    return not isinstance(coefficients, str) and len(coefficients) > 0 and isinstance(coefficients[0], (tuple, list))


def ns_schedule(coefficients, steps: int) -> tuple[tuple[float, float, float], ...]:
    """The ``steps`` triples (a_t, b_t, c_t) that ``coefficients`` names: a set's name, one triple (every
    step), or a sequence of per-step triples (whose length must be ``steps``)."""
    if isinstance(coefficients, str):
        if coefficients not in NS_COEFFICIENT_SETS:
            raise ValueError(f"ns_coefficients must be one of {tuple(NS_COEFFICIENT_SETS)}, a triple (a, b, c) "
                             f"or a sequence of triples; got {coefficients!r}")
        coefficients = NS_COEFFICIENT_SETS[coefficients]
    if not is_schedule(coefficients):
        return (tuple(float(c) for c in coefficients),) * steps
    if len(coefficients) != steps:
        raise ValueError(f"ns_steps ({steps}) must equal the number of per-step triples in ns_coefficients "
                         f"({len(coefficients)})")
    return tuple(tuple(float(c) for c in triple) for triple in coefficients)


def normalise(X: torch.Tensor, coefficients, eps: float) -> torch.Tensor:
    """X divided by its Frobenius norm, the way the coefficient set expects: ``max(‖X‖_F, ε)`` (torch's),
    or Polar Express's ``1.02·‖X‖_F + 10⁻⁶``. Each matrix of a batch by its own norm."""
    norm = torch.linalg.matrix_norm(X, keepdim=True)
    if isinstance(coefficients, str) and coefficients == "polar_express":
        scale, offset = POLAR_EXPRESS_NORM
        return X / (norm * scale + offset)
    return X / norm.clamp(min=eps)


def gram_pays(rows: int, cols: int, dtype: torch.dtype) -> bool:
    """``method="auto"``: whether Gram Newton–Schulz is the faster one for a matrix whose sides are ``rows``
    and ``cols`` in ``dtype``. With m ≤ n its sides, per step it saves 2·m²·n − 3·m³ multiply-adds, and each
    16-bit restart costs 2·m²·n (two in 5 steps). Measured on 4 stacked 512-row matrices and their transposes
    (2 threads, the methods taking turns, ``python -m nesterov.bench.muon ns --threads 2 --repeats 5``, two
    runs), Gram / standard: fp32
    1.25–1.32 square, 0.81–0.86 at n = 2·m, 0.63–0.67 at 3·m, 0.54–0.57 at 4·m; bf16 (two restarts) 1.15,
    0.90–0.93, 0.82–0.85, 0.77–0.79. So Gram from n = 2·m in fp32/fp64, and from 3·m in 16-bit dtypes
    (at 2·m the saving there is within the machine's spread)."""
    m, n = sorted((rows, cols))
    return n >= (3 if dtype in (torch.bfloat16, torch.float16) else 2) * m


def _mul_add(input: torch.Tensor, A: torch.Tensor, B: torch.Tensor, *, beta: float = 1.0,
             alpha: float = 1.0) -> torch.Tensor:
    """β·input + α·A·B, for matrices or batches of them."""
    if A.dim() == 2:
        return torch.addmm(input, A, B, beta=beta, alpha=alpha)
    return torch.baddbmm(input, A, B, beta=beta, alpha=alpha)


def _left(P: torch.Tensor, X: torch.Tensor, *, beta: float = 0.0) -> torch.Tensor:
    """β·X + P·X in X's memory layout. A tall matrix is worked on as the transposed view of its own
    storage; for it the product is taken as (Xᵀ·Pᵀ)ᵀ, so no transposing copy is made and the result keeps
    the parameter's layout, which the step then reads contiguously."""
    tall = not X.is_contiguous() and X.mT.is_contiguous()
    A, B, C = (X.mT, X.mT, P.mT) if tall else (X, P, X)
    out = B @ C if beta == 0 else _mul_add(A, B, C, beta=beta)
    return out.mT if tall else out


def _standard_iteration(X: torch.Tensor, schedule) -> torch.Tensor:
    for a, b, c in schedule:
        M = X @ X.mT
        M = _mul_add(M, M, M, beta=b, alpha=c)  # b·M + c·M²
        X = _left(M, X, beta=a)  # a·X + (b·M + c·M²)·X
    return X


def gram_restarts(dtype: torch.dtype, steps: int) -> tuple[int, ...]:
    """The 0-based steps before which Gram Newton–Schulz rebuilds X ← Q·X and R ← X Xᵀ: in 16-bit dtypes
    steps 1, 3, 5, …; none in fp32/fp64. A single restart at step 2 (the paper's, for fp16) or restarts at 2
    and 4 let Polar Express's first two steps multiply R's rounding errors into singular values of 10³–10⁵
    on near-singular bf16 gradients of a small GPT (singular values 1 … 2.5e-6) where the standard iteration
    gives 1.14; restarting from step 1 keeps them within 0.1 of the standard iteration's for both coefficient
    sets (``tests/test_normuon.py``)."""
    if dtype not in (torch.bfloat16, torch.float16):
        return ()
    return tuple(range(1, steps, 2))


def _gram_iteration(X: torch.Tensor, schedule) -> torch.Tensor:
    restarts = gram_restarts(X.dtype, len(schedule))
    R = X @ X.mT
    Q = None  # the product of the P_t so far (None: the identity)
    for t, (a, b, c) in enumerate(schedule):
        if t in restarts and Q is not None:
            X, Q = _left(Q, X), None
            R = X @ X.mT
        Z = _mul_add(R, R, R, beta=b, alpha=c)  # b·R + c·R²;  P_t = a·I + Z
        if Q is None:
            Q = Z.clone()
            Q.diagonal(dim1=-2, dim2=-1).add_(a)
        else:
            Q = _mul_add(Q, Q, Z, beta=a)  # Q·P_t = a·Q + Q·Z
        if t + 1 < len(schedule) and t + 1 not in restarts:
            RP = _mul_add(R, R, Z, beta=a)  # R·P_t
            R = _mul_add(RP, Z, RP, beta=a)  # P_t·R·P_t = a·RP + Z·RP
    return X if Q is None else _left(Q, X)


def newton_schulz(G: torch.Tensor, *, steps: int = NS_STEPS, coefficients=NS_COEFFICIENTS,
                  eps: float = EPS, method: str = "standard") -> torch.Tensor:
    """Orthogonalise ``G`` (``(m, n)`` or a batch ``(k, m, n)``) by ``steps`` quintic iterations.

    Works in ``G``'s dtype (the caller picks it) and never writes ``G``. Each matrix of a batch is
    normalised by its own Frobenius norm, so a stack gives what each matrix would give alone.
    ``method`` is ``"standard"``, ``"gram"`` (the same polynomial through the Gram matrix) or ``"auto"``
    (Gram where :func:`gram_pays` for the shape).
    """
    schedule = ns_schedule(coefficients, steps)
    tall = G.size(-2) > G.size(-1)
    X = G.mT if tall else G
    X = normalise(X, coefficients, eps)
    if method == "auto":
        method = "gram" if gram_pays(X.size(-2), X.size(-1), X.dtype) else "standard"
    if method == "gram":
        X = _gram_iteration(X, schedule)
    elif method == "standard":
        X = _standard_iteration(X, schedule)
    else:
        raise ValueError(f"ns_method must be one of {NS_METHODS}, got {method!r}")
    return X.mT if tall else X


def orthogonalize(u: torch.Tensor, *, ns_dtype: torch.dtype, steps: int = NS_STEPS,
                  coefficients=NS_COEFFICIENTS, eps: float = EPS, method: str = "standard") -> torch.Tensor:
    """:func:`newton_schulz` of ``u`` viewed as a matrix, computed in ``ns_dtype``, in ``u``'s shape."""
    O = newton_schulz(as_matrix(u).to(ns_dtype), steps=steps, coefficients=coefficients, eps=eps, method=method)
    return O.reshape(u.shape)


def descend_(p: torch.Tensor, O: torch.Tensor, *, lr: float, weight_decay: float, adjusted: float,
             cautious: bool = False) -> None:
    """``p ← p·(1 − lr·weight_decay) − adjusted·O`` in place (torch's order: decay, then the step); with
    ``cautious``, ``p ← p − lr·weight_decay·p·[p·O ≥ 0] − adjusted·O``."""
    # O may be in a narrower Newton–Schulz dtype: the in-place ops widen it element by element (the values of
    # ``O.to(p.dtype)`` without that copy)
    if weight_decay != 0:
        if cautious:
            p.addcmul_(p, (p * O >= 0).to(p.dtype), value=-lr * weight_decay)
        else:
            p.mul_(1 - lr * weight_decay)
    p.add_(O, alpha=-adjusted)


def update(p, g, buf, *, lr, momentum: float = 0.95, nesterov: bool = True, weight_decay: float = 0.0,
           ns_steps: int = NS_STEPS, ns_coefficients=NS_COEFFICIENTS, eps: float = EPS,
           adjust_lr_fn: str | None = None, ns_dtype: torch.dtype = torch.float32, ns_method: str = "standard",
           cautious_weight_decay: bool = False):
    """One Muon step of one matrix, pure: returns ``(p_new, buf_new)`` and writes nothing."""
    buf, u = nesterov_momentum(g, buf, momentum=momentum, nesterov=nesterov)
    O = orthogonalize(u, ns_dtype=ns_dtype, steps=ns_steps, coefficients=ns_coefficients, eps=eps,
                      method=ns_method)
    p_new = p.clone()
    descend_(p_new, O, lr=lr, weight_decay=weight_decay, adjusted=adjusted_lr(lr, adjust_lr_fn, p.shape),
             cautious=cautious_weight_decay)
    return p_new, buf


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AVX512-BF16 or AMX tiles), as far as torch's
    CPU matrix products (oneDNN) may use it: capping oneDNN's instruction set below bf16 with
    ``ONEDNN_MAX_CPU_ISA`` makes it emulate bf16 products (100 × slower than float32 here)."""
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").upper()
    if cap not in ("ALL", "DEFAULT") and not any(name in cap for name in ("BF16", "FP16", "AMX", "AVX10")):
        return False  # capped below AVX512_CORE_BF16 (oneDNN's ISA names from there up carry these words)
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # older torch, or a CPU backend without these queries
        return False


def default_ns_dtype(device: torch.device, param_dtype: torch.dtype) -> torch.dtype:
    """The Newton–Schulz dtype when the user names none: bf16 where the hardware multiplies bf16
    natively (CUDA GPUs with bf16, CPUs with AVX512-BF16 or AMX), float32 elsewhere; float64 for
    float64 parameters (whoever trains in float64 asked for the precision).

    CPUs without bf16 units emulate bf16 products (tens of times slower than float32); on CPUs with
    them bf16 is the faster one (2–2.5 × float32 for 512×2048 Newton–Schulz on an AVX512-BF16 EPYC).
    """
    if param_dtype == torch.float64:
        return torch.float64
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32
