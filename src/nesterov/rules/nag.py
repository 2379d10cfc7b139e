"""Nesterov SGD, exactly as ``torch.optim.SGD(momentum, dampening=0, weight_decay, nesterov=True, maximize)``.

    g  ← −g if maximize                    (maximize negates first)
    g  ← g + λ·p                           (coupled L2 decay, before momentum)
    b  ← μ·b + (1 − τ)·g                   (b₀ = 0, so the first step gives b₁ = g exactly when τ = 0)
    p  ← p − η·(g + μ·b)                   (the Nesterov look-ahead)

η = lr, μ = momentum, τ = dampening, λ = weight_decay. torch requires τ = 0 with Nesterov and so do we;
with τ = 0 a zero-initialised buffer makes torch's "first buffer is a copy of g" rule automatic, which is
what lets a skipped first step (GradScaler found inf) leave everything exactly as it was.
"""

from __future__ import annotations

import torch

from nesterov.rules.base import Rule


def update(p, g, buf, *, step=None, lr, momentum, dampening, weight_decay, maximize=False):
    if maximize:
        g = -g
    g = g + weight_decay * p
    buf = momentum * buf + (1 - dampening) * g
    p = p - lr * (g + momentum * buf)
    return p, buf


def update_foreach_(params, grads, bufs, *, lr, momentum, dampening, weight_decay, maximize=False):
    """In place, the same math as :func:`update` on lists of tensors (Python-float hyperparameters).

    Written for the fewest kernels, since this is the path for small arenas where each launch costs
    more than the arithmetic: ``b ← g + μ·b`` is one ``add(out=b)``, and the look-ahead two ``add_``.
    """
    for p, g, b in zip(params, grads, bufs):
        if maximize:
            g = -g
        if weight_decay != 0:
            g = g.add(p, alpha=weight_decay)
        torch.add(g if dampening == 0 else g * (1 - dampening), b, alpha=momentum, out=b)
        p.add_(g, alpha=-lr)
        p.add_(b, alpha=-lr * momentum)


def update_lists_(params, grads, bufs, *, lr, momentum, dampening, weight_decay, maximize=False, found_inf=None):
    """In place on lists of tensors, each gradient read where it lies (and never written), skipped where
    ``found_inf`` is set: torch's fused SGD kernel, whose Nesterov update is :func:`update` (the zero first
    buffer makes its first-step copy of ``g`` the same as ``b ← μ·0 + g``). No ``grad_scale``: that kernel
    would unscale the gradients in place."""
    torch._fused_sgd_(params, grads, bufs, weight_decay=weight_decay, momentum=momentum, lr=lr, dampening=dampening,
                      nesterov=True, maximize=maximize, is_first_step=False, found_inf=found_inf)


NAG_RULE = Rule(
    name="nag",
    states=("momentum_buffer",),
    hypers=("lr", "momentum", "dampening", "weight_decay"),
    flags=("maximize",),
    update=update,
    update_foreach_=update_foreach_,
    update_lists_=update_lists_,
)
