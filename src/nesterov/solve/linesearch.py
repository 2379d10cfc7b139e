"""Backtracking for :func:`nesterov.minimize` when ``L`` is unknown: the first step (from a secant estimate of
the curvature at ``x0``), the factors a step grows and shrinks by, and the sufficient-decrease test (the
conditions are in the docstring of :mod:`nesterov.solve.minimize`).  Every quantity is per problem, shape (B,).
"""

from __future__ import annotations

import torch

__all__ = ["GROW", "MAX_BACKTRACK", "SHRINK", "ambiguity_tol", "initial_step", "pdot", "sufficient_decrease"]

GROW = 1 / 0.9        # step growth tried at the start of each backtracking iteration
SHRINK = 0.5          # step factor on a failed sufficient-decrease test
MAX_BACKTRACK = 60    # 0.5**60 ~ 1e-18: a line search that needs more has failed


def pdot(A, C):
    """<A, C> per problem: (B, ...) x (B, ...) -> (B,)."""
    return (A * C).reshape(A.shape[0], -1).sum(1)


def ambiguity_tol(dtype) -> float:
    """Relative difference below which two objective values are rounding noise of each other."""
    return torch.finfo(dtype).eps ** (2 / 3)


def initial_step(value_grad, X0, gx0, bshape, max_step):
    """1 / (secant estimate of the curvature along -grad f(x0)): a lower bound on L that backtracking corrects."""
    B = X0.shape[0]
    tiny = torch.finfo(X0.dtype).tiny
    gnorm = gx0.reshape(B, -1).norm(dim=1)
    xnorm = X0.reshape(B, -1).norm(dim=1)
    delta = 1e-3 * torch.clamp_min(xnorm, 1.0)
    D = -(delta / torch.clamp_min(gnorm, tiny)).reshape(bshape) * gx0
    _, g1 = value_grad(X0 + D, "x0 + small probe step")
    L0 = (g1 - gx0).reshape(B, -1).norm(dim=1) / torch.clamp_min(D.reshape(B, -1).norm(dim=1), tiny)
    ok0 = torch.isfinite(L0) & (L0 > 0) & (gnorm > 0)
    step = torch.where(ok0, 1.0 / torch.where(ok0, L0, torch.ones_like(L0)), torch.ones_like(L0))
    return torch.clamp(step, max=max_step)


def sufficient_decrease(value_grad, Y, P, fy, gy, fp, s, active, k):
    """f(P) <= f(y) + <grad f(y), P - y> + ||P - y||^2 / (2s), per problem; also whether any active
    problem failed it.

    When f(P) and f(y) agree to within amb_tol relative (near a solution), their difference is rounding
    noise; the test is then made on gradients instead, <grad f(P) - grad f(y), P - y> <= ||P - y||^2 / s
    (the same test for a quadratic, where f is locally quadratic), at one extra gradient evaluation.
    """
    eps = torch.finfo(fy.dtype).eps
    amb_tol = ambiguity_tol(fy.dtype)
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
