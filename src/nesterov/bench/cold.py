"""``nesterov bench cold``: the start of a run, as a new user meets it.

Each contender runs in a fresh process with an empty compile cache (inductor's and Triton's): the wall
time from building the optimizer to the end of its first ``--steps`` steps, everything included —
compilation in the foreground or in a background thread, the steps taken while it runs. Parameters
and gradients are made before the clock starts, the same for every contender. Contenders run one after
another, ``--runs`` rounds (round-robin), and the table reports each one's median and its ratio to the
reference (torch's fused kernel where torch has one).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from nesterov.bench.shapes import SHAPES, scaled_shapes
from nesterov.bench.specs import DTYPES, OPTIMIZERS
from nesterov.bench.timing import make_params


def contenders(spec, with_torch: bool) -> list[str]:
    names = [n for n in spec.torch_alternatives if "for-loop" not in n] if with_torch else []
    return names + ["nesterov auto"]


def child(args) -> dict:
    """One contender in this (fresh) process: build, step ``args.steps`` times, report the wall time."""
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = OPTIMIZERS[args.optimizer]()
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    state_dtype = DTYPES[args.state_dtype] if args.state_dtype else None
    params = make_params(scaled_shapes(SHAPES[args.shapes](), args.numel), device, dtype)
    peer = args.contender != "nesterov auto" and args.contender not in spec.torch_alternatives
    # A peer's gradients, given back before each step off the clock: some write into p.grad or take it away.
    given = [p.grad.clone() for p in params] if peer else None
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    if args.contender == "nesterov auto":
        opt = spec.ours(params, backend="auto", state_dtype=state_dtype)
    elif args.contender in spec.torch_alternatives:
        opt = spec.torch_alternatives[args.contender](params)
    else:
        from nesterov.bench.peers import PEERS

        opt = next(p for p in PEERS[args.optimizer] if p.name == args.contender).make(params, spec.extra["hp"])
    step_times, giving_back = [], 0.0
    for _ in range(args.steps):
        if given is not None:
            t = time.perf_counter()
            for p, g in zip(params, given):
                p.grad = g.clone() if p.grad is None else p.grad.copy_(g)
            sync()
            giving_back += time.perf_counter() - t
        t = time.perf_counter()
        opt.step()
        sync()
        step_times.append(time.perf_counter() - t)
    total = time.perf_counter() - t0 - giving_back
    return {"contender": args.contender, "seconds": total, "first_step_s": step_times[0],
            "last_steps_median_ms": statistics.median(step_times[-20:]) * 1e3,
            "backends": sorted(getattr(opt, "backends_seen", set()))}


def run_fresh(args, contender: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="nesterov-cold-") as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": os.path.join(cache, "inductor"),
               "TRITON_CACHE_DIR": os.path.join(cache, "triton")}
        argv = [sys.executable, "-m", "nesterov.bench.cold", "--child", "--contender", contender,
                "--optimizer", args.optimizer, "--shapes", args.shapes, "--dtype", args.dtype, "--steps",
                str(args.steps), "--device", args.device]
        for flag, value in (("--state-dtype", args.state_dtype), ("--threads", args.threads),
                            ("--numel", args.numel)):
            if value:
                argv += [flag, str(value)]
        out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=args.timeout)
        if out.returncode != 0:
            raise SystemExit(f"nesterov bench cold: {contender} failed:\n{out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="nesterov bench cold", description=(
        "The start of a run as a new user meets it: each contender in a fresh process with an empty compile "
        "cache, timed from building the optimizer to the end of its first --steps steps, compiles included."))
    ap.add_argument("--optimizer", default="nag", choices=sorted(OPTIMIZERS))
    ap.add_argument("--shapes", default="resnet50", choices=sorted(SHAPES))
    ap.add_argument("--numel", type=int, default=None, help="rescale the set to about this many parameters")
    ap.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    ap.add_argument("--state-dtype", default=None, choices=sorted(DTYPES), help="our optimizer's state dtype")
    ap.add_argument("--steps", type=int, default=150, help="steps per contender (default 150)")
    ap.add_argument("--runs", type=int, default=1, help="rounds over the contenders (median reported)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", default=None, help="comma-separated contender names")
    ap.add_argument("--peers", action="store_true",
                    help="also run heavyball's, pytorch-optimizer's and the reference package's version, where installed")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds allowed per contender run")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--contender", default=None, help=argparse.SUPPRESS)
    return ap


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.steps < 1 or args.runs < 1:
        raise SystemExit("nesterov bench cold: --steps and --runs must be at least 1")
    if args.child:
        print(json.dumps(child(args)))
        return 0
    spec = OPTIMIZERS[args.optimizer]()
    names = args.only.split(",") if args.only else contenders(spec, with_torch=True)
    if args.peers and not args.only:
        from nesterov.bench.peers import peers_for

        peers, lines = peers_for(args.optimizer)
        names += [p.name for p in peers]
        for line in lines:
            print(f"nesterov bench cold: {line}", file=sys.stderr)
    results: dict[str, list[dict]] = {n: [] for n in names}
    for _ in range(args.runs):
        for name in names:
            print(f"nesterov bench cold: {name} in a fresh process ...", file=sys.stderr, flush=True)
            results[name].append(run_fresh(args, name))
    ref = spec.reference if spec.reference in results else None
    ref_s = statistics.median(r["seconds"] for r in results[ref]) if ref else None
    rows = [{"name": n, "seconds": statistics.median(r["seconds"] for r in rs),
             "first_step_s": statistics.median(r["first_step_s"] for r in rs),
             "last_steps_median_ms": statistics.median(r["last_steps_median_ms"] for r in rs),
             "backends": rs[-1]["backends"]} for n, rs in results.items()]
    for row in rows:
        row["vs_reference"] = row["seconds"] / ref_s if ref_s else None
    result = {"optimizer": args.optimizer, "shapes": args.shapes, "dtype": args.dtype,
              "state_dtype": args.state_dtype or args.dtype, "steps": args.steps, "runs": args.runs,
              "threads": args.threads or torch.get_num_threads(), "torch": torch.__version__,
              "reference": ref, "rows": rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.optimizer} · first {args.steps} steps of a fresh process, empty compile cache · {args.shapes} "
          f"shapes, {args.dtype} params, {result['state_dtype']} state (ours) · {result['threads']} threads · "
          f"torch {torch.__version__} · median of {args.runs} run(s)\n")
    print(f"{'':34s} {'wall s':>8s} {'× ' + (ref or '-'):>22s} {'first step s':>13s} {'last 20 ms':>11s}")
    for r in rows:
        ratio = f"{r['vs_reference']:.2f}" if r["vs_reference"] is not None else "-"
        kernels = f"  ({', '.join(r['backends'])})" if r["backends"] else ""
        print(f"{r['name']:34s} {r['seconds']:8.2f} {ratio:>22s} {r['first_step_s']:13.3f} "
              f"{r['last_steps_median_ms']:11.2f}{kernels}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
