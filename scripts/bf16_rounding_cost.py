"""What bf16 state costs in a compiled step, and how much of it is the stochastic rounding.

One NAG-like step on 25M elements, torch.compile'd three ways — fp32 state, bf16 state rounded to nearest,
bf16 state with nesterov's stochastic rounding — beside torch's fused SGD kernel on one flat tensor.
Run: python scripts/bf16_rounding_cost.py   (medians of 15 calls, ms)
"""

import statistics
import time

import torch

from nesterov.engine.precision import stochastic_round_bf16

n = 25_000_000
p, g, b32 = torch.randn(n), torch.randn(n), torch.randn(n)
b16 = b32.bfloat16()
lr, m = torch.tensor(0.1), torch.tensor(0.9)


def compiled(round_fn):
    def step(p, g, b, lr, m, seed):
        nb = m * b.float() + g
        p.copy_(p - lr * (g + m * nb))
        b.copy_(round_fn(nb, seed))

    return torch.compile(step, dynamic=True, fullgraph=True)


def median_ms(fn, calls=15):
    fn(0)
    times = []
    for i in range(calls):
        t0 = time.perf_counter()
        fn(i + 1)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


for name, round_fn, buf in [("fp32 state", lambda x, s: x, b32),
                            ("bf16 state, nearest", lambda x, s: x.to(torch.bfloat16), b16),
                            ("bf16 state, stochastic", stochastic_round_bf16, b16)]:
    kernel = compiled(round_fn)
    print(f"{name:24s} {median_ms(lambda s: kernel(p, g, buf, lr, m, s)):8.2f}")
fused = ([p.clone()], [g.clone()], [b32.clone()])
print(f"{'torch fused SGD (flat)':24s} "
      f"{median_ms(lambda s: torch._fused_sgd_(*fused, weight_decay=0.0, momentum=0.9, lr=0.1, dampening=0.0, nesterov=True, maximize=False, is_first_step=False)):8.2f}")
