"""``nesterov bench convex``: iterations and seconds to a relative objective gap, for ``gd``, ``nag``,
``nag`` + gradient restart (all with backtracking, L unknown) and scipy's L-BFGS-B, on

* quadratics ``0.5 x'Hx - b'x`` with condition number kappa = 1e2 ... 1e6 (n = 200, log-spaced spectrum),
* L2-regularised logistic regression on scikit-learn's breast-cancer data (standardised),
* L1-regularised logistic regression on the same data (L-BFGS-B through the split w = u - v, u, v >= 0),
* lasso on a synthetic sparse-recovery problem (250 x 1000 Gaussian design, 20 non-zeros, lam = 1% of
  lam_max).

The gap is (F(x_k) - F*)/(F(x_0) - F*) with F* from a high-accuracy solve. Prints a table, writes
``table.md``, ``results.json`` and ``convergence.png`` (gap vs iteration, log scale) under ``--out``.

``--overhead`` instead measures (1) the solver's wall time against the cost of the evaluations it made on a
20000 x 500 float64 logistic regression, and (2) one batched call on 1000 small lasso problems against a Python
loop of ``minimize`` over them.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from nesterov.bench.convex_overhead import run_overhead
from nesterov.bench.convex_table import run_convergence, write_outputs

__all__ = ["check_args", "main"]


def check_args(args) -> str | None:
    """The first bad argument, as one line naming it, or None."""
    if args.gap >= 1:
        return (f"--gap must be in (0, 1): the relative gap (F(x) - F*)/(F(x0) - F*) is 1 at the start, so "
                f"{args.gap:g} counts every method as solved at iteration 0")
    if not args.gap > 0:
        return f"--gap must be in (0, 1); got {args.gap:g}"
    if not args.tol > 0:
        return f"--tol must be > 0; got {args.tol:g}"
    for name in ("max_iter", "max_iter_gd", "rows", "cols", "overhead_iters", "batch", "loop", "threads",
                 "repeat"):
        if getattr(args, name) < 1:
            return f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}"
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="nesterov bench convex", description=__doc__.replace("``", ""),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench-convex/", help="output folder (default runs/bench-convex/)")
    ap.add_argument("--gap", type=float, default=1e-8,
                    help="relative objective gap that counts as solved, in (0, 1): 1 at the start (default 1e-8)")
    ap.add_argument("--max-iter", type=int, default=20_000, help="iteration cap for nag, nag+restart, L-BFGS-B")
    ap.add_argument("--max-iter-gd", type=int, default=5_000, help="iteration cap for gd")
    ap.add_argument("--quick", action="store_true", help="four problems only")
    ap.add_argument("--overhead", action="store_true",
                    help="measure solver overhead (20000x500 logistic) and batched speed-up instead")
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--cols", type=int, default=500)
    ap.add_argument("--tol", type=float, default=1e-6, help="--overhead: minimize tol")
    ap.add_argument("--overhead-iters", type=int, default=5_000, help="--overhead: max_iter")
    ap.add_argument("--repeat", type=int, default=3, help="--overhead: solver runs (best is reported)")
    ap.add_argument("--batch", type=int, default=1000, help="--overhead: number of batched problems")
    ap.add_argument("--loop", type=int, default=1000, help="--overhead: problems timed in the Python loop")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: on a shared 2-core machine two OpenMP threads made "
                         "the batched solve 15x slower; L-BFGS-B gets one BLAS thread likewise)")
    args = ap.parse_args(argv)
    error = check_args(args)
    if error:
        print(f"nesterov bench convex: error: {error}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPUs")
    if args.overhead:
        run_overhead(args)
        return 0
    problems, results = run_convergence(args)
    write_outputs(args, problems, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
