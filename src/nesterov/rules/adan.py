"""Adan (Xie et al., arXiv 2208.06677), in the reference implementation's conventions (sail-sg/Adan).

    g   ← −g if maximize
    Δ   = g − g_prev                  (zero on the first step: g_prev is taken to be g)
    m   ← β1·m + (1 − β1)·g
    d   ← β2·d + (1 − β2)·Δ
    n   ← β3·n + (1 − β3)·(g + β2·Δ)²
    u   = (m / (1 − β1^t) + β2·d / (1 − β2^t)) / (√n / √(1 − β3^t) + ε)
    p   ← (p − η·u) / (1 + η·λ)       (proximal weight decay, the paper's)
    p   ← p·(1 − η·λ) − η·u           (no_prox: decoupled, as AdamW)
    g_prev ← g

The betas are the reference code's, 1 − β_paper (defaults 0.98, 0.92, 0.99): the gradient difference in
the n-update is weighted by β2 = 1 − β2_paper, as in the paper's algorithm (optax weights it by 1 − β2).
Bias corrections are computed once per step in float64 (``advance``), so the elementwise pass has one
division and one square root; the betas arrive as their complements c_i = 1 − β_i (see
:mod:`nesterov.rules.nadamw`). The reference's optional global gradient clipping (``max_grad_norm``)
is not part of the rule: clip with ``torch.nn.utils.clip_grad_norm_``.
"""

from __future__ import annotations

import torch

import math

from nesterov.rules.base import Rule


def hypers_of(group):
    c1, c2, c3 = (1.0 - float(b) for b in group["betas"])
    return {"lr": float(group["lr"]), "c1": c1, "c2": c2, "c3": c3, "eps": float(group["eps"]),
            "weight_decay": float(group["weight_decay"])}


def advance(t, scalars, *, lr, c1, c2, c3, weight_decay, **_):
    """Per-step scalars, once per step in float64 (the elementwise pass then has one division)."""
    beta1, beta2, beta3 = 1 - c1, 1 - c2, 1 - c3
    return {}, {
        "inv_bias_correction1": 1 / (1 - beta1**t),
        "diff_coef": beta2 / (1 - beta2**t),  # β2 / (1 − β2^t)
        "inv_bias_correction3_sqrt": 1 / math.sqrt(1 - beta3**t),
        "prox_scale": 1 / (1 + lr * weight_decay),  # 1 / (1 + ηλ)
        "has_prev_grad": float(t > 1),  # the first step's difference is zero
    }


def update(p, g, exp_avg, exp_avg_sq, exp_avg_diff, pre_grad, *, inv_bias_correction1, diff_coef,
           inv_bias_correction3_sqrt, prox_scale, has_prev_grad, lr, c1, c2, c3, eps, weight_decay,
           maximize=False, no_prox=False):
    if maximize:
        g = -g
    beta2 = 1 - c2
    diff = (g - pre_grad) * has_prev_grad
    exp_avg = (1 - c1) * exp_avg + c1 * g
    exp_avg_diff = beta2 * exp_avg_diff + c2 * diff
    n_in = g + beta2 * diff
    exp_avg_sq = (1 - c3) * exp_avg_sq + c3 * n_in * n_in
    denom = exp_avg_sq.sqrt() * inv_bias_correction3_sqrt + eps
    u = (exp_avg * inv_bias_correction1 + diff_coef * exp_avg_diff) / denom
    if no_prox:
        p = p * (1 - lr * weight_decay) - lr * u
    else:
        p = (p - lr * u) * prox_scale
    return p, exp_avg, exp_avg_sq, exp_avg_diff, g


def foreach(params, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, pre_grads, *, inv_bias_correction1, diff_coef,
            inv_bias_correction3_sqrt, prox_scale, has_prev_grad, lr, c1, c2, c3, eps, weight_decay, maximize=False,
            no_prox=False):
    """:func:`update` in place over lists (Python-float hyperparameters)."""
    beta2 = 1 - c2
    if maximize:
        grads = torch._foreach_neg(grads)
    diffs = torch._foreach_sub(grads, pre_grads) if has_prev_grad else torch._foreach_mul(grads, 0.0)
    torch._foreach_lerp_(exp_avgs, grads, c1)
    torch._foreach_mul_(exp_avg_diffs, beta2)
    torch._foreach_add_(exp_avg_diffs, diffs, alpha=c2)
    n_in = torch._foreach_add(grads, diffs, alpha=beta2)
    torch._foreach_mul_(exp_avg_sqs, 1 - c3)
    torch._foreach_addcmul_(exp_avg_sqs, n_in, n_in, c3)
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_mul_(denom, inv_bias_correction3_sqrt)
    torch._foreach_add_(denom, eps)
    u = torch._foreach_mul(exp_avgs, inv_bias_correction1)
    torch._foreach_add_(u, exp_avg_diffs, alpha=diff_coef)
    if no_prox:
        torch._foreach_mul_(params, 1 - lr * weight_decay)
        torch._foreach_addcdiv_(params, u, denom, -lr)
    else:
        torch._foreach_addcdiv_(params, u, denom, -lr)
        torch._foreach_mul_(params, prox_scale)
    torch._foreach_copy_(pre_grads, grads)


ADAN_RULE = Rule(
    name="adan",
    states=("exp_avg", "exp_avg_sq", "exp_avg_diff", "pre_grad"),
    hypers_of=hypers_of,
    flags=("maximize", "no_prox"),
    uses_step=True,
    update=update,
    foreach=foreach,
    advance=advance,
)
