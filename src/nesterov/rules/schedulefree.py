"""Schedule-free SGD and AdamW (Defazio et al. 2024, "The Road Less Scheduled"), exactly as the reference
package ``schedulefree`` 1.4.1 (``SGDScheduleFree``, ``AdamWScheduleFree``).

Three sequences: z takes the base method's steps, x is a weighted average of the z's, and the gradient is
taken at their interpolation y; the parameters hold y while training and x while evaluating.

    y = (1 − β)·z + β·x              (β = momentum for SGD, β1 for AdamW)
    u = g + λ·y                      (SGD: L2 at y)
    u = g / (√(v / (1 − β2^t)) + ε) + λ·y,   v ← β2·v + (1 − β2)·g²      (AdamW: decay at y)
    z ← z − γ_t·u
    x ← (1 − c_t)·x + c_t·z

with γ_t = lr·min(1, t / warmup_steps) (linear warmup inside the optimizer) and the averaging weight
c_t = w_t / Σ_{s≤t} w_s, w_t = t^r · (max_{s≤t} γ_s)^weight_lr_power. x is never stored: in terms of y and z
the step is

    y ← y + c_t·(z − y) + γ_t·(β·(1 − c_t) − 1)·u,     z ← z − γ_t·u

(u from the old y and z), and :func:`switch_weight` moves the parameters between y and x. The step count t,
the largest γ and the weight sum are running scalars of the param group (``k``, ``lr_max``, ``weight_sum``,
where the reference keeps them), moved once per step by :func:`advance_group` on the host in float64, as the
reference does with Python floats. AdamW's second-moment beta reaches the elementwise pass as its complement
``c2 = 1 − β2`` (see :mod:`nesterov.rules.nadamw`).
"""

from __future__ import annotations

import torch

from nesterov.rules.base import Rule

# The running scalars of a param group, and their values before the first step (the reference's).
GROUP_SCALARS = {"k": 0, "lr_max": -1.0, "weight_sum": 0.0, "scheduled_lr": 0.0}


def switch_weight(beta: float, to_train: bool) -> float:
    """The w of ``p ← p + w·(z − p)`` that moves the parameters from x to y (``to_train``) or from y to x,
    by y = (1 − β)·z + β·x."""
    return 1 - beta if to_train else 1 - 1 / beta


def schedule(scalars: dict, *, lr, beta, warmup_steps, r, weight_lr_power) -> tuple[dict, dict]:
    """Step k + 1's running scalars and the per-step scalars of the y and z updates."""
    k = scalars["k"]
    scheduled_lr = lr * ((k + 1) / warmup_steps if k < warmup_steps else 1.0)
    lr_max = max(scheduled_lr, scalars["lr_max"])
    weight = (k + 1) ** r * lr_max ** weight_lr_power
    weight_sum = scalars["weight_sum"] + weight
    average_weight = weight / weight_sum if weight_sum != 0 else 0.0  # c_t; 0 while every lr so far is 0
    return ({"k": k + 1, "lr_max": lr_max, "weight_sum": weight_sum, "scheduled_lr": scheduled_lr},
            {"average_weight": average_weight, "scheduled_lr": scheduled_lr,
             "y_grad_coef": scheduled_lr * (beta * (1 - average_weight) - 1)})


# -- SGD ---------------------------------------------------------------------------------------------------
def sgd_hypers_of(group):
    return {"lr": float(group["lr"]), "momentum": float(group["momentum"]),
            "weight_decay": float(group["weight_decay"]), "warmup_steps": int(group["warmup_steps"]),
            "r": float(group["r"]), "weight_lr_power": float(group["weight_lr_power"])}


def sgd_advance_group(scalars, *, momentum, lr, warmup_steps, r, weight_lr_power, **_):
    return schedule(scalars, lr=lr, beta=momentum, warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power)


def sgd_update(y, g, z, *, average_weight, scheduled_lr, y_grad_coef, weight_decay, **_):
    u = g + weight_decay * y
    return y + average_weight * (z - y) + y_grad_coef * u, z - scheduled_lr * u


def sgd_foreach(ys, grads, zs, *, average_weight, scheduled_lr, y_grad_coef, weight_decay, **_):
    """:func:`sgd_update` in place over lists (Python-float scalars); the gradients are read, never written."""
    if weight_decay != 0:
        grads = torch._foreach_add(grads, ys, alpha=weight_decay)
    torch._foreach_lerp_(ys, zs, average_weight)
    torch._foreach_add_(ys, grads, alpha=y_grad_coef)
    torch._foreach_add_(zs, grads, alpha=-scheduled_lr)


# -- AdamW -------------------------------------------------------------------------------------------------
def adamw_hypers_of(group):
    beta1, beta2 = (float(b) for b in group["betas"])
    return {"lr": float(group["lr"]), "beta1": beta1, "c2": 1.0 - beta2, "eps": float(group["eps"]),
            "weight_decay": float(group["weight_decay"]), "warmup_steps": int(group["warmup_steps"]),
            "r": float(group["r"]), "weight_lr_power": float(group["weight_lr_power"])}


def adamw_advance_group(scalars, *, beta1, c2, lr, warmup_steps, r, weight_lr_power, **_):
    new, derived = schedule(scalars, lr=lr, beta=beta1, warmup_steps=warmup_steps, r=r,
                            weight_lr_power=weight_lr_power)
    derived["bias_correction2"] = 1 - (1 - c2) ** new["k"]
    return new, derived


def adamw_update(y, g, z, exp_avg_sq, *, average_weight, scheduled_lr, y_grad_coef, bias_correction2, c2, eps,
                 weight_decay, **_):
    exp_avg_sq = (1 - c2) * exp_avg_sq + c2 * g * g
    u = g / ((exp_avg_sq / bias_correction2).sqrt() + eps) + weight_decay * y
    return y + average_weight * (z - y) + y_grad_coef * u, z - scheduled_lr * u, exp_avg_sq


def adamw_foreach(ys, grads, zs, exp_avg_sqs, *, average_weight, scheduled_lr, y_grad_coef, bias_correction2, c2,
                  eps, weight_decay, **_):
    """:func:`adamw_update` in place over lists; without weight decay the normalised gradient is never
    materialised (y and z each take it as one addcdiv)."""
    torch._foreach_mul_(exp_avg_sqs, 1 - c2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, c2)
    denom = torch._foreach_div(exp_avg_sqs, bias_correction2)
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, eps)
    if weight_decay != 0:
        u = torch._foreach_div(grads, denom)
        torch._foreach_add_(u, ys, alpha=weight_decay)
        torch._foreach_lerp_(ys, zs, average_weight)
        torch._foreach_add_(ys, u, alpha=y_grad_coef)
        torch._foreach_add_(zs, u, alpha=-scheduled_lr)
    else:
        torch._foreach_lerp_(ys, zs, average_weight)
        torch._foreach_addcdiv_(ys, grads, denom, y_grad_coef)
        torch._foreach_addcdiv_(zs, grads, denom, -scheduled_lr)


SF_SGD_RULE = Rule(
    name="sf_sgd",
    states=("z",),
    states_from_param=("z",),
    hypers_of=sgd_hypers_of,
    group_scalars=tuple(GROUP_SCALARS),
    advance_group=sgd_advance_group,
    update=sgd_update,
    foreach=sgd_foreach,
    cpp_kernel="schedulefree_sgd.cpp",
    cpp_args=("average_weight", "y_grad_coef", "scheduled_lr", "weight_decay"),
)

SF_ADAMW_RULE = Rule(
    name="sf_adamw",
    states=("z", "exp_avg_sq"),
    states_from_param=("z",),
    hypers_of=adamw_hypers_of,
    group_scalars=tuple(GROUP_SCALARS),
    advance_group=adamw_advance_group,
    update=adamw_update,
    foreach=adamw_foreach,
    cpp_kernel="schedulefree_adamw.cpp",
    cpp_args=("average_weight", "y_grad_coef", "scheduled_lr", "weight_decay", "c2", "bias_correction2", "eps"),
)
