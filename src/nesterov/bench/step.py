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
import logging
import statistics
import sys
import time
import warnings
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
        extra={"hp": hp},
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
    peer: bool = False
    restore_grads: bool = False  # it writes into (or consumes) p.grad: reset before each step, untimed


def _make_params(shapes, device, dtype, seed=0) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    params = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.randn(shape, generator=gen, dtype=torch.float32).to(device, dtype))
        p.grad = torch.randn(shape, generator=gen, dtype=torch.float32).to(device, dtype) * 1e-3
        params.append(p)
    return params


def _grads_differ(c: Contender, grads: list[torch.Tensor]) -> bool:
    return any(p.grad is None or not torch.equal(p.grad, g) for p, g in zip(c.params, grads))


def _restore(c: Contender, grads: list[torch.Tensor]) -> None:
    for p, g in zip(c.params, grads):
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)


def _timed_step(c: Contender, device, grads: list[torch.Tensor] | None = None) -> float:
    """One step, or with ``--iteration`` a whole iteration: zero_grad, backward, step.

    The iteration's model is ``Σ (c_i · p_i).sum()``: its backward produces one fresh gradient per
    parameter, as any model's does, for the least compute, so what differs between contenders is how
    the gradients land and the step itself. A contender that writes into ``p.grad`` (or takes it away)
    gets the same gradients back before each step, outside the timed region.
    """
    if c.restore_grads and grads is not None:
        _restore(c, grads)
    _sync(device)
    t0 = time.perf_counter()
    if c.coefficients is not None:
        c.optimizer.zero_grad(set_to_none=True)
        loss = sum((ci * p).sum() for ci, p in zip(c.coefficients, c.params))
        loss.backward()
    c.optimizer.step()
    _sync(device)
    return time.perf_counter() - t0


# -- rough edges: progress, warnings, load ---------------------------------------------------------
class _Progress:
    """Lines to stderr while a long run goes: what starts, what finished and how long it took."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.t0 = time.perf_counter()

    def __call__(self, message: str, end: str = "\n") -> None:
        if not self.quiet:
            print(message, end=end, file=sys.stderr, flush=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def quiet_known_noise() -> None:
    """Silence two messages every run printed, and nothing else.

    Dynamo logs "Profiler record function ... will be ignored" when it traces ``torch.optim``'s
    ``step`` (wrapped in ``record_function`` for the profiler) for the "torch ... compiled" rows: the
    annotation is dropped from the compiled graph, which is what a benchmark wants. Inductor's lowering
    calls the deprecated ``torch._prims_common.check`` while compiling heavyball's kernels. A filter on
    the one logger / the one message, so every other warning still shows.
    """
    logger = logging.getLogger("torch._dynamo.variables.ctx_manager")
    if not any(isinstance(f, _DropMessage) for f in logger.filters):
        logger.addFilter(_DropMessage("Profiler record function %s will be ignored"))
    warnings.filterwarnings("ignore", message=r"`torch\._prims_common\.check` is deprecated", category=FutureWarning)


LOAD_TOLERANCE = 0.2


def relative_change(before: float, after: float) -> float:
    """How far two positive measurements are apart, as a fraction of the smaller (symmetric)."""
    return max(before, after) / min(before, after) - 1.0


def load_warning(triad_start: float, triad_end: float, ref_start_s: float, ref_end_s: float,
                 ref_name: str, tolerance: float = LOAD_TOLERANCE) -> str | None:
    """A warning when the triad bandwidth (GB/s) or the reference step (seconds) measured before and
    after the timed rounds moved by more than ``tolerance``: the machine was busy with something else."""
    moved = [relative_change(triad_start, triad_end), relative_change(ref_start_s, ref_end_s)]
    if max(moved) <= tolerance:
        return None
    return (f"warning: the machine was visibly loaded during the measurement (more than {tolerance:.0%} "
            f"apart, start → end): triad {triad_start:.1f} → {triad_end:.1f} GB/s, {ref_name} "
            f"{format_duration(ref_start_s)} → {format_duration(ref_end_s)}; absolute times are unreliable, "
            f"ratios less so (round-robin)")


def format_duration(seconds: float) -> str:
    """``seconds`` in the unit that shows three significant digits: µs, ms or s."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def _ms(value: float) -> str:
    """A milliseconds cell with at least three significant digits (0.00412, 0.412, 41.2, 4120)."""
    return f"{value:.3f}" if value >= 0.1 else f"{value:.3g}"


# -- the run ---------------------------------------------------------------------------------------
def _fail(message: str) -> int:
    print(f"nesterov bench step: error: {message}", file=sys.stderr)
    return 2


class BadArgument(ValueError):
    """An argument the bench cannot run with; the message names it."""


def check_args(args) -> None:
    """Raise :class:`BadArgument` naming the first argument that cannot be run."""
    if args.optimizer not in OPTIMIZERS:
        raise BadArgument(f"--optimizer must be one of {', '.join(OPTIMIZERS)}; got {args.optimizer!r}")
    for name, low in (("repeats", 1), ("warmup", 0), ("threads", 1), ("numel", 1)):
        value = getattr(args, name)
        if value is not None and value < low:
            raise BadArgument(f"--{name} must be an integer >= {low}; got {value}")
    if not args.auto_wait >= 0:
        raise BadArgument(f"--auto-wait must be >= 0 seconds; got {args.auto_wait}")
    try:
        device = torch.device(args.device)
    except (RuntimeError, ValueError):
        raise BadArgument(f"--device must be a torch device such as cpu or cuda; got {args.device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BadArgument(f"--device {args.device}: no CUDA device is available here (use --device cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise BadArgument(f"--device {args.device}: there are {torch.cuda.device_count()} CUDA devices")
    if device.type not in ("cpu", "cuda"):
        raise BadArgument(f"--device must be cpu or cuda; got {args.device!r}")


def _drift_probe(c: Contender, device, grads, numel, dtype, samples: int) -> tuple[float, float]:
    """(triad GB/s, median seconds of the reference step): the machine's state right now."""
    small = numel * torch.empty((), dtype=dtype).element_size() < (16 << 20)  # microseconds: more samples
    bandwidth = triad_bandwidth(numel, device, dtype, 50 if small else samples)
    step = statistics.median(_timed_step(c, device, grads) for _ in range(samples))
    return bandwidth / 1e9, step


def run_step_bench(args) -> dict:
    check_args(args)
    quiet_known_noise()
    say = _Progress(getattr(args, "quiet", False))
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
    peer_lines: list[str] = []
    if getattr(args, "peers", False):
        from nesterov.bench.peers import peers_for

        peers, peer_lines = peers_for(args.optimizer)
        for peer in peers:
            if wanted and peer.name not in wanted:
                continue
            params = _make_params(shapes, device, dtype)
            contenders.append(Contender(peer.name, params, peer.make(params, spec.extra["hp"]), note=peer.note,
                                        peer=True))
    if not contenders:
        raise BadArgument(f"--only {args.only!r} names no contender of {args.optimizer}")

    # The reference for the load check: torch's row when it runs, else a private instance of it.
    ref = next((c for c in contenders if c.name == spec.reference), None)
    probe = ref
    if probe is None:
        params = _make_params(shapes, device, dtype)
        probe = Contender(spec.reference, params, spec.torch_alternatives[spec.reference](params))
        _timed_step(probe, device)

    grads = None
    if args.iteration:
        for c in contenders:
            gen = torch.Generator().manual_seed(1)
            c.coefficients = [torch.randn(p.shape, generator=gen).to(device, dtype) * 1e-3 for p in c.params]
    else:  # every contender starts from these gradients (the same seed)
        grads = [p.grad.detach().clone() for p in _make_params(shapes, device, dtype)]

    say(f"bench step: {args.optimizer} on {args.shapes} shapes ({numel / 1e6:.2f}M params): {len(contenders)} "
        f"contenders, first step, {args.warmup} warm-up and {args.repeats} timed rounds")
    for line in peer_lines:
        say(f"  {line}")
    # Cold start: the first step of each, compilation included.
    for c in contenders:
        say(f"  first step: {c.name} ...", end="")
        c.cold_s = _timed_step(c, device)
        if grads is not None and _grads_differ(c, grads):
            c.restore_grads = True
            _restore(c, grads)
        say(f" {format_duration(c.cold_s)}")
    # ``auto`` compiles in the background; say when its kernel took over (bounded wait, reported).
    for c in contenders:
        if c.name.startswith("nesterov auto"):
            say(f"  {c.name}: stepping until its background compile starts, then up to {args.auto_wait:g} s for it")
            c.note = _auto_note(c, args.auto_wait)
    for _ in range(args.warmup):
        for c in contenders:
            _timed_step(c, device, grads)
    samples = max(3, min(args.repeats, 10))
    triad_start, ref_start = _drift_probe(probe, device, grads, numel, dtype, samples)
    t_rounds, last_said = time.perf_counter(), time.perf_counter()
    for i in range(args.repeats):
        for c in contenders:
            c.times.append(_timed_step(c, device, grads))
        if time.perf_counter() - last_said > 10 and i + 1 < args.repeats:
            say(f"  timed rounds: {i + 1}/{args.repeats} ({time.perf_counter() - t_rounds:.0f} s)")
            last_said = time.perf_counter()
    triad_end, ref_end = _drift_probe(probe, device, grads, numel, dtype, samples)
    warning = load_warning(triad_start, triad_end, ref_start, ref_end, spec.reference)
    say(f"  done in {say.elapsed():.0f} s")

    bandwidth = max(triad_start, triad_end) * 1e9  # the floor is the ideal: the better of the two
    param_bytes = torch.empty((), dtype=dtype).element_size()
    state_bytes = torch.empty((), dtype=state_dtype or dtype).element_size()
    floor_bytes = spec.bytes_per_param(param_bytes, state_bytes) * numel
    floor_s = floor_bytes / bandwidth
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
            "peer": c.peer,
            "grads_restored": c.restore_grads,
        })
    from nesterov.bench.peers import library_versions

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
        "peers": library_versions() if getattr(args, "peers", False) else None,
        "peers_skipped": peer_lines,
        "repeats": args.repeats,
        "reference": spec.reference if ref else None,
        "triad_GBps": bandwidth / 1e9,
        "triad_GBps_start_end": [triad_start, triad_end],
        "reference_ms_start_end": [ref_start * 1e3, ref_end * 1e3],
        "load_warning": warning,
        "floor_bytes_per_param": spec.bytes_per_param(param_bytes, state_bytes),
        "floor_ms": floor_s * 1e3,
        "rows": rows,
    }


def _auto_note(c: Contender, wait_s: float) -> str:
    """Which kernels ``auto`` stepped with: it steps (as a training run would) through its first foreach
    steps until its background compile starts, then up to ``wait_s`` more seconds for the compile to take
    over, so that the timed rounds run beside no compile."""
    from nesterov.engine.kernels import AUTO_COMPILE_AFTER_STEPS, COMPILED

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
    from nesterov.engine.kernels import COMPILED

    return any(not event.is_set() for event in COMPILED.ready.values())


def format_table(result: dict) -> str:
    triad_start, triad_end = result["triad_GBps_start_end"]
    peers = result.get("peers") or {}
    versions = "".join(f" · {lib} {v}" for lib, v in peers.items() if v)
    lines = [
        f"{result['optimizer']} {result['measured']} · {result['shapes']} shapes: {result['params'] / 1e6:.2f}M params in "
        f"{result['tensors']} tensors · {result['dtype']} params, {result['state_dtype']} state · "
        f"{result['device']}, {result['threads']} thread{'s' if result['threads'] != 1 else ''} · "
        f"torch {result['torch']}{versions}",
        f"floor: {result['floor_bytes_per_param']} B/param ÷ in-place triad {result['triad_GBps']:.1f} GB/s "
        f"(start {triad_start:.1f}, end {triad_end:.1f}) = {format_duration(result['floor_ms'] / 1e3)} · "
        f"medians of {result['repeats']} steps",
        "",
        f"{'':36s} {'median ms':>10s} {'GB/s':>7s} {'× ' + (result['reference'] or '-'):>18s} "
        f"{'× floor':>8s} {'first step':>11s}",
    ]
    for r in result["rows"]:
        ref = f"{r['vs_reference']:.2f}" if r["vs_reference"] is not None else "-"
        note = r["note"] + ("; p.grad reset before each step (untimed)" if r.get("grads_restored") else "")
        lines.append(
            f"{r['name']:36s} {_ms(r['median_ms']):>10s} {r['effective_GBps']:7.1f} {ref:>18s} "
            f"{r['vs_floor']:8.2f} {format_duration(r['cold_start_ms'] / 1e3):>11s}"
            + (f"  {note.lstrip('; ')}" if note else "")
        )
    lines.append(f"{'bandwidth floor':36s} {_ms(result['floor_ms']):>10s}")
    lines += [f"({line})" for line in result.get("peers_skipped") or []]
    if result.get("load_warning"):
        lines += ["", result["load_warning"]]
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
    ap.add_argument("--repeats", type=int, default=30, help="timed steps per contender (>= 1)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--auto-wait", type=float, default=120.0,
                    help="seconds to let auto's background compile finish before timing, from its start")
    ap.add_argument("--only", default=None, help="comma-separated contender names to run")
    ap.add_argument("--peers", action="store_true",
                    help="also time heavyball's and pytorch-optimizer's version of the rule, where installed")
    ap.add_argument("--iteration", action="store_true",
                    help="time zero_grad(set_to_none=True) + backward + step (gradients landing included)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    return ap


def step_main(argv: list[str]) -> int:
    args = step_parser().parse_args(argv)
    try:
        result = run_step_bench(args)
    except BadArgument as e:
        return _fail(str(e))
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
