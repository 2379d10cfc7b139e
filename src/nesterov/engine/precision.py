"""Low-precision optimizer state: bf16 buffers written with stochastic rounding.

Rounding a float32 to bf16 keeps its top 16 bits. Adding a uniform random integer in [0, 2¹⁶) to the
bit pattern before truncating rounds the magnitude up with probability equal to the discarded fraction,
so the stored value is unbiased: small momentum contributions survive on average instead of being
rounded away. The random bits come from a counter-based hash of (element index, seed) — pure integer
arithmetic that compiles into the same fused loop, unlike ``torch.randint`` (which made a compiled step
15 × slower). Every backend uses this one function; Triton restates it bit for bit.
"""

from __future__ import annotations

import torch

MASK32 = 0xFFFFFFFF
GOLDEN = 0x9E3779B1  # odd 32-bit multiplier: spreads consecutive indices
MIX = 0x045D9F3B  # avalanche multiplier (< 2**27, so products stay inside int64)
HIGH16 = -65536  # 0x...FFFF0000 in two's complement int64: keeps the sign extension


def hash32(index: torch.Tensor, seed) -> torch.Tensor:
    """A 32-bit avalanche hash of int64 ``index`` mixed with ``seed``; values in [0, 2³²)."""
    h = ((index & MASK32) * GOLDEN + seed) & MASK32
    h = h ^ (h >> 16)
    h = (h * MIX) & MASK32
    h = h ^ (h >> 16)
    h = (h * MIX) & MASK32
    return h ^ (h >> 16)


def stochastic_round_bf16(x: torch.Tensor, seed) -> torch.Tensor:
    """Round float32 ``x`` to bfloat16, up with probability equal to the fraction that is cut off.

    ``seed`` is an int or an int64 0-d tensor; the same (seed, index) always gives the same bits. NaN
    stays NaN; values past the largest bf16 round to ±inf as they should.
    """
    x = x.float()
    index = torch.arange(x.numel(), device=x.device, dtype=torch.int64).view(x.shape)
    noise = hash32(index, seed) & 0xFFFF
    bits = x.view(torch.int32).to(torch.int64)
    rounded = ((bits + noise) & HIGH16).to(torch.int32).view(torch.float32)
    return torch.where(torch.isnan(x), x, rounded).to(torch.bfloat16)


def round_to(x: torch.Tensor, dtype: torch.dtype, seed) -> torch.Tensor:
    """Cast ``x`` to a state dtype: stochastic rounding into bf16, plain casting otherwise."""
    if dtype == torch.bfloat16 and x.dtype == torch.float32:
        return stochastic_round_bf16(x, seed)
    return x.to(dtype)


def mix_seed(counter: int, salt: int) -> int:
    """A fresh 32-bit seed for step ``counter`` of stream ``salt`` (host side, once per step)."""
    return (counter * 0x85EBCA77 + salt * 0xC2B2AE3D + 0x27D4EB2F) & MASK32
