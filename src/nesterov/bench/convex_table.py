"""The convergence table of ``nesterov bench convex``: every method on every problem, to a relative gap;
printed, and written as ``table.md``, ``results.json`` and ``convergence.png`` under ``--out``.
"""

from __future__ import annotations

import json
import math
import os
import sys

import torch

from nesterov.bench.convex_methods import reference_fstar, run_lbfgsb, run_ours
from nesterov.bench.convex_problems import lasso, logistic_l1, logistic_l2, quadratic

__all__ = ["METHODS", "run_convergence", "write_outputs"]


METHODS = [("gd", "gd", None), ("nag", "nag", None), ("nag+restart", "nag", "gradient"), ("L-BFGS-B", None, None)]


def _fmt_cell(res, cap):
    if res is None:
        return "n/a"
    if res["iters"] is None:
        return f">{res['ran']} (gap {res['last_gap']:.1e})"
    return f"{res['iters']} / {res['seconds']:.3f} s"


def run_convergence(args):
    try:
        import scipy  # noqa: F401
        have_scipy = True
    except ImportError:
        have_scipy = False
        print("scipy is not installed: the L-BFGS-B column is skipped (pip install scipy to include it)",
              file=sys.stderr)
    problems = [quadratic(10.0 ** e) for e in range(2, 7)] + [logistic_l2(), logistic_l1(), lasso()]
    if args.quick:
        problems = [problems[0], problems[2], problems[5], problems[6]]
    results = {}
    for p in problems:
        fstar = p["fstar"] if p["fstar"] is not None else reference_fstar(p)
        p["fstar"] = fstar
        row = {}
        for label, method, restart in METHODS:
            cap = args.max_iter if label != "gd" else args.max_iter_gd
            if method is None:
                row[label] = run_lbfgsb(p, args.gap, cap, fstar) if have_scipy else None
            else:
                row[label] = run_ours(p, method, restart, args.gap, cap, fstar)
        results[p["name"]] = row
        cells = " | ".join(f"{lab}: {_fmt_cell(row[lab], 0)}" for lab, _, _ in METHODS)
        print(f"{p['name']}: {cells}", flush=True)
    return problems, results


def write_outputs(args, problems, results):
    os.makedirs(args.out, exist_ok=True)
    header = ("| problem | " + " | ".join(lab for lab, _, _ in METHODS) + " |\n|---|"
              + "---|" * len(METHODS) + "\n")
    rows = "".join(f"| {name} | " + " | ".join(_fmt_cell(row[lab], 0) for lab, _, _ in METHODS) + " |\n"
                   for name, row in results.items())
    table = (f"iterations / seconds to relative gap (F - F*)/(F0 - F*) <= {args.gap:g}; "
             f"'>N (gap g)': not reached in N iterations\n\n" + header + rows)
    print("\n" + table)
    with open(os.path.join(args.out, "table.md"), "w") as fh:
        fh.write(table)
    with open(os.path.join(args.out, "results.json"), "w") as fh:
        json.dump({"gap": args.gap, "torch": torch.__version__, "threads": torch.get_num_threads(),
                   "results": results}, fh)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return
    ncol = 4
    nrow = math.ceil(len(results) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.4 * nrow), squeeze=False)
    for ax, (name, row) in zip(axes.flat, results.items()):
        for lab, _, _ in METHODS:
            res = row[lab]
            if res is None:
                continue
            curve = [max(v, 1e-17) for v in res["curve"]]
            ax.semilogy(range(len(curve)), curve, label=lab, lw=1.2)
        ax.axhline(args.gap, color="grey", lw=0.6, ls=":")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("iteration")
        ax.set_ylabel("(F - F*) / (F0 - F*)")
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(left=0)
    for ax in list(axes.flat)[len(results):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(args.out, "convergence.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}, table.md, results.json")
