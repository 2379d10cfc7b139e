"""How ``nesterov bench step`` times a step: the contenders' parameters and gradients, one timed step (or
iteration), the triad that measures the machine's bandwidth, the probe that checks the machine did not change
during the timed rounds, and the wait for ``auto``'s background compile.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import torch

__all__ = ["Contender", "auto_note", "drift_probe", "grads_differ", "make_params", "reset_grads", "timed_step",
           "triad_bandwidth"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def triad_bandwidth(numel: int, device: torch.device, dtype: torch.dtype, repeats: int) -> float:
    """Bytes per second of the in-place triad ``a ← a + s·b`` on ``numel`` elements.

    Three arrays move (read a, b; write a), and like an optimizer step it writes only what it read,
    so no hidden read-for-ownership traffic flatters or penalises either side.
    """
    a, b = (torch.rand(numel, device=device, dtype=dtype) for _ in range(2))
    times = []
    for _ in range(repeats + 2):
        _sync(device)
        t0 = time.perf_counter()
        a.add_(b, alpha=1e-3)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 3 * numel * a.element_size() / statistics.median(times[2:])


@dataclass
class Contender:
    name: str
    params: list[torch.Tensor]
    optimizer: torch.optim.Optimizer
    times: list[float] = field(default_factory=list)
    cold_s: float | None = None
    note: str = ""
    coefficients: list[torch.Tensor] | None = None  # --iteration: loss = Σ (c_i · p_i).sum()
    peer: bool = False
    restore_grads: bool = False  # it writes into (or consumes) p.grad: reset before each step, untimed


def make_params(shapes, device, dtype, seed=0) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    params = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.randn(shape, generator=gen, dtype=torch.float32).to(device, dtype))
        p.grad = torch.randn(shape, generator=gen, dtype=torch.float32).to(device, dtype) * 1e-3
        params.append(p)
    return params


def grads_differ(c: Contender, grads: list[torch.Tensor]) -> bool:
    return any(p.grad is None or not torch.equal(p.grad, g) for p, g in zip(c.params, grads))


def reset_grads(c: Contender, grads: list[torch.Tensor]) -> None:
    for p, g in zip(c.params, grads):
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)


def timed_step(c: Contender, device, grads: list[torch.Tensor] | None = None) -> float:
    """One step, or with ``--iteration`` a whole iteration: zero_grad, backward, step.

    The iteration's model is ``Σ (c_i · p_i).sum()``: its backward produces one fresh gradient per
    parameter, as any model's does, for the least compute, so what differs between contenders is how
    the gradients land and the step itself. A contender that writes into ``p.grad`` (or takes it away)
    gets the same gradients back before each step, outside the timed region.
    """
    if c.restore_grads and grads is not None:
        reset_grads(c, grads)
    _sync(device)
    t0 = time.perf_counter()
    if c.coefficients is not None:
        c.optimizer.zero_grad(set_to_none=True)
        loss = sum((ci * p).sum() for ci, p in zip(c.coefficients, c.params))
        loss.backward()
    c.optimizer.step()
    _sync(device)
    return time.perf_counter() - t0


def drift_probe(c: Contender, device, grads, numel, dtype, samples: int) -> tuple[float, float]:
    """(triad GB/s, median seconds of the reference step): the machine's state right now."""
    small = numel * torch.empty((), dtype=dtype).element_size() < (16 << 20)  # microseconds: more samples
    bandwidth = triad_bandwidth(numel, device, dtype, 50 if small else samples)
    step = statistics.median(timed_step(c, device, grads) for _ in range(samples))
    return bandwidth / 1e9, step


def auto_note(c: Contender, wait_s: float) -> str:
    """Which kernels ``auto`` stepped with: it steps (as a training run would) through its first foreach
    steps until its background compile starts, then up to ``wait_s`` more seconds for the compile to take
    over, so that the timed rounds run beside no compile."""
    from nesterov.engine.compiled import COMPILED
    from nesterov.engine.kernels import AUTO_COMPILE_AFTER_STEPS

    seen = c.optimizer.backends_seen
    before = set(COMPILED.ready)
    t0 = time.perf_counter()
    started = None  # when the compile was requested
    steps = 0
    while "compile" not in seen and seen <= {"foreach"}:
        requested = set(COMPILED.ready) - before
        if requested and started is None:
            started = time.perf_counter()
        if not requested and steps > AUTO_COMPILE_AFTER_STEPS + 1 and not _compiling():
            break  # no compile was started: a group too small to compile, auto stays on foreach
        if requested and all(key in COMPILED.errors for key in requested):
            break  # the compile failed: auto stays on foreach (and warns)
        if started is not None and time.perf_counter() - started > wait_s:
            break
        c.optimizer.step()  # (a compile that finished since the last step is taken up by this one)
        steps += 1
    waited = time.perf_counter() - t0
    if "compile" in seen:
        return f"auto: the compiled kernel (after {steps} foreach steps, {waited:.0f} s)"
    if _compiling():
        return f"auto: compile still running {wait_s:g} s after it started: timed on foreach, beside the compile"
    return "auto: " + ", ".join(sorted(seen))


def _compiling() -> bool:
    from nesterov.engine.compiled import COMPILED

    return any(not event.is_set() for event in COMPILED.ready.values())
