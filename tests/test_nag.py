"""NAG against torch.optim.SGD(nesterov=True) and every backend against the eager rule."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nesterov
from nesterov import NAG
from nesterov.engine import compiled as C
from nesterov.engine import kernels as K

from _compiled import train_compiled_and_eager
from _digits import train_digits

BACKENDS = ["eager", "foreach", "compile", "torch"]


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Normwise relative difference ‖a − b‖∞ / ‖b‖∞ (0 when both are 0)."""
    scale = b.abs().max().item()
    diff = (a - b).abs().max().item()
    return diff / scale if scale > 0 else diff


def make_params(shapes, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in shapes]


def clone_params(params):
    return [torch.nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad) for p in params]


def set_grads(params_list, gen, present=None):
    """Give every param set the same fresh random gradients (None where ``present`` says so)."""
    grads = []
    for i, p in enumerate(params_list[0]):
        keep = present is None or present[i]
        grads.append(torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device) if keep else None)
    for params in params_list:
        for p, g in zip(params, grads):
            p.grad = None if g is None else g.clone()
    return grads


# -- float64 parity with torch.optim.SGD(nesterov=True) --------------------------------------------
shape_st = st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple)
group_st = st.fixed_dictionaries({
    "lr": st.floats(1e-4, 1.0),
    "momentum": st.floats(0.01, 0.99),
    "weight_decay": st.one_of(st.just(0.0), st.floats(0.0, 0.1)),
    "maximize": st.booleans(),
})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shapes=st.lists(shape_st, min_size=1, max_size=5),
    groups=st.lists(group_st, min_size=1, max_size=2),
    steps=st.integers(1, 6),
    swap_at=st.integers(0, 6),
    lr_schedule=st.lists(st.floats(0.1, 2.0), min_size=6, max_size=6),
    backend=st.sampled_from(BACKENDS),
    seed=st.integers(0, 2**16),
)
def test_float64_parity_with_torch_sgd(shapes, groups, steps, swap_at, lr_schedule, backend, seed):
    ours_params = make_params(shapes, seed=seed)
    ref_params = clone_params(ours_params)

    def split(params):
        # Round-robin the tensors over the groups; a group may end up empty only if it has no tensor.
        return [
            {"params": params[i:: len(groups)], **g} for i, g in enumerate(groups) if params[i:: len(groups)]
        ]

    ours = NAG(split(ours_params), lr=0.1, backend=backend)
    ref = torch.optim.SGD(split(ref_params), lr=0.1, nesterov=True, momentum=0.9)
    gen = torch.Generator().manual_seed(seed + 1)
    for k in range(steps):
        if k == swap_at and k > 0:
            # state_dict round trips both ways mid-run: each continues from the other's checkpoint.
            ours_state, ref_state = copy.deepcopy(ours.state_dict()), copy.deepcopy(ref.state_dict())
            ours = NAG(split(ours_params), lr=0.1, backend=backend)
            ours.load_state_dict(ref_state)
            ref = torch.optim.SGD(split(ref_params), lr=0.1, nesterov=True, momentum=0.9)
            ref.load_state_dict(ours_state)
        for opt in (ours, ref):  # a schedule: lr changed between steps takes effect at once
            for g, base in zip(opt.param_groups, groups):
                g["lr"] = base["lr"] * lr_schedule[k]
        set_grads([ours_params, ref_params], gen)
        ours.step()
        ref.step()
    for a, b in zip(ours_params, ref_params):
        assert rel_diff(a.detach(), b.detach()) <= 1e-12
    for a, b in zip(ours_params, ref_params):
        assert rel_diff(ours.state[a]["momentum_buffer"], ref.state[b]["momentum_buffer"]) <= 1e-12


def test_momentum_zero_is_plain_sgd():
    params = make_params([(3, 4), (5,)])
    ref_params = clone_params(params)
    ours = NAG(params, lr=0.05, momentum=0.0, weight_decay=0.01, backend="foreach")
    ref = torch.optim.SGD(ref_params, lr=0.05, momentum=0.0, weight_decay=0.01)
    gen = torch.Generator().manual_seed(3)
    for _ in range(4):
        set_grads([params, ref_params], gen)
        ours.step()
        ref.step()
    for a, b in zip(params, ref_params):
        assert rel_diff(a.detach(), b.detach()) <= 1e-12


def test_torch_checkpoint_continues_identically_both_ways(tmp_path):
    """A torch SGD checkpoint written to disk loads into NAG (and back) and continues identically."""
    base = make_params([(4, 3), (3,)])
    a, b, c = clone_params(base), clone_params(base), clone_params(base)
    gen = torch.Generator().manual_seed(5)
    torch_a = torch.optim.SGD(a, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
    nag_b = NAG(b, lr=0.1, momentum=0.9, weight_decay=1e-3, backend="foreach")
    for _ in range(3):
        set_grads([a, b, c], gen)
        torch_a.step()
        nag_b.step()
    torch.save(torch_a.state_dict(), tmp_path / "torch.pt")
    torch.save(nag_b.state_dict(), tmp_path / "nag.pt")
    with torch.no_grad():
        for p, q in zip(c, a):
            p.copy_(q)
    nag_c = NAG(c, lr=1.0)  # hyperparameters come from the checkpoint
    nag_c.load_state_dict(torch.load(tmp_path / "torch.pt"))
    torch_b = torch.optim.SGD(clone_params(b), lr=1.0, momentum=0.5, nesterov=True)
    torch_b.load_state_dict(torch.load(tmp_path / "nag.pt"))
    assert torch_b.param_groups[0]["nesterov"] is True
    for _ in range(3):
        set_grads([a, b, c], gen)
        torch_a.step()
        nag_b.step()
        nag_c.step()
    for p, q, r in zip(a, b, c):
        assert rel_diff(q.detach(), p.detach()) <= 1e-12
        assert rel_diff(r.detach(), p.detach()) <= 1e-12


# -- every backend against the eager rule ------------------------------------------------------------
def _run_backend(backend, *, dtype=torch.float32, state_dtype=None, maximize=False, steps=3, seed=0):
    params = make_params([(17, 5), (33,), (2, 3, 4)], dtype=dtype, seed=seed)
    opt = NAG(params, lr=0.05, momentum=0.9, weight_decay=0.01, maximize=maximize, backend=backend,
              state_dtype=state_dtype)
    gen = torch.Generator().manual_seed(seed + 7)
    for k in range(steps):
        grads = set_grads([params], gen)
        opt.step()
        for p, g in zip(params, grads):
            assert torch.equal(p.grad, g), "step() must never modify p.grad"
    buf = torch.cat([opt.state[p]["momentum_buffer"].float().flatten() for p in params])
    return torch.cat([p.detach().float().flatten() for p in params]), buf


@pytest.mark.parametrize("backend", ["foreach", "compile", "torch"])
@pytest.mark.parametrize("variant", ["plain", "maximize", "bf16-state", "float64"])
def test_backend_matches_eager_rule(backend, variant):
    kwargs = {
        "plain": {},
        "maximize": {"maximize": True},
        "bf16-state": {"state_dtype": torch.bfloat16},
        "float64": {"dtype": torch.float64},
    }[variant]
    if backend == "torch" and variant == "bf16-state":
        with pytest.raises(ValueError, match="backend='torch'"):
            _run_backend(backend, **kwargs)
        return
    got_p, got_b = _run_backend(backend, **kwargs)
    want_p, want_b = _run_backend("eager", **kwargs)
    if variant == "bf16-state" and backend == "compile":
        # The same expression, the same hash: the same bits. (foreach computes the fp32 value in another
        # order, so a value within an ulp of a rounding boundary may round the other way.)
        assert torch.equal(got_b, want_b)
    tol = 1e-12 if variant == "float64" else 1e-2 if variant == "bf16-state" else 1e-6
    assert rel_diff(got_p, want_p) <= tol
    assert rel_diff(got_b, want_b) <= tol


def test_compiled_cpu_kernels_are_called_without_dynamo_once_compiled(monkeypatch):
    """After its compile, a CPU kernel's graph is called directly (no dynamo frame, no guards): same bits."""
    shapes = [(17, 5), (33,), (300, 70)]  # tensors of both size classes: the serial and the shared kernel
    params, ref = make_params(shapes, dtype=torch.float32), make_params(shapes, dtype=torch.float32)
    opt = NAG(params, lr=0.05, momentum=0.9, state_dtype=torch.bfloat16, backend="compile")
    ref_opt = NAG(ref, lr=0.05, momentum=0.9, state_dtype=torch.bfloat16, backend="eager")
    gen = torch.Generator().manual_seed(5)
    set_grads([params, ref], gen)
    opt.step(), ref_opt.step()
    keys = {key for key in C.COMPILED.kernels if key[0] == "nag" and "bfloat16" in key}
    assert {key[-1] for key in keys} == {"serial", "shared"} and keys <= set(C.COMPILED.direct)

    def through_dynamo(*args):
        raise AssertionError("a compiled CPU kernel was called through torch.compile after its compile")

    for key in keys:
        monkeypatch.setitem(C.COMPILED.kernels, key, through_dynamo)
    for _ in range(3):
        set_grads([params, ref], gen)
        opt.step(), ref_opt.step()
    for p, q in zip(params, ref):
        assert torch.equal(p, q) and torch.equal(opt.state[p]["momentum_buffer"], ref_opt.state[q]["momentum_buffer"])


# -- GradScaler --------------------------------------------------------------------------------------
def _tiny_model(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).to(dtype)


@pytest.mark.parametrize("backend", ["foreach", "compile"])
def test_grad_scaler_step_equals_unscaled_step(backend):
    scaled, plain = _tiny_model(), _tiny_model()
    opt_s = NAG(scaled.parameters(), lr=0.1, backend=backend)
    opt_p = NAG(plain.parameters(), lr=0.1, backend=backend)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    for _ in range(3):
        opt_s.zero_grad()
        scaler.scale(torch.nn.functional.cross_entropy(scaled(x), y)).backward()
        scaler.step(opt_s)
        scaler.update()
        opt_p.zero_grad()
        torch.nn.functional.cross_entropy(plain(x), y).backward()
        opt_p.step()
    for a, b in zip(scaled.parameters(), plain.parameters()):
        assert rel_diff(a.detach(), b.detach()) <= 1e-6


@pytest.mark.parametrize("backend", ["foreach", "compile", "torch"])
def test_grad_scaler_skipped_first_step_leaves_everything_as_it_was(backend):
    """GradScaler skips the step when it finds an inf: nothing changes, and the next step is torch's first."""
    device = "cpu"
    model, ref = _tiny_model().to(device), _tiny_model().to(device)
    opt = NAG(model.parameters(), lr=0.1, backend=backend)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    before = [p.detach().clone() for p in model.parameters()]
    scaler = torch.amp.GradScaler(device, init_scale=2.0**8)
    x, y = torch.randn(16, 6, device=device), torch.randint(0, 3, (16,), device=device)
    opt.zero_grad()
    scaler.scale(torch.nn.functional.cross_entropy(model(x), y)).backward()
    next(model.parameters()).grad[0, 0] = float("inf")
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 2.0**7  # the scaler saw the inf and backed off
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p.detach(), b)
    for p in model.parameters():
        assert not opt.state[p] or torch.count_nonzero(opt.state[p]["momentum_buffer"]) == 0
    # The next (finite) step is exactly torch's first step.
    for m, o in ((model, opt), (ref, ref_opt)):
        o.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        o.step()
    for a, b in zip(model.parameters(), ref.parameters()):
        assert rel_diff(a.detach(), b.detach()) <= 1e-6


# -- torch.optim behaviour users rely on --------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_params_without_a_gradient_are_left_alone(backend):
    """Whether a gradient never came, or was set to None by hand after one came, that parameter takes no
    step (no weight decay, no momentum), exactly as in torch SGD."""
    device = "cpu"
    ours = [torch.nn.Parameter(p.to(device)) for p in make_params([(3,), (2, 2), (4,)])]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    opt = NAG(ours, lr=0.1, weight_decay=0.5, backend=backend)
    ref = torch.optim.SGD(theirs, lr=0.1, momentum=0.9, weight_decay=0.5, nesterov=True)
    gen = torch.Generator().manual_seed(1)
    grads = [[torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in theirs] for _ in range(5)]
    present = [(), (0,), (0, 2), (2,), (1,)]  # which params have a gradient at each step
    for step_grads, which in zip(grads, present):
        for i, (a, b) in enumerate(zip(ours, theirs)):
            a.grad = step_grads[i].to(device) if i in which else None
            b.grad = step_grads[i].clone() if i in which else None
        opt.step()
        ref.step()
        for a, b in zip(ours, theirs):
            assert rel_diff(a.detach().cpu(), b.detach()) <= 1e-12


@pytest.mark.parametrize("backend", ["foreach", "compile"])
def test_unused_layer_takes_no_step(backend):
    """A layer the forward never uses has no gradient after backward: it must not be decayed, as in torch SGD."""

    def make():
        torch.manual_seed(0)
        return torch.nn.ModuleDict({"used": torch.nn.Linear(6, 3), "unused": torch.nn.Linear(6, 3)})

    ours, theirs = make(), make()
    opt = NAG(ours.parameters(), lr=0.1, weight_decay=0.5, backend=backend)
    ref = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9, weight_decay=0.5, nesterov=True)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    for _ in range(3):
        for model, o in ((ours, opt), (theirs, ref)):
            o.zero_grad()
            torch.nn.functional.cross_entropy(model["used"](x), y).backward()
            o.step()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert rel_diff(a.detach(), b.detach()) <= 1e-6
    assert all(torch.equal(a, b) for a, b in zip(ours["unused"].parameters(), make()["unused"].parameters()))


def test_params_without_grad_are_skipped_and_frozen_params_join_later():
    params = make_params([(3,), (4, 2), (5,)])
    ref_params = clone_params(params)
    params[1].requires_grad_(False)
    ref_params[1].requires_grad_(False)
    ours = NAG(params, lr=0.1, momentum=0.9, weight_decay=0.1)
    ref = torch.optim.SGD(ref_params, lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=True)
    gen = torch.Generator().manual_seed(2)
    frozen = params[1].detach().clone()
    for k in range(5):
        if k == 3:  # unfreeze: its momentum starts fresh, as in torch
            params[1].requires_grad_(True)
            ref_params[1].requires_grad_(True)
        present = [True, k >= 3, k != 1]
        set_grads([params, ref_params], gen, present)
        ours.step()
        ref.step()
        if k < 3:
            assert torch.equal(params[1].detach(), frozen)
    for a, b in zip(params, ref_params):
        assert rel_diff(a.detach(), b.detach()) <= 1e-12


def test_closure_named_parameters_and_add_param_group():
    model = _tiny_model(dtype=torch.float64)
    opt = NAG(model[0].named_parameters(), lr=0.1)
    opt.add_param_group({"params": list(model[2].named_parameters()), "lr": 0.01, "momentum": 0.5})
    x, y = torch.randn(8, 6, dtype=torch.float64), torch.randint(0, 3, (8,))

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    losses = [opt.step(closure).item() for _ in range(20)]
    assert losses[-1] < losses[0]
    sd = opt.state_dict()
    assert sd["param_groups"][0]["param_names"] == ["weight", "bias"]
    assert sd["param_groups"][1]["lr"] == 0.01 and sd["param_groups"][1]["momentum"] == 0.5
    assert set(sd["state"]) == {0, 1, 2, 3}


def test_scheduler_changes_take_effect_without_recompiling():
    from torch._dynamo.utils import counters

    params = make_params([(40,), (8, 8)], dtype=torch.float32)
    ref_params = clone_params(params)
    ours = NAG(params, lr=0.1, momentum=0.9, backend="compile")
    ref = torch.optim.SGD(ref_params, lr=0.1, momentum=0.9, nesterov=True)
    s1 = torch.optim.lr_scheduler.OneCycleLR(ours, max_lr=0.5, total_steps=10, base_momentum=0.8, max_momentum=0.95)
    s2 = torch.optim.lr_scheduler.OneCycleLR(ref, max_lr=0.5, total_steps=10, base_momentum=0.8, max_momentum=0.95)
    gen = torch.Generator().manual_seed(4)
    set_grads([params, ref_params], gen)
    ours.step(), ref.step(), s1.step(), s2.step()
    graphs = counters["stats"]["unique_graphs"]
    for _ in range(8):
        set_grads([params, ref_params], gen)
        ours.step(), ref.step(), s1.step(), s2.step()
    assert counters["stats"]["unique_graphs"] == graphs, "a schedule must not recompile"
    for a, b in zip(params, ref_params):
        assert rel_diff(a.detach(), b.detach()) <= 1e-5


def test_loose_params_mixed_dtypes_and_layouts():
    """Non-dense params take the per-tensor path; dtypes get their own kernels; channels-last stays."""
    dense = torch.nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
    strided = torch.nn.Parameter(torch.randn(4, 8, dtype=torch.float64)[:, ::2])  # cannot be a flat view
    single = torch.nn.Parameter(torch.randn(5, dtype=torch.float32))
    conv = torch.nn.Parameter(torch.randn(2, 3, 4, 4).to(memory_format=torch.channels_last))
    params = [dense, strided, single, conv]
    ref_params = [torch.nn.Parameter(p.detach().clone(memory_format=torch.preserve_format)) for p in params]
    ours = NAG(params, lr=0.1, momentum=0.9, weight_decay=0.01)
    ref = torch.optim.SGD(ref_params, lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(9)
    for _ in range(3):
        set_grads([params, ref_params], gen)
        ours.step()
        ref.step()
    for a, b in zip(params, ref_params):
        assert rel_diff(a.detach().double(), b.detach().double()) <= (1e-12 if a.dtype == torch.float64 else 1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_casting_the_model_after_building_the_optimizer_works_as_with_torch(backend):
    """``model.double()`` after the optimizer was built (and stepped once): the parameters are the same
    objects with new data, and our step follows them exactly as torch SGD's does."""
    model, ref = _tiny_model(), _tiny_model()
    opt = NAG(model.parameters(), lr=0.1, weight_decay=0.01, backend=backend)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    for k in range(3):
        if k == 1:
            model.double(), ref.double()
            x = x.double()
        for m, o in ((model, opt), (ref, ref_opt)):
            o.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
            o.step()
    for a, b in zip(model.parameters(), ref.parameters()):
        assert a.dtype == torch.float64 and opt.state[a]["momentum_buffer"].dtype == torch.float64
        assert rel_diff(a.detach(), b.detach()) <= 1e-6


# -- bad input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"lr": -0.1}, ValueError, "lr"),
        ({"lr": torch.ones(2)}, ValueError, "lr"),
        ({"lr": float("nan")}, ValueError, "lr"),
        ({"momentum": 1.0}, ValueError, "momentum"),
        ({"momentum": -0.1}, ValueError, "momentum"),
        ({"dampening": 0.1}, ValueError, "dampening"),
        ({"weight_decay": -1.0}, ValueError, "weight_decay"),
        ({"maximize": 1}, TypeError, "maximize"),
        ({"backend": "cuda-magic"}, ValueError, "backend"),
        ({"state_dtype": torch.int32}, ValueError, "state_dtype"),
        ({"lr": "0.1"}, TypeError, "lr"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        NAG(make_params([(3,)]), **{"lr": 0.1, **kwargs})


def test_param_in_two_groups_is_rejected():
    p = make_params([(3,)])[0]
    with pytest.raises(ValueError, match="more than one parameter group"):
        NAG([{"params": [p]}, {"params": [p]}], lr=0.1)
    opt = NAG([p], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [p]})
    assert len(opt.param_groups) == 1


def _snapshot(opt, params):
    return [p.detach().clone() for p in params], copy.deepcopy(opt.state_dict())


def _assert_untouched(opt, params, snap):
    values, state = snap
    for p, v in zip(params, values):
        assert torch.equal(p.detach(), v)
    now = opt.state_dict()
    assert now["param_groups"] == state["param_groups"]
    for k, entry in state["state"].items():
        assert torch.equal(now["state"][k]["momentum_buffer"], entry["momentum_buffer"])


def test_rejected_steps_leave_params_and_state_untouched():
    params = make_params([(4,), (3, 3)], dtype=torch.float32)
    opt = NAG(params, lr=0.1)
    gen = torch.Generator().manual_seed(1)
    set_grads([params], gen)
    opt.step()
    snap = _snapshot(opt, params)
    # a schedule that produced NaN
    opt.param_groups[0]["lr"] = float("nan")
    set_grads([params], gen)
    with pytest.raises(ValueError, match="lr"):
        opt.step()
    opt.param_groups[0]["lr"] = 0.1
    _assert_untouched(opt, params, snap)
    # a sparse gradient on the second param, after a dense one on the first
    params[1].grad = torch.randn(3, 3).to_sparse()
    with pytest.raises(ValueError, match="sparse"):
        opt.step()
    _assert_untouched(opt, params, snap)


@pytest.mark.parametrize("break_it", ["groups", "shape", "size", "not-a-dict", "plain-momentum"])
def test_wrong_state_dict_is_rejected_and_nothing_changes(break_it):
    params = make_params([(4,), (3, 3)], dtype=torch.float32)
    opt = NAG(params, lr=0.1)
    set_grads([params], torch.Generator().manual_seed(1))
    opt.step()
    snap = _snapshot(opt, params)
    bad = copy.deepcopy(opt.state_dict())
    if break_it == "groups":
        bad["param_groups"].append(dict(bad["param_groups"][0]))
    elif break_it == "shape":
        bad["state"][1]["momentum_buffer"] = torch.zeros(9)
    elif break_it == "size":
        bad["param_groups"][0]["params"] = [0]
    elif break_it == "not-a-dict":
        bad = [1, 2]
    else:
        bad["param_groups"][0]["nesterov"] = False
    with pytest.raises(ValueError):
        opt.load_state_dict(bad)
    _assert_untouched(opt, params, snap)


# -- backend choice ----------------------------------------------------------------------------------
def test_auto_uses_torch_fused_sgd_where_exact_and_the_cpp_kernel_for_bf16_state(monkeypatch):
    """fp32 parameters: torch's fused SGD kernel from the first step (nothing to build). bf16 state on CPU: the
    C++ kernel, built at the first step, from the first step on (never eager); it rounds as the rule does, so
    the run is the eager run bit for bit."""
    from nesterov.engine import cpp_kernels

    params = make_params([(300,), (20, 10)], dtype=torch.float32)
    opt = NAG(params, lr=0.1)
    set_grads([params], torch.Generator().manual_seed(0))
    calls = []
    monkeypatch.setattr(K, "run_torch", lambda *a: calls.append("torch"))
    opt.step()
    assert calls == ["torch"]
    monkeypatch.undo()

    monkeypatch.setattr(K, "AUTO_COMPILE_MIN_NUMEL", 100)
    monkeypatch.setattr(cpp_kernels, "CPP", cpp_kernels.CppKernels())  # a fresh cache: built at the first step
    params = make_params([(300,), (20, 10)], dtype=torch.float32)
    ref_params = clone_params(params)
    ours = NAG(params, lr=0.1, state_dtype=torch.bfloat16)
    ref = NAG(ref_params, lr=0.1, state_dtype=torch.bfloat16, backend="eager")
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        set_grads([params, ref_params], gen)
        with monkeypatch.context() as m:
            m.setattr(K, "run_eager", lambda *a: pytest.fail("auto must never step on the eager path"))
            ours.step()
        ref.step()
    assert ours.backends_seen == {"cpp"}
    for a, b in zip(params, ref_params):
        assert torch.equal(a, b)
        assert torch.equal(ours.state[a]["momentum_buffer"], ref.state[b]["momentum_buffer"])


def test_torch_backend_is_refused_where_its_kernel_is_not_exact():
    with pytest.raises(ValueError, match="backend='torch'"):
        NAG(make_params([(3,)], dtype=torch.bfloat16), lr=0.1, backend="torch")
    with pytest.raises(ValueError, match="backend"):
        NAG(make_params([(3,)], dtype=torch.float32), lr=0.1, backend="triton")


# -- low-memory state --------------------------------------------------------------------------------
def test_stochastic_rounding_is_unbiased_and_round_to_nearest_is_not():
    from nesterov.engine.precision import stochastic_round_bf16

    x = torch.full((100_000,), 1.0 + 2.0**-10)  # an eighth of the way between two bf16 neighbours
    mean = stochastic_round_bf16(x, 7).float().mean().item()
    assert abs(mean - x[0].item()) < 2e-5
    assert x.to(torch.bfloat16).float().mean().item() == 1.0  # nearest rounding loses it all
    assert torch.equal(stochastic_round_bf16(x, 7), stochastic_round_bf16(x, 7))
    assert not torch.equal(stochastic_round_bf16(x, 7), stochastic_round_bf16(x, 8))


def test_bf16_momentum_keeps_small_updates():
    """Momentum accumulating tiny gradients: nearest-rounded bf16 stalls, stochastic rounding does not."""
    p = torch.nn.Parameter(torch.zeros(4096))
    opt = NAG([p], lr=1.0, momentum=0.99, state_dtype=torch.bfloat16, backend="foreach")
    for _ in range(300):
        p.grad = torch.full_like(p, 1e-3)
        opt.step()
    buf = opt.state[p]["momentum_buffer"].float()
    exact = 1e-3 * (1 - 0.99**300) / (1 - 0.99)
    assert abs(buf.mean().item() - exact) / exact < 0.01


def _train_digits(state_dtype, seed=0):
    return train_digits(
        lambda model: NAG(model.parameters(), lr=0.05, momentum=0.9, state_dtype=state_dtype), seed=seed
    )


def test_bf16_state_trains_as_well_as_fp32_state():
    fp32 = _train_digits(None)
    bf16 = _train_digits(torch.bfloat16)
    assert fp32 > 0.95 and bf16 > 0.95
    assert abs(fp32 - bf16) < 0.02


def test_public_names():
    assert nesterov.NAG is NAG
    assert isinstance(NAG(make_params([(2,)]), lr=0.1), torch.optim.Optimizer)
    assert math.isclose(NAG(make_params([(2,)]), lr=0.1).defaults["momentum"], 0.9)


def test_step_inside_a_torch_compiled_training_step():
    """A compiled training step runs our step eagerly (one graph break) and stays exact."""
    model, ref = _tiny_model(), _tiny_model()
    opt = NAG(model.parameters(), lr=0.1, backend="foreach")
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    train_compiled_and_eager(model, opt, ref, ref_opt)
    for a, b in zip(model.parameters(), ref.parameters()):
        assert rel_diff(a.detach(), b.detach()) <= 1e-5


# -- float32: torch's fused SGD, bit for bit ------------------------------------------------------------
@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_float32_equals_torch_fused_sgd_bit_for_bit(backend):
    """README: NAG is ``torch.optim.SGD(nesterov=True, fused=True)`` bit for bit in float32 (on CPU ``auto``
    runs that very kernel); torch's default SGD (foreach) rounds differently, within a few ulps."""
    shapes = [(64, 33), (33,), (300, 70), (7, 3, 3, 3)]
    ours, fused, foreach = (make_params(shapes, dtype=torch.float32) for _ in range(3))
    kwargs = dict(lr=0.05, momentum=0.9, weight_decay=1e-3)
    opts = [NAG(ours, backend=backend, **kwargs), torch.optim.SGD(fused, nesterov=True, fused=True, **kwargs),
            torch.optim.SGD(foreach, nesterov=True, **kwargs)]
    gen = torch.Generator().manual_seed(3)
    for _ in range(20):
        set_grads([ours, fused, foreach], gen)
        for opt in opts:
            opt.step()
    for p, q, r in zip(ours, fused, foreach):
        assert torch.equal(p, q) and torch.equal(opts[0].state[p]["momentum_buffer"], opts[1].state[q]["momentum_buffer"])
        torch.testing.assert_close(p, r, atol=1e-6, rtol=1e-6)
