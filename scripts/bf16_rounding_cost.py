"""What bf16 optimizer state costs on this CPU, and where the time goes.

One NAG step (p ← p − η(g + μb'), b' = μb + g) on 25M elements, timed side by side in one process
(interleaved rounds, medians, ratios to torch's fused SGD on one flat fp32 tensor):

- torch.compile'd with fp32 state, bf16 state rounded to nearest, and bf16 state with nesterov's
  stochastic rounding (``nesterov.engine.precision``);
- the same loop as plain C, compiled with ``gcc -O3 -march=native`` and run on the same threads (ctypes
  releases the GIL), with fp32 state, bf16 state truncated (the least work any bf16 store can do) and
  bf16 state with the same stochastic rounding: what a hand-written CPU kernel could reach.

bf16 state moves 16 bytes per parameter instead of 20, so at memory bandwidth it would take 0.80 × the
fp32 step. Run: python scripts/bf16_rounding_cost.py [--threads N]   (needs gcc for the C rows)
"""

import argparse
import ctypes
import shutil
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from nesterov.engine.precision import GOLDEN, MIX, stochastic_round_bf16

C_SOURCE = r"""
#include <stdint.h>
#include <string.h>
static inline uint32_t bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float value(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t hash32(uint32_t index, uint32_t seed) {  /* precision.hash32, unsigned */
  uint32_t h = index * GOLDEN + seed;
  h ^= h >> 16; h *= MIX; h ^= h >> 16; h *= MIX; return h ^ (h >> 16);
}
#define STEP(NAME, STATE, LOAD, STORE)                                                              \
void NAME(float *restrict p, const float *restrict g, STATE *restrict b, int64_t n, int32_t first,  \
          float lr, float mom, uint32_t seed) {                                                     \
  for (int32_t i = 0; i < (int32_t)n; i++) {                                                        \
    float nb = mom * (LOAD) + g[i];                                                                 \
    p[i] = p[i] - lr * (g[i] + mom * nb);                                                           \
    STORE;                                                                                          \
  }                                                                                                 \
}
STEP(step_fp32, float, b[i], b[i] = nb)
STEP(step_bf16_truncate, uint16_t, value((uint32_t)b[i] << 16), b[i] = (uint16_t)(bits(nb) >> 16))
STEP(step_bf16_stochastic, uint16_t, value((uint32_t)b[i] << 16),
     b[i] = (uint16_t)((bits(nb) + (hash32((uint32_t)(first + i), seed) & 0xFFFFu)) >> 16))
"""


def c_kernels(threads: int):
    """The C steps as callables on (p, g, b, seed) torch tensors, or {} without gcc."""
    gcc = shutil.which("gcc")
    if gcc is None:
        return {}
    build = Path(tempfile.mkdtemp())
    (build / "step.c").write_text(C_SOURCE)
    defines = [f"-DGOLDEN={GOLDEN & 0xFFFFFFFF}u", f"-DMIX={MIX}u"]
    subprocess.run([gcc, "-O3", "-march=native", "-shared", "-fPIC", *defines, "-o", str(build / "step.so"),
                    str(build / "step.c")], check=True)
    lib = ctypes.CDLL(str(build / "step.so"))
    pool = ThreadPoolExecutor(threads)

    def wrap(fn):
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64, ctypes.c_int32, ctypes.c_float, ctypes.c_float,
                                               ctypes.c_uint32]

        def run(p, g, b, seed):
            n, chunk = p.numel(), -(-p.numel() // threads)
            jobs = [pool.submit(fn, p.data_ptr() + 4 * s, g.data_ptr() + 4 * s, b.data_ptr() + b.element_size() * s,
                                min(chunk, n - s), s, 0.1, 0.9, seed) for s in range(0, n, chunk)]
            for job in jobs:
                job.result()
        return run

    return {"C, fp32 state": (wrap(lib.step_fp32), torch.float32),
            "C, bf16 state, truncated": (wrap(lib.step_bf16_truncate), torch.bfloat16),
            "C, bf16 state, stochastic": (wrap(lib.step_bf16_stochastic), torch.bfloat16)}


def compiled(round_fn):
    def step(p, g, b, lr, m, seed):
        nb = m * b.float() + g
        p.copy_(p - lr * (g + m * nb))
        b.copy_(round_fn(nb, seed))

    return torch.compile(step, dynamic=True, fullgraph=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--numel", type=int, default=25_000_000)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = args.numel
    p, g = torch.randn(n), torch.randn(n) * 1e-3
    lr, m = torch.tensor(0.1), torch.tensor(0.9)
    contenders = {}
    flat = ([p.clone()], [g.clone()], [torch.randn(n)])
    contenders["torch fused SGD, fp32 state"] = lambda s: torch._fused_sgd_(
        *flat, weight_decay=0.0, momentum=0.9, lr=0.1, dampening=0.0, nesterov=True, maximize=False,
        is_first_step=False)
    for name, round_fn, dtype in [("compiled, fp32 state", lambda x, s: x, torch.float32),
                                  ("compiled, bf16 state, nearest", lambda x, s: x.to(torch.bfloat16), torch.bfloat16),
                                  ("compiled, bf16 state, stochastic", stochastic_round_bf16, torch.bfloat16)]:
        kernel, buf = compiled(round_fn), torch.randn(n).to(dtype)
        contenders[name] = lambda s, kernel=kernel, buf=buf: kernel(p, g, buf, lr, m, s)
    for name, (kernel, dtype) in c_kernels(args.threads).items():
        buf = torch.randn(n).to(dtype)
        contenders[name] = lambda s, kernel=kernel, buf=buf: kernel(p, g, buf.view(torch.int16) if buf.dtype ==
                                                                    torch.bfloat16 else buf, s)
    times = {name: [] for name in contenders}
    for round_ in range(args.rounds + 1):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn(round_)
            if round_:  # the first round compiles and warms up
                times[name].append(time.perf_counter() - t0)
    ref = statistics.median(times["torch fused SGD, fp32 state"])
    print(f"one NAG step on {n / 1e6:.0f}M elements, {args.threads} threads, medians of {args.rounds} rounds")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"{name:36s} {t * 1e3:8.2f} ms  {t / ref:5.2f} × torch fused")


if __name__ == "__main__":
    main()
