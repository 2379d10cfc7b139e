"""NAdam / NAdamW, exactly as ``torch.optim.NAdam`` (Dozat 2016, with torch's μ-schedule).

    g   ← −g if maximize
    p   ← p·(1 − η·λ)            if decoupled_weight_decay (NAdamW)     else  g ← g + λ·p
    μ_t = β1·(1 − ½·0.96^(t·ψ)),   μ_{t+1} = β1·(1 − ½·0.96^((t+1)·ψ))
    Π_t = Π_{t−1}·μ_t              (``mu_product``, a running 0-d state, Π_0 = 1)
    m   ← β1·m + (1 − β1)·g
    v   ← β2·v + (1 − β2)·g²
    d   = √(v / (1 − β2^t)) + ε
    p   ← p − η·(1 − μ_t)/(1 − Π_t) · g/d − η·μ_{t+1}/(1 − Π_t·μ_{t+1}) · m/d

η = lr, λ = weight_decay, ψ = momentum_decay. ``mu_product`` is stored as torch stores it (a 0-d tensor
of torch's scalar dtype, float32 unless the default dtype is float64, multiplied by μ_t), so the running
product, and hence every step, matches torch's rather than a closed form that drifts from it. μ_t,
μ_{t+1}, the two step sizes and 1 − β2^t are computed once per step in float64 (``advance``), like
torch's Python floats, so the elementwise pass has one division and one square root. The betas reach
the update as their complements ``c1 = 1 − β1``, ``c2 = 1 − β2``: a float32 hyperparameter holds
1 − 0.999 to seven digits, 0.999 only to four of them.
"""

from __future__ import annotations

import torch

from nesterov.rules.base import Rule


def mu_at(t, beta1, momentum_decay):
    """The momentum schedule μ_t."""
    return beta1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))


def hypers_of(group):
    beta1, beta2 = (float(b) for b in group["betas"])
    return {"lr": float(group["lr"]), "c1": 1.0 - beta1, "c2": 1.0 - beta2, "eps": float(group["eps"]),
            "weight_decay": float(group["weight_decay"]), "momentum_decay": float(group["momentum_decay"])}


def init_scalars():
    dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    return {"mu_product": torch.ones((), dtype=dtype)}


def advance(t, scalars, *, lr, c1, c2, momentum_decay, **_):
    """Step ``t``'s running μ-product (as torch: its own dtype, times μ_t) and the per-step scalars."""
    beta1, beta2 = 1 - c1, 1 - c2
    mu, mu_next = mu_at(t, beta1, momentum_decay), mu_at(t + 1, beta1, momentum_decay)
    mu_product = scalars["mu_product"] * mu
    prod = mu_product.item()
    return {"mu_product": mu_product}, {
        "grad_coef": lr * (1 - mu) / (1 - prod),  # η(1 − μ_t)/(1 − Π_t)
        "avg_coef": lr * mu_next / (1 - prod * mu_next),  # η·μ_{t+1}/(1 − Π_t·μ_{t+1})
        "inv_bias_correction2": 1 / (1 - beta2**t),
    }


def update(p, g, exp_avg, exp_avg_sq, *, grad_coef, avg_coef, inv_bias_correction2, lr, c1, c2, eps,
           weight_decay, momentum_decay=None, maximize=False, decoupled_weight_decay=True):
    if maximize:
        g = -g
    if decoupled_weight_decay:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    exp_avg = exp_avg + c1 * (g - exp_avg)
    exp_avg_sq = (1 - c2) * exp_avg_sq + c2 * g * g
    denom = (exp_avg_sq * inv_bias_correction2).sqrt() + eps
    p = p - (grad_coef * g + avg_coef * exp_avg) / denom  # one division per element: the step is bandwidth-bound
    return p, exp_avg, exp_avg_sq


def foreach(params, grads, exp_avgs, exp_avg_sqs, *, grad_coef, avg_coef, inv_bias_correction2, lr, c1, c2, eps,
            weight_decay, momentum_decay=None, maximize=False, decoupled_weight_decay=True):
    """:func:`update` in place over lists (Python-float hyperparameters)."""
    if maximize:
        grads = torch._foreach_neg(grads)
    if weight_decay != 0:
        if decoupled_weight_decay:
            torch._foreach_mul_(params, 1 - lr * weight_decay)
        else:
            grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, c1)
    torch._foreach_mul_(exp_avg_sqs, 1 - c2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, c2)
    denom = torch._foreach_mul(exp_avg_sqs, inv_bias_correction2)
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, grads, denom, -grad_coef)
    torch._foreach_addcdiv_(params, exp_avgs, denom, -avg_coef)


NADAMW_RULE = Rule(
    name="nadamw",
    states=("exp_avg", "exp_avg_sq"),
    hypers_of=hypers_of,
    flags=("maximize", "decoupled_weight_decay"),
    uses_step=True,
    scalars=("mu_product",),
    init_scalars=init_scalars,
    advance=advance,
    update=update,
    foreach=foreach,
)
