"""NorMuon: Muon's orthogonalised update with its rows normalised by a running second moment.

NorMuon (arXiv 2510.05491), for one matrix ``p`` (conv kernels viewed as ``(out, in·kh·kw)``) with
gradient ``g``: Muon's momentum and Newton–Schulz (:mod:`nesterov.rules.muon`) give ``O``; then, per
output row i (dim 0),

    v_i ← β₂·v_i + (1 − β₂)·mean_j(O_ij²)           (v₀ = 0, one value per row)
    N   ← O_ij / (√v_i + ε)                          (ε = 10⁻⁸)
    O'  ← N · ‖O‖_F / ‖N‖_F                          (the update keeps Muon's Frobenius norm)
    p   ← p·(1 − η·λ) − η'·O'                        (Muon's decoupled decay and adjusted lr η')

so every row moves at a similar rate while the step keeps Muon's size. With ``cautious_weight_decay`` the
decay is Muon's cautious one, masked by the sign of p·O'.

This module is the readable statement; the batched step of :class:`nesterov.NorMuon` runs Muon's batched
momentum and Newton–Schulz and then :func:`normalise_rows` matrix by matrix (elementwise and row
reductions, nothing to batch), so it restates nothing.
"""

from __future__ import annotations

import torch

from nesterov.rules import muon as M

BETA2 = 0.95
EPS = 1e-8
ROW_STATE = "row_second_moment"  # the state entry holding v, shape (rows,)


def normalise_rows(O: torch.Tensor, v: torch.Tensor, *, beta2: float, eps: float = EPS):
    """``(O', v_new)``: ``O`` (any shape; rows along dim 0) with its rows normalised by the updated
    second moment ``v_new`` and rescaled to ``O``'s Frobenius norm. Pure; works on DTensors split by rows."""
    rest = tuple(range(1, O.dim()))
    v = beta2 * v + (1 - beta2) * O.square().mean(dim=rest)
    N = O / (v.sqrt() + eps).view(-1, *([1] * len(rest)))
    norm, new_norm = torch.linalg.vector_norm(O), torch.linalg.vector_norm(N)
    return N * (norm / new_norm.clamp(min=torch.finfo(N.dtype).tiny)), v


def update(p, g, buf, v, *, lr, momentum: float = 0.95, nesterov: bool = True, weight_decay: float = 0.0,
           ns_steps: int = M.NS_STEPS, ns_coefficients=M.NS_COEFFICIENTS, eps: float = M.EPS,
           adjust_lr_fn: str | None = None, ns_dtype: torch.dtype = torch.float32, ns_method: str = "standard",
           cautious_weight_decay: bool = False, beta2: float = BETA2):
    """One NorMuon step of one matrix, pure: returns ``(p_new, buf_new, v_new)`` and writes nothing."""
    buf, u = M.nesterov_momentum(g, buf, momentum=momentum, nesterov=nesterov)
    O = M.orthogonalize(u, ns_dtype=ns_dtype, steps=ns_steps, coefficients=ns_coefficients, eps=eps,
                        method=ns_method)
    O, v = normalise_rows(O.to(p.dtype), v, beta2=beta2)
    p_new = p.clone()
    M.descend_(p_new, O, lr=lr, weight_decay=weight_decay, adjusted=M.adjusted_lr(lr, adjust_lr_fn, p.shape),
               cautious=cautious_weight_decay)
    return p_new, buf, v
