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
import json
import math
import os
import statistics
import sys
import time

import torch

F64 = torch.float64


# ---------------------------------------------------------------------------------------------------------
# problems: each returns dict(name, fun, x0, prox, fstar, smooth_np or split_np for scipy)
# ---------------------------------------------------------------------------------------------------------
def _quadratic(kappa, n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    lam = torch.logspace(0, -math.log10(kappa), n, dtype=F64)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    H = (Q * lam) @ Q.T
    xstar = torch.randn(n, generator=g, dtype=F64)
    b = H @ xstar

    def fun(x):
        return 0.5 * x @ (H @ x) - b @ x

    return dict(name=f"quadratic kappa=1e{round(math.log10(kappa))}", fun=fun, x0=torch.zeros(n, dtype=F64),
                prox=None, fstar=float(fun(xstar)), l1=None)


def _breast_cancer():
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    A = torch.cat([torch.tensor(X, dtype=F64), torch.ones(X.shape[0], 1, dtype=F64)], 1)   # + intercept
    return A, torch.tensor(2.0 * y - 1, dtype=F64)


def _logistic_l2(lam=1e-3):
    A, y = _breast_cancer()
    d = A.shape[1]
    mask = torch.ones(d, dtype=F64)
    mask[-1] = 0    # intercept unpenalised

    def fun(w):
        return torch.nn.functional.softplus(-y * (A @ w)).mean() + 0.5 * lam * (mask * w * w).sum()

    return dict(name=f"L2-logistic breast-cancer (lam={lam:g})", fun=fun, x0=torch.zeros(d, dtype=F64),
                prox=None, fstar=None, l1=None)


def _logistic_l1(lam=0.02):
    from . import prox as P

    A, y = _breast_cancer()
    d = A.shape[1]
    weights = torch.full((d,), lam, dtype=F64)
    weights[-1] = 0

    def fun(w):
        return torch.nn.functional.softplus(-y * (A @ w)).mean()

    return dict(name=f"L1-logistic breast-cancer (lam={lam:g})", fun=fun, x0=torch.zeros(d, dtype=F64),
                prox=P.l1(weights), fstar=None, l1=weights)


def _lasso(m=250, n=1000, k=20, seed=0):
    from . import prox as P

    g = torch.Generator().manual_seed(seed)
    A = torch.randn(m, n, generator=g, dtype=F64) / math.sqrt(m)
    xtrue = torch.zeros(n, dtype=F64)
    idx = torch.randperm(n, generator=g)[:k]
    xtrue[idx] = torch.randn(k, generator=g, dtype=F64).sign() * (1 + torch.rand(k, generator=g, dtype=F64))
    b = A @ xtrue + 0.01 * torch.randn(m, generator=g, dtype=F64)
    lam = 0.01 * float((A.T @ b).abs().max())   # 1% of the smallest lam giving x = 0

    def fun(x):
        r = A @ x - b
        return 0.5 * (r @ r)

    return dict(name=f"lasso {m}x{n}, {k}-sparse", fun=fun, x0=torch.zeros(n, dtype=F64), prox=P.l1(lam),
                fstar=None, l1=torch.full((n,), lam, dtype=F64), xtrue=xtrue)


# ---------------------------------------------------------------------------------------------------------
# runners: each returns dict(iters, seconds, curve) where curve is the list of relative gaps per iteration
# ---------------------------------------------------------------------------------------------------------
def _objective(problem, x):
    with torch.no_grad():
        v = float(problem["fun"](x))
        if problem["prox"] is not None:
            v += float(problem["prox"].value(x))
    return v


def _run_ours(problem, method, restart, gap, max_iter, fstar):
    import nesterov

    F0 = _objective(problem, problem["x0"])
    scale = F0 - fstar
    curve, times = [1.0], [0.0]
    state = {}

    def cb(inter):
        curve.append((float(inter.fun) - fstar) / scale)
        times.append(time.perf_counter() - state["t0"])
        return curve[-1] <= gap

    state["t0"] = time.perf_counter()
    r = nesterov.minimize(problem["fun"], problem["x0"], method=method, restart=restart, prox=problem["prox"],
                          tol=0, max_iter=max_iter, callback=cb)
    return _summary(curve, times, gap, r.nfev, r.ngev)


def _one_blas_thread():
    """scipy's L-BFGS-B calls OpenBLAS on small vectors; with OpenBLAS threads next to torch's OpenMP threads
    each call took ~9 ms instead of ~0.1 ms on the 2-core bench machine. One BLAS thread is the fair setting."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _run_lbfgsb(problem, gap, max_iter, fstar):
    import numpy as np
    from scipy.optimize import minimize as sp_minimize

    fun, x0 = problem["fun"], problem["x0"]
    n = x0.numel()
    l1 = problem["l1"]
    counts = {"nfev": 0}

    def fg_torch(x):
        counts["nfev"] += 1
        xt = torch.from_numpy(x).requires_grad_(True)
        v = fun(xt)
        (g,) = torch.autograd.grad(v, xt)
        return float(v.detach()), g.numpy()

    if l1 is None:
        obj, z0, bounds = fg_torch, x0.numpy().copy(), None
    else:   # w = u - v, u, v >= 0: smooth with bounds, the usual way to hand an L1 problem to L-BFGS-B
        lw = l1.numpy()

        def obj(uv):
            v, g = fg_torch(uv[:n] - uv[n:])
            return v + float(lw @ (uv[:n] + uv[n:])), np.concatenate([g + lw, -g + lw])

        x0n = x0.numpy()
        z0, bounds = np.concatenate([np.maximum(x0n, 0), np.maximum(-x0n, 0)]), [(0, None)] * (2 * n)
    F0 = _objective(problem, x0)
    scale = F0 - fstar
    curve, times = [1.0], [0.0]
    t0 = time.perf_counter()

    def cb(intermediate_result):
        curve.append((float(intermediate_result.fun) - fstar) / scale)
        times.append(time.perf_counter() - t0)
        if curve[-1] <= gap:
            raise StopIteration

    with _one_blas_thread():
        sp_minimize(obj, z0, jac=True, method="L-BFGS-B", bounds=bounds, callback=cb,
                    options=dict(maxiter=max_iter, ftol=0.0, gtol=0.0, maxfun=10 * max_iter))
    return _summary(curve, times, gap, counts["nfev"], counts["nfev"])


def _summary(curve, times, gap, nfev, ngev):
    hit = next((k for k, v in enumerate(curve) if v <= gap), None)
    return dict(iters=hit, seconds=times[hit] if hit is not None else None, curve=curve, nfev=nfev, ngev=ngev,
                last_gap=curve[-1], ran=len(curve) - 1)


def _reference_fstar(problem):
    """F* by nag + restart at a tight tolerance (gradient-mapping norm 1e-11)."""
    import nesterov

    r = nesterov.minimize(problem["fun"], problem["x0"], prox=problem["prox"], tol=1e-11, max_iter=200_000)
    return r.fun


# ---------------------------------------------------------------------------------------------------------
# the convergence table
# ---------------------------------------------------------------------------------------------------------
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
    problems = [_quadratic(10.0 ** e) for e in range(2, 7)] + [_logistic_l2(), _logistic_l1(), _lasso()]
    if args.quick:
        problems = [problems[0], problems[2], problems[5], problems[6]]
    results = {}
    for p in problems:
        fstar = p["fstar"] if p["fstar"] is not None else _reference_fstar(p)
        p["fstar"] = fstar
        row = {}
        for label, method, restart in METHODS:
            cap = args.max_iter if label != "gd" else args.max_iter_gd
            if method is None:
                row[label] = _run_lbfgsb(p, args.gap, cap, fstar) if have_scipy else None
            else:
                row[label] = _run_ours(p, method, restart, args.gap, cap, fstar)
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


# ---------------------------------------------------------------------------------------------------------
# overhead and batched speed-up
# ---------------------------------------------------------------------------------------------------------
def _median_time(fn, repeat):
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


class _TimedFun:
    """Wraps fun and adds up the time spent in it during a solve: forward (the call) and backward (from the
    backward of the output to the backward of the input, marked by two identity autograd functions)."""

    def __init__(self, fun):
        self.fun, self.seconds = fun, 0.0
        owner = self

        class _Out(torch.autograd.Function):
            @staticmethod
            def forward(ctx, v):
                return v.view_as(v)

            @staticmethod
            def backward(ctx, g):
                owner._t_back = time.perf_counter()
                return g

        class _In(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x.view_as(x)

            @staticmethod
            def backward(ctx, g):
                owner.seconds += time.perf_counter() - owner._t_back
                return g

        self._in, self._out = _In, _Out

    def __call__(self, x):
        t0 = time.perf_counter()
        v = self._out.apply(self.fun(self._in.apply(x)))
        self.seconds += time.perf_counter() - t0
        return v


def run_overhead(args):
    import nesterov

    m, n = args.rows, args.cols
    g = torch.Generator().manual_seed(0)
    # features on scales from 0.1 to 3 make it ill-conditioned (a few hundred accelerated iterations)
    A = torch.randn(m, n, generator=g, dtype=F64) * torch.logspace(-1, 0.5, n, dtype=F64)
    w0 = torch.randn(n, generator=g, dtype=F64) / math.sqrt(n)
    y = torch.where(A @ w0 + 0.5 * torch.randn(m, generator=g, dtype=F64) > 0, 1.0, -1.0).to(F64)
    lam = 1e-4

    def fun(w):
        return torch.nn.functional.softplus(-y * (A @ w)).mean() + 0.5 * lam * (w @ w)

    x0 = torch.zeros(n, dtype=F64)

    def f_only():
        with torch.no_grad():
            fun(x0)

    def f_and_grad():
        xr = x0.clone().requires_grad_(True)
        v = fun(xr)
        torch.autograd.grad(v, xr)

    for _ in range(3):
        f_only(), f_and_grad()
    # the machine is shared: alternate evaluation timings and solver runs, keep the best of each
    t_fs, t_fgs, walls, inside = [], [], [], []
    for _ in range(args.repeat):
        t_fs.append(_median_time(f_only, 20))
        t_fgs.append(_median_time(f_and_grad, 20))
        timed = _TimedFun(fun)
        t0 = time.perf_counter()
        r = nesterov.minimize(timed, x0, tol=args.tol, max_iter=args.overhead_iters)
        walls.append(time.perf_counter() - t0)
        inside.append(timed.seconds)
    t_fs.append(_median_time(f_only, 20))
    t_fgs.append(_median_time(f_and_grad, 20))
    t_f, t_fg = min(t_fs), min(t_fgs)
    best = min(range(args.repeat), key=lambda i: walls[i] / inside[i])
    wall = min(walls)
    strict = (r.nfev - r.ngev) * t_f + r.ngev * t_fg        # every call costs f, those with a gradient f+grad
    literal = r.nfev * t_f + r.ngev * t_fg                    # the formula (counts the f+grad calls twice)
    print(f"logistic regression {m}x{n}, float64, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"  one f: {t_f * 1e3:.2f} ms   one f+grad: {t_fg * 1e3:.2f} ms   (best of {args.repeat + 1} medians of 20; "
          f"solver wall: best of {args.repeat} runs, all: {', '.join(f'{w:.2f}' for w in walls)} s)")
    print(f"  minimize (nag + gradient restart, backtracking, tol={args.tol:g}): nit={r.nit} nfev={r.nfev} "
          f"ngev={r.ngev} status={r.status} ({r.message}); wall {wall:.2f} s")
    print(f"  wall / ((nfev-ngev)*t_f + ngev*t_fg) = {wall / strict:.3f}   (evaluations alone: {strict:.2f} s)")
    print(f"  measured inside the same runs (forward + backward time of fun, timed in place): "
          + ", ".join(f"{w:.2f} s wall / {e:.2f} s evaluating = {w / e:.3f}" for w, e in zip(walls, inside))
          + f"; solver's own time {walls[best] - inside[best]:.2f} s over {r.nit} iterations "
          f"({(walls[best] - inside[best]) / r.nit * 1e3:.2f} ms per iteration)")
    print(f"  wall <= 1.3 * (nfev*t_f + ngev*t_fg) + 5 ms ?  {wall:.2f} <= {1.3 * literal + 0.005:.2f}: "
          f"{wall <= 1.3 * literal + 0.005}")
    out = dict(rows=m, cols=n, t_f=t_f, t_fg=t_fg, wall=wall, nit=r.nit, nfev=r.nfev, ngev=r.ngev,
               ratio_strict=wall / strict, ratio_literal=wall / literal, walls=walls, inside=inside)
    try:
        import numpy as np
        from scipy.optimize import minimize as sp_minimize

        def fg_np(x):
            xt = torch.from_numpy(x).requires_grad_(True)
            v = fun(xt)
            (gr,) = torch.autograd.grad(v, xt)
            return float(v.detach()), gr.numpy()

        t0 = time.perf_counter()
        with _one_blas_thread():
            sr = sp_minimize(fg_np, np.zeros(n), jac=True, method="L-BFGS-B", options=dict(maxiter=10000))
        sw = time.perf_counter() - t0
        print(f"  scipy L-BFGS-B (defaults): nit={sr.nit} nfev={sr.nfev} {sw:.2f} s, F={sr.fun:.10g} "
              f"(ours F={r.fun:.10g})")
        out.update(lbfgsb_nit=int(sr.nit), lbfgsb_seconds=sw)
    except ImportError:
        print("  (scipy not installed: no L-BFGS-B comparison)")

    # batched vs loop
    B, mm, d = args.batch, 20, 10
    A3 = torch.randn(B, mm, d, generator=g, dtype=F64)
    wt = torch.randn(B, d, generator=g, dtype=F64) * (torch.rand(B, d, generator=g, dtype=F64) < 0.4)
    b3 = (A3 @ wt.unsqueeze(-1)).squeeze(-1) + 0.1 * torch.randn(B, mm, generator=g, dtype=F64)
    op = nesterov.prox.l1(0.05)

    def fb(X):
        return 0.5 * ((A3 @ X.unsqueeze(-1)).squeeze(-1) - b3).pow(2).mean(-1)

    t0 = time.perf_counter()
    rb = nesterov.minimize(fb, torch.zeros(B, d, dtype=F64), prox=op, batched=True, tol=1e-8)
    tb = time.perf_counter() - t0
    nloop = min(args.loop, B)
    t0 = time.perf_counter()
    err = 0.0
    for i in range(nloop):
        Ai, bi = A3[i], b3[i]
        ri = nesterov.minimize(lambda x: 0.5 * ((Ai @ x - bi) ** 2).mean(), torch.zeros(d, dtype=F64), prox=op,
                               tol=1e-8)
        err = max(err, float((ri.x - rb.x[i]).abs().max()))
    tl = time.perf_counter() - t0
    tl_all = tl * B / nloop
    note = "" if nloop == B else f" (loop timed on {nloop} problems, scaled x{B / nloop:g})"
    print(f"batched lasso: {B} problems of 20x10, tol 1e-8: one batched call {tb:.2f} s "
          f"(max nit {int(rb.nit.max())}, all converged: {bool(rb.success.all())}); Python loop of minimize "
          f"{tl_all:.2f} s{note}; speed-up {tl_all / tb:.1f}x; max |x_batched - x_loop| = {err:.1e}")
    out.update(batch=B, batched_seconds=tb, loop_seconds=tl_all, loop_measured=nloop, speedup=tl_all / tb,
               max_diff=err)
    try:   # what a user would otherwise write: a loop of L-BFGS-B on the split form, objective in numpy
        import numpy as np
        from scipy.optimize import minimize as sp_minimize

        An, bn = A3.numpy(), b3.numpy()
        t0 = time.perf_counter()
        err_s = 0.0
        with _one_blas_thread():
            for i in range(nloop):
                Ai, bi = An[i], bn[i]

                def obj(uv, Ai=Ai, bi=bi):
                    r = Ai @ (uv[:d] - uv[d:]) - bi
                    gr = Ai.T @ r / mm
                    return 0.5 * (r @ r) / mm + 0.05 * uv.sum(), np.concatenate([gr + 0.05, -gr + 0.05])

                so = sp_minimize(obj, np.zeros(2 * d), jac=True, method="L-BFGS-B", bounds=[(0, None)] * (2 * d),
                                 options=dict(ftol=1e-15, gtol=1e-10))
                err_s = max(err_s, float(np.abs(so.x[:d] - so.x[d:] - rb.x[i].numpy()).max()))
        ts = (time.perf_counter() - t0) * B / nloop
        print(f"  loop of scipy L-BFGS-B (split form, numpy objective): {ts:.2f} s{note}; batched call is "
              f"{ts / tb:.1f}x faster; max |x_batched - x_lbfgsb| = {err_s:.1e}")
        out.update(lbfgsb_loop_seconds=ts, lbfgsb_loop_max_diff=err_s)
    except ImportError:
        pass
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "overhead.json"), "w") as fh:
        json.dump(out, fh, indent=1)
    return out


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
