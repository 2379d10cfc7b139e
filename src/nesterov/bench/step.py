"""``nesterov bench step`` / ``nesterov bench memory``: one optimizer step, measured side by side.

Every contender runs in this one process on the same parameter set, round-robin (so drift on a shared
machine hits all of them alike); the table reports medians and ratios, and the physical floor: the bytes
an ideal step must move divided by the bandwidth of a triad (a = b + s·c) measured in the same run.
Cold start (the first step, compilation included) is reported separately from the steady state.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from nesterov.bench.shapes import SHAPES, scaled_shapes

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


# -- what is benchmarked -----------------------------------------------------------------------------
@dataclass
class BenchSpec:
    """One rule in the bench: our optimizer, the torch alternatives, and the ideal bytes per element.

    ``bytes_per_param(param_bytes, state_bytes)`` is what an ideal fused step must move per element:
    e.g. NAG reads p, g, b and writes p, b.
    """

    ours: Callable[..., torch.optim.Optimizer]  # (params, backend=, state_dtype=) -> optimizer
    torch_alternatives: dict[str, Callable[[list], torch.optim.Optimizer]]
    bytes_per_param: Callable[[int, int], int]
    reference: str  # the torch alternative ratios are taken against
    backends: tuple[str, ...] = ("eager", "foreach", "compile", "auto")
    extra: dict = field(default_factory=dict)


def _nag_spec() -> BenchSpec:
    from nesterov import NAG

    hp = dict(lr=1e-3, momentum=0.9, weight_decay=1e-4)
    sgd = torch.optim.SGD
    return BenchSpec(
        ours=lambda params, **kw: NAG(params, **hp, **kw),
        torch_alternatives={
            "torch SGD for-loop": lambda ps: sgd(ps, **hp, nesterov=True, foreach=False),
            "torch SGD foreach": lambda ps: sgd(ps, **hp, nesterov=True, foreach=True),
            "torch SGD fused": lambda ps: sgd(ps, **hp, nesterov=True, fused=True),
            "torch SGD compiled": lambda ps: _compiled_step(sgd(ps, **hp, nesterov=True, foreach=True)),
        },
        bytes_per_param=lambda pb, sb: 3 * pb + 2 * sb,  # read p, g, b; write p, b
        reference="torch SGD fused",
        backends=("eager", "foreach", "compile", "torch", "auto"),
    )


# Rules register here: name -> a function building its BenchSpec (imports stay lazy).
def _lazy(module: str, name: str) -> Callable[[], BenchSpec]:
    return lambda: getattr(importlib.import_module(module), name)()


OPTIMIZERS: dict[str, Callable[[], BenchSpec]] = {
    "nag": _nag_spec,
    "muon": _lazy("nesterov.bench.muon", "muon_spec"),
    "nadamw": _lazy("nesterov.bench.family", "nadamw_spec"),
    "adan": _lazy("nesterov.bench.family", "adan_spec"),
    "lars": _lazy("nesterov.bench.family", "lars_spec"),
    "lamb": _lazy("nesterov.bench.family", "lamb_spec"),
}


def _compiled_step(opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """torch's recommended way to compile an optimizer: ``torch.compile`` around ``opt.step``."""
    step = torch.compile(opt.step, fullgraph=False)
    opt.step = step
    return opt


# -- measurement -------------------------------------------------------------------------------------
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


def _make_params(shapes, device, dtype, seed=0) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    params = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.randn(shape, generator=gen, dtype=torch.float32).to(device, dtype))
        p.grad = torch.randn(shape, generator=gen, dtype=torch.float32).to(device, dtype) * 1e-3
        params.append(p)
    return params


def _timed_step(c: Contender, device) -> float:
    """One step, or with ``--iteration`` a whole iteration: zero_grad, backward, step.

    The iteration's model is ``Σ (c_i · p_i).sum()``: its backward produces one fresh gradient per
    parameter, as any model's does, for the least compute, so what differs between contenders is how
    the gradients land and the step itself.
    """
    _sync(device)
    t0 = time.perf_counter()
    if c.coefficients is not None:
        c.optimizer.zero_grad(set_to_none=True)
        loss = sum((ci * p).sum() for ci, p in zip(c.coefficients, c.params))
        loss.backward()
    c.optimizer.step()
    _sync(device)
    return time.perf_counter() - t0


def run_step_bench(args) -> dict:
    if args.optimizer not in OPTIMIZERS:
        raise SystemExit(f"--optimizer must be one of {', '.join(OPTIMIZERS)}; got {args.optimizer!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    state_dtype = DTYPES[args.state_dtype] if args.state_dtype else None
    shapes = scaled_shapes(SHAPES[args.shapes](), args.numel)
    numel = sum(torch.Size(s).numel() for s in shapes)
    spec = OPTIMIZERS[args.optimizer]()

    contenders: list[Contender] = []
    wanted = set(args.only.split(",")) if args.only else None
    if state_dtype is None or args.include_torch:
        for name, make in spec.torch_alternatives.items():
            if wanted and name not in wanted:
                continue
            params = _make_params(shapes, device, dtype)
            contenders.append(Contender(name, params, make(params)))
    for backend in spec.backends:
        name = f"nesterov {backend}" + (f" ({args.state_dtype} state)" if state_dtype else "")
        if wanted and name not in wanted and f"nesterov {backend}" not in wanted:
            continue
        params = _make_params(shapes, device, dtype)
        contenders.append(Contender(name, params, spec.ours(params, backend=backend, state_dtype=state_dtype)))

    if args.iteration:
        for c in contenders:
            gen = torch.Generator().manual_seed(1)
            c.coefficients = [torch.randn(p.shape, generator=gen).to(device, dtype) * 1e-3 for p in c.params]
    # Cold start: the first step of each, compilation included.
    for c in contenders:
        c.cold_s = _timed_step(c, device)
    # ``auto`` compiles in the background; say when its kernel took over (bounded wait, reported).
    for c in contenders:
        if c.name.startswith("nesterov auto"):
            c.note = _auto_note(c, args.auto_wait)
    for _ in range(args.warmup):
        for c in contenders:
            _timed_step(c, device)
    for _ in range(args.repeats):
        for c in contenders:
            c.times.append(_timed_step(c, device))

    bandwidth = triad_bandwidth(numel, device, dtype, args.repeats)
    param_bytes = torch.empty((), dtype=dtype).element_size()
    state_bytes = torch.empty((), dtype=state_dtype or dtype).element_size()
    floor_bytes = spec.bytes_per_param(param_bytes, state_bytes) * numel
    floor_s = floor_bytes / bandwidth
    ref = next((c for c in contenders if c.name == spec.reference), None)
    rows = []
    for c in contenders:
        median = statistics.median(c.times)
        rows.append({
            "name": c.name,
            "median_ms": median * 1e3,
            "effective_GBps": floor_bytes / median / 1e9,
            "vs_reference": median / statistics.median(ref.times) if ref else None,
            "vs_floor": median / floor_s,
            "cold_start_ms": c.cold_s * 1e3,
            "note": c.note,
        })
    return {
        "optimizer": args.optimizer,
        "measured": "zero_grad + backward + step" if args.iteration else "step",
        "shapes": args.shapes,
        "tensors": len(shapes),
        "params": numel,
        "dtype": args.dtype,
        "state_dtype": args.state_dtype or args.dtype,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "repeats": args.repeats,
        "reference": spec.reference if ref else None,
        "triad_GBps": bandwidth / 1e9,
        "floor_bytes_per_param": spec.bytes_per_param(param_bytes, state_bytes),
        "floor_ms": floor_s * 1e3,
        "rows": rows,
    }


def _auto_note(c: Contender, wait_s: float) -> str:
    """Which kernels ``auto`` stepped with, waiting (while stepping, as a training run would) up to
    ``wait_s`` for a background compile to take over."""
    from nesterov.engine.kernels import AUTO_COMPILE_AFTER_STEPS

    seen = c.optimizer.backends_seen
    t0 = time.perf_counter()
    steps = 0
    while "compile" not in seen and seen <= {"foreach"} and time.perf_counter() - t0 < wait_s:
        if steps > AUTO_COMPILE_AFTER_STEPS + 1 and not _compiling():
            break  # a group too small to compile: auto stays on foreach
        c.optimizer.step()
        steps += 1
    waited = time.perf_counter() - t0
    if "compile" in seen:
        return f"auto: the compiled kernel ({waited:.1f} s of foreach steps while it compiled)"
    if _compiling():
        return f"auto: compile still running after {waited:.1f} s: steady state measured on foreach"
    return "auto: " + ", ".join(sorted(seen))


def _compiling() -> bool:
    from nesterov.engine.kernels import COMPILED

    return any(not event.is_set() for event in COMPILED.ready.values())


def format_table(result: dict) -> str:
    lines = [
        f"{result['optimizer']} {result['measured']} · {result['shapes']} shapes: {result['params'] / 1e6:.2f}M params in "
        f"{result['tensors']} tensors · {result['dtype']} params, {result['state_dtype']} state · "
        f"{result['device']}, {result['threads']} threads · torch {result['torch']}",
        f"floor: {result['floor_bytes_per_param']} B/param ÷ in-place triad {result['triad_GBps']:.1f} GB/s = "
        f"{result['floor_ms']:.2f} ms · medians of {result['repeats']} steps",
        "",
        f"{'':36s} {'median ms':>10s} {'GB/s':>7s} {'× ' + (result['reference'] or '-'):>18s} "
        f"{'× floor':>8s} {'cold start ms':>14s}",
    ]
    for r in result["rows"]:
        ref = f"{r['vs_reference']:.2f}" if r["vs_reference"] is not None else "-"
        lines.append(
            f"{r['name']:36s} {r['median_ms']:10.3f} {r['effective_GBps']:7.1f} {ref:>18s} "
            f"{r['vs_floor']:8.2f} {r['cold_start_ms']:14.1f}" + (f"  {r['note']}" if r["note"] else "")
        )
    lines.append(f"{'bandwidth floor':36s} {result['floor_ms']:10.3f}")
    return "\n".join(lines)


def step_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="nesterov bench step", description=__doc__.split("\n\n")[0])
    ap.add_argument("--optimizer", default="nag", help=f"one of: {', '.join(OPTIMIZERS)}")
    ap.add_argument("--shapes", default="resnet50", choices=sorted(SHAPES), help="parameter set")
    ap.add_argument("--numel", type=int, default=None, help="rescale the set to about this many parameters")
    ap.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    ap.add_argument("--state-dtype", default=None, choices=sorted(DTYPES), help="optimizer state dtype")
    ap.add_argument("--include-torch", action="store_true",
                    help="with --state-dtype, still time the torch alternatives (their state is full width)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=30, help="timed steps per contender")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--auto-wait", type=float, default=120.0,
                    help="seconds to let auto's background compile finish before timing")
    ap.add_argument("--only", default=None, help="comma-separated contender names to run")
    ap.add_argument("--iteration", action="store_true",
                    help="time zero_grad(set_to_none=True) + backward + step (gradients landing included)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    return ap


def step_main(argv: list[str]) -> int:
    args = step_parser().parse_args(argv)
    result = run_step_bench(args)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


def memory_main(argv: list[str]) -> int:
    """Bytes of optimizer state per parameter for each rule and state dtype, measured on ``optimizer.state``."""
    ap = argparse.ArgumentParser(prog="nesterov bench memory")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = []
    for name, make_spec in OPTIMIZERS.items():
        spec = make_spec()
        for state_dtype in (None, torch.bfloat16):
            params = _make_params([(64, 64), (64,)], torch.device("cpu"), torch.float32)
            opt = spec.ours(params, backend="foreach", state_dtype=state_dtype)
            opt.step()
            numel = sum(p.numel() for p in params)
            state_bytes = sum(
                v.numel() * v.element_size()
                for s in opt.state.values() for v in s.values()
                if isinstance(v, torch.Tensor) and v.dim() > 0  # per-element buffers, not 0-d counters
            )
            rows.append({"optimizer": name, "state_dtype": str(state_dtype or torch.float32)[6:],
                         "state_bytes_per_param": state_bytes / numel})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'optimizer':12s} {'state dtype':12s} {'state bytes / param':>20s}")
        for r in rows:
            print(f"{r['optimizer']:12s} {r['state_dtype']:12s} {r['state_bytes_per_param']:20.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(step_main(sys.argv[1:]))
