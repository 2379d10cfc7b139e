"""Low-precision optimizer state: bf16 buffers written with stochastic rounding.

Rounding a float32 to bf16 keeps its top 16 bits. Adding a uniform random integer in [0, 2¹⁶) to the
bit pattern before truncating rounds the magnitude up with probability equal to the discarded fraction,
so the stored value is unbiased: small momentum contributions survive on average instead of being
rounded away. The random bits come from a counter-based hash of (element index, seed) — pure integer
arithmetic that compiles into the same fused loop, unlike ``torch.randint`` (which made a compiled step
15 × slower). Every backend uses this one function; two restate it bit for bit: the Triton kernels, and
the C++ kernels' ``store`` (``engine/per_tensor.h``, tied to this one by
``tests/test_cpp_kernels.py::test_nag_cpp_kernel_with_bf16_state_rounds_as_the_rule_bit_for_bit``).
"""

from __future__ import annotations

import torch

# The hash works in int32 with wrap-around multiplication (what vector units, Triton and ATen's integer
# kernels do): int64 arithmetic, or a NaN test on the result, made the compiled bf16 step 2× slower.
GOLDEN = -1640531535  # 0x9E3779B1 as int32: an odd multiplier that spreads consecutive indices
MIX = 0x045D9F3B  # avalanche multiplier
LOW16 = 0xFFFF
HIGH16 = -65536  # 0xFFFF0000 as int32: the bits a bf16 keeps


def hash32(index: torch.Tensor, seed) -> torch.Tensor:
    """An avalanche hash of int32 ``index`` mixed with ``seed`` (an int below 2³¹), as int32."""
    # In place on the one fresh temporary: eagerly, every new tensor-sized buffer costs its page faults
    # (6.6 ns per element out of place here, 3.0 in place); compiled, the two forms are the same graph.
    h = index * GOLDEN
    h += seed
    for _ in range(2):
        h ^= (h >> 16) & LOW16  # masked: ``>>`` is arithmetic on int32, the hash wants logical
        h *= MIX
    h ^= (h >> 16) & LOW16
    return h


def stochastic_round_bf16(x: torch.Tensor, seed) -> torch.Tensor:
    """Round float32 ``x`` to bfloat16, up with probability equal to the fraction that is cut off.

    ``seed`` is an int in [0, 2³¹); the same (seed, index) always gives the same bits. ±inf stay, values
    past the largest bf16 round to ±inf, and NaNs made by arithmetic (quiet NaNs) stay NaN.
    """
    x = x.float()
    index = torch.arange(x.numel(), device=x.device, dtype=torch.int32).view(x.shape)
    bits = hash32(index, seed)
    bits &= LOW16
    bits += x.view(torch.int32)
    bits &= HIGH16
    return bits.view(torch.float32).to(torch.bfloat16)


def round_to(x: torch.Tensor, dtype: torch.dtype, seed) -> torch.Tensor:
    """Cast ``x`` to a state dtype: stochastic rounding into bf16, plain casting otherwise."""
    if dtype == torch.bfloat16 and x.dtype == torch.float32:
        return stochastic_round_bf16(x, seed)
    return x.to(dtype)


def mix_seed(counter: int, salt: int) -> int:
    """A fresh seed in [0, 2³¹) for step ``counter`` of stream ``salt`` (host side, once per step)."""
    return (counter * 0x85EBCA77 + salt * 0xC2B2AE3D + 0x27D4EB2F) & 0x7FFFFFFF
