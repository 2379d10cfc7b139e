"""``nesterov bench convex --overhead``: the solver's wall time against the cost of the evaluations it made
(20000 x 500 float64 logistic regression), and one batched call on many small lasso problems against a Python
loop of ``minimize`` (and of scipy's L-BFGS-B) over them.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time

import torch

from nesterov.bench.convex_methods import one_blas_thread
from nesterov.bench.convex_problems import F64

__all__ = ["run_overhead"]


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
    print("  measured inside the same runs (forward + backward time of fun, timed in place): "
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
        with one_blas_thread():
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
        with one_blas_thread():
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
