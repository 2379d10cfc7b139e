"""The methods of ``nesterov bench convex`` run on one problem: ours (``nesterov.minimize``), scipy's L-BFGS-B,
and the high-accuracy solve that gives F* where it has no closed form.  Each run records the relative gap
(F(x_k) - F*)/(F(x_0) - F*) per iteration and stops once it reaches the target gap; it returns the iterations
and seconds to that gap (None: not reached), the gap curve, and the evaluation counts.
"""

from __future__ import annotations

import time

import torch

__all__ = ["objective", "one_blas_thread", "reference_fstar", "run_lbfgsb", "run_ours"]


def objective(problem, x):
    with torch.no_grad():
        v = float(problem["fun"](x))
        if problem["prox"] is not None:
            v += float(problem["prox"].value(x))
    return v


def run_ours(problem, method, restart, gap, max_iter, fstar):
    import nesterov

    F0 = objective(problem, problem["x0"])
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


def one_blas_thread():
    """scipy's L-BFGS-B calls OpenBLAS on small vectors; with OpenBLAS threads next to torch's OpenMP threads
    each call took ~9 ms instead of ~0.1 ms on the 2-core bench machine. One BLAS thread is the fair setting."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def run_lbfgsb(problem, gap, max_iter, fstar):
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
    F0 = objective(problem, x0)
    scale = F0 - fstar
    curve, times = [1.0], [0.0]
    t0 = time.perf_counter()

    def cb(intermediate_result):
        curve.append((float(intermediate_result.fun) - fstar) / scale)
        times.append(time.perf_counter() - t0)
        if curve[-1] <= gap:
            raise StopIteration

    with one_blas_thread():
        sp_minimize(obj, z0, jac=True, method="L-BFGS-B", bounds=bounds, callback=cb,
                    options=dict(maxiter=max_iter, ftol=0.0, gtol=0.0, maxfun=10 * max_iter))
    return _summary(curve, times, gap, counts["nfev"], counts["nfev"])


def _summary(curve, times, gap, nfev, ngev):
    hit = next((k for k, v in enumerate(curve) if v <= gap), None)
    return dict(iters=hit, seconds=times[hit] if hit is not None else None, curve=curve, nfev=nfev, ngev=ngev,
                last_gap=curve[-1], ran=len(curve) - 1)


def reference_fstar(problem):
    """F* by nag + restart at a tight tolerance (gradient-mapping norm 1e-11)."""
    import nesterov

    r = nesterov.minimize(problem["fun"], problem["x0"], prox=problem["prox"], tol=1e-11, max_iter=200_000)
    return r.fun
