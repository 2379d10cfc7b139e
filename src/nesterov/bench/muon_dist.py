"""``nesterov bench muon-dist``: a Muon step split across DDP ranks against the same step in one process.

It starts ``--ranks`` processes itself (a gloo group on localhost, ``--threads`` each), gives every rank the
same matrices and gradients (what DDP leaves after averaging) and times, round after round, the step of
``Muon(..., process_group=WORLD)`` on all ranks (each orthogonalises its share, then the ranks exchange the
results) and, while the other ranks wait, the step of a plain ``Muon`` on rank 0 alone. A split step's time
is the slowest rank's. It prints the medians, their ratio, whether the ranks ended bit-identical, and the
largest difference between the split optimizer's parameters and the one-process optimizer's. Each round
also times the same batched products on rank 0 alone and on every rank at once: on a machine whose cores
are busy with other work, N ranks get less than N cores, and that figure says how much they got.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import statistics
import sys
import tempfile
import time

import torch

from nesterov.bench.shapes import transformer_shapes

NS_DTYPES = {"default": None, "float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}
DTYPES = {"float32": torch.float32, "float64": torch.float64}
TIMEOUT_S = 300  # a collective that waits longer ends the benchmark with an error


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="nesterov bench muon-dist", description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", type=int, default=2, help="processes in the gloo group (default 2)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    ap.add_argument("--blocks", type=int, default=4, help="transformer blocks, 4 matrices each (default 4)")
    ap.add_argument("--width", type=int, default=512, help="model width d (default 512)")
    ap.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="parameter dtype (default float32)")
    ap.add_argument("--ns-dtype", default="default", choices=sorted(NS_DTYPES),
                    help="Newton–Schulz dtype (default: Muon's per-device choice)")
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    return ap


def check_args(args) -> None:
    for name, low in (("ranks", 2), ("threads", 1), ("blocks", 1), ("width", 1), ("repeats", 1), ("warmup", 0)):
        if getattr(args, name) < low:
            raise SystemExit(f"nesterov bench muon-dist: error: --{name} must be an integer >= {low}; "
                             f"got {getattr(args, name)}")


def _digest(tensors) -> int:
    h = hashlib.blake2b(digest_size=7)
    for t in tensors:
        h.update(t.detach().contiguous().view(torch.uint8).numpy().tobytes())
    return int.from_bytes(h.digest(), "little")


def _probe(x: torch.Tensor, rank: int, dist) -> tuple[float, float]:
    """Seconds of a few batched products ``x·xᵀ·x`` on rank 0 alone, and the slowest rank's with every rank
    running them at once: how much parallel compute the machine gives the ranks at this moment."""
    def products() -> float:
        t0 = time.perf_counter()
        for _ in range(3):
            x.matmul(x.mT).matmul(x)
        return time.perf_counter() - t0

    dist.barrier()
    alone = products() if rank == 0 else 0.0
    dist.barrier()
    slowest = torch.tensor([products()], dtype=torch.float64)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    return alone, slowest.item()


def _rank_main(rank: int, args, init_file: str, results) -> None:
    import torch.distributed as dist

    from nesterov import Muon

    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=args.ranks,
                            timeout=datetime.timedelta(seconds=TIMEOUT_S))
    try:
        dtype = DTYPES[args.dtype]
        shapes = [s for s in transformer_shapes(args.blocks, args.width) if len(s) == 2]
        gen = torch.Generator().manual_seed(0)  # the same matrices and gradients on every rank
        start = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
        grads = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
        split = [torch.nn.Parameter(t.clone()) for t in start]
        single = [torch.nn.Parameter(t.clone()) for t in start]
        for p, q, g in zip(split, single, grads):
            p.grad, q.grad = g.clone(), g.clone()
        hp = dict(lr=0.02, momentum=0.95, ns_dtype=NS_DTYPES[args.ns_dtype])
        split_opt = Muon(split, **hp, process_group=dist.group.WORLD)
        single_opt = Muon(single, **hp)
        probe = torch.randn(4, args.width, 4 * args.width, generator=gen).to(split_opt._ns_dtype(split[0]))
        times = {"one process": [], f"{args.ranks} ranks": [], "probe alone": [], "probe together": []}
        for round_ in range(args.warmup + args.repeats):
            alone, together = _probe(probe, rank, dist)
            dist.barrier()
            if rank == 0:
                t0 = time.perf_counter()
                single_opt.step()
                elapsed = time.perf_counter() - t0
            dist.barrier()
            t0 = time.perf_counter()
            split_opt.step()
            slowest = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
            dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
            if rank == 0 and round_ >= args.warmup:
                times["one process"].append(elapsed)
                times[f"{args.ranks} ranks"].append(slowest.item())
                times["probe alone"].append(alone)
                times["probe together"].append(together)
        digests = [torch.zeros(1, dtype=torch.int64) for _ in range(args.ranks)]
        dist.all_gather(digests, torch.tensor([_digest(split)], dtype=torch.int64))
        if rank == 0:
            results.put({"times": times, "identical": len({int(d) for d in digests}) == 1,
                         "diff": max((p - q).abs().max().item() for p, q in zip(split, single)),
                         "matrices": len(shapes), "threads": torch.get_num_threads(),
                         "ns_dtype": str(split_opt._ns_dtype(split[0])).replace("torch.", "")})
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run(args) -> dict:
    import torch.multiprocessing as mp

    check_args(args)
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(_rank_main, args=(args, f"{tmp}/init", results), nprocs=args.ranks, join=True,
                           start_method="spawn")
    result = results.get()
    medians = {name: statistics.median(ts) for name, ts in result["times"].items()}
    one, split = medians["one process"], medians[f"{args.ranks} ranks"]
    parallel = args.ranks * statistics.median(a / b for a, b in zip(result["times"]["probe alone"],
                                                                    result["times"]["probe together"]))
    return {**result, "medians_s": medians, "ratio": split / one, "parallel": parallel, "ranks": args.ranks, "blocks": args.blocks,
            "width": args.width, "dtype": args.dtype, "repeats": args.repeats, "torch": torch.__version__}


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    check_args(args)
    print(f"nesterov bench muon-dist: starting {args.ranks} gloo processes ...", file=sys.stderr, flush=True)
    r = run(args)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"Muon step · {r['matrices']} matrices of a {r['blocks']}-block d={r['width']} transformer · "
          f"{r['dtype']} params, Newton–Schulz in {r['ns_dtype']} · {r['threads']} thread(s) per process · "
          f"torch {r['torch']} · median of {r['repeats']}\n")
    for name in ("one process", f"{r['ranks']} ranks"):
        print(f"{name:>12s}  {r['medians_s'][name] * 1e3:9.1f} ms")
    print(f"\n{r['ranks']} ranks / one process: {r['ratio']:.2f}")
    print(f"parallel compute the machine gave the {r['ranks']} ranks: {r['parallel']:.2f} of {r['ranks']} "
          f"(the same products on every rank at once against one alone; the ratio's floor is about "
          f"{1 / r['parallel']:.2f})")
    print(f"ranks bit-identical: {'yes' if r['identical'] else 'NO'}; "
          f"max |split − one process| = {r['diff']:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
