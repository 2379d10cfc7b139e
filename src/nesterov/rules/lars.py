"""LARS with Nesterov momentum (You, Gitman, Ginsburg 2017, arXiv 1708.03888): a trust ratio per tensor.

For each parameter tensor w, with λ = weight_decay, κ = trust_coefficient:

    g  ← −g if maximize
    ρ  = κ·‖w‖ / (‖g‖ + λ·‖w‖ + ε)      (1 where ‖w‖ = 0 or ‖g‖ = 0)
    d  = ρ·(g + λ·w)
    b  ← μ·b + d
    w  ← w − η·(d + μ·b)              (Nesterov; w ← w − η·b without it)

With ``exclude_1d`` (default) 1-D tensors (biases, norm scales) get ρ = 1 and λ = 0: plain Nesterov SGD,
as in the authors' reference code (``exclude_from_weight_decay`` / ``exclude_from_layer_adaptation``).
``matrix`` says whether the parameter has more than one dimension (the engine may hand the update a
flattened view of it).
"""

from __future__ import annotations

import torch

from nesterov.rules.base import Rule


def hypers_of(group):
    return {name: float(group[name]) for name in ("lr", "momentum", "weight_decay", "trust_coefficient", "eps")}


def update(p, g, momentum_buffer, *, matrix, lr, momentum, weight_decay, trust_coefficient, eps, maximize=False,
           nesterov=True, exclude_1d=True):
    if maximize:
        g = -g
    adapt = torch.as_tensor(matrix) | (not exclude_1d)
    decay = weight_decay * adapt.to(p.dtype)  # (torch.where of two floats would round λ to float32)
    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
    trust = trust_coefficient * w_norm / (g_norm + decay * w_norm + eps)
    trust = torch.where(adapt & (w_norm > 0) & (g_norm > 0), trust, 1.0).to(p.dtype)
    d = trust * (g + decay * p)
    b = momentum * momentum_buffer + d
    p = p - lr * (d + momentum * b) if nesterov else p - lr * b
    return p, b


def foreach(params, grads, momentum_buffers, *, matrix, lr, momentum, weight_decay, trust_coefficient, eps,
            maximize=False, nesterov=True, exclude_1d=True):
    """:func:`update` in place over lists; ``matrix`` is a list of bools, the norms one host read per step."""
    if maximize:
        grads = torch._foreach_neg(grads)
    adapt = [m or not exclude_1d for m in matrix]
    norms = torch.stack(torch._foreach_norm(params) + torch._foreach_norm(grads)).tolist()
    w_norms, g_norms = norms[:len(params)], norms[len(params):]
    decay = [weight_decay if a else 0.0 for a in adapt]
    trust = [trust_coefficient * w / (g + lam * w + eps) if a and w > 0 and g > 0 else 1.0
             for a, w, g, lam in zip(adapt, w_norms, g_norms, decay)]
    d = torch._foreach_mul(grads, trust)
    torch._foreach_add_(d, torch._foreach_mul(params, [t * lam for t, lam in zip(trust, decay)]))
    torch._foreach_mul_(momentum_buffers, momentum)
    torch._foreach_add_(momentum_buffers, d)
    if nesterov:
        torch._foreach_add_(d, momentum_buffers, alpha=momentum)
        torch._foreach_add_(params, d, alpha=-lr)
    else:
        torch._foreach_add_(params, momentum_buffers, alpha=-lr)


LARS_RULE = Rule(
    name="lars",
    states=("momentum_buffer",),
    hypers_of=hypers_of,
    flags=("maximize", "nesterov", "exclude_1d"),
    update=update,
    foreach=foreach,
    per_tensor=True,
    cpp_kernel="lars.cpp",
    cpp_args=("lr", "momentum", "weight_decay", "trust_coefficient", "eps", "maximize", "nesterov", "exclude_1d"),
)
