"""NAdamW, Adan, LARS, LAMB: each against an independent float64 statement of its published formulas
(torch.optim.NAdam for NAdamW), every backend against the eager rule, bf16 state on a real problem, bad
input. The references below are written from the papers and import nothing from ``nesterov.rules``.
"""

from __future__ import annotations

import copy
import math
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nesterov
from nesterov import LAMB, LARS, Adan, NAdamW

from _digits import train_digits

SHAPES = [(5, 3), (7,), (2, 3, 4), (1,)]
FLOAT = dict(allow_nan=False, allow_infinity=False)


def rel_diff(a: torch.Tensor, b: torch.Tensor, start: torch.Tensor | None = None) -> float:
    """max |a − b| / max |b|, or over the scale of the whole trajectory (``start`` too): a parameter
    driven from O(1) to 1e-6 has cancelled six digits, and no exact method keeps those."""
    scale = b.abs().max() if start is None else torch.maximum(b.abs().max(), start.abs().max())
    return ((a - b).abs().max() / scale.clamp_min(1e-300)).item()


def make_params(shapes=SHAPES, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64).to(dtype)) for s in shapes]


def grad_sequence(shapes, steps, seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed + 1000)
    return [[torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in shapes] for _ in range(steps)]


def run(opt, params, grads):
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
    return [p.detach().clone() for p in params]


# -- float64 references, from the papers' formulas ---------------------------------------------------
def adan_reference(params, grads, lr, betas, eps, wd, no_prox, maximize=False):
    """Xie et al. 2022, Algorithm 1 with the reference code's betas (β_i here = 1 − β_i in the paper)."""
    b1, b2, b3 = betas
    ps = [p.detach().clone() for p in params]
    m = [torch.zeros_like(p) for p in ps]
    d = [torch.zeros_like(p) for p in ps]
    n = [torch.zeros_like(p) for p in ps]
    prev = [None] * len(ps)
    for k, gs in enumerate(grads, 1):
        for i, g in enumerate(gs):
            g = -g if maximize else g
            diff = g - (g if prev[i] is None else prev[i])
            m[i] = b1 * m[i] + (1 - b1) * g
            d[i] = b2 * d[i] + (1 - b2) * diff
            n[i] = b3 * n[i] + (1 - b3) * (g + b2 * diff) ** 2
            m_hat, d_hat, n_hat = m[i] / (1 - b1**k), d[i] / (1 - b2**k), n[i] / (1 - b3**k)
            eta = lr / (n_hat.sqrt() + eps)
            if no_prox:
                ps[i] = ps[i] * (1 - lr * wd) - eta * (m_hat + b2 * d_hat)
            else:
                ps[i] = (ps[i] - eta * (m_hat + b2 * d_hat)) / (1 + lr * wd)
            prev[i] = g
    return ps


def lars_reference(params, grads, lr, momentum, wd, tc, eps, nesterov_, exclude_1d, maximize=False):
    """You, Gitman, Ginsburg 2017: local lr κ‖w‖/(‖∇‖ + λ‖w‖), then (Nesterov) momentum SGD."""
    ps = [p.detach().clone() for p in params]
    bufs = [torch.zeros_like(p) for p in ps]
    for gs in grads:
        for i, g in enumerate(gs):
            g = -g if maximize else g
            adapt = ps[i].dim() > 1 or not exclude_1d
            lam = wd if adapt else 0.0
            w_norm, g_norm = ps[i].norm().item(), g.norm().item()
            rho = tc * w_norm / (g_norm + lam * w_norm + eps) if adapt and w_norm > 0 and g_norm > 0 else 1.0
            step = rho * (g + lam * ps[i])
            bufs[i] = momentum * bufs[i] + step
            ps[i] = ps[i] - lr * (step + momentum * bufs[i] if nesterov_ else bufs[i])
    return ps


def lamb_reference(params, grads, lr, betas, eps, wd, exclude_1d, maximize=False):
    """You et al. 2019, Algorithm 2 (φ = identity, bias-corrected moments)."""
    b1, b2 = betas
    ps = [p.detach().clone() for p in params]
    m = [torch.zeros_like(p) for p in ps]
    v = [torch.zeros_like(p) for p in ps]
    for t, gs in enumerate(grads, 1):
        for i, g in enumerate(gs):
            g = -g if maximize else g
            adapt = ps[i].dim() > 1 or not exclude_1d
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            r = (m[i] / (1 - b1**t)) / ((v[i] / (1 - b2**t)).sqrt() + eps) + (wd if adapt else 0.0) * ps[i]
            w_norm, r_norm = ps[i].norm().item(), r.norm().item()
            rho = w_norm / r_norm if adapt and w_norm > 0 and r_norm > 0 else 1.0
            ps[i] = ps[i] - lr * rho * r
    return ps


# -- parity: random configurations, 50 steps, float64 -------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(
    lr=st.floats(1e-4, 0.1, **FLOAT), beta1=st.floats(0.0, 0.99, **FLOAT), beta2=st.floats(0.5, 0.9999, **FLOAT),
    eps=st.floats(1e-10, 1e-3, **FLOAT), wd=st.sampled_from([0.0, 1e-3, 0.1]),
    momentum_decay=st.floats(0.0, 0.02, **FLOAT), decoupled=st.booleans(), maximize=st.booleans(),
    backend=st.sampled_from(["eager", "foreach"]), seed=st.integers(0, 2**16),
)
def test_nadamw_matches_torch_nadam_float64(lr, beta1, beta2, eps, wd, momentum_decay, decoupled, maximize,
                                            backend, seed):
    hp = dict(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=wd, momentum_decay=momentum_decay,
              decoupled_weight_decay=decoupled, maximize=maximize)
    grads = grad_sequence(SHAPES, 50, seed)
    ours, theirs = make_params(seed=seed), make_params(seed=seed)
    got = run(NAdamW(ours, **hp, backend=backend), ours, grads)
    want = run(torch.optim.NAdam(theirs, **hp, foreach=False), theirs, grads)
    for a, b in zip(got, want):
        assert rel_diff(a, b) <= 1e-12


@settings(max_examples=15, deadline=None)
@given(
    lr=st.floats(1e-4, 0.1, **FLOAT), beta1=st.floats(0.0, 0.99, **FLOAT), beta2=st.floats(0.0, 0.99, **FLOAT),
    beta3=st.floats(0.5, 0.9999, **FLOAT), eps=st.floats(1e-10, 1e-3, **FLOAT),
    wd=st.sampled_from([0.0, 1e-3, 0.1]), no_prox=st.booleans(), maximize=st.booleans(),
    backend=st.sampled_from(["eager", "foreach"]), seed=st.integers(0, 2**16),
)
def test_adan_matches_paper_float64(lr, beta1, beta2, beta3, eps, wd, no_prox, maximize, backend, seed):
    betas = (beta1, beta2, beta3)
    grads = grad_sequence(SHAPES, 50, seed)
    params = make_params(seed=seed)
    want = adan_reference(params, grads, lr, betas, eps, wd, no_prox, maximize)
    opt = Adan(params, lr=lr, betas=betas, eps=eps, weight_decay=wd, no_prox=no_prox, maximize=maximize,
               backend=backend)
    for a, b in zip(run(opt, params, grads), want):
        assert rel_diff(a, b) <= 1e-12


@settings(max_examples=15, deadline=None)
@given(
    lr=st.floats(1e-3, 1.0, **FLOAT), momentum=st.floats(0.0, 0.99, **FLOAT), wd=st.sampled_from([0.0, 1e-4, 0.1]),
    tc=st.floats(1e-4, 1.0, **FLOAT), eps=st.floats(1e-10, 1e-6, **FLOAT), nesterov_=st.booleans(),
    exclude_1d=st.booleans(), maximize=st.booleans(), backend=st.sampled_from(["eager", "foreach"]),
    seed=st.integers(0, 2**16),
)
def test_lars_matches_paper_float64(lr, momentum, wd, tc, eps, nesterov_, exclude_1d, maximize, backend, seed):
    grads = grad_sequence(SHAPES, 50, seed)
    params = make_params(seed=seed)
    want = lars_reference(params, grads, lr, momentum, wd, tc, eps, nesterov_, exclude_1d, maximize)
    start = [p.detach().clone() for p in params]
    opt = LARS(params, lr=lr, momentum=momentum, weight_decay=wd, trust_coefficient=tc, eps=eps,
               nesterov=nesterov_, exclude_1d=exclude_1d, maximize=maximize, backend=backend)
    for a, b, s0 in zip(run(opt, params, grads), want, start):
        assert rel_diff(a, b, s0) <= 1e-12


@settings(max_examples=15, deadline=None)
@given(
    lr=st.floats(1e-4, 0.1, **FLOAT), beta1=st.floats(0.0, 0.99, **FLOAT), beta2=st.floats(0.5, 0.9999, **FLOAT),
    eps=st.floats(1e-10, 1e-3, **FLOAT), wd=st.sampled_from([0.0, 1e-3, 0.1]), exclude_1d=st.booleans(),
    maximize=st.booleans(), backend=st.sampled_from(["eager", "foreach"]), seed=st.integers(0, 2**16),
)
def test_lamb_matches_paper_float64(lr, beta1, beta2, eps, wd, exclude_1d, maximize, backend, seed):
    grads = grad_sequence(SHAPES, 50, seed)
    params = make_params(seed=seed)
    want = lamb_reference(params, grads, lr, (beta1, beta2), eps, wd, exclude_1d, maximize)
    start = [p.detach().clone() for p in params]
    opt = LAMB(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=wd, exclude_1d=exclude_1d,
               maximize=maximize, backend=backend)
    for a, b, s0 in zip(run(opt, params, grads), want, start):
        assert rel_diff(a, b, s0) <= 1e-12


def test_trust_ratio_is_one_for_zero_weights_or_zero_gradients():
    shapes = [(4, 3), (3, 2)]
    params = make_params(shapes)
    with torch.no_grad():
        params[0].zero_()  # ‖w‖ = 0
    grads = [[torch.randn(4, 3, dtype=torch.float64), torch.zeros(3, 2, dtype=torch.float64)]]  # ‖g‖ = 0
    want = lars_reference(params, grads, 0.1, 0.9, 0.01, 1e-3, 1e-8, True, True)
    got = run(LARS(params, lr=0.1, weight_decay=0.01, backend="eager"), params, grads)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, rtol=1e-14, atol=0)


def test_nadamw_defaults_are_nadamw_and_float32_matches_torch_closely():
    """Float32 params: float64 per-step scalars and complements of the betas keep us at torch's rounding."""
    grads = grad_sequence(SHAPES, 50, 3, dtype=torch.float32)
    ours, theirs = make_params(dtype=torch.float32), make_params(dtype=torch.float32)
    got = run(NAdamW(ours, weight_decay=0.1, backend="eager"), ours, grads)
    want = run(torch.optim.NAdam(theirs, lr=2e-3, weight_decay=0.1, decoupled_weight_decay=True), theirs, grads)
    for a, b in zip(got, want):
        assert rel_diff(a, b) <= 2e-6


# -- NAdamW state: torch's layout, both ways ----------------------------------------------------------
def test_nadamw_state_is_torch_nadam_layout():
    params = make_params(dtype=torch.float32)
    opt = NAdamW(params)
    run(opt, params, grad_sequence(SHAPES, 2, 0, dtype=torch.float32))
    ref_params = make_params(dtype=torch.float32)
    ref = torch.optim.NAdam(ref_params)
    run(ref, ref_params, grad_sequence(SHAPES, 2, 0, dtype=torch.float32))
    # the user's param groups hold the user's keys: nothing internal (betas' complements) is written there
    assert set(opt.param_groups[0]) <= set(ref.param_groups[0])
    for p, q in zip(params, ref_params):
        ours, theirs = opt.state[p], ref.state[q]
        assert set(ours) == set(theirs) == {"step", "mu_product", "exp_avg", "exp_avg_sq"}
        assert ours["mu_product"].dtype == theirs["mu_product"].dtype and ours["mu_product"].dim() == 0
        assert torch.equal(ours["mu_product"], theirs["mu_product"])  # the same running product, bit for bit
        assert float(ours["step"]) == float(theirs["step"]) == 2.0


@pytest.mark.parametrize("source", ["ours", "torch"])
def test_nadamw_checkpoint_loads_into_either_and_continues_identically(source):
    """A checkpoint of either loads into either. Ours resumed equals torch's uninterrupted run (torch's
    load_state_dict casts ``mu_product`` to the parameters' float64, we bring it back to torch's float32,
    see the README's differences); torch resumed from our checkpoint equals torch resumed from its own."""
    hp = dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.05, decoupled_weight_decay=True)
    first, rest = grad_sequence(SHAPES, 5, 1), grad_sequence(SHAPES, 5, 2)

    def checkpoint(cls):
        params = make_params()
        opt = cls(params, **hp)
        run(opt, params, first)
        return params, opt.state_dict()

    def resume(cls, params, saved):
        fresh = make_params()
        for x, p in zip(fresh, params):
            x.data.copy_(p.detach())
        opt = cls(fresh, **hp)
        opt.load_state_dict(copy.deepcopy(saved))
        return run(opt, fresh, rest)

    straight_params = make_params()
    straight = run(torch.optim.NAdam(straight_params, **hp), straight_params, first + rest)
    params, saved = checkpoint(NAdamW if source == "ours" else torch.optim.NAdam)
    torch_params, torch_saved = checkpoint(torch.optim.NAdam)
    for x, y in zip(resume(NAdamW, params, saved), straight):
        assert rel_diff(x, y) <= 1e-12
    for x, y in zip(resume(torch.optim.NAdam, params, saved), resume(torch.optim.NAdam, torch_params, torch_saved)):
        assert rel_diff(x, y) <= 1e-12


# -- every backend against the eager rule -------------------------------------------------------------
RULES = {
    "nadamw": lambda ps, **kw: NAdamW(ps, lr=1e-2, weight_decay=0.05, **kw),
    "adan": lambda ps, **kw: Adan(ps, lr=1e-2, weight_decay=0.05, **kw),
    "lars": lambda ps, **kw: LARS(ps, lr=0.5, weight_decay=0.01, trust_coefficient=0.01, **kw),
    "lamb": lambda ps, **kw: LAMB(ps, lr=1e-2, weight_decay=0.05, **kw),
}


def _run_backend(rule, backend, *, dtype=torch.float64, state_dtype=None, steps=4, device="cpu"):
    params = [torch.nn.Parameter(p.detach().to(device)) for p in make_params([(17, 5), (33,), (2, 3, 4)], dtype=dtype)]
    opt = RULES[rule](params, backend=backend, state_dtype=state_dtype)
    gen = torch.Generator().manual_seed(5)
    for k in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(device, dtype)
        opt.step()
    states = [v.double().flatten() for p in params for k, v in sorted(opt.state[p].items()) if v.dim() > 0]
    scalars = [float(v) for p in params for k, v in sorted(opt.state[p].items()) if v.dim() == 0]
    return torch.cat([p.detach().double().flatten() for p in params]), torch.cat(states), scalars


BACKEND_VARIANTS = [("foreach", "float64"), ("compile", "float64"), ("foreach", "bf16-state"),
                    ("compile", "bf16-state")]


@pytest.mark.parametrize("rule,backend,variant", [
    (rule, backend, variant) for rule in sorted(RULES) for backend, variant in BACKEND_VARIANTS
])
def test_backend_matches_eager_rule(rule, backend, variant):
    kwargs = {"float64": {}, "bf16-state": dict(dtype=torch.float32, state_dtype=torch.bfloat16)}[variant]
    got_p, got_s, got_scalars = _run_backend(rule, backend, **kwargs)
    want_p, want_s, want_scalars = _run_backend(rule, "eager", **kwargs)
    tol = 1e-12 if variant == "float64" else 1e-5
    assert rel_diff(got_p, want_p) <= tol
    assert rel_diff(got_s, want_s) <= (tol if variant == "float64" else 2e-2)  # bf16: one ulp at most
    assert got_scalars == pytest.approx(want_scalars, rel=1e-12)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_grad_scaler_skipped_step_changes_nothing(rule):
    """A step GradScaler skips (inf found) leaves params, buffers, step and mu_product exactly as they were."""
    params = make_params([(6, 4), (4,)])
    opt = RULES[rule](params, backend="eager")
    run(opt, params, grad_sequence([(6, 4), (4,)], 2, 0))
    before_p = [p.detach().clone() for p in params]
    before_s = copy.deepcopy({i: opt.state[p] for i, p in enumerate(params)})
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    scaler.scale(torch.ones(()))  # the scale exists from the first scaled loss on
    for p in params:
        p.grad = torch.full_like(p, float("inf"))
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 4.0
    for i, p in enumerate(params):
        assert torch.equal(p.detach(), before_p[i])
        for name, value in before_s[i].items():
            assert torch.equal(opt.state[p][name], value), name


def _check_each_tensor_alone(rule, backend, shapes, sits_out=None, seed=3):
    """A tensor's trajectory among others equals its trajectory in an optimizer of its own (per-tensor norms
    see only their tensor). Tensor ``sits_out`` has no gradient every other step."""
    grads = grad_sequence(shapes, 4, seed)
    if sits_out is not None:
        for step_grads in grads[1::2]:
            step_grads[sits_out] = None
    together = make_params(shapes, seed=seed)
    opt = RULES[rule](together, backend=backend, maximize=True)
    for step_grads in grads:
        for p, g in zip(together, step_grads):
            p.grad = None if g is None else g.clone()
        opt.step()
    for k, shape in enumerate(shapes):
        alone = make_params(shapes, seed=seed)[k:k + 1]
        alone_opt = RULES[rule](alone, backend="eager", maximize=True)
        for step_grads in grads:
            if step_grads[k] is not None:
                alone[0].grad = step_grads[k].clone()
                alone_opt.step()
        assert rel_diff(together[k].detach(), alone[0].detach()) <= 1e-13, shape


@pytest.mark.parametrize("backend", ["eager", "foreach", "compile"])
@pytest.mark.parametrize("rule", ["lars", "lamb"])
def test_per_tensor_rules_see_each_tensor_alone(rule, backend):
    """Sizes of every kind, one tensor sitting out every other step."""
    _check_each_tensor_alone(rule, backend, [(300,), (17, 19), (5,), (2, 256), (40, 3, 3)], sits_out=1)


@settings(max_examples=15, deadline=None)
@given(rule=st.sampled_from(["lars", "lamb"]), backend=st.sampled_from(["eager", "foreach"]),
       shapes=st.lists(st.one_of(st.tuples(st.integers(1, 700)), st.tuples(st.integers(1, 30), st.integers(1, 40))),
                       min_size=1, max_size=5),
       sits_out=st.integers(0, 4), seed=st.integers(0, 1000))
def test_per_tensor_rules_see_each_tensor_alone_for_any_shapes(rule, backend, shapes, sits_out, seed):
    _check_each_tensor_alone(rule, backend, shapes, sits_out if sits_out < len(shapes) else None, seed)


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("backend", ["foreach", "compile"])
def test_non_dense_param_matches_dense_param(rule, backend):
    """A parameter that is a view with gaps (the compiled kernel steps it eagerly) takes the same step as a
    dense copy, 0-d states included."""
    base = torch.randn(6, 8, dtype=torch.float64)
    loose = torch.nn.Parameter(base[:, ::2])  # strided with gaps
    dense = torch.nn.Parameter(base[:, ::2].clone())
    a, b = RULES[rule]([loose], backend=backend), RULES[rule]([dense], backend="eager")
    for g in grad_sequence([(6, 4)], 5, 0):
        loose.grad, dense.grad = g[0].clone(), g[0].clone()
        a.step()
        b.step()
    assert rel_diff(loose.detach(), dense.detach()) <= 1e-14
    for name, value in b.state[dense].items():
        assert rel_diff(a.state[loose][name], value) <= 1e-14, name


# -- low-memory state ---------------------------------------------------------------------------------
@pytest.mark.parametrize("rule,buffers", [("nadamw", 2), ("adan", 4), ("lars", 1), ("lamb", 2)])
def test_state_bytes_per_parameter(rule, buffers):
    for state_dtype, width in ((None, 4), (torch.bfloat16, 2)):
        params = make_params([(64, 64), (64,)], dtype=torch.float32)
        opt = RULES[rule](params, state_dtype=state_dtype, backend="eager")
        run(opt, params, grad_sequence([(64, 64), (64,)], 1, 0, dtype=torch.float32))
        per_elem = sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if v.dim() > 0)
        assert per_elem / sum(p.numel() for p in params) == buffers * width


DIGITS_HP = {
    "nadamw": dict(lr=3e-3, weight_decay=1e-2),
    "adan": dict(lr=1e-2, weight_decay=1e-2),
    "lars": dict(lr=5.0, weight_decay=1e-4),
    "lamb": dict(lr=2e-2, weight_decay=1e-2),
}


def _train_digits(rule, state_dtype, epochs=10):
    cls = {"nadamw": NAdamW, "adan": Adan, "lars": LARS, "lamb": LAMB}[rule]
    return train_digits(lambda model: cls(model.parameters(), **DIGITS_HP[rule], state_dtype=state_dtype),
                        epochs=epochs)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_bf16_state_trains_as_well_as_fp32_state(rule):
    fp32, bf16 = _train_digits(rule, None), _train_digits(rule, torch.bfloat16)
    assert fp32 > 0.9 and bf16 > 0.9, (fp32, bf16)
    assert abs(fp32 - bf16) < 0.03, (fp32, bf16)  # 397 test images: 0.03 is ~12 of them


# -- bad input ----------------------------------------------------------------------------------------
BAD = [
    (NAdamW, dict(lr=-1.0), "lr"), (NAdamW, dict(betas=(1.0, 0.999)), r"betas\[0\]"),
    (NAdamW, dict(betas=(0.9, -0.1)), r"betas\[1\]"), (NAdamW, dict(betas=(0.9,)), "betas"),
    (NAdamW, dict(eps=0.0), "eps"), (NAdamW, dict(weight_decay=-1e-3), "weight_decay"),
    (NAdamW, dict(momentum_decay=-1.0), "momentum_decay"), (NAdamW, dict(eps=float("nan")), "eps"),
    (Adan, dict(betas=(0.98, 0.92)), "betas"), (Adan, dict(betas=(0.98, 0.92, 1.5)), r"betas\[2\]"),
    (Adan, dict(eps=-1e-8), "eps"), (Adan, dict(weight_decay=-1.0), "weight_decay"),
    (LARS, dict(momentum=1.0), "momentum"), (LARS, dict(trust_coefficient=0.0), "trust_coefficient"),
    (LARS, dict(eps=0.0), "eps"), (LARS, dict(lr=float("inf")), "lr"),
    (LAMB, dict(betas=(0.9, 1.0)), r"betas\[1\]"), (LAMB, dict(eps=0.0), "eps"),
    (LAMB, dict(weight_decay=-0.1), "weight_decay"),
]


@pytest.mark.parametrize("cls,kwargs,name", BAD)
def test_bad_arguments_name_the_argument(cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        cls(make_params(), **kwargs)


@pytest.mark.parametrize("cls,key,value", [(NAdamW, "betas", (0.9, 1.2)), (Adan, "eps", 0.0),
                                           (LARS, "momentum", -0.5), (LAMB, "betas", (0.9,))])
def test_bad_group_value_rejects_the_whole_step(cls, key, value):
    """A scheduler or user writing a bad value into one group: nothing in any group is touched."""
    params = make_params()
    opt = cls([{"params": params[:2]}, {"params": params[2:]}], backend="eager")
    run(opt, params, grad_sequence(SHAPES, 2, 0))
    before_p = [p.detach().clone() for p in params]
    before_s = copy.deepcopy({i: opt.state[p] for i, p in enumerate(params)})
    opt.param_groups[1][key] = value
    with pytest.raises(ValueError, match=key):
        opt.step()
    for i, p in enumerate(params):
        assert torch.equal(p.detach(), before_p[i])
        for name, v in before_s[i].items():
            assert torch.equal(opt.state[p][name], v)
    with pytest.raises(ValueError, match=key):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(3))], key: value})
    assert len(opt.param_groups) == 2


def test_public_names_and_defaults():
    assert nesterov.NAdamW is NAdamW and nesterov.Adan is Adan and nesterov.LARS is LARS and nesterov.LAMB is LAMB
    opt = NAdamW(make_params())
    assert opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["decoupled_weight_decay"] is True
    assert math.isclose(opt.defaults["lr"], 2e-3) and math.isclose(opt.defaults["momentum_decay"], 4e-3)
    assert Adan(make_params()).defaults["betas"] == (0.98, 0.92, 0.99)
    assert LARS(make_params(), lr=1.0).defaults["nesterov"] is True


@pytest.mark.parametrize("rule", sorted(RULES))
def test_auto_switches_to_its_kernel_and_matches_eager(rule, monkeypatch):
    """``auto`` on a group it would not step on foreach: LARS and LAMB on their C++ kernel from the first step
    (built then); the others on foreach while the compiled rule, warmed on throw-away inputs, compiles in the
    background, then on it."""
    from nesterov.engine import compiled as C
    from nesterov.engine import cpp_kernels
    from nesterov.engine import kernels as K

    monkeypatch.setattr(K, "AUTO_COMPILE_MIN_NUMEL", 0)
    monkeypatch.setattr(cpp_kernels, "CPP", cpp_kernels.CppKernels())  # a fresh cache: built during the run
    shapes = [(9, 7)]
    params, ref = make_params(shapes, dtype=torch.float32), make_params(shapes, dtype=torch.float32)
    opt, ref_opt = RULES[rule](params), RULES[rule](ref, backend="eager")
    grads = grad_sequence(shapes, K.AUTO_COMPILE_AFTER_STEPS + 600, 0, dtype=torch.float32)
    used = []
    module, name = (cpp_kernels, "run_cpp") if opt.rule.cpp_kernel else (C, "run_compiled")
    kernel = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a: (used.append(1), kernel(*a)))
    for k, gs in enumerate(grads):
        run(opt, params, [gs])
        run(ref_opt, ref, [gs])
        if used and k > 2:
            break
        if k > K.AUTO_COMPILE_AFTER_STEPS:
            time.sleep(0.1)  # the compile runs in a background thread
    assert used, f"auto never switched to the {name} kernel"
    assert opt.backends_seen == ({"cpp"} if opt.rule.cpp_kernel else {"foreach", "compile"})
    run(opt, params, grads[-2:])
    run(ref_opt, ref, grads[-2:])
    diff = rel_diff(params[0].detach(), ref[0].detach())
    assert diff <= 1e-5, f"{diff:.3g} after {k + 3} steps, {sorted(opt.backends_seen)}"


@pytest.mark.parametrize("backend", ["eager", "foreach", "compile"])
def test_nadamw_with_gradients_coming_and_going_matches_torch(backend):
    """A parameter without a gradient takes no step and its step count waits, as in torch NAdam; runs of
    parameters with different step counts are stepped apart."""
    shapes = [(4,), (3, 2), (5,), (2, 2)]
    ours, theirs = make_params(shapes), make_params(shapes)
    hp = dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)
    opt, ref = NAdamW(ours, backend=backend, **hp), torch.optim.NAdam(theirs, **hp)
    gen = torch.Generator().manual_seed(8)
    for step in range(8):
        present = torch.rand(len(shapes), generator=gen) < (0.6 if step else 0.0)  # step 0: no gradient at all
        for p, q, here in zip(ours, theirs, present):
            g = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            p.grad, q.grad = (g.clone(), g.clone()) if here else (None, None)
        opt.step()
        ref.step()
        for p, q in zip(ours, theirs):
            assert rel_diff(p.detach(), q.detach()) <= 1e-12


def test_nadamw_follows_schedulers_and_param_groups_like_torch():
    """OneCycleLR changes lr and betas[0] every step; two groups with their own hyperparameters."""
    def build(cls, params):
        groups = [{"params": params[:2]}, {"params": params[2:], "weight_decay": 0.0, "betas": (0.8, 0.99)}]
        opt = cls(groups, lr=1e-2, weight_decay=0.05, decoupled_weight_decay=True)
        return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=40)

    grads = grad_sequence(SHAPES, 30, 4)
    ours, theirs = make_params(), make_params()
    (a, sa), (b, sb) = build(NAdamW, ours), build(torch.optim.NAdam, theirs)
    for gs in grads:
        run(a, ours, [gs])
        run(b, theirs, [gs])
        sa.step()
        sb.step()
    assert a.param_groups[0]["betas"] == b.param_groups[0]["betas"]
    for x, y in zip(ours, theirs):
        assert rel_diff(x.detach(), y.detach()) <= 1e-12


def test_nadamw_loads_a_checkpoint_with_a_float_mu_product():
    """Old torch checkpoints stored ``mu_product`` as a Python float; torch NAdam accepts them, so do we."""
    params = make_params()
    ref = torch.optim.NAdam(params, lr=1e-2)
    run(ref, params, grad_sequence(SHAPES, 3, 0))
    saved = copy.deepcopy(ref.state_dict())
    for entry in saved["state"].values():
        entry["mu_product"] = float(entry["mu_product"])
    a, b = make_params(), make_params()
    for x, y, p in zip(a, b, params):
        x.data.copy_(p.detach())
        y.data.copy_(p.detach())
    ours, theirs = NAdamW(a, lr=1e-2, decoupled_weight_decay=False), torch.optim.NAdam(b, lr=1e-2)
    ours.load_state_dict(copy.deepcopy(saved))
    theirs.load_state_dict(copy.deepcopy(saved))
    rest = grad_sequence(SHAPES, 3, 1)
    for x, y in zip(run(ours, a, rest), run(theirs, b, rest)):
        assert rel_diff(x, y) <= 1e-12


# -- complex parameters: LARS and LAMB go by the complex shape (README, differences from torch) -------------------
@pytest.mark.parametrize("cls", [LARS, LAMB])
@pytest.mark.parametrize("backend", ["eager", "foreach", "auto"])
def test_complex_parameters_step_as_real_ones_of_their_complex_shape(cls, backend):
    """A complex (5,) vector steps as a real vector of its 10 real numbers (no trust ratio, no decay), a complex
    (3, 4) matrix as the real (3, 8) matrix of its real view: the trust ratio's matrix-or-vector is the complex
    shape's, not the real view's (which would make the vector a (5, 2) matrix)."""
    gen = torch.Generator().manual_seed(0)
    z = [torch.nn.Parameter(torch.randn(s, dtype=torch.complex128, generator=gen)) for s in ((5,), (3, 4))]
    r = [torch.nn.Parameter(torch.view_as_real(p.detach()).reshape(-1 if p.dim() == 1 else (p.shape[0], -1)).clone())
         for p in z]
    kwargs = dict(lr=0.1, weight_decay=0.05)
    opts = [cls(z, backend=backend, **kwargs), cls(r, backend=backend, **kwargs)]
    for _ in range(4):
        for p, q in zip(z, r):
            p.grad = torch.randn(p.shape, dtype=p.dtype, generator=gen)
            q.grad = torch.view_as_real(p.grad).reshape(q.shape).clone()
        for opt in opts:
            opt.step()
    for p, q in zip(z, r):
        torch.testing.assert_close(torch.view_as_real(p.detach()).reshape(q.shape), q.detach(), atol=1e-14, rtol=0)
