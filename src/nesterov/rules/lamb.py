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
:mod:`nesterov.engine.segments`' (norms of views, a gather).
"""

from __future__ import annotations

import torch

from nesterov.engine.segments import Scalars, SpanRule, expand, segment_norm


def advance(step, *, c1, c2, **_):
    x = Scalars(step)
    t, beta1, beta2 = x.t, 1 - x(c1), 1 - x(c2)
    return {}, x.pack({"inv_bias_correction1": 1 / (1 - beta1**t), "inv_bias_correction2": 1 / (1 - beta2**t)})


def update(p, g, exp_avg, exp_avg_sq, *, step, inv_bias_correction1, inv_bias_correction2, segment_ids,
           segment_lengths, matrix, lr, c1, c2, eps, weight_decay, maximize=False, exclude_1d=True):
    if maximize:
        g = -g
    adapt = matrix if exclude_1d else torch.ones_like(matrix)
    exp_avg = (1 - c1) * exp_avg + c1 * g
    exp_avg_sq = (1 - c2) * exp_avg_sq + c2 * g * g
    r = exp_avg * inv_bias_correction1 / ((exp_avg_sq * inv_bias_correction2).sqrt() + eps)
    r = r + expand(torch.where(adapt, weight_decay, 0.0), segment_ids) * p
    w_norm, r_norm = segment_norm(p, segment_lengths), segment_norm(r, segment_lengths)
    trust = torch.where(adapt & (w_norm > 0) & (r_norm > 0), w_norm / r_norm, 1.0)
    p = p - lr * expand(trust, segment_ids) * r
    return p, exp_avg, exp_avg_sq


LAMB_RULE = SpanRule(
    name="lamb",
    states=("exp_avg", "exp_avg_sq"),
    hypers=("lr", "c1", "c2", "eps", "weight_decay"),
    flags=("maximize", "exclude_1d"),
    uses_step=True,
    update=update,
    advance=advance,
    per_tensor=True,
)
