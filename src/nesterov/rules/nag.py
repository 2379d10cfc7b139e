"""Nesterov SGD, exactly as ``torch.optim.SGD(momentum, dampening=0, weight_decay, nesterov=True, maximize)``.

    g  ← −g if maximize                    (maximize negates first)
    g  ← g + λ·p                           (coupled L2 decay, before momentum)
    b  ← μ·b + (1 − τ)·g                   (b₀ = 0, so the first step gives b₁ = g exactly when τ = 0)
    p  ← p − η·(g + μ·b)                   (the Nesterov look-ahead)

η = lr, μ = momentum, τ = dampening, λ = weight_decay. torch requires τ = 0 with Nesterov and so do we;
with τ = 0 a zero-initialised buffer makes torch's "first buffer is a copy of g" rule automatic.
"""

from __future__ import annotations

import torch

from nesterov.engine import compat
from nesterov.rules.base import Rule


def hypers_of(group):
    return {name: float(group[name]) for name in ("lr", "momentum", "dampening", "weight_decay")}


def update(p, g, buf, *, lr, momentum, dampening, weight_decay, maximize=False):
    if maximize:
        g = -g
    g = g + weight_decay * p
    buf = momentum * buf + (1 - dampening) * g
    p = p - lr * (g + momentum * buf)
    return p, buf


def foreach(params, grads, bufs, *, lr, momentum, dampening, weight_decay, maximize=False):
    """:func:`update` in place over lists, in its order of operations (each parameter is written once, so bf16
    parameters round once per step, as torch's SGD rounds them) and with one temporary list at most: the
    user's gradients are read, never written."""
    own = False  # whether ``grads`` is a list of our own temporaries
    if maximize:
        grads, own = torch._foreach_neg(grads), True
    if weight_decay != 0:
        if own:
            torch._foreach_add_(grads, params, alpha=weight_decay)
        else:
            grads, own = torch._foreach_add(grads, params, alpha=weight_decay), True
    torch._foreach_mul_(bufs, momentum)
    torch._foreach_add_(bufs, grads, alpha=1 - dampening)
    if own:
        torch._foreach_add_(grads, bufs, alpha=momentum)  # g + μ·b
        step = grads
    else:
        step = torch._foreach_add(grads, bufs, alpha=momentum)
    torch._foreach_add_(params, step, alpha=-lr)


def torch_kernel(params, grads, bufs, *, lr, momentum, dampening, weight_decay, maximize=False):
    """torch's fused SGD kernel, whose Nesterov update is :func:`update` (our zero first buffer makes its
    first-step copy of ``g`` the same as ``b ← μ·0 + g``). It reads the gradients and never writes them.
    Without momentum the kernel keeps no buffer, while the rule's holds the last direction: :func:`foreach`."""
    if momentum == 0:
        return foreach(params, grads, bufs, lr=lr, momentum=momentum, dampening=dampening,
                       weight_decay=weight_decay, maximize=maximize)
    compat.fused_sgd_(params, grads, bufs, weight_decay=weight_decay, momentum=momentum, lr=lr, dampening=dampening,
                      nesterov=True, maximize=maximize, is_first_step=False)


def torch_kernel_supports(device: torch.device, dtype: torch.dtype) -> bool:
    # On CPU the fused kernel computes bf16/fp16 wrongly with torch 2.13 (tensors of 64k elements and more
    # are left unchanged): it is used for float32 and float64 only there.
    if device.type == "cpu":
        return dtype in (torch.float32, torch.float64)
    return device.type == "cuda" and dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16)


NAG_RULE = Rule(
    name="nag",
    states=("momentum_buffer",),
    hypers_of=hypers_of,
    flags=("maximize",),
    update=update,
    foreach=foreach,
    torch_kernel=torch_kernel,
    torch_kernel_supports=torch_kernel_supports,
    cpp_kernel="nag.cpp",
    cpp_args=("lr", "momentum", "dampening", "weight_decay", "maximize"),
)
