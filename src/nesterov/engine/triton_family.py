"""Hand-written Triton steps for NAdamW and Adan: each restates its rule's elementwise pass (and the
engine's unscale / GradScaler skip / stochastic rounding) in one kernel over the arena. The per-step
scalars (step sizes, bias corrections) arrive from the rule's ``advance`` as 0-d float64 tensors, so
the kernel does no scalar arithmetic a scheduler could change. IEEE division and square root
(``div_rn``, ``sqrt_rn``) as in torch. Tested against the eager rule under ``TRITON_INTERPRET=1``.
Registered in :data:`nesterov.engine.triton_kernels.STEPS`. LARS and LAMB (per-tensor reductions)
have none: ``auto`` compiles them on CUDA.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from nesterov.engine.triton_kernels import BLOCK, _store_state


@triton.jit
def _scalar(ptr, dtype):
    return tl.load(ptr).to(dtype)


@triton.jit
def _div(a, b):
    if a.dtype == tl.float32:
        return tl.div_rn(a, b)  # IEEE, as torch (Triton's fp32 "/" is approximate on CUDA)
    else:
        return a / b


@triton.jit
def _sqrt(a):
    if a.dtype == tl.float32:
        return tl.sqrt_rn(a)
    else:
        return tl.sqrt(a)


@triton.jit
def _nadamw_kernel(
    p_ptr, g_ptr, m_ptr, v_ptr, n,
    lr_ptr, c1_ptr, c2_ptr, eps_ptr, wd_ptr, grad_coef_ptr, avg_coef_ptr, inv_bc2_ptr,
    scale_ptr, inf_ptr, seed,
    MAXIMIZE: tl.constexpr, DECOUPLED: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_INF: tl.constexpr,
    STATE_BF16: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    p = tl.load(p_ptr + offs, mask=mask)
    g = tl.load(g_ptr + offs, mask=mask).to(p.dtype)
    m = tl.load(m_ptr + offs, mask=mask).to(p.dtype)
    v = tl.load(v_ptr + offs, mask=mask).to(p.dtype)
    lr, c1, c2 = _scalar(lr_ptr, p.dtype), _scalar(c1_ptr, p.dtype), _scalar(c2_ptr, p.dtype)
    eps, wd = _scalar(eps_ptr, p.dtype), _scalar(wd_ptr, p.dtype)
    grad_coef, avg_coef = _scalar(grad_coef_ptr, p.dtype), _scalar(avg_coef_ptr, p.dtype)
    inv_bc2 = _scalar(inv_bc2_ptr, p.dtype)
    if HAS_SCALE:
        g = _div(g, _scalar(scale_ptr, p.dtype))
    if MAXIMIZE:
        g = -g
    new_p = p
    if DECOUPLED:
        new_p = p * (1 - lr * wd)
    else:
        g = g + wd * p
    new_m = m + c1 * (g - m)
    new_v = (1 - c2) * v + c2 * g * g
    denom = _sqrt(new_v * inv_bc2) + eps
    new_p = new_p - _div(grad_coef * g + avg_coef * new_m, denom)
    if HAS_INF:
        skip = tl.load(inf_ptr) != 0
        new_p = tl.where(skip, p, new_p)
        new_m = tl.where(skip, m, new_m)
        new_v = tl.where(skip, v, new_v)
    tl.store(p_ptr + offs, new_p, mask=mask)
    _store_state(m_ptr, offs, mask, new_m, seed, STATE_BF16)
    _store_state(v_ptr, offs, mask, new_v, seed, STATE_BF16)


@triton.jit
def _adan_kernel(
    p_ptr, g_ptr, m_ptr, n_ptr, d_ptr, prev_ptr, numel,
    lr_ptr, c1_ptr, c2_ptr, c3_ptr, eps_ptr, wd_ptr, has_prev_ptr, inv_bc1_ptr, diff_coef_ptr, inv_bc3s_ptr,
    prox_ptr, scale_ptr, inf_ptr, seed,
    MAXIMIZE: tl.constexpr, NO_PROX: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_INF: tl.constexpr,
    STATE_BF16: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    p = tl.load(p_ptr + offs, mask=mask)
    g = tl.load(g_ptr + offs, mask=mask).to(p.dtype)
    m = tl.load(m_ptr + offs, mask=mask).to(p.dtype)
    nn = tl.load(n_ptr + offs, mask=mask).to(p.dtype)
    d = tl.load(d_ptr + offs, mask=mask).to(p.dtype)
    prev = tl.load(prev_ptr + offs, mask=mask).to(p.dtype)
    lr, c1, c2, c3 = _scalar(lr_ptr, p.dtype), _scalar(c1_ptr, p.dtype), _scalar(c2_ptr, p.dtype), _scalar(c3_ptr, p.dtype)
    eps, wd = _scalar(eps_ptr, p.dtype), _scalar(wd_ptr, p.dtype)
    inv_bc1, diff_coef = _scalar(inv_bc1_ptr, p.dtype), _scalar(diff_coef_ptr, p.dtype)
    inv_bc3s, prox = _scalar(inv_bc3s_ptr, p.dtype), _scalar(prox_ptr, p.dtype)
    if HAS_SCALE:
        g = _div(g, _scalar(scale_ptr, p.dtype))
    if MAXIMIZE:
        g = -g
    beta2 = 1 - c2
    diff = tl.where(tl.load(has_prev_ptr) > 0, g - prev, tl.zeros_like(g))
    new_m = (1 - c1) * m + c1 * g
    new_d = beta2 * d + c2 * diff
    n_in = g + beta2 * diff
    new_n = (1 - c3) * nn + c3 * n_in * n_in
    denom = _sqrt(new_n) * inv_bc3s + eps
    u = _div(new_m * inv_bc1 + diff_coef * new_d, denom)
    if NO_PROX:
        new_p = p * (1 - lr * wd) - lr * u
    else:
        new_p = (p - lr * u) * prox
    new_prev = g
    if HAS_INF:
        skip = tl.load(inf_ptr) != 0
        new_p = tl.where(skip, p, new_p)
        new_m = tl.where(skip, m, new_m)
        new_n = tl.where(skip, nn, new_n)
        new_d = tl.where(skip, d, new_d)
        new_prev = tl.where(skip, prev, new_prev)
    tl.store(p_ptr + offs, new_p, mask=mask)
    _store_state(m_ptr, offs, mask, new_m, seed, STATE_BF16)
    _store_state(n_ptr, offs, mask, new_n, seed, STATE_BF16)
    _store_state(d_ptr, offs, mask, new_d, seed, STATE_BF16)
    _store_state(prev_ptr, offs, mask, new_prev, seed, STATE_BF16)


def _state_bf16(p, states):
    return states[0].dtype == torch.bfloat16 and p.dtype == torch.float32  # as precision.round_to


def nadamw_step(p, g, states, hypers, flags, grad_scale, found_inf, seed):
    """Launch the NAdamW kernel (see ``nesterov.rules.nadamw``)."""
    m, v = states
    h = hypers
    _nadamw_kernel[(triton.cdiv(p.numel(), BLOCK),)](
        p, g, m, v, p.numel(),
        h["lr"], h["c1"], h["c2"], h["eps"], h["weight_decay"], h["grad_coef"], h["avg_coef"],
        h["inv_bias_correction2"],
        grad_scale if grad_scale is not None else p, found_inf if found_inf is not None else p, seed,
        MAXIMIZE=bool(flags.get("maximize", False)), DECOUPLED=bool(flags.get("decoupled_weight_decay", True)),
        HAS_SCALE=grad_scale is not None, HAS_INF=found_inf is not None, STATE_BF16=_state_bf16(p, states),
        BLOCK=BLOCK,
    )


def adan_step(p, g, states, hypers, flags, grad_scale, found_inf, seed):
    """Launch the Adan kernel (see ``nesterov.rules.adan``)."""
    m, n, d, prev = states
    h = hypers
    _adan_kernel[(triton.cdiv(p.numel(), BLOCK),)](
        p, g, m, n, d, prev, p.numel(),
        h["lr"], h["c1"], h["c2"], h["c3"], h["eps"], h["weight_decay"], h["has_prev_grad"], h["inv_bias_correction1"],
        h["diff_coef"], h["inv_bias_correction3_sqrt"], h["prox_scale"],
        grad_scale if grad_scale is not None else p, found_inf if found_inf is not None else p, seed,
        MAXIMIZE=bool(flags.get("maximize", False)), NO_PROX=bool(flags.get("no_prox", False)),
        HAS_SCALE=grad_scale is not None, HAS_INF=found_inf is not None, STATE_BF16=_state_bf16(p, states),
        BLOCK=BLOCK,
    )


STEPS = {"nadamw": nadamw_step, "adan": adan_step}
