"""Hand-written Triton steps: each restates one rule (and the engine's unscale / skip / stochastic
rounding) for a single pass over an arena. Tested bit for bit against the eager rule under
``TRITON_INTERPRET=1``; on CUDA they run natively.

Hyperparameters are read from 0-d device tensors inside the kernel: no recompilation when a schedule
changes them, and float64 arenas get float64 hyperparameters (Triton passes Python floats as fp32).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from nesterov.engine.precision import GOLDEN, HIGH16, LOW16, MIX

BLOCK = 1024


@triton.jit
def _hash32(index, seed):
    # Same arithmetic as nesterov.engine.precision.hash32: int32, wrap-around multiplication.
    h = index * GOLDEN + seed
    h = h ^ ((h >> 16) & LOW16)
    h = h * MIX
    h = h ^ ((h >> 16) & LOW16)
    h = h * MIX
    return h ^ ((h >> 16) & LOW16)


@triton.jit
def _store_state(ptr, offs, mask, value, seed, STATE_BF16: tl.constexpr):
    if STATE_BF16:
        noise = _hash32(offs.to(tl.int32), seed) & LOW16
        bits = value.to(tl.float32).to(tl.int32, bitcast=True)
        rounded = ((bits + noise) & HIGH16).to(tl.float32, bitcast=True)
        tl.store(ptr + offs, rounded.to(tl.bfloat16), mask=mask)
    else:
        tl.store(ptr + offs, value.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _nag_kernel(
    p_ptr, g_ptr, b_ptr, n,
    lr_ptr, momentum_ptr, dampening_ptr, weight_decay_ptr,
    scale_ptr, inf_ptr, seed,
    MAXIMIZE: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_INF: tl.constexpr,
    STATE_BF16: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    p = tl.load(p_ptr + offs, mask=mask)
    g = tl.load(g_ptr + offs, mask=mask).to(p.dtype)
    b = tl.load(b_ptr + offs, mask=mask).to(p.dtype)
    lr = tl.load(lr_ptr).to(p.dtype)
    momentum = tl.load(momentum_ptr).to(p.dtype)
    dampening = tl.load(dampening_ptr).to(p.dtype)
    weight_decay = tl.load(weight_decay_ptr).to(p.dtype)
    if HAS_SCALE:
        g = g / tl.load(scale_ptr).to(p.dtype)
    if MAXIMIZE:
        g = -g
    g = g + weight_decay * p
    new_b = momentum * b + (1 - dampening) * g
    new_p = p - lr * (g + momentum * new_b)
    if HAS_INF:
        skip = tl.load(inf_ptr) != 0
        new_p = tl.where(skip, p, new_p)
        new_b = tl.where(skip, b, new_b)
    tl.store(p_ptr + offs, new_p, mask=mask)
    _store_state(b_ptr, offs, mask, new_b, seed, STATE_BF16)


def nag_step(p, g, states, hypers, flags, grad_scale, found_inf, seed):
    """Launch the NAG kernel on flat ``p``/``g``/``states[0]`` (see ``nesterov.rules.nag``)."""
    (buf,) = states
    n = p.numel()
    _nag_kernel[(triton.cdiv(n, BLOCK),)](
        p, g, buf, n,
        hypers["lr"], hypers["momentum"], hypers["dampening"], hypers["weight_decay"],
        grad_scale if grad_scale is not None else p, found_inf if found_inf is not None else p, seed,
        MAXIMIZE=bool(flags.get("maximize", False)),
        HAS_SCALE=grad_scale is not None, HAS_INF=found_inf is not None,
        STATE_BF16=buf.dtype == torch.bfloat16 and p.dtype == torch.float32,  # as precision.round_to
        BLOCK=BLOCK,
    )


STEPS = {"nag": nag_step}
STEPS.update(__import__("nesterov.engine.triton_family", fromlist=["STEPS"]).STEPS)  # NAdamW, Adan
