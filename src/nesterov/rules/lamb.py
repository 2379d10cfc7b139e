"""LAMB (You et al. 2019, arXiv 1904.00962, Algorithm 2): Adam's direction scaled per tensor.

For each parameter tensor w, with λ = weight_decay:

    g  ← −g if maximize
    m  ← β1·m + (1 − β1)·g,        v ← β2·v + (1 − β2)·g²
    r  = (m / (1 − β1^t)) / (√(v / (1 − β2^t)) + ε) + λ·w
    ρ  = ‖w‖ / ‖r‖                  (1 where ‖w‖ = 0 or ‖r‖ = 0; φ is the identity)
    w  ← w − η·ρ·r

With ``exclude_1d`` (default) 1-D tensors (biases, norm scales) get ρ = 1 and λ = 0 (Adam's step), as
in the paper's BERT setup. Bias corrections are computed once per step in float64 and the betas reach
the update as complements c_i = 1 − β_i (see :mod:`nesterov.rules.nadamw`).
"""

from __future__ import annotations

import torch

from nesterov.rules.base import Rule


def hypers_of(group):
    beta1, beta2 = (float(b) for b in group["betas"])
    return {"lr": float(group["lr"]), "c1": 1.0 - beta1, "c2": 1.0 - beta2, "eps": float(group["eps"]),
            "weight_decay": float(group["weight_decay"])}


def advance(t, scalars, *, c1, c2, **_):
    beta1, beta2 = 1 - c1, 1 - c2
    return {}, {"inv_bias_correction1": 1 / (1 - beta1**t), "inv_bias_correction2": 1 / (1 - beta2**t)}


def update(p, g, exp_avg, exp_avg_sq, *, matrix, inv_bias_correction1, inv_bias_correction2, lr, c1, c2, eps,
           weight_decay, maximize=False, exclude_1d=True):
    if maximize:
        g = -g
    adapt = torch.as_tensor(matrix) | (not exclude_1d)
    m = (1 - c1) * exp_avg + c1 * g
    v = (1 - c2) * exp_avg_sq + c2 * g * g
    r = m * inv_bias_correction1 / ((v * inv_bias_correction2).sqrt() + eps)
    r = r + weight_decay * adapt.to(p.dtype) * p
    w_norm, r_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(r)
    trust = torch.where(adapt & (w_norm > 0) & (r_norm > 0), w_norm / r_norm, 1.0).to(p.dtype)
    p = p - lr * trust * r
    return p, m, v


def foreach(params, grads, exp_avgs, exp_avg_sqs, *, matrix, inv_bias_correction1, inv_bias_correction2, lr, c1,
            c2, eps, weight_decay, maximize=False, exclude_1d=True):
    """:func:`update` in place over lists; ``matrix`` is a list of bools, the norms one host read per step."""
    if maximize:
        grads = torch._foreach_neg(grads)
    adapt = [m or not exclude_1d for m in matrix]
    torch._foreach_lerp_(exp_avgs, grads, c1)
    torch._foreach_mul_(exp_avg_sqs, 1 - c2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, c2)
    denom = torch._foreach_mul(exp_avg_sqs, inv_bias_correction2)
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, eps)
    r = torch._foreach_mul(exp_avgs, inv_bias_correction1)
    torch._foreach_div_(r, denom)
    torch._foreach_add_(r, torch._foreach_mul(params, [weight_decay if a else 0.0 for a in adapt]))
    norms = torch.stack(torch._foreach_norm(params) + torch._foreach_norm(r)).tolist()
    w_norms, r_norms = norms[:len(params)], norms[len(params):]
    trust = [w / q if a and w > 0 and q > 0 else 1.0 for a, w, q in zip(adapt, w_norms, r_norms)]
    torch._foreach_mul_(r, [-lr * t for t in trust])
    torch._foreach_add_(params, r)


LAMB_RULE = Rule(
    name="lamb",
    states=("exp_avg", "exp_avg_sq"),
    hypers_of=hypers_of,
    flags=("maximize", "exclude_1d"),
    uses_step=True,
    advance=advance,
    update=update,
    foreach=foreach,
    per_tensor=True,
    cpp_kernel="lamb.cpp",
    cpp_args=("lr", "c1", "c2", "eps", "weight_decay", "inv_bias_correction1", "inv_bias_correction2", "maximize",
              "exclude_1d"),
)
