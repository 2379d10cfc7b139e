"""The problems of ``nesterov bench convex``: each a dict of its name, the smooth part ``fun``, ``x0``, the
proximal operator of the non-smooth part (or None), ``fstar`` when known in closed form, and ``l1`` (the L1
weights, for handing the problem to L-BFGS-B in split form).
"""

from __future__ import annotations

import math

import torch

__all__ = ["F64", "breast_cancer", "lasso", "logistic_l1", "logistic_l2", "quadratic"]

F64 = torch.float64


def quadratic(kappa, n=200, seed=0):
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


def breast_cancer():
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    A = torch.cat([torch.tensor(X, dtype=F64), torch.ones(X.shape[0], 1, dtype=F64)], 1)   # + intercept
    return A, torch.tensor(2.0 * y - 1, dtype=F64)


def logistic_l2(lam=1e-3):
    A, y = breast_cancer()
    d = A.shape[1]
    mask = torch.ones(d, dtype=F64)
    mask[-1] = 0    # intercept unpenalised

    def fun(w):
        return torch.nn.functional.softplus(-y * (A @ w)).mean() + 0.5 * lam * (mask * w * w).sum()

    return dict(name=f"L2-logistic breast-cancer (lam={lam:g})", fun=fun, x0=torch.zeros(d, dtype=F64),
                prox=None, fstar=None, l1=None)


def logistic_l1(lam=0.02):
    from nesterov.solve import prox as P

    A, y = breast_cancer()
    d = A.shape[1]
    weights = torch.full((d,), lam, dtype=F64)
    weights[-1] = 0

    def fun(w):
        return torch.nn.functional.softplus(-y * (A @ w)).mean()

    return dict(name=f"L1-logistic breast-cancer (lam={lam:g})", fun=fun, x0=torch.zeros(d, dtype=F64),
                prox=P.l1(weights), fstar=None, l1=weights)


def lasso(m=250, n=1000, k=20, seed=0):
    from nesterov.solve import prox as P

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
