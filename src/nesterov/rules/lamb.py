"""LAMB (You et al. 2019, arXiv 1904.00962, Algorithm 2): Adam's direction scaled per tensor.

For each parameter tensor w (one segment of the flat span), with λ = weight_decay:

    g  ← −g if maximize
    m  ← β1·m + (1 − β1)·g,        v ← β2·v + (1 − β2)·g²
    r  = (m / (1 − β1^t)) / (√(v / (1 − β2^t)) + ε) + λ·w
    ρ  = ‖w‖ / ‖r‖                  (1 where ‖w‖ = 0 or ‖r‖ = 0; φ is the identity)
    w  ← w − η·ρ·r

With ``exclude_1d`` (default) 1-D tensors (biases, norm scales) get ρ = 1 and λ = 0 (Adam's step), as
in the paper's BERT setup. Bias corrections are computed once per run in float64 and the betas arrive
as complements c_i = 1 − β_i (see :mod:`nesterov.rules.nadamw`); per-tensor norms and broadcasts are
:mod:`nesterov.engine.segments`' (row sums, one factor per row).
"""

from __future__ import annotations

import torch

from nesterov.engine.segments import Scalars, SpanRule, expand, rows, segment_norm


def advance(step, *, c1, c2, **_):
    x = Scalars(step)
    t, beta1, beta2 = x.t, 1 - x(c1), 1 - x(c2)
    return {}, x.pack({"inv_bias_correction1": 1 / (1 - beta1**t), "inv_bias_correction2": 1 / (1 - beta2**t)})


def update(p, g, exp_avg, exp_avg_sq, *, step, inv_bias_correction1, inv_bias_correction2, block, block_ids,
           segment_lengths, matrix, lr, c1, c2, eps, weight_decay, maximize=False, exclude_1d=True):
    shape = p.shape
    p, g, m, v = (rows(t, block) for t in (p, g, exp_avg, exp_avg_sq))
    if maximize:
        g = -g
    adapt = matrix if exclude_1d else torch.ones_like(matrix)
    m = (1 - c1) * m + c1 * g
    v = (1 - c2) * v + c2 * g * g
    r = m * inv_bias_correction1 / ((v * inv_bias_correction2).sqrt() + eps)
    decay = torch.where(adapt, torch.as_tensor(weight_decay, dtype=p.dtype), 0.0)  # a float would give float32
    r = r + expand(decay, block_ids, p) * p
    segments = len(segment_lengths)
    w_norm, r_norm = segment_norm(p, block_ids, segments), segment_norm(r, block_ids, segments)
    trust = torch.where(adapt & (w_norm > 0) & (r_norm > 0), w_norm / r_norm, 1.0)
    p = p - lr * expand(trust, block_ids, p) * r
    return p.reshape(shape), m.reshape(shape), v.reshape(shape)


def update_foreach_(params, grads, exp_avgs, exp_avg_sqs, *, step, inv_bias_correction1, inv_bias_correction2,
                    block, block_ids, segment_lengths, matrix, lr, c1, c2, eps, weight_decay, maximize=False,
                    exclude_1d=True):
    """In-place restatement of :func:`update` on the span's per-tensor views (the small-model path)."""
    sizes = segment_lengths.tolist()[:-1]  # the last segment is padding
    ps, gs, ms, vs = (list(t[0].split(sizes)) for t in (params, grads, exp_avgs, exp_avg_sqs))
    if maximize:
        gs = torch._foreach_neg(gs)
    adapt = matrix.tolist()[:-1] if exclude_1d else [True] * len(sizes)
    torch._foreach_lerp_(ms, gs, c1)
    torch._foreach_mul_(vs, 1 - c2)
    torch._foreach_addcmul_(vs, gs, gs, c2)
    denom = torch._foreach_mul(vs, inv_bias_correction2.item())
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, eps)
    r = torch._foreach_mul(ms, inv_bias_correction1.item())
    torch._foreach_div_(r, denom)
    torch._foreach_add_(r, torch._foreach_mul(ps, [weight_decay if a else 0.0 for a in adapt]))
    w_norms = torch.stack(torch._foreach_norm(ps)).tolist()
    r_norms = torch.stack(torch._foreach_norm(r)).tolist()
    trust = [w / q if a and w > 0 and q > 0 else 1.0 for a, w, q in zip(adapt, w_norms, r_norms)]
    torch._foreach_mul_(r, [-lr * t for t in trust])
    torch._foreach_add_(ps, r)


LAMB_RULE = SpanRule(
    name="lamb",
    states=("exp_avg", "exp_avg_sq"),
    hypers=("lr", "c1", "c2", "eps", "weight_decay"),
    flags=("maximize", "exclude_1d"),
    uses_step=True,
    update=update,
    update_foreach_=update_foreach_,
    advance=advance,
    per_tensor=True,
)
