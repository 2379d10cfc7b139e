r"""Accelerated proximal gradient: ``nesterov.minimize``.

Problem: :math:`\min_x F(x) = f(x) + g(x)` with ``f`` convex and L-smooth (``fun``, gradients by autograd or
``grad``) and ``g`` convex with a cheap proximal operator (``prox``, see :mod:`nesterov.prox`).

One iteration from :math:`x_k` (previous iterate :math:`x_{k-1}`, step :math:`s_{k+1} = 1/L_{k+1}`):

.. math::
    t_{k+1} &= \tfrac12\bigl(1 + \sqrt{1 + 4\,\theta_k t_k^2}\bigr), \qquad \theta_k = s_k / s_{k+1} \\
    y       &= x_k + \tfrac{t_k - 1}{t_{k+1}} (x_k - x_{k-1}) \\
    x_{k+1} &= \operatorname{prox}_{s_{k+1} g}\bigl(y - s_{k+1}\nabla f(y)\bigr)

with :math:`t_0 = 0` (so :math:`t_1 = 1`, :math:`y_1 = x_0`). With a constant step (``L`` given) this is FISTA
(Beck & Teboulle 2009; Nesterov 1983 when ``g = 0``): :math:`F(x_k) - F^\star \le 2L\lVert x_0 - x^\star\rVert^2
/ (k+1)^2`.

``method="nag", mu > 0``: the strongly convex momentum :math:`y = x_k + \frac{1 - \sqrt{\mu s}}{1 + \sqrt{\mu s}}
(x_k - x_{k-1})`, i.e. :math:`(\sqrt\kappa - 1)/(\sqrt\kappa + 1)` with :math:`\kappa = L/\mu`, giving the
linear rate :math:`(1 - 1/\sqrt\kappa)^k`.

``method="mfista"`` (Beck & Teboulle 2009, monotone FISTA): :math:`z = \operatorname{prox}(\cdot)` as above,
:math:`x_{k+1} = z` if :math:`F(z) \le F(x_k)` else :math:`x_k`, and
:math:`y = x_k + \frac{t_k}{t_{k+1}}(z_k - x_k) + \frac{t_k - 1}{t_{k+1}}(x_k - x_{k-1})`.

``method="gd"``: proximal gradient, :math:`y = x_k`.

Backtracking (``L=None``): each iteration first tries a step 1/0.9 times the last one, and halves it until

.. math::  f(x_{k+1}) \le f(y) + \langle\nabla f(y), x_{k+1} - y\rangle + \tfrac{1}{2 s_{k+1}}\lVert x_{k+1} - y\rVert^2 .

(Near a solution f(x_{k+1}) - f(y) sinks to rounding level; when the two values agree to a relative
:math:`\varepsilon^{2/3}` the test becomes :math:`\langle\nabla f(x_{k+1}) - \nabla f(y), x_{k+1} - y\rangle \le
\lVert x_{k+1} - y\rVert^2 / s_{k+1}`, the same condition for a quadratic, at one more gradient.)

Because the step may grow, :math:`\theta_k = s_k/s_{k+1}` enters the t-sequence so that
:math:`s_{k+1}(t_{k+1}^2 - t_{k+1}) = s_k t_k^2` (as in TFOCS; Scheinberg, Goldfarb & Bai 2014). Then with
:math:`A_k = s_k t_k^2`, :math:`F(x_k) - F^\star \le \lVert x_0 - x^\star\rVert^2 / (2A_k)` and
:math:`\sqrt{A_k} \ge \sqrt{s_1} + \tfrac12\sum_{i=2}^k \sqrt{s_i}`: the O(1/k^2) bound with a mean of the
accepted steps in place of 1/L.

Adaptive restart (O'Donoghue & Candès 2015): after a step, if ``"gradient"``:
:math:`\langle y - x_{k+1}, x_{k+1} - x_k\rangle > 0`, or ``"function"``: :math:`F(x_{k+1}) > F(x_k)`, the
momentum is reset (:math:`t_{k+1} = 1`, :math:`x_k := x_{k+1}`), which recovers the linear rate of a strongly
convex problem without knowing :math:`\mu`.

Stopping: the gradient-mapping norm :math:`\lVert y - x_{k+1}\rVert / s_{k+1} \le` ``tol`` (equal to
:math:`\lVert\nabla f(y)\rVert` when ``g = 0``), or ``max_iter``, or the callback.

Host synchronisation: every iteration is tensor work; the host reads one flag per iteration on CPU (every 8
iterations on other devices; problems that converged in between are frozen in-tensor, so the results do not
depend on this). Backtracking reads one flag per trial step.
"""

from __future__ import annotations

import math

import torch

from .linesearch import GROW, MAX_BACKTRACK, SHRINK, ambiguity_tol, initial_step, pdot, sufficient_decrease
from .oracle import Oracle
from .prox import as_prox
from .result import OptimizeResult, assemble
from .validate import check_positive_or_tensor, validate

__all__ = ["minimize"]

def _sync_every(device: torch.device) -> int:
    """Iterations between host reads of the 'any problem still running' flag: every one on CPU (free there),
    every 8 elsewhere; stopped problems are frozen in-tensor meanwhile, so results do not depend on it."""
    return 1 if device.type == "cpu" else 8


def minimize(fun, x0, *, method="nag", prox=None, grad=None, L=None, mu=0.0, restart="gradient",
             line_search=True, tol=1e-6, max_iter=10_000, callback=None, batched=False):
    r"""Minimise :math:`F(x) = f(x) + g(x)` by an accelerated proximal gradient method.

    Parameters
    ----------
    fun : callable
        ``fun(x)`` -> scalar tensor :math:`f(x)`, convex and smooth, differentiable by autograd (or give
        ``grad``). With ``batched=True``, ``x`` has shape ``(B, ...)`` and ``fun`` returns shape ``(B,)``, one
        value per independent problem.
    x0 : tensor
        Starting point (float32 or float64, any device); the result has its shape, dtype and device.
    method : ``"nag"`` | ``"gd"`` | ``"mfista"``
        FISTA / Nesterov's method, proximal gradient, or monotone FISTA.
    prox : None | :mod:`nesterov.prox` operator | callable
        The non-smooth part ``g`` through its proximal operator (see :mod:`nesterov.prox` for writing your own).
        ``None``: ``g = 0``.
    grad : callable, optional
        ``grad(x)`` -> :math:`\nabla f(x)` with the shape of ``x``; replaces autograd.
    L : float or tensor, optional
        Lipschitz constant of :math:`\nabla f`; the step is then fixed at ``1/L`` (no line search). ``None``:
        estimate it by backtracking (needs ``line_search=True``). Batched: a number or one per problem.
    mu : float or tensor
        Strong-convexity modulus (``0 <= mu <= L``); ``mu > 0`` gives ``"nag"`` the constant momentum
        :math:`(\sqrt\kappa-1)/(\sqrt\kappa+1)`. Ignored by ``"gd"`` and ``"mfista"``.
    restart : ``"gradient"`` | ``"function"`` | None
        Adaptive momentum restart (O'Donoghue & Candès); ignored by ``"gd"``.
    line_search : bool
        Backtracking when ``L`` is None (the step may also grow, see the module docstring).
    tol : float
        Stop a problem when its gradient-mapping norm :math:`\lVert y - x^+\rVert/s \le` ``tol``; 0 runs all
        ``max_iter`` iterations.
    max_iter : int
        Maximum number of iterations.
    callback : callable, optional
        ``callback(intermediate)`` after every iteration with an :class:`OptimizeResult` holding ``x``, ``fun``
        (tensors, not copied: do not modify), ``nit``; returning True or raising StopIteration stops the run
        (status 3).
    batched : bool
        Solve ``B = x0.shape[0]`` independent problems at once, each with its own step, momentum, restarts and
        stopping (all tensor operations; no Python loop over problems).

    Returns
    -------
    OptimizeResult
        ``x, fun, nit, nfev, ngev, success, status, message, L, history`` (see
        :class:`nesterov.OptimizeResult`). When batched, ``fun, nit, success, status, L`` are tensors of
        shape ``(B,)``, ``history`` lists hold one list of B values per iterate up to the largest ``nit`` (a
        problem that has stopped repeats its last ``fun`` and ``step``, with ``grad_map`` NaN), and
        ``nfev``/``ngev`` count batched calls. A problem whose objective or gradient turns non-finite stops at its last finite
        iterate with ``success=False`` (status 2).
    """
    x0 = validate(fun, x0, method, grad, L, mu, restart, line_search, tol, max_iter, callback, batched)
    op = as_prox(prox)
    if (restart == "function" or method == "mfista") and not op.has_value:
        what = "restart='function'" if restart == "function" else "method='mfista'"
        raise ValueError(f"{what} compares objective values, but prox has no value function g(x); wrap it "
                         "with nesterov.prox.custom(prox_fn, value_fn)")
    dtype, device = x0.dtype, x0.device
    X0 = x0 if batched else x0.unsqueeze(0)
    B = X0.shape[0]
    bshape = (B,) + (1,) * (X0.dim() - 1)   # per-problem scalars broadcast against X
    max_step = float(torch.finfo(dtype).max) ** 0.25

    if L is not None:
        Lt = check_positive_or_tensor(L, "L", B, dtype, device, allow_zero=False)
    else:
        Lt = None
    mut = check_positive_or_tensor(mu, "mu", B, dtype, device, allow_zero=True)
    if Lt is not None and bool((mut > Lt).any()):
        raise ValueError(f"mu must be <= L (mu is a lower, L an upper curvature bound), got mu={mu!r}, L={L!r}")
    use_mu = method == "nag" and bool((mut > 0).any())
    use_restart = restart is not None and method != "gd"
    backtrack = Lt is None

    oracle = Oracle(fun, grad, op, batched=batched, B=B, bshape=bshape, dtype=dtype, device=device)
    value, value_grad, prox_apply, g_value = oracle.value, oracle.value_grad, oracle.prox, oracle.g_value

    # ---- initial point -----------------------------------------------------------------------------------
    fx0, gx0 = value_grad(X0, "x0")
    if not bool(torch.isfinite(fx0).all()):
        raise ValueError("fun(x0) is not finite: start from a point where the objective is defined")
    if not bool(torch.isfinite(gx0).all()):
        raise ValueError("the gradient of fun at x0 is not finite")
    F0 = fx0 + g_value(X0)

    if Lt is not None:
        step = 1.0 / Lt
    else:
        step = initial_step(value_grad, X0, gx0, bshape, max_step)
    step = step.clone()

    # ---- state -------------------------------------------------------------------------------------------
    X, Xprev, Z = X0, X0, X0
    Fx = F0
    t = torch.zeros(B, dtype=dtype, device=device)
    active = torch.ones(B, dtype=torch.bool, device=device)
    status = torch.full((B,), -1, dtype=torch.int64, device=device)
    nit = torch.zeros(B, dtype=torch.int64, device=device)
    nan_t = torch.full((B,), math.nan, dtype=dtype, device=device)
    hist = {"fun": [Fx], "grad_map": [nan_t], "step": [step.clone()],
            "restart": [torch.zeros(B, dtype=torch.bool, device=device)]}
    sync_every = _sync_every(device)
    cache_x = (fx0, gx0)   # f and grad f at x0 = y_1, reused by the first iteration
    tol_f = float(tol)

    def extrapolate(s):
        """y and t_{k+1} for trial steps s (shape (B,))."""
        if method == "gd":
            return X, t
        theta = step / s
        t_new = 0.5 * (1 + torch.sqrt(1 + 4 * theta * t * t))
        a = (t / t_new).reshape(bshape)
        b = (t - 1) / t_new
        if use_mu:   # problems with mu > 0: constant momentum (1 - sqrt(mu s)) / (1 + sqrt(mu s))
            q = torch.sqrt(torch.clamp(mut * s, max=1.0))
            b = torch.where(mut > 0, (1 - q) / (1 + q), b)
        b = b.reshape(bshape)
        if method == "mfista":
            return X + a * (Z - X) + b * (X - Xprev), t_new
        return X + b * (X - Xprev), t_new

    amb_tol = ambiguity_tol(dtype)

    k = 0
    for k in range(1, max_iter + 1):
        y_is_x = method == "gd" or k == 1
        s = torch.clamp(step * GROW, max=max_step) if backtrack else step
        # ---- trial steps (one unless backtracking rejects) ----------------------------------------------
        Y, t_new = extrapolate(s)
        if k == 1:
            fy, gy = cache_x
        else:
            fy, gy = value_grad(Y, f"iteration {k}")
        P = prox_apply(Y - s.reshape(bshape) * gy, s)
        fp = value(P, f"iteration {k}")
        if backtrack:
            for _ in range(MAX_BACKTRACK):
                ok, any_bad = sufficient_decrease(value_grad, Y, P, fy, gy, fp, s, active, k)
                if not any_bad:
                    break
                bad = active & ~ok
                s = torch.where(bad, s * SHRINK, s)
                Y2, t2 = extrapolate(s)
                if y_is_x:
                    fy2, gy2 = fy, gy
                else:
                    fy2, gy2 = value_grad(Y2, f"iteration {k} (backtracking)")
                P2 = prox_apply(Y2 - s.reshape(bshape) * gy2, s)
                fp2 = value(P2, f"iteration {k} (backtracking)")
                bb = bad.reshape(bshape)
                Y, P = torch.where(bb, Y2, Y), torch.where(bb, P2, P)
                gy = torch.where(bb, gy2, gy)
                fy, fp, t_new = torch.where(bad, fy2, fy), torch.where(bad, fp2, fp), torch.where(bad, t2, t_new)
            else:
                ok, _ = sufficient_decrease(value_grad, Y, P, fy, gy, fp, s, active, k)
            ls_failed = active & ~ok & torch.isfinite(fy)
        else:
            ls_failed = torch.zeros_like(active)

        Fp = fp + g_value(P)
        gmap = (Y - P).reshape(B, -1).norm(dim=1) / s
        finite = torch.isfinite(fy) & torch.isfinite(gy).reshape(B, -1).all(1) & torch.isfinite(fp) \
            & ~torch.isnan(Fp) & torch.isfinite(gmap)
        nonfinite = active & ~finite
        ls_failed = ls_failed & finite
        upd = active & finite & ~ls_failed

        # objective comparisons ignore differences at rounding level of F (else a monotone method stalls there)
        f_noise = amb_tol * torch.maximum(Fp.abs(), Fx.abs())
        if method == "mfista":
            better = Fp <= Fx + f_noise
            Xnew = torch.where(better.reshape(bshape), P, X)
            Fnew = torch.where(better, Fp, Fx)
        else:
            Xnew, Fnew = P, Fp
        if use_restart:
            if restart == "gradient":
                rflag = pdot(Y - P, P - X) > 0
            else:
                rflag = Fp > Fx + f_noise
            rflag = rflag & upd
        else:
            rflag = torch.zeros_like(upd)

        u = upd.reshape(bshape)
        r = rflag.reshape(bshape)
        Xprev = torch.where(u, torch.where(r, Xnew, X), Xprev)
        if method == "mfista":   # z_k, the last prox point (nag and gd never read it)
            Z = torch.where(u, torch.where(r, Xnew, P), Z)
        X = torch.where(u, Xnew, X)
        Fx = torch.where(upd, Fnew, Fx)
        t = torch.where(upd, torch.where(rflag, torch.ones_like(t_new), t_new), t)
        step = torch.where(upd, s, step)
        nit = nit + upd.to(nit.dtype)

        converged = upd & (gmap <= tol_f) if tol_f > 0 else torch.zeros_like(upd)
        status = torch.where(converged, 0, status)
        status = torch.where(nonfinite, 2, status)
        status = torch.where(ls_failed, 4, status)
        active = active & ~converged & ~nonfinite & ~ls_failed

        hist["fun"].append(Fx)
        hist["grad_map"].append(torch.where(upd, gmap, nan_t))
        hist["step"].append(step)
        hist["restart"].append(rflag)

        if callback is not None and bool(upd.any()):
            inter = OptimizeResult(x=X if batched else X[0], fun=Fx if batched else Fx[0], nit=k)
            try:
                stop = callback(inter)
            except StopIteration:
                stop = True
            if stop is not None and bool(stop):
                status = torch.where(active, 3, status)
                active = torch.zeros_like(active)
                break
        if k % sync_every == 0 and not bool(active.any()):
            break

    status = torch.where(status < 0, 1, status)   # still active at the end: max_iter
    n_hist = k + 1 if max_iter > 0 else 1
    return assemble(X, Fx, nit, status, step, hist, n_hist, oracle.nfev, oracle.ngev, batched)
