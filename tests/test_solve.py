"""Tests of nesterov.minimize and nesterov.prox (issue 5): the guarantees, the batched path, bad input."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nesterov
from nesterov import prox as P

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These problems are small: on a shared 2-core machine two OpenMP threads wait on each other (10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------------------
# problems
# ---------------------------------------------------------------------------------------------------------
def nesterov_worst_case(n, L):
    """Nesterov's worst-case function (Introductory Lectures, 2.1.2):
    f(x) = L/4 (1/2 [x_1^2 + sum_i (x_i - x_{i+1})^2 + x_n^2] - x_1); grad f is L-Lipschitz,
    x*_i = 1 - i/(n+1), f* = L/8 (-1 + 1/(n+1))."""

    def f(x):
        d = x[1:] - x[:-1]
        return (L / 4) * (0.5 * (x[0] ** 2 + (d * d).sum() + x[-1] ** 2) - x[0])

    i = torch.arange(1, n + 1, dtype=F64)
    xstar = 1 - i / (n + 1)
    fstar = (L / 8) * (-1 + 1 / (n + 1))
    return f, xstar, fstar


def breast_cancer_l1_logistic(lam=0.02):
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    A = np.hstack([X, np.ones((X.shape[0], 1))])   # last column: unpenalised intercept
    y = 2.0 * y - 1
    weights = np.r_[np.full(X.shape[1], lam), 0.0]
    return A, y, weights


# ---------------------------------------------------------------------------------------------------------
# the guarantees
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("restart", [None, "gradient"])
def test_worst_case_quadratic_meets_the_bound_with_L_given(restart):
    n, L = 1000, 1.0
    f, xstar, fstar = nesterov_worst_case(n, L)
    assert abs(float(f(xstar)) - fstar) < 1e-14
    x0 = torch.zeros(n, dtype=F64)
    r = nesterov.minimize(f, x0, L=L, restart=restart, tol=0, max_iter=1000)
    assert r.nit == 1000 and r.status == 1
    gap = torch.tensor(r.history["fun"], dtype=F64) - fstar
    k = torch.arange(len(gap), dtype=F64)
    bound = 2 * L * float(((x0 - xstar) ** 2).sum()) / (k + 1) ** 2
    assert len(gap) == 1001
    assert bool((gap <= bound).all()), float((gap / bound).max())
    assert r.nfev == 2 * 1000 + 1 - 1 and r.ngev == 1000   # x0 (f+grad reused at y_1), then y_k and x_k


def test_worst_case_quadratic_backtracking_within_bound_for_final_L():
    n, L = 1000, 1.0
    f, xstar, fstar = nesterov_worst_case(n, L)
    x0 = torch.zeros(n, dtype=F64)
    r = nesterov.minimize(f, x0, restart=None, tol=0, max_iter=1000)
    assert r.nit == 1000
    R2 = float(((x0 - xstar) ** 2).sum())
    gap = torch.tensor(r.history["fun"], dtype=F64) - fstar
    k = torch.arange(len(gap), dtype=F64)
    assert bool((gap <= 2 * r.L * R2 / (k + 1) ** 2).all())
    # the rigorous form: F(x_k) - F* <= R^2 / (2 A_k), A_k = s_k t_k^2 with the step-consistent t-sequence
    steps = r.history["step"]
    t, A = 0.0, []
    for j in range(1, 1001):
        theta = steps[j - 1] / steps[j] if j > 1 else 1.0
        t = 0.5 * (1 + math.sqrt(1 + 4 * theta * t * t))
        A.append(steps[j] * t * t)
    assert bool((gap[1:] <= R2 / (2 * torch.tensor(A, dtype=F64)) * (1 + 1e-12)).all())
    # backtracking found the curvature: the final estimate is within a factor 2 of the true L
    assert 0.5 * L <= r.L <= 2 * L


def test_momentum_follows_the_changing_step():
    """Replay f = x^2/2 from the recorded steps: t_{k+1} = (1 + sqrt(1 + 4 (s_k/s_{k+1}) t_k^2))/2,
    y = x_k + (t_k - 1)/t_{k+1} (x_k - x_{k-1}), x_{k+1} = (1 - s_{k+1}) y."""
    xs = [1.0]
    r = nesterov.minimize(lambda x: 0.5 * (x * x).sum(), torch.tensor([1.0], dtype=F64),
                          restart=None, tol=0, max_iter=25, callback=lambda i: xs.append(float(i.x[0])))
    s = r.history["step"]
    assert len(set(round(v, 12) for v in s)) > 3          # backtracking changed the step both ways
    t, x, xprev = 0.0, 1.0, 1.0
    for k in range(1, 26):
        t_new = 0.5 * (1 + math.sqrt(1 + 4 * (s[k - 1] / s[k]) * t * t))
        y = x + (t - 1) / t_new * (x - xprev)
        x, xprev, t = (1 - s[k]) * y, x, t_new
        assert x == pytest.approx(xs[k], rel=1e-12, abs=1e-300), k


def ill_conditioned_quadratic(n=100, kappa=1e4, seed=0):
    g = torch.Generator().manual_seed(seed)
    lam = torch.logspace(0, -math.log10(kappa), n, dtype=F64)      # L = 1, mu = 1/kappa
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    H = Q @ torch.diag(lam) @ Q.T
    xstar = torch.randn(n, generator=g, dtype=F64)
    b = H @ xstar

    def f(x):
        return 0.5 * x @ H @ x - b @ x

    return f, lam, Q, xstar, float(f(xstar))


def test_restart_recovers_the_fast_rate_kappa_1e4():
    f, lam, Q, xstar, fstar = ill_conditioned_quadratic()
    x0 = torch.zeros_like(xstar)
    F0 = float(f(x0))

    def rel_gap_below(limit):
        return lambda inter: (float(inter.fun) - fstar) / (F0 - fstar) <= limit

    # gd with step 1/L: the iterates are exactly x_k - x* = (I - H)^k (x0 - x*); count its iterations in closed
    # form (running ~40 000 iterations is too slow for a unit test) and check the formula against the solver
    c = Q.T @ (x0 - xstar)

    def gd_gap(k):
        return float((0.5 * lam * c**2 * (1 - lam) ** (2 * k)).sum())

    gd = nesterov.minimize(f, x0, method="gd", L=1.0, tol=0, max_iter=300)
    for k in (1, 10, 100, 300):
        assert gd.history["fun"][k] - fstar == pytest.approx(gd_gap(k), rel=1e-9)
    lo, hi = 0, 10**7
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if gd_gap(mid) / (F0 - fstar) <= 1e-8 else (mid + 1, hi)
    gd_iters = lo

    for L in (1.0, None):   # mu unknown to the solver; L known, or estimated by backtracking
        r = nesterov.minimize(f, x0, L=L, restart="gradient", tol=0, max_iter=gd_iters // 30,
                              callback=rel_gap_below(1e-8))
        assert r.status == 3, f"nag+restart did not reach 1e-8 within gd/30 = {gd_iters // 30} iterations"
        assert r.nit <= gd_iters / 30


def test_strongly_convex_momentum_linear_rate():
    f, lam, Q, xstar, fstar = ill_conditioned_quadratic(n=50, kappa=1e3, seed=1)
    x0 = torch.zeros_like(xstar)
    r = nesterov.minimize(f, x0, L=1.0, mu=1e-3, restart=None, tol=0, max_iter=600)
    gap = np.array(r.history["fun"]) - fstar
    # (1 - 1/sqrt(kappa))^k with a constant: by k = 600, 1e-8 relative
    rate = (1 - 1 / math.sqrt(1e3)) ** np.arange(len(gap))
    assert np.all(gap[1:] <= 2 * (gap[0] + 0.5 * float(((x0 - xstar) ** 2).sum()) * 1e-3) * rate[1:] + 1e-12)
    assert gap[-1] / gap[0] < 1e-8


def test_l1_logistic_breast_cancer_matches_reference():
    sp = pytest.importorskip("scipy.optimize")
    A, y, w = breast_cancer_l1_logistic()
    n, d1 = A.shape

    def fg(v):
        z = -y * (A @ v)
        s = 1 / (1 + np.exp(-z))
        return np.logaddexp(0, z).mean(), A.T @ (-y * s) / n

    def split(uv):    # reference: w = u - v, u, v >= 0, smooth objective, L-BFGS-B at tight tolerance
        f, g = fg(uv[:d1] - uv[d1:])
        return f + w @ (uv[:d1] + uv[d1:]), np.r_[g + w, -g + w]

    ref = sp.minimize(split, np.zeros(2 * d1), jac=True, method="L-BFGS-B", bounds=[(0, None)] * (2 * d1),
                      options=dict(maxiter=100000, ftol=1e-16, gtol=1e-14, maxcor=30))
    wref = ref.x[:d1] - ref.x[d1:]

    At, yt = torch.tensor(A), torch.tensor(y)
    r = nesterov.minimize(lambda v: torch.nn.functional.softplus(-yt * (At @ v)).mean(), torch.zeros(d1, dtype=F64),
                          prox=P.l1(torch.tensor(w)), tol=1e-10)
    assert r.success, r.message
    assert abs(r.fun - ref.fun) <= 1e-8 * abs(ref.fun)
    ours = r.x.numpy()
    assert np.array_equal(np.flatnonzero(ours), np.flatnonzero(wref))
    assert 0 < np.count_nonzero(ours) < d1
    # optimality (KKT) of our x: grad_j = -lam sign(x_j) on the support, |grad_j| <= lam off it
    g = fg(ours)[1]
    on = ours != 0
    assert np.allclose(g[on], -w[on] * np.sign(ours[on]), atol=1e-8)
    assert np.all(np.abs(g[~on]) <= w[~on] + 1e-8)


def test_batched_1000_problems_match_a_loop():
    gen = torch.Generator().manual_seed(0)
    B, m, d = 1000, 20, 10
    A = torch.randn(B, m, d, generator=gen, dtype=F64)
    wtrue = torch.randn(B, d, generator=gen, dtype=F64) * (torch.rand(B, d, generator=gen, dtype=F64) < 0.4)
    b = (A @ wtrue.unsqueeze(-1)).squeeze(-1) + 0.1 * torch.randn(B, m, generator=gen, dtype=F64)
    # problems of very different scale, so that their steps must differ
    scale = torch.logspace(-1, 1, B, dtype=F64)
    A = A * scale.reshape(B, 1, 1)
    op = P.l1(0.05)

    def fb(X):
        return 0.5 * ((A @ X.unsqueeze(-1)).squeeze(-1) - b).pow(2).mean(-1)

    rb = nesterov.minimize(fb, torch.zeros(B, d, dtype=F64), prox=op, batched=True, tol=1e-9)
    assert rb.x.shape == (B, d) and rb.fun.shape == (B,) and rb.nit.shape == (B,)
    assert bool(rb.success.all()), rb.message
    assert float(rb.L.max() / rb.L.min()) > 100       # each problem kept its own step
    assert len(set(rb.nit.tolist())) > 1                # ... and its own stopping
    # a Python loop over minimize on 25 of the problems (all 1000 take ~1 min here; the bench times that)
    for i in range(0, B, 40):
        Ai, bi = A[i], b[i]
        r = nesterov.minimize(lambda x: 0.5 * ((Ai @ x - bi) ** 2).mean(), torch.zeros(d, dtype=F64), prox=op,
                              tol=1e-9)
        assert r.success
        assert torch.allclose(r.x, rb.x[i], atol=1e-6, rtol=0), i
        assert r.fun == pytest.approx(float(rb.fun[i]), rel=1e-10)


# ---------------------------------------------------------------------------------------------------------
# behaviour
# ---------------------------------------------------------------------------------------------------------
def small_lasso(dtype=F64, seed=3):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(30, 12, generator=g, dtype=F64).to(dtype)
    b = torch.randn(30, generator=g, dtype=F64).to(dtype)
    return A, b, (lambda x: 0.5 * ((A @ x - b) ** 2).sum())


@pytest.mark.parametrize("method", ["nag", "gd", "mfista"])
@pytest.mark.parametrize("restart", ["gradient", "function", None])
def test_methods_agree_on_nonneg_least_squares(method, restart):
    sp = pytest.importorskip("scipy.optimize")
    A, b, f = small_lasso()
    ref, _ = sp.nnls(A.numpy(), b.numpy())
    r = nesterov.minimize(f, torch.zeros(12, dtype=F64), method=method, restart=restart, prox=P.nonneg(), tol=1e-9)
    assert r.success, r.message
    assert np.allclose(r.x.numpy(), ref, atol=1e-7)
    assert bool((r.x >= 0).all())
    assert len(r.history["fun"]) == r.nit + 1 == len(r.history["step"]) == len(r.history["restart"])
    if method == "mfista":   # monotone, up to differences at rounding level (relative eps**(2/3))
        assert np.all(np.diff(r.history["fun"]) <= 4e-11 * abs(r.history["fun"][-1]))


def test_float32_and_grad_given_and_counts():
    A, b, f = small_lasso(torch.float32)
    calls = {"f": 0, "g": 0}

    def fun(x):
        calls["f"] += 1
        return f(x)

    def grad(x):
        calls["g"] += 1
        return A.T @ (A @ x - b)

    r = nesterov.minimize(fun, torch.zeros(12), grad=grad, prox=P.l1(0.5), tol=1e-3)
    assert r.x.dtype == torch.float32 and r.success, r.message
    assert r.nfev == calls["f"] and r.ngev == calls["g"]
    r64 = nesterov.minimize(lambda x: f(x.float()).double(), torch.zeros(12, dtype=F64), prox=P.l1(0.5), tol=1e-9)
    assert torch.allclose(r.x.double(), r64.x, atol=1e-3)
    # autograd path counts: every call of fun is an nfev, every backward an ngev
    calls["f"] = 0
    r2 = nesterov.minimize(fun, torch.zeros(12), prox=P.l1(0.5), tol=1e-3)
    assert r2.nfev == calls["f"] and r2.ngev < r2.nfev


def test_tol_zero_runs_all_iterations_and_callback_stops():
    A, b, f = small_lasso()
    r = nesterov.minimize(f, torch.zeros(12, dtype=F64), tol=0, max_iter=37)
    assert r.nit == 37 and r.status == 1 and not r.success and len(r.history["fun"]) == 38
    seen = []

    def cb(inter):
        seen.append(inter.nit)
        if inter.nit == 5:
            raise StopIteration

    r = nesterov.minimize(f, torch.zeros(12, dtype=F64), callback=cb)
    assert r.nit == 5 and r.status == 3 and "callback" in r.message and seen == [1, 2, 3, 4, 5]


def test_custom_prox_and_group_l1():
    A, b, f = small_lasso()
    lam = 0.7
    soft = P.custom(lambda x, s: torch.sign(x) * torch.clamp_min(x.abs() - lam * s, 0),
                    lambda x: lam * x.abs().sum())
    r1 = nesterov.minimize(f, torch.zeros(12, dtype=F64), prox=soft, restart="function", tol=1e-9)
    r2 = nesterov.minimize(f, torch.zeros(12, dtype=F64), prox=P.l1(lam), restart="function", tol=1e-9)
    assert torch.allclose(r1.x, r2.x, atol=1e-8) and r1.fun == pytest.approx(r2.fun, rel=1e-12)
    # bare callable (no g value): allowed with gradient restart, refused with function restart
    r3 = nesterov.minimize(f, torch.zeros(12, dtype=F64), prox=lambda x, s: torch.clamp_min(x, 0), tol=1e-9)
    assert torch.allclose(r3.x, nesterov.minimize(f, torch.zeros(12, dtype=F64), prox=P.nonneg(), tol=1e-9).x,
                          atol=1e-8)
    with pytest.raises(ValueError, match="value"):
        nesterov.minimize(f, torch.zeros(12, dtype=F64), prox=lambda x, s: x, restart="function")
    # group lasso: whole groups vanish together
    groups = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    r = nesterov.minimize(f, torch.zeros(12, dtype=F64), prox=P.group_l1(8.0, groups), tol=1e-9)
    assert r.success
    for g in groups:
        zeros = (r.x[g] == 0).tolist()
        assert all(zeros) or not any(zeros)


def test_batched_nan_in_one_problem_stops_only_it():
    gen = torch.Generator().manual_seed(1)
    B, d = 4, 5
    A = torch.randn(B, 8, d, generator=gen, dtype=F64)
    b = torch.randn(B, 8, generator=gen, dtype=F64)
    calls = {"n": 0}

    def fb(X):
        calls["n"] += 1
        v = 0.5 * ((A @ X.unsqueeze(-1)).squeeze(-1) - b).pow(2).sum(-1)
        if calls["n"] > 12:
            v = torch.cat([v[:2], v[2:3] * math.nan, v[3:]])
        return v

    r = nesterov.minimize(fb, torch.zeros(B, d, dtype=F64), batched=True, tol=1e-8)
    assert r.status.tolist() == [0, 0, 2, 0]
    assert not bool(r.success[2]) and bool(torch.isfinite(r.x).all())
    assert "not finite" in r.message


def test_batched_per_problem_L_and_shapes():
    gen = torch.Generator().manual_seed(2)
    B = 3
    H = torch.diag_embed(torch.rand(B, 4, generator=gen, dtype=F64) + 0.5) * torch.tensor([1.0, 10, 100],
                                                                                          dtype=F64).reshape(B, 1, 1)
    c = torch.randn(B, 4, generator=gen, dtype=F64)

    def fb(X):
        return 0.5 * (X.unsqueeze(-2) @ H @ X.unsqueeze(-1)).reshape(B) - (c * X).sum(-1)

    L = H.diagonal(dim1=-2, dim2=-1).max(-1).values
    r = nesterov.minimize(fb, torch.zeros(B, 4, dtype=F64), batched=True, L=L, tol=1e-10, prox=P.box(-0.5, 0.5))
    xs = torch.clamp(c / H.diagonal(dim1=-2, dim2=-1), -0.5, 0.5)
    assert torch.allclose(r.x, xs, atol=1e-9)
    assert torch.allclose(r.L, L)
    assert len(r.history["fun"]) == int(r.nit.max()) + 1 and len(r.history["fun"][0]) == B


def test_batched_mixed_mu_each_problem_its_own_momentum():
    f, lam, Q, xstar, fstar = ill_conditioned_quadratic(n=30, kappa=1e3, seed=4)
    H = Q @ torch.diag(lam) @ Q.T
    b = H @ xstar

    def fb(X):
        return 0.5 * ((X @ H) * X).sum(-1) - X @ b

    x0 = torch.zeros(3, 30, dtype=F64)
    mu = torch.tensor([0.0, 1e-3, 1e-3], dtype=F64)
    r = nesterov.minimize(fb, x0, batched=True, L=1.0, mu=mu, restart=None, tol=1e-9, max_iter=1500)
    # mu > 0 (linear rate): converged, identically; mu = 0 without restart (sublinear, ~7000 iterations here)
    # keeps the t-sequence momentum: still on its way, not diverging under a momentum of 1
    assert r.status.tolist() == [1, 0, 0], r.message
    assert int(r.nit[1]) == int(r.nit[2]) < 1000
    assert torch.allclose(r.x[1:], xstar.expand(2, 30), atol=1e-5)
    gaps = [row[0] - fstar for row in r.history["fun"]]
    assert gaps[-1] < 1e-3 * gaps[0] and all(math.isfinite(g) for g in gaps)


@pytest.mark.parametrize("batched", [False, True])
def test_reading_the_stop_flag_every_8_iterations_changes_nothing(monkeypatch, batched):
    """Off the CPU the host reads the stop flag every 8 iterations; stopped problems are frozen meanwhile."""
    import sys

    A, b, f = small_lasso()
    X0 = torch.zeros(3, 12, dtype=F64) if batched else torch.zeros(12, dtype=F64)
    scales = torch.tensor([1.0, 3.0, 10.0], dtype=F64).reshape(3, 1)
    fun = (lambda X: 0.5 * (((X * scales) @ A.T - b) ** 2).sum(-1)) if batched else f
    kw = dict(prox=P.l1(0.5), tol=1e-7, batched=batched)
    r1 = nesterov.minimize(fun, X0, **kw)
    monkeypatch.setattr(sys.modules["nesterov.solve.minimize"], "_sync_every", lambda device: 8)
    r8 = nesterov.minimize(fun, X0, **kw)
    assert torch.equal(r1.x, r8.x)
    if batched:
        assert torch.equal(r1.nit, r8.nit) and torch.equal(r1.status, r8.status) and len(set(r1.nit.tolist())) > 1
        assert r8.history["fun"][: len(r1.history["fun"])] == r1.history["fun"]
    else:
        assert r1.nit == r8.nit and r1.nit % 8 != 0
        for key in r1.history:
            assert np.array_equal(r1.history[key], r8.history[key], equal_nan=True), key
    assert r8.nfev >= r1.nfev


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    A, b, f = small_lasso()
    Ac, bc = A.cuda(), b.cuda()
    rc = nesterov.minimize(lambda x: 0.5 * ((Ac @ x - bc) ** 2).sum(), torch.zeros(12, dtype=F64, device="cuda"),
                           prox=P.l1(0.5), tol=1e-9)
    r = nesterov.minimize(f, torch.zeros(12, dtype=F64), prox=P.l1(0.5), tol=1e-9)
    assert rc.x.device.type == "cuda" and torch.allclose(rc.x.cpu(), r.x, atol=1e-7)


# ---------------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------------
def quad(x):
    return 0.5 * (x * x).sum()


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(fun=lambda x: x * x), ValueError, "fun must return a scalar"),
    (dict(fun=lambda x: float((x * x).sum())), TypeError, "fun must return a tensor"),
    (dict(fun=lambda x: (x * x).sum().detach()), TypeError, "autograd"),
    (dict(fun=3), TypeError, "fun must be callable"),
    (dict(x0=torch.tensor([1.0, math.nan, 0.0])), ValueError, "x0 contains NaN"),
    (dict(x0=torch.tensor([1.0, math.inf, 0.0])), ValueError, "x0 contains NaN or inf"),
    (dict(x0=torch.zeros(0)), ValueError, "x0 is empty"),
    (dict(L=0.0), ValueError, "L must be finite and > 0"),
    (dict(L=-1.0), ValueError, "L must be"),
    (dict(L="1"), TypeError, "L must be a real number"),
    (dict(mu=-0.1), ValueError, "mu must be finite and >= 0"),
    (dict(L=1.0, mu=2.0), ValueError, "mu must be <= L"),
    (dict(prox=lambda x, s: x[:-1]), ValueError, "prox returned shape"),
    (dict(prox="l1"), TypeError, "prox must be"),
    (dict(method="adam"), ValueError, "method must be one of"),
    (dict(restart="always"), ValueError, "restart must be one of"),
    (dict(tol=-1.0), ValueError, "tol must be"),
    (dict(max_iter=1.5), TypeError, "max_iter must be an integer"),
    (dict(max_iter=-1), ValueError, "max_iter must be >= 0"),
    (dict(line_search=False), ValueError, "line_search=False"),
    (dict(callback=1), TypeError, "callback must be"),
    (dict(grad=lambda x: x[:1]), ValueError, "grad must return the shape"),
    (dict(batched=True), ValueError, r"fun must return shape \(3,\)"),
    (dict(fun=lambda x: (x * x).sum() * math.nan), ValueError, r"fun\(x0\) is not finite"),
    (dict(x0=torch.tensor([1, 2, 3])), TypeError, r"x0 must be a floating-point tensor .* got torch.int64"),
])
@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
def test_bad_input_is_refused_with_a_named_argument(kwargs, exc, match):
    args = dict(fun=quad, x0=torch.tensor([1.0, 2.0, 3.0], dtype=F64))
    args.update(kwargs)
    fun, x0 = args.pop("fun"), args.pop("x0")
    with pytest.raises(exc, match=match):
        nesterov.minimize(fun, x0, **args)


def test_an_integer_array_like_x0_starts_in_the_default_float_dtype():
    r = nesterov.minimize(lambda x: ((x - 0.5) ** 2).sum(), [1, 2, 3], tol=1e-10)
    assert r.success and r.x.dtype == torch.get_default_dtype()
    torch.testing.assert_close(r.x, torch.full((3,), 0.5), atol=1e-5, rtol=0)


def test_fun_returning_nan_mid_run_fails_loudly_keeping_the_last_good_x():
    calls = {"n": 0}
    good = []

    def fun(x):
        calls["n"] += 1
        if calls["n"] > 9:
            return (x * x).sum() * math.nan
        return 0.5 * (torch.tensor([1.0, 0.1, 0.01], dtype=F64) * (x - 3) ** 2).sum()

    for L in (1.0, None):
        calls["n"] = 0
        good.clear()
        r = nesterov.minimize(fun, torch.zeros(3, dtype=F64), L=L, tol=1e-12,
                              callback=lambda i: good.append(i.x.clone()))
        assert not r.success and r.status == 2
        assert "not finite" in r.message and "last iterate" in r.message
        assert bool(torch.isfinite(r.x).all()) and math.isfinite(r.fun)
        assert r.nit >= 1 and len(good) == r.nit and torch.equal(r.x, good[-1])


@pytest.mark.parametrize("make, exc", [
    (lambda: P.l1(-1.0), ValueError), (lambda: P.l1(math.nan), ValueError), (lambda: P.l1("a"), TypeError),
    (lambda: P.box(1.0, 0.0), ValueError), (lambda: P.box(0.0, math.nan), ValueError),
    (lambda: P.l2_ball(-1), ValueError), (lambda: P.elastic_net(0.1, -1), ValueError),
    (lambda: P.group_l1(1.0, [[0, 1], [1, 2]]), ValueError), (lambda: P.group_l1(-1.0, [[0, 1]]), ValueError),
    (lambda: P.group_l1(1.0, "ab"), TypeError), (lambda: P.custom(3), TypeError),
])
def test_bad_prox_parameters(make, exc):
    with pytest.raises(exc):
        make()


# ---------------------------------------------------------------------------------------------------------
# prox operators against their definition (float64 property test)
# ---------------------------------------------------------------------------------------------------------
def _ops(draw_lam, n):
    groups = [list(range(0, n // 2)), list(range(n // 2, n - 1))]
    return {
        "l1": P.l1(draw_lam),
        "l1_weights": P.l1(torch.linspace(0, 2 * draw_lam, n, dtype=F64)),
        "nonneg": P.nonneg(),
        "box": P.box(-draw_lam, 2 * draw_lam),
        "box_tensor": P.box(torch.linspace(-1, 0, n, dtype=F64), torch.linspace(0, 1, n, dtype=F64)),
        "l2_ball": P.l2_ball(draw_lam),
        "group_l1": P.group_l1(draw_lam, groups),
        "elastic_net": P.elastic_net(draw_lam, 0.5 + draw_lam),
    }


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 9), lam=st.floats(0.01, 3.0),
       step=st.floats(1e-3, 10.0), scale=st.floats(0.01, 10.0))
def test_prox_is_the_argmin_of_its_definition(seed, n, lam, step, scale):
    """p = prox_{s g}(x)  <=>  (x - p)/s is a subgradient of g at p  <=>  for every z:
    g(z) >= g(p) + <(x - p)/s, z - p>. Checked at random z (and, for the indicators, at points of the set),
    together with g(p) + ||p - x||^2/(2s) <= g(z) + ||z - x||^2/(2s)."""
    gen = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(n, generator=gen, dtype=F64)
    Z = scale * 2 * torch.randn(64, n, generator=gen, dtype=F64)
    for name, op in _ops(lam, n).items():
        p = op(x, step)
        assert p.shape == x.shape
        gp = float(op.value(p))
        assert math.isfinite(gp), name
        # candidate z: random points, nudges of p, and projections of random points (indicators: z in the set)
        cand = torch.cat([Z, p + 1e-3 * Z / scale, op.prox(Z, torch.full((64, 1), step, dtype=F64), batch_dims=1)])
        gz = op.value(cand, batch_dims=1)
        fin = torch.isfinite(gz)
        assert bool(fin[-64:].all()), name
        sub = (x - p) / step
        lhs = gz[fin]
        rhs = gp + ((cand[fin] - p) * sub).sum(-1)
        tol = 1e-9 * (1 + lhs.abs() + rhs.abs())
        assert bool((lhs >= rhs - tol).all()), (name, float((rhs - lhs).max()))
        model_p = gp + float(((p - x) ** 2).sum()) / (2 * step)
        model_z = lhs + ((cand[fin] - x) ** 2).sum(-1) / (2 * step)
        assert bool((model_p <= model_z + tol).all()), name


def test_prox_closed_forms():
    x = torch.tensor([-3.0, -0.5, 0.0, 0.2, 4.0], dtype=F64)
    assert torch.equal(P.l1(1.0)(x, 0.5), torch.tensor([-2.5, -0.0, 0.0, 0.0, 3.5], dtype=F64))
    assert torch.equal(P.nonneg()(x, 1.0), torch.clamp_min(x, 0))
    assert torch.equal(P.box(-1, 1)(x, 1.0), torch.clamp(x, -1, 1))
    assert torch.allclose(P.l2_ball(1.0)(x, 1.0).norm(), torch.tensor(1.0, dtype=F64))
    assert torch.allclose(P.elastic_net(1.0, 2.0)(x, 0.5), P.l1(1.0)(x, 0.5) / 2)
    g = P.group_l1(1.0, torch.tensor([0, 0, -1, 1, 1]))
    y = g(x, 1.0)
    assert y[2] == x[2]                                   # unpenalised entry untouched
    n0 = x[:2].norm()
    assert torch.allclose(y[:2], x[:2] * (1 - 1 / n0))
    assert float(P.nonneg().value(x)) == math.inf and float(P.box(-5, 5).value(x)) == 0.0
    # batched: each problem gets its own step and its own ball
    X = torch.stack([x, 2 * x])
    Y = P.l2_ball(1.0).prox(X, torch.tensor([[1.0], [1.0]], dtype=F64), batch_dims=1)
    assert torch.allclose(Y.norm(dim=1), torch.ones(2, dtype=F64))
    Y = P.l1(1.0).prox(X, torch.tensor([[0.5], [1.0]], dtype=F64), batch_dims=1)
    assert torch.equal(Y[0], P.l1(1.0)(x, 0.5)) and torch.equal(Y[1], P.l1(1.0)(2 * x, 1.0))
