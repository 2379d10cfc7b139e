"""``nesterov bench step``: one optimizer step, measured side by side.

Every contender runs in this one process on the same parameter set, round-robin (so drift on a shared
machine hits all of them alike); the table reports medians and ratios, and the physical floor: the bytes
an ideal step must move divided by the bandwidth of a triad (a = b + s·c) measured in the same run.
Cold start (the first step, compilation included) is reported separately from the steady state.

This module is the command; what is measured is in :mod:`nesterov.bench.specs`, how it is timed in
:mod:`nesterov.bench.timing`, what is printed in :mod:`nesterov.bench.report`, and ``nesterov bench memory``
in :mod:`nesterov.bench.memory`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from nesterov.bench.report import Progress, format_duration, format_table, load_warning, quiet_known_noise
from nesterov.bench.report import relative_change
from nesterov.bench.shapes import SHAPES, scaled_shapes
from nesterov.bench.specs import DTYPES, OPTIMIZERS
from nesterov.bench.timing import Contender, auto_note, drift_probe, grads_differ, make_params, reset_grads
from nesterov.bench.timing import timed_step

# format_duration, load_warning, relative_change and OPTIMIZERS moved out; they stay importable from here
__all__ = ["OPTIMIZERS", "BadArgument", "check_args", "format_duration", "format_table", "load_warning",
           "relative_change", "run_step_bench", "step_main", "step_parser"]


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


def run_step_bench(args) -> dict:
    check_args(args)
    quiet_known_noise()
    say = Progress(getattr(args, "quiet", False))
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
            params = make_params(shapes, device, dtype)
            contenders.append(Contender(name, params, make(params)))
    for backend in spec.backends:
        name = f"nesterov {backend}" + (f" ({args.state_dtype} state)" if state_dtype else "")
        if wanted and name not in wanted and f"nesterov {backend}" not in wanted:
            continue
        params = make_params(shapes, device, dtype)
        contenders.append(Contender(name, params, spec.ours(params, backend=backend, state_dtype=state_dtype)))
    peer_lines: list[str] = []
    if getattr(args, "peers", False):
        from nesterov.bench.peers import peers_for

        peers, peer_lines = peers_for(args.optimizer)
        for peer in peers:
            if wanted and peer.name not in wanted:
                continue
            params = make_params(shapes, device, dtype)
            contenders.append(Contender(peer.name, params, peer.make(params, spec.extra["hp"]), note=peer.note,
                                        peer=True))
    if not contenders:
        raise BadArgument(f"--only {args.only!r} names no contender of {args.optimizer}")

    # The reference for the load check: torch's row when it runs, else a private instance of it.
    ref = next((c for c in contenders if c.name == spec.reference), None)
    probe = ref
    if probe is None:
        params = make_params(shapes, device, dtype)
        probe = Contender(spec.reference, params, spec.torch_alternatives[spec.reference](params))
        timed_step(probe, device)

    grads = None
    if args.iteration:
        for c in contenders:
            gen = torch.Generator().manual_seed(1)
            c.coefficients = [torch.randn(p.shape, generator=gen).to(device, dtype) * 1e-3 for p in c.params]
    else:  # every contender starts from these gradients (the same seed)
        grads = [p.grad.detach().clone() for p in make_params(shapes, device, dtype)]

    say(f"bench step: {args.optimizer} on {args.shapes} shapes ({numel / 1e6:.2f}M params): {len(contenders)} "
        f"contenders, first step, {args.warmup} warm-up and {args.repeats} timed rounds")
    for line in peer_lines:
        say(f"  {line}")
    # Cold start: the first step of each, compilation included.
    for c in contenders:
        say(f"  first step: {c.name} ...", end="")
        c.cold_s = timed_step(c, device)
        if grads is not None and grads_differ(c, grads):
            c.restore_grads = True
            reset_grads(c, grads)
        say(f" {format_duration(c.cold_s)}")
    # ``auto`` compiles in the background; say when its kernel took over (bounded wait, reported).
    for c in contenders:
        if c.name.startswith("nesterov auto"):
            say(f"  {c.name}: stepping until its background compile starts, then up to {args.auto_wait:g} s for it")
            c.note = auto_note(c, args.auto_wait)
    for _ in range(args.warmup):
        for c in contenders:
            timed_step(c, device, grads)
    samples = max(3, min(args.repeats, 10))
    triad_start, ref_start = drift_probe(probe, device, grads, numel, dtype, samples)
    t_rounds, last_said = time.perf_counter(), time.perf_counter()
    for i in range(args.repeats):
        for c in contenders:
            c.times.append(timed_step(c, device, grads))
        if time.perf_counter() - last_said > 10 and i + 1 < args.repeats:
            say(f"  timed rounds: {i + 1}/{args.repeats} ({time.perf_counter() - t_rounds:.0f} s)")
            last_said = time.perf_counter()
    triad_end, ref_end = drift_probe(probe, device, grads, numel, dtype, samples)
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


def step_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="nesterov bench step", description=(
        "One optimizer step on a parameter set: ours, the torch alternative, the peer libraries (--peers) and the "
        "bandwidth floor, timed round-robin in this one process; medians and ratios, steady state and first step."))
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


if __name__ == "__main__":
    sys.exit(step_main(sys.argv[1:]))
