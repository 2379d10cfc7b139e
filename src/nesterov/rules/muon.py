"""Muon: Nesterov momentum, then Newton–Schulz orthogonalisation of each gradient matrix.

Exactly ``torch.optim.Muon`` (torch 2.9+), for one matrix ``p`` (conv kernels viewed as
``(out, in·kh·kw)``) with gradient ``g``:

    b  ← μ·b + (1 − μ)·g                       (b₀ = 0; torch writes it ``b.lerp_(g, 1 − μ)``)
    u  ← (1 − μ)·g + μ·b  if nesterov else b   (``g.lerp(b, μ)``)
    O  ← NS_k^{(a,b,c)}(u; ε)                  (≈ U·Vᵀ of u = U·S·Vᵀ, see :func:`newton_schulz`)
    p  ← p·(1 − η·λ) − η'·O                    (decoupled decay with the *unadjusted* η)

η = lr, μ = momentum, λ = weight_decay, k = ns_steps, η' = :func:`adjusted_lr` (η, shape):
``"original"`` (default) η·√max(1, A/B), ``"match_rms_adamw"`` 0.2·η·√max(A, B) for an A×B matrix.

Newton–Schulz (quintic, coefficients chosen for a steep slope at zero, Keller Jordan's Muon):

    X ← u / max(‖u‖_F, ε)        (transposed first when A > B, so X X ᵀ is the small Gram matrix)
    repeat k times:  M ← X Xᵀ;   X ← a·X + (b·M + c·M²)·X

This module is the readable statement (``backend="eager"`` runs :func:`update` matrix by matrix). The
batched step (:mod:`nesterov.optim.muon`) restates :func:`nesterov_momentum` as foreach lerps over the
group's matrices and runs :func:`newton_schulz` over stacks of same-shaped matrices and :func:`descend_` per
matrix; ``tests/test_muon.py`` ties it to :func:`update` and to torch.optim.Muon.
"""

from __future__ import annotations

import math
import os

import torch

NS_COEFFICIENTS = (3.4445, -4.775, 2.0315)
NS_STEPS = 5
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


def newton_schulz(G: torch.Tensor, *, steps: int = NS_STEPS, coefficients=NS_COEFFICIENTS,
                  eps: float = EPS) -> torch.Tensor:
    """Orthogonalise ``G`` (``(m, n)`` or a batch ``(k, m, n)``) by ``steps`` quintic iterations.

    Works in ``G``'s dtype (the caller picks it) and never writes ``G``. Each matrix of a batch is
    normalised by its own Frobenius norm, so a stack gives what each matrix would give alone.
    """
    a, b, c = coefficients
    tall = G.size(-2) > G.size(-1)
    X = G.mT if tall else G
    X = X / torch.linalg.matrix_norm(X, keepdim=True).clamp(min=eps)
    if X.dim() == 2:
        for _ in range(steps):
            M = X @ X.mT
            M = torch.addmm(M, M, M, beta=b, alpha=c)  # b·M + c·M²
            X = torch.addmm(X, M, X, beta=a)  # a·X + (b·M + c·M²)·X
    else:
        for _ in range(steps):
            M = X @ X.mT
            M = torch.baddbmm(M, M, M, beta=b, alpha=c)
            X = torch.baddbmm(X, M, X, beta=a)
    return X.mT if tall else X


def orthogonalize(u: torch.Tensor, *, ns_dtype: torch.dtype, steps: int = NS_STEPS,
                  coefficients=NS_COEFFICIENTS, eps: float = EPS) -> torch.Tensor:
    """:func:`newton_schulz` of ``u`` viewed as a matrix, computed in ``ns_dtype``, in ``u``'s shape."""
    O = newton_schulz(as_matrix(u).to(ns_dtype), steps=steps, coefficients=coefficients, eps=eps)
    return O.reshape(u.shape)


def descend_(p: torch.Tensor, O: torch.Tensor, *, lr: float, weight_decay: float, adjusted: float) -> None:
    """``p ← p·(1 − lr·weight_decay) − adjusted·O`` in place (torch's order: decay, then the step)."""
    if weight_decay != 0:
        p.mul_(1 - lr * weight_decay)
    p.add_(O.to(p.dtype), alpha=-adjusted)


def update(p, g, buf, *, lr, momentum: float = 0.95, nesterov: bool = True, weight_decay: float = 0.0,
           ns_steps: int = NS_STEPS, ns_coefficients=NS_COEFFICIENTS, eps: float = EPS,
           adjust_lr_fn: str | None = None, ns_dtype: torch.dtype = torch.float32):
    """One Muon step of one matrix, pure: returns ``(p_new, buf_new)`` and writes nothing."""
    buf, u = nesterov_momentum(g, buf, momentum=momentum, nesterov=nesterov)
    O = orthogonalize(u, ns_dtype=ns_dtype, steps=ns_steps, coefficients=ns_coefficients, eps=eps)
    p_new = p.clone()
    descend_(p_new, O, lr=lr, weight_decay=weight_decay, adjusted=adjusted_lr(lr, adjust_lr_fn, p.shape))
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
