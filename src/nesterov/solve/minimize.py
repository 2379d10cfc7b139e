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
import numbers

import torch

from .prox import _Custom, as_prox
from .result import STATUS, OptimizeResult

__all__ = ["minimize"]

_METHODS = ("nag", "gd", "mfista")
_RESTARTS = ("gradient", "function", None)
_GROW = 1 / 0.9        # step growth tried at the start of each backtracking iteration
_SHRINK = 0.5          # step factor on a failed sufficient-decrease test
_MAX_BACKTRACK = 60    # 0.5**60 ~ 1e-18: a line search that needs more has failed


def _sync_every(device: torch.device) -> int:
    """Iterations between host reads of the 'any problem still running' flag: every one on CPU (free there),
    every 8 elsewhere; stopped problems are frozen in-tensor meanwhile, so results do not depend on it."""
    return 1 if device.type == "cpu" else 8


def _check_positive_or_tensor(value, name, B, dtype, device, *, allow_zero):
    """A finite number (> 0, or >= 0 with allow_zero) or, when batched, a tensor of shape (B,)."""
    rel = ">= 0" if allow_zero else "> 0"
    if isinstance(value, torch.Tensor):
        if value.dim() > 1 or value.numel() not in (1, B):
            raise ValueError(f"{name} must be a number or a tensor of shape ({B},) (one per problem), "
                             f"got shape {tuple(value.shape)}")
        v = value.detach().to(device=device, dtype=dtype).reshape(-1).expand(B).clone()
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    else:
        if not math.isfinite(float(value)) or (float(value) < 0 if allow_zero else float(value) <= 0):
            raise ValueError(f"{name} must be finite and {rel}, got {value!r}")
        return torch.full((B,), float(value), dtype=dtype, device=device)
    bad = ~torch.isfinite(v) | ((v < 0) if allow_zero else (v <= 0))
    if bool(bad.any()):
        raise ValueError(f"{name} must be finite and {rel} for every problem")
    return v


def _validate(fun, x0, method, grad, L, mu, restart, line_search, tol, max_iter, callback, batched):
    if not callable(fun):
        raise TypeError(f"fun must be callable as fun(x) -> scalar tensor, got {type(fun).__name__}")
    if not isinstance(method, str) or method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if grad is not None and not callable(grad):
        raise TypeError(f"grad must be None or callable as grad(x) -> tensor, got {type(grad).__name__}")
    if restart not in _RESTARTS:
        raise ValueError(f"restart must be one of {_RESTARTS}, got {restart!r}")
    if not isinstance(line_search, bool):
        raise TypeError(f"line_search must be True or False, got {line_search!r}")
    if not isinstance(batched, bool):
        raise TypeError(f"batched must be True or False, got {batched!r}")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise TypeError(f"tol must be a real number >= 0, got {tol!r}")
    if not (float(tol) >= 0 and math.isfinite(float(tol))):
        raise ValueError(f"tol must be finite and >= 0, got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral):
        raise TypeError(f"max_iter must be an integer >= 0, got {max_iter!r}")
    if max_iter < 0:
        raise ValueError(f"max_iter must be >= 0, got {max_iter!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be None or callable, got {type(callback).__name__}")
    if L is None and not line_search:
        raise ValueError("L is None and line_search=False: give L (the Lipschitz constant of grad f) or "
                         "allow the backtracking line search")

    # x0: a floating tensor, finite
    if not isinstance(x0, torch.Tensor):
        try:
            x0 = torch.as_tensor(x0)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"x0 must be a tensor or array-like of numbers: {e}") from None
    x0 = x0.detach()
    if x0.is_complex():
        raise TypeError("x0 must be real; complex tensors are not supported")
    if not x0.is_floating_point():
        x0 = x0.to(torch.get_default_dtype())
    if x0.numel() == 0:
        raise ValueError(f"x0 is empty (shape {tuple(x0.shape)})")
    if batched and x0.dim() < 1:
        raise ValueError("batched=True needs x0 with a leading batch dimension, got a 0-d tensor")
    if not bool(torch.isfinite(x0).all()):
        raise ValueError("x0 contains NaN or inf")
    return x0.clone()


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
    x0 = _validate(fun, x0, method, grad, L, mu, restart, line_search, tol, max_iter, callback, batched)
    op = as_prox(prox)
    custom = isinstance(op, _Custom)
    if (restart == "function" or method == "mfista") and not op.has_value:
        what = "restart='function'" if restart == "function" else "method='mfista'"
        raise ValueError(f"{what} compares objective values, but prox has no value function g(x); wrap it "
                         "with nesterov.prox.custom(prox_fn, value_fn)")
    dtype, device = x0.dtype, x0.device
    X0 = x0 if batched else x0.unsqueeze(0)
    B = X0.shape[0]
    bshape = (B,) + (1,) * (X0.dim() - 1)   # per-problem scalars broadcast against X
    batch_dims = 1 if batched else 0
    tiny = torch.finfo(dtype).tiny
    eps = torch.finfo(dtype).eps
    max_step = float(torch.finfo(dtype).max) ** 0.25

    if L is not None:
        Lt = _check_positive_or_tensor(L, "L", B, dtype, device, allow_zero=False)
    else:
        Lt = None
    mut = _check_positive_or_tensor(mu, "mu", B, dtype, device, allow_zero=True)
    if Lt is not None and bool((mut > Lt).any()):
        raise ValueError(f"mu must be <= L (mu is a lower, L an upper curvature bound), got mu={mu!r}, L={L!r}")
    use_mu = method == "nag" and bool((mut > 0).any())
    use_restart = restart is not None and method != "gd"
    backtrack = Lt is None

    counts = {"nfev": 0, "ngev": 0}

    # ---- evaluation wrappers: everything inside works on batched X of shape (B, ...) -------------------
    def check_value(v, where):
        if not isinstance(v, torch.Tensor):
            if grad is not None and isinstance(v, numbers.Real):
                v = torch.tensor(float(v), dtype=dtype, device=device)
            else:
                raise TypeError(f"fun must return a tensor (autograd needs it), got {type(v).__name__} at {where}")
        if batched:
            if v.shape != (B,):
                raise ValueError(f"fun must return shape ({B},) (one value per problem) with batched=True, got "
                                 f"shape {tuple(v.shape)} at {where}")
        elif v.numel() != 1:
            raise ValueError(f"fun must return a scalar (one element), got shape {tuple(v.shape)} at {where}; "
                             "for many independent problems use batched=True")
        return v.reshape(B).to(dtype)

    def call_fun(X):
        return fun(X) if batched else fun(X[0])

    def value(X, where):
        counts["nfev"] += 1
        with torch.no_grad():
            return check_value(call_fun(X), where)

    def value_grad(X, where):
        counts["nfev"] += 1
        counts["ngev"] += 1
        if grad is None:
            Xr = X.detach().requires_grad_(True)
            with torch.enable_grad():
                v = call_fun(Xr)
                v = check_value(v, where)
                if not v.requires_grad:
                    raise TypeError("fun's output does not depend on x through autograd (did it leave torch, "
                                    "or run under no_grad?); pass grad= or keep fun differentiable")
                (G,) = torch.autograd.grad(v.sum(), Xr, allow_unused=True)
            if G is None:
                G = torch.zeros_like(X)
            return v.detach(), G.detach()
        with torch.no_grad():
            v = check_value(call_fun(X), where)
            G = grad(X) if batched else grad(X[0])
            if not isinstance(G, torch.Tensor):
                raise TypeError(f"grad must return a tensor, got {type(G).__name__}")
            G = G if batched else G.unsqueeze(0)
            if G.shape != X.shape:
                raise ValueError(f"grad must return the shape of x {tuple(X.shape[1 - batch_dims:])}, got "
                                 f"{tuple(G.shape[1 - batch_dims:])}")
        return v, G.to(dtype)

    def prox_apply(V, s):
        S = s.reshape(bshape)
        with torch.no_grad():
            if batched or not custom:
                P = op.prox(V, S, batch_dims=1)
            else:   # a user function sees one problem and a 0-d step
                P = op.prox(V[0], S.reshape(()), batch_dims=0)
                P = P.unsqueeze(0) if isinstance(P, torch.Tensor) else P
        if not isinstance(P, torch.Tensor):
            raise TypeError(f"prox must return a tensor, got {type(P).__name__}")
        if P.shape != V.shape:
            raise ValueError(f"prox returned shape {tuple(P.shape[1 - batch_dims:])}, expected the shape of x "
                             f"{tuple(V.shape[1 - batch_dims:])}")
        return P.to(dtype)

    def g_value(X):
        if not op.has_value:
            return torch.zeros(B, dtype=dtype, device=device)
        with torch.no_grad():
            if batched or not custom:
                v = op.value(X, batch_dims=1)
            else:
                v = op.value(X[0], batch_dims=0)
        if not isinstance(v, torch.Tensor):
            v = torch.as_tensor(v, dtype=dtype, device=device)
        if v.numel() != B:
            raise ValueError(f"prox value g(x) must return {'shape (%d,)' % B if batched else 'a scalar'}, got "
                             f"shape {tuple(v.shape)}")
        return v.reshape(B).to(dtype)

    def pdot(A, C):
        return (A * C).reshape(B, -1).sum(1)

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
        # secant estimate of the curvature along -grad f(x0): a lower bound on L that backtracking corrects
        gnorm = gx0.reshape(B, -1).norm(dim=1)
        xnorm = X0.reshape(B, -1).norm(dim=1)
        delta = 1e-3 * torch.clamp_min(xnorm, 1.0)
        D = -(delta / torch.clamp_min(gnorm, tiny)).reshape(bshape) * gx0
        _, g1 = value_grad(X0 + D, "x0 + small probe step")
        L0 = (g1 - gx0).reshape(B, -1).norm(dim=1) / torch.clamp_min(D.reshape(B, -1).norm(dim=1), tiny)
        ok0 = torch.isfinite(L0) & (L0 > 0) & (gnorm > 0)
        step = torch.where(ok0, 1.0 / torch.where(ok0, L0, torch.ones_like(L0)), torch.ones_like(L0))
        step = torch.clamp(step, max=max_step)
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

    amb_tol = eps ** (2 / 3)

    def sufficient_decrease(Y, P, fy, gy, fp, s):
        """f(P) <= f(y) + <grad f(y), P - y> + ||P - y||^2 / (2s), per problem; also whether any active
        problem failed it.

        When f(P) and f(y) agree to within amb_tol relative (near a solution), their difference is rounding
        noise; the test is then made on gradients instead, <grad f(P) - grad f(y), P - y> <= ||P - y||^2 / s
        (the same test for a quadratic, where f is locally quadratic), at one extra gradient evaluation.
        """
        D = P - Y
        dd = pdot(D, D)
        excess = fp - fy - pdot(gy, D) - dd / (2 * s)
        # a problem whose f(y) is not finite is not retried: it stops after this iteration (status 2)
        ok = (excess <= 8 * eps * (fy.abs() + fp.abs())) | ~torch.isfinite(fy)
        bad = active & ~ok
        if not bool(bad.any()):          # the one host read of an iteration that needs no backtracking
            return ok, False
        amb = bad & torch.isfinite(fp) & ((fp - fy).abs() <= amb_tol * torch.maximum(fy.abs(), fp.abs()))
        if bool(amb.any()):
            _, gp = value_grad(P, f"iteration {k} (line search, gradient test)")
            ok = ok | (amb & (pdot(gp - gy, D) <= dd / s))
            bad = active & ~ok
            return ok, bool(bad.any())
        return ok, True

    k = 0
    for k in range(1, max_iter + 1):
        y_is_x = method == "gd" or k == 1
        s = torch.clamp(step * _GROW, max=max_step) if backtrack else step
        # ---- trial steps (one unless backtracking rejects) ----------------------------------------------
        Y, t_new = extrapolate(s)
        if k == 1:
            fy, gy = cache_x
        else:
            fy, gy = value_grad(Y, f"iteration {k}")
        P = prox_apply(Y - s.reshape(bshape) * gy, s)
        fp = value(P, f"iteration {k}")
        if backtrack:
            for _ in range(_MAX_BACKTRACK):
                ok, any_bad = sufficient_decrease(Y, P, fy, gy, fp, s)
                if not any_bad:
                    break
                bad = active & ~ok
                s = torch.where(bad, s * _SHRINK, s)
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
                ok, _ = sufficient_decrease(Y, P, fy, gy, fp, s)
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

    # ---- result ------------------------------------------------------------------------------------------
    def tolist(key):
        stacked = torch.stack(hist[key][:n_hist])          # (n_hist, B): one transfer
        return stacked.tolist() if batched else stacked[:, 0].tolist()

    history = {key: tolist(key) for key in hist}
    status_l = status.tolist()
    if batched:
        counts_by = {c: status_l.count(c) for c in sorted(set(status_l))}
        message = "; ".join(f"{n} of {B}: {STATUS[c]}" for c, n in counts_by.items())
        res = OptimizeResult(x=X, fun=Fx, nit=nit, nfev=counts["nfev"], ngev=counts["ngev"],
                             success=status == 0, status=status, message=message, L=1.0 / step,
                             history=history)
    else:
        st = status_l[0]
        n = int(nit[0])
        message = STATUS[st]
        if st == 2:
            message += f" at iteration {n + 1}; x is the last iterate with a finite objective (iteration {n})"
        elif st == 4:
            message += f" at iteration {n + 1}; x is the last accepted iterate"
        history = {key: vals[: n + 1] for key, vals in history.items()}
        res = OptimizeResult(x=X[0], fun=float(Fx[0]), nit=n, nfev=counts["nfev"], ngev=counts["ngev"],
                             success=st == 0, status=st, message=message, L=float(1.0 / step[0]),
                             history=history)
    return res
