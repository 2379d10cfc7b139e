"""torch.optim's contract, for every optimizer × backend, through the public API only.

The behaviours are those that PyTorch's generic optimizer tests check (test/test_optim.py,
``torch.testing._internal.common_optimizers``) plus what the frameworks people train with assume of an
optimizer: parameters and gradients stay the user's tensors, state_dicts load both ways and never
half-load, hooks run as torch's do, copies step like the original, nothing is compiled per parameter.

Comparisons between two runs of the same optimizer (copies, reloads, determinism, twins) are bit for bit:
the same kernels see the same float64 numbers. Comparisons against torch.optim are float64 within 1e-12
(the parity bound of the README), except where a test says otherwise and why.
"""

from __future__ import annotations

import copy
import gc
import io
import pickle
import re
import time
import types
import warnings
import weakref

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR, StepLR

from _contract_cases import (
    ALL,
    FOREIGN,
    KWARGS,
    assert_close_tensors,
    assert_equal_tensors,
    assert_same_snapshot,
    batches,
    case_params,
    compare_state_dicts,
    frozen_state_dict,
    groups_snapshot,
    loss_of,
    make,
    mlp,
    only,
    set_grads,
    state_snapshot,
    tiny,
    train,
    values,
)

import nesterov

F64 = torch.float64
PARITY = 1e-12  # float64 against torch.optim (README: parity ≤ 1e-12)

# The newer param-group keys torch added over the years; a state_dict written before them lacks them and
# torch's ``__setstate__`` fills their defaults.
NEWER_KEYS = ("maximize", "foreach", "differentiable", "capturable", "fused", "decoupled_weight_decay")

# torch.optim's optimizer for the rules it has, with the hyperparameters of KWARGS.
TORCH_TWIN = {
    "NAG": (torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True)),
    "NAdamW": (torch.optim.NAdam, dict(lr=0.01, weight_decay=0.01, decoupled_weight_decay=True)),
}


def P(*shape, dtype=F64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.nn.Parameter(torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype))


def changed(model_or_params, before) -> list[bool]:
    return [not torch.equal(a, b) for a, b in zip(values(model_or_params), before)]


# ==================================================================================================
# construction
# ==================================================================================================
@pytest.mark.parametrize("name, backend", ALL)
def test_param_groups_from_generators_filters_and_add_param_group_all_train(name, backend):
    model = mlp(4, 5, 5, 3)  # Linear layers at 0, 2, 4
    before = values(model)
    opt = make(name, backend, [
        {"params": model[0].parameters()},
        {"params": filter(lambda p: p.requires_grad, model[2].parameters()), "lr": KWARGS[name]["lr"] / 2},
    ])
    opt.add_param_group({"params": model[4].parameters()})
    repr(opt)
    listed = [p for g in opt.param_groups for p in g["params"]]
    assert {id(p) for p in listed} == {id(p) for p in model.parameters()} and len(listed) == 6
    train(model, opt, batches(2))
    assert all(changed(model, before)), f"parameters that did not train: {changed(model, before)}"


@pytest.mark.parametrize("name, backend", ALL)
def test_group_hyperparameters_apply_to_their_group_only(name, backend):
    """Two groups with their own lr and weight decay step as two optimizers would."""
    lr, wd = KWARGS[name]["lr"], KWARGS[name]["weight_decay"]
    groups = [[P(3, 4), P(4, seed=1)], [P(4, 5, seed=2), P(5, seed=3)]]
    alone = [[torch.nn.Parameter(p.detach().clone()) for p in g] for g in groups]
    opt = make(name, backend, [{"params": groups[0]}, {"params": groups[1], "lr": lr / 3, "weight_decay": 3 * wd}])
    opts = [make(name, backend, alone[0]), make(name, backend, alone[1], lr=lr / 3, weight_decay=3 * wd)]
    for step in range(3):
        set_grads(groups[0] + groups[1], seed=step)
        set_grads(alone[0] + alone[1], seed=step)
        opt.step()
        for o in opts:
            o.step()
    assert_equal_tensors(values(groups[0]), values(alone[0]), "group 0 param")
    assert_equal_tensors(values(groups[1]), values(alone[1]), "group 1 param")


@pytest.mark.parametrize("name, backend", ALL)
def test_named_parameters_train_and_name_the_state_dict(name, backend):
    model = tiny()
    before = values(model)
    opt = make(name, backend, model.named_parameters())
    train(model, opt, batches(2))
    assert all(changed(model, before))
    sd = opt.state_dict()
    for group, saved in zip(opt.param_groups, sd["param_groups"]):
        assert "param_names" in saved, "named parameters: each saved group lists its param_names (torch ≥ 2.6)"
        assert [id(model.get_parameter(n)) for n in saved["param_names"]] == [id(p) for p in group["params"]]


def _constructs(name, backend):
    """The case itself builds: a refusal below is about the bad input, not the backend."""
    make(name, backend, [P(3, 4, seed=9)])


@pytest.mark.parametrize("name, backend", ALL)
def test_duplicate_parameter_is_refused_at_construction_naming_both_positions(name, backend):
    """torch warns, then its for-loop path steps the parameter once per entry and its foreach path once with
    the sum of two reads: we refuse (README, differences from torch), in a constructor and in add_param_group,
    and a refused add_param_group leaves the optimizer as it was."""
    _constructs(name, backend)
    p, q = P(3, 4), P(3, 4, seed=1)
    with pytest.raises(ValueError, match=r"params \(param group 0\) lists one parameter twice, at positions 0 and 2"):
        make(name, backend, [p, q, p])
    with pytest.raises(ValueError, match="twice"):
        make(name, backend, (t for t in [q, q]))
    opt = make(name, backend, [q])
    groups = groups_snapshot(opt)
    with pytest.raises(ValueError, match=r"param group 1\) lists one parameter twice"):
        opt.add_param_group({"params": [p, p]})
    assert groups_snapshot(opt) == groups


@pytest.mark.parametrize("name, backend", ALL)
def test_parameter_in_two_groups_raises(name, backend):
    p, q = P(3, 4), P(3, 4, seed=1)
    opt = make(name, backend, [{"params": [p, q]}])
    with pytest.raises(ValueError):
        opt.add_param_group({"params": [p]})
    with pytest.raises(ValueError):
        make(name, backend, [{"params": [p, q]}, {"params": [p]}])


@pytest.mark.parametrize("name, backend", ALL)
def test_empty_parameter_list_raises(name, backend):
    _constructs(name, backend)
    for empty in ([], iter(()), (p for p in [])):
        with pytest.raises(ValueError, match="empty"):
            make(name, backend, empty)


@pytest.mark.parametrize("name, backend", ALL)
def test_sparse_parameter_raises_at_construction_naming_it(name, backend):
    _constructs(name, backend)
    p = torch.nn.Parameter(torch.randn(4, 3, dtype=F64).to_sparse())
    with pytest.raises((ValueError, TypeError), match=r"(?i)sparse") as info:
        make(name, backend, [p])
    assert "param" in str(info.value), str(info.value)


@pytest.mark.parametrize("name, backend", ALL)
def test_sparse_gradient_is_rejected_before_anything_changes(name, backend):
    model = tiny()
    opt = make(name, backend, model.parameters())
    data = batches(2)
    train(model, opt, data[:1])
    before, state = values(model), state_snapshot(opt)
    opt.zero_grad()
    loss_of(model, data[1]).backward()
    model[0].weight.grad = model[0].weight.grad.to_sparse()
    with pytest.raises((ValueError, TypeError, RuntimeError), match=r"(?i)sparse"):
        opt.step()
    assert_equal_tensors(values(model), before, "param")
    assert_same_snapshot(state_snapshot(opt), state)


# ==================================================================================================
# parameters and gradients stay the user's
# ==================================================================================================
def _no_hooks(model: torch.nn.Module) -> None:
    for name, p in model.named_parameters():
        assert not p._backward_hooks, f"{name} has backward hooks"
        assert not getattr(p, "_post_accumulate_grad_hooks", None), f"{name} has post-accumulate-grad hooks"
        assert p.is_leaf and p.grad_fn is None and p.requires_grad, f"{name} is no longer a trainable leaf"
    for name, m in model.named_modules():
        for kind in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            assert not getattr(m, kind), f"module {name!r} has {kind}"


@pytest.mark.parametrize("name, backend", ALL)
def test_parameters_and_gradients_stay_the_users_tensors(name, backend):
    model = mlp(4, 6, 6, 3)
    params = list(model.parameters())
    ids = [id(p) for p in params]
    ptrs = [p.data_ptr() for p in params]

    def check(when):
        now = list(model.parameters())
        assert [id(p) for p in now] == ids, f"{when}: the model's parameters are other objects"
        assert [p.data_ptr() for p in now] == ptrs, f"{when}: a parameter's data moved"
        for i, p in enumerate(now):
            storage = p.untyped_storage()
            assert storage.data_ptr() == p.data_ptr() and storage.nbytes() == p.numel() * p.element_size(), (
                f"{when}: parameter {i} became a view of a larger buffer")
        _no_hooks(model)

    opt = make(name, backend, model.parameters())
    check("after construction")
    assert {id(p) for g in opt.param_groups for p in g["params"]} == set(ids)
    data = batches(3)
    for step, batch in enumerate(data):
        opt.zero_grad()
        loss_of(model, batch).backward()
        grads = [p.grad for p in params]
        copies = [g.clone() for g in grads]
        grad_ptrs = [g.data_ptr() for g in grads]
        opt.step()
        check(f"after step {step}")
        for i, (p, g, c, ptr) in enumerate(zip(params, grads, copies, grad_ptrs)):
            assert p.grad is g and g.data_ptr() == ptr, f"step {step}: param {i}'s grad was replaced"
            assert torch.equal(g, c), f"step {step}: param {i}'s grad was written"
    # gradients the user put there by hand, non-contiguous ones included
    grads = [torch.randn(p.shape[::-1], dtype=F64).t() if p.dim() == 2 else torch.randn_like(p) for p in params]
    copies = [g.clone() for g in grads]
    for p, g in zip(params, grads):
        p.grad = g
    opt.step()
    check("after a step on hand-made gradients")
    for i, (p, g, c) in enumerate(zip(params, grads, copies)):
        assert p.grad is g and torch.equal(g, c), f"param {i}'s hand-made grad was replaced or written"
    opt.zero_grad(set_to_none=False)
    for i, (p, g) in enumerate(zip(params, grads)):
        assert p.grad is g and not g.any(), f"zero_grad(set_to_none=False) did not zero param {i}'s grad in place"
    opt.zero_grad()
    assert all(p.grad is None for p in params), "zero_grad() leaves gradients"


@pytest.mark.parametrize("name, backend", ALL)
def test_gradients_that_are_views_of_one_bucket(name, backend):
    """DDP's ``gradient_as_bucket_view=True``: every grad a view of one flat bucket, zeroed in place
    (``zero_grad(set_to_none=False)``) and filled in place; the step reads them where they are."""
    model, ref = tiny(), tiny()
    opt, ref_opt = make(name, backend, model.parameters()), make(name, backend, ref.parameters())
    params = list(model.parameters())
    bucket = torch.zeros(sum(p.numel() for p in params), dtype=F64)
    offset = 0
    for p in params:
        p.grad = bucket[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
    views = list(zip(params, [p.grad for p in params]))
    for batch in batches(3):
        opt.zero_grad(set_to_none=False)
        assert not bucket.any()
        for g, v in zip(torch.autograd.grad(loss_of(model, batch), params), (p.grad for p in params)):
            v.copy_(g)
        ref_opt.zero_grad()
        loss_of(ref, batch).backward()
        opt.step()
        ref_opt.step()
        for i, (p, v) in enumerate(views):
            assert p.grad is v and p.grad.untyped_storage().data_ptr() == bucket.untyped_storage().data_ptr(), (
                f"param {i}'s grad is no longer its bucket view")
    assert_equal_tensors(values(model), values(ref), "param")


@pytest.mark.parametrize("name, backend", ALL)
def test_discarded_optimizers_leave_no_references_hooks_or_slowdown(name, backend):
    """LR finders and k-fold loops build many optimizers on one model."""
    model = mlp(16, 32, 32, 8)
    control = copy.deepcopy(model)  # the same model, never given to an optimizer
    batch = batches(1, 16, 8)[0]
    refs = []
    for i in range(200):
        opt = make(name, backend, model.parameters())
        opt.zero_grad()
        loss_of(model, batch).backward()
        opt.step()
        refs.append(weakref.ref(opt))
        del opt
        if i == 0:  # fail fast: a leak makes every later iteration slower
            gc.collect()
            assert refs[0]() is None, "a discarded optimizer is still referenced"
            _no_hooks(model)
    model.zero_grad(set_to_none=True)
    gc.collect()
    alive = sum(r() is not None for r in refs)
    assert alive == 0, f"{alive} of 200 discarded optimizers are still referenced"
    _no_hooks(model)
    times = {id(model): [], id(control): []}
    for _ in range(50):  # interleaved, so that both see the same load from other processes
        for m in (model, control):
            start = time.perf_counter()
            loss_of(m, batch).backward()
            times[id(m)].append(time.perf_counter() - start)
            m.zero_grad(set_to_none=True)
    ours, fresh = min(times[id(model)]), min(times[id(control)])
    # 1.3× and 50 µs of slack for noise; a hook per parameter per optimizer (1200 calls) costs far more
    assert ours <= 1.3 * fresh + 5e-5, f"forward+backward takes {ours * 1e6:.0f} µs, {fresh * 1e6:.0f} µs on a fresh copy"


# ==================================================================================================
# learning rates: zero, scheduled from zero, tensors
# ==================================================================================================
@pytest.mark.parametrize("name, backend", ALL)
def test_lr_zero_changes_nothing_but_state(name, backend):
    """Built with lr 0, and every group's lr set to 0 as torch.distributed.checkpoint's ``set_state_dict``
    does to create the state (Muon's auxiliary groups included)."""
    model = tiny()
    before = values(model)
    opt = make(name, backend, model.parameters(), lr=0.0)
    for group in opt.param_groups:
        group["lr"] = 0.0
    train(model, opt, batches(3))
    assert_equal_tensors(values(model), before, "param")
    assert len(opt.state_dict()["state"]) == len(before), "a step at lr 0 still creates every parameter's state"


@pytest.mark.parametrize("name, backend", ALL)
def test_warmup_from_zero_with_lambda_lr(name, backend):
    model, ref = tiny(), tiny()
    before = values(model)
    opt = make(name, backend, model.parameters())
    sched = LambdaLR(opt, lambda s: min(1.0, s / 3))
    assert all(g["lr"] == 0 for g in opt.param_groups)
    ref_opt = make(name, backend, ref.parameters())
    initial = [g["lr"] for g in ref_opt.param_groups]
    data = batches(5)
    for step, batch in enumerate(data):
        for g, lr in zip(ref_opt.param_groups, initial):
            g["lr"] = lr * min(1.0, step / 3)
        train(model, opt, [batch])
        train(ref, ref_opt, [batch])
        sched.step()
        if step == 0:
            assert_equal_tensors(values(model), before, "param after the lr-0 step")
    assert all(changed(model, before))
    assert_equal_tensors(values(model), values(ref), "param")


@pytest.mark.parametrize("shape", [(), (1,)], ids=["0d", "1-element"])
@pytest.mark.parametrize("name, backend", ALL)
def test_tensor_lr_equals_float_lr(name, backend, shape):
    """Also under a scheduler, which updates a tensor lr in place."""
    lr = KWARGS[name]["lr"]
    model, ref = tiny(), tiny()
    opt = make(name, backend, model.parameters(), lr=torch.tensor(lr, dtype=F64).reshape(shape))
    ref_opt = make(name, backend, ref.parameters(), lr=lr)
    scheds = [StepLR(o, step_size=1, gamma=0.5) for o in (opt, ref_opt)]
    for batch in batches(4):
        train(model, opt, [batch])
        train(ref, ref_opt, [batch])
        for s in scheds:
            s.step()
    # the same float64 values, the lr read from a tensor instead of a Python float: a few ulps at most
    assert_close_tensors(values(model), values(ref), atol=1e-15, rtol=1e-14, what="param")


# ==================================================================================================
# copies
# ==================================================================================================
def _steps_like_the_original(model, opt, model2, opt2):
    params2 = list(model2.parameters())
    assert {id(p) for g in opt2.param_groups for p in g["params"]} == {id(p) for p in params2}, (
        "the copied optimizer does not hold the copied model's parameters")
    data = batches(3, seed=5)
    train(model, opt, data)
    train(model2, opt2, data)
    assert_equal_tensors(values(model2), values(model), "param")
    compare_state_dicts(frozen_state_dict(opt2), frozen_state_dict(opt))
    original = values(model)
    train(model2, opt2, data[:1])  # the copy steps alone
    assert_equal_tensors(values(model), original, "original param after stepping the copy")


@pytest.mark.parametrize("name, backend", ALL)
def test_deepcopy_steps_identically(name, backend):
    model = tiny()
    opt = make(name, backend, model.parameters())
    train(model, opt, batches(2))
    model2, opt2 = copy.deepcopy((model, opt))
    assert {k for k in vars(opt2) if not k.startswith("_")} == {k for k in vars(opt) if not k.startswith("_")}
    _steps_like_the_original(model, opt, model2, opt2)


@pytest.mark.parametrize("name, backend", ALL)
def test_pickle_round_trip_steps_identically(name, backend):
    model = tiny()
    opt = make(name, backend, model.parameters())
    train(model, opt, batches(2))
    model2, opt2 = pickle.loads(pickle.dumps((model, opt)))
    _steps_like_the_original(model, opt, model2, opt2)


# ==================================================================================================
# complex parameters
# ==================================================================================================
@pytest.mark.parametrize("name, backend", ALL)
def test_complex_parameters(name, backend):
    """NAG and NAdamW equal torch SGD(nesterov) / NAdam(decoupled) on complex; Adan, LARS, LAMB equal
    themselves on ``view_as_real`` copies (torch's semantics for complex); Muon and NorMuon refuse at construction."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(4, 3), (2, 3, 2)] + ([(5,)] if name in TORCH_TWIN else [])
    ours = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=torch.complex128)) for s in shapes]
    if name in ("Muon", "NorMuon"):
        _constructs(name, backend)
        with pytest.raises((ValueError, TypeError), match=r"(?i)complex"):
            make(name, backend, ours)
        return
    opt = make(name, backend, ours)
    if name in TORCH_TWIN:
        ref = [torch.nn.Parameter(p.detach().clone()) for p in ours]
        cls, kwargs = TORCH_TWIN[name]
        ref_opt = cls(ref, **kwargs)
    else:  # the same rule, on the eager backend (the readable rule), over the real views
        ref = [torch.nn.Parameter(torch.view_as_real(p.detach()).clone()) for p in ours]
        ref_opt = make(name, "eager", ref)
    for _ in range(4):
        for p, r in zip(ours, ref):
            p.grad = torch.randn(p.shape, generator=gen, dtype=torch.complex128)
            r.grad = p.grad.clone() if r.is_complex() else torch.view_as_real(p.grad).clone()
        opt.step()
        ref_opt.step()
    as_real = [torch.view_as_real(p.detach()) for p in ours]
    assert_close_tensors(as_real, [torch.view_as_real(r.detach()) if r.is_complex() else r for r in ref],
                         atol=PARITY, what="param")


# ==================================================================================================
# hooks
# ==================================================================================================
@pytest.mark.parametrize("name, backend", ALL)
def test_state_dict_pre_and_post_hooks(name, backend):
    """torch's pattern: a pre-hook stores extra state in ``self.state``, a post-hook edits the dict."""
    model, ref = tiny(), tiny()
    opt, ref_opt = make(name, backend, model.parameters()), make(name, backend, ref.parameters())
    data = batches(3)
    train(model, opt, data[:1])
    train(ref, ref_opt, data[:1])

    def pre(o):
        o.state["test"] = 1

    def post(o, sd):
        sd["ran_pre_hook"] = sd["state"].pop("test", None) == 1
        return sd

    pre_handle = opt.register_state_dict_pre_hook(pre)
    assert opt.state_dict()["state"]["test"] == 1
    post_handle = opt.register_state_dict_post_hook(post)
    sd = opt.state_dict()
    assert sd["ran_pre_hook"] is True and "test" not in sd["state"]
    pre_handle.remove()
    post_handle.remove()
    assert "ran_pre_hook" not in opt.state_dict()
    # the extra entry stays in opt.state (as in torch); stepping ignores it
    train(model, opt, data[1:])
    train(ref, ref_opt, data[1:])
    assert_equal_tensors(values(model), values(ref), "param")


@pytest.mark.parametrize("name, backend", ALL)
def test_load_state_dict_pre_and_post_hooks(name, backend):
    model = tiny()
    opt = make(name, backend, model.parameters())
    data = batches(2)
    train(model, opt, data[:1])
    sd = frozen_state_dict(opt)
    twin = copy.deepcopy(model)
    calls = []

    def pre_in_place(o, state_dict):
        calls.append("pre1")
        state_dict["param_groups"][0]["lr"] = 0.002

    def pre_returning(o, state_dict):
        calls.append("pre2")
        new = copy.deepcopy(state_dict)
        new["param_groups"][0]["lr"] = 0.003
        return new

    def post(o):
        calls.append("post")
        o.state["ran_post_hook"] = o.param_groups[0]["lr"] == 0.003

    opt.register_load_state_dict_pre_hook(pre_in_place)
    opt.register_load_state_dict_pre_hook(pre_returning)
    opt.register_load_state_dict_pre_hook(lambda o, state_dict: calls.append("pre0"), prepend=True)
    opt.register_load_state_dict_post_hook(post)
    opt.load_state_dict(copy.deepcopy(sd))
    assert calls == ["pre0", "pre1", "pre2", "post"]
    assert opt.param_groups[0]["lr"] == 0.003 and opt.state["ran_post_hook"] is True
    # the lr the hook set is the one the next step uses
    sd["param_groups"][0]["lr"] = 0.003
    twin_opt = make(name, backend, twin.parameters())
    twin_opt.load_state_dict(sd)
    train(model, opt, data[1:])
    train(twin, twin_opt, data[1:])
    assert_equal_tensors(values(model), values(twin), "param")


@pytest.mark.parametrize("name, backend", ALL)
def test_step_pre_and_post_hooks(name, backend):
    model = tiny()
    opt = make(name, backend, model.parameters())
    w = model[0].weight
    seen = []
    pre = opt.register_step_pre_hook(lambda o, args, kwargs: seen.append(("pre", o, w.detach().clone())))
    post = opt.register_step_post_hook(lambda o, args, kwargs: seen.append(("post", o, w.detach().clone())))
    before = w.detach().clone()
    train(model, opt, batches(1))
    assert [(k, o is opt) for k, o, _ in seen] == [("pre", True), ("post", True)]
    assert torch.equal(seen[0][2], before), "the pre-hook ran after the step"
    assert torch.equal(seen[1][2], w.detach()) and not torch.equal(seen[1][2], before), "the post-hook ran before it"
    pre.remove()
    post.remove()
    train(model, opt, batches(1, seed=2))
    assert len(seen) == 2, "removed hooks still run"


@pytest.mark.parametrize("name, backend", ALL)
def test_global_optimizer_step_hooks(name, backend):
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    model = tiny()
    opt = make(name, backend, model.parameters())
    opt.zero_grad()
    loss_of(model, batches(1)[0]).backward()
    seen = []
    handles = [register_optimizer_step_pre_hook(lambda o, args, kwargs: seen.append(("pre", o))),
               register_optimizer_step_post_hook(lambda o, args, kwargs: seen.append(("post", o)))]
    try:
        opt.step()
    finally:
        for h in handles:
            h.remove()
    # one step of the user's optimizer: one pre and one post call, with that optimizer
    assert [(k, o is opt) for k, o in seen] == [("pre", True), ("post", True)]


@pytest.mark.parametrize("name, backend", ALL)
def test_step_with_closure_under_no_grad(name, backend):
    """``step(closure)`` re-enables grad for the closure (as torch's do) and returns its loss."""
    model, ref = tiny(), tiny()
    opt, ref_opt = make(name, backend, model.parameters()), make(name, backend, ref.parameters())
    for batch in batches(3):
        def closure():
            opt.zero_grad()
            loss = loss_of(model, batch)
            loss.backward()
            return loss

        with torch.no_grad():
            loss = opt.step(closure)
        assert isinstance(loss, torch.Tensor) and torch.equal(loss, loss_of(ref, batch))
        train(ref, ref_opt, [batch])
    assert_equal_tensors(values(model), values(ref), "param")


# ==================================================================================================
# state_dict
# ==================================================================================================
@pytest.mark.parametrize("name, backend", ALL)
def test_state_dict_round_trip_mid_run_continues_identically(name, backend):
    model = tiny()
    opt = make(name, backend, model.parameters())
    train(model, opt, batches(3))
    sd = frozen_state_dict(opt)
    model2 = copy.deepcopy(model)
    opt2 = make(name, backend, model2.parameters())
    opt2.load_state_dict(sd)
    compare_state_dicts(frozen_state_dict(opt2), frozen_state_dict(opt))
    data = batches(3, seed=7)
    train(model, opt, data)
    train(model2, opt2, data)
    assert_equal_tensors(values(model2), values(model), "param")
    compare_state_dicts(frozen_state_dict(opt2), frozen_state_dict(opt))


@pytest.mark.parametrize("name, backend", ALL)
def test_loads_its_own_state_dict_without_newer_keys(name, backend):
    """As torch's ``__setstate__`` fills the keys an older state_dict lacks (weight decay 0: the decay form
    an older NAdam dict implies is then moot)."""
    model = tiny()
    opt = make(name, backend, model.parameters(), weight_decay=0.0)
    train(model, opt, batches(2))
    sd = frozen_state_dict(opt)
    for group in sd["param_groups"]:
        for key in NEWER_KEYS:
            group.pop(key, None)
    model2 = copy.deepcopy(model)
    opt2 = make(name, backend, model2.parameters(), weight_decay=0.0)
    opt2.load_state_dict(sd)
    data = batches(2, seed=3)
    train(model, opt, data)
    train(model2, opt2, data)
    assert_equal_tensors(values(model2), values(model), "param")


@pytest.mark.parametrize("name, backend", case_params(only("NAdamW", "Adan", "LAMB", "Muon", "NorMuon")))
def test_loads_state_dict_whose_step_is_a_python_number(name, backend):
    model = tiny()
    opt = make(name, backend, model.parameters())
    train(model, opt, batches(2))
    sd = frozen_state_dict(opt)
    converted = 0
    for entry in sd["state"].values():
        if isinstance(entry.get("step"), torch.Tensor):
            entry["step"] = entry["step"].item()
            converted += 1
    assert converted, "this rule keeps a step count per parameter"
    model2 = copy.deepcopy(model)
    opt2 = make(name, backend, model2.parameters())
    opt2.load_state_dict(sd)
    data = batches(2, seed=3)
    train(model, opt, data)
    train(model2, opt2, data)
    assert_equal_tensors(values(model2), values(model), "param")


@pytest.mark.parametrize("mismatch", ["group count", "param count", "other optimizer"])
@pytest.mark.parametrize("name, backend", ALL)
def test_mismatched_state_dict_raises_before_anything_changes(name, backend, mismatch):
    model, twin, other = mlp(4, 5, 5, 3), mlp(4, 5, 5, 3), mlp(4, 5, 5, 3, seed=1)
    opt, twin_opt = make(name, backend, model.parameters()), make(name, backend, twin.parameters())
    data = batches(4)
    train(model, opt, data[:2])
    train(twin, twin_opt, data[:2])
    others = list(other.parameters())
    if mismatch == "group count":
        source = make(name, backend, [{"params": others[:2]}, {"params": others[2:]}])
    elif mismatch == "param count":
        source = make(name, backend, others[:-1])
    else:  # the same grouping, another rule's state
        position = {id(p): i for i, p in enumerate(model.parameters())}
        source = getattr(nesterov, FOREIGN[name])(
            [{"params": [others[position[id(p)]] for p in g["params"]]} for g in opt.param_groups])
    train(other, source, data[:1])
    sd = frozen_state_dict(source)
    params, state, groups = values(model), state_snapshot(opt), groups_snapshot(opt)
    with pytest.raises(ValueError):
        opt.load_state_dict(sd)
    assert_equal_tensors(values(model), params, "param")
    assert_same_snapshot(state_snapshot(opt), state)
    assert groups_snapshot(opt) == groups, "param_groups changed"
    train(model, opt, data[2:])
    train(twin, twin_opt, data[2:])
    assert_equal_tensors(values(model), values(twin), "param after the rejected load")


def _torch_and_ours(name, backend, weight_decay=None):
    cls, kwargs = TORCH_TWIN[name]
    if weight_decay is not None:
        kwargs = {**kwargs, "weight_decay": weight_decay}
    ours = {k: v for k, v in kwargs.items() if k not in ("nesterov", "decoupled_weight_decay")}
    return (lambda params: cls(params, **kwargs)), (lambda params: make(name, backend, params, **ours))


@pytest.mark.parametrize("name, backend", case_params(only("NAG", "NAdamW")))
def test_state_dict_interchange_with_torch_both_ways(name, backend):
    """NAG ↔ torch SGD(nesterov=True), NAdamW ↔ torch NAdam(decoupled_weight_decay=True)."""
    build_torch, build_ours = _torch_and_ours(name, backend)
    # torch NAdam casts ``mu_product`` (a float32 0-d tensor) to the parameter's dtype when it loads any
    # state_dict, its own included: its steps after a load move by ~5e-12 from an unbroken torch run
    # (measured torch → torch here). Into torch, NAdamW is held to 1e-10; into ours, everything to 1e-12.
    for first, second, atol in ((build_torch, build_ours, PARITY),
                                (build_ours, build_torch, 1e-10 if name == "NAdamW" else PARITY)):
        model = tiny()
        opt = first(model.parameters())
        train(model, opt, batches(3))
        model2 = copy.deepcopy(model)
        opt2 = second(model2.parameters())
        opt2.load_state_dict(frozen_state_dict(opt))
        data = batches(3, seed=4)
        train(model, opt, data)
        train(model2, opt2, data)
        assert_close_tensors(values(model2), values(model), atol=atol, what="param")
        compare_state_dicts(frozen_state_dict(opt2), frozen_state_dict(opt), atol=atol, top_level=False,
                            ignore_keys=("param_names", "foreach", "differentiable", "fused", "capturable", "backend",
                                         "state_dtype"))


@pytest.mark.parametrize("name, backend", case_params(only("NAG", "NAdamW")))
def test_loads_an_older_torch_state_dict(name, backend):
    """A torch SGD / NAdam state_dict written before ``maximize``, ``foreach``, ``decoupled_weight_decay``...
    existed (weight decay 0 for NAdam: an older dict means coupled decay, moot then)."""
    build_torch, build_ours = _torch_and_ours(name, backend, weight_decay=0.0 if name == "NAdamW" else None)
    model = tiny()
    opt = build_torch(model.parameters())
    train(model, opt, batches(3))
    sd = frozen_state_dict(opt)
    for group in sd["param_groups"]:
        for key in NEWER_KEYS:
            group.pop(key, None)
    model2 = copy.deepcopy(model)
    opt2 = build_ours(model2.parameters())
    opt2.load_state_dict(sd)
    data = batches(3, seed=4)
    train(model, opt, data)
    train(model2, opt2, data)
    assert_close_tensors(values(model2), values(model), atol=PARITY, what="param")


@pytest.mark.parametrize("name, backend", case_params(only("NAdamW")))
def test_older_torch_nadam_state_dict_keeps_its_l2_decay(name, backend):
    """A torch NAdam state_dict from before ``decoupled_weight_decay`` existed meant L2 decay; torch's
    ``NAdam.__setstate__`` fills False, and so must NAdamW (whose own default is True)."""
    model = tiny()
    opt = torch.optim.NAdam(model.parameters(), lr=0.01, weight_decay=0.05)
    train(model, opt, batches(3))
    sd = frozen_state_dict(opt)
    for group in sd["param_groups"]:
        del group["decoupled_weight_decay"]
    loaded_by_torch = torch.optim.NAdam(copy.deepcopy(model).parameters(), decoupled_weight_decay=True)
    loaded_by_torch.load_state_dict(copy.deepcopy(sd))
    assert loaded_by_torch.param_groups[0]["decoupled_weight_decay"] is False
    ours = copy.deepcopy(model)
    our_opt = make(name, backend, ours.parameters(), lr=0.01, weight_decay=0.05)
    our_opt.load_state_dict(sd)
    assert our_opt.param_groups[0]["decoupled_weight_decay"] is False
    # against torch's unbroken run (torch's own reload casts mu_product to float64: ~5e-12 off, see above)
    data = batches(3, seed=4)
    train(model, opt, data)
    train(ours, our_opt, data)
    assert_close_tensors(values(ours), values(model), atol=PARITY, what="param")


def _add_extra_state(optimizer, state_dict):
    state_dict["state"]["extra"] = {"note": "kept", "count": torch.tensor(7.0)}


@pytest.mark.parametrize("name, backend", ALL)
def test_state_a_post_hook_adds_loads_back_as_torch_keeps_it(name, backend):
    """State that is not a parameter's (here added by a state_dict post hook) is kept by torch's
    load_state_dict as it is and saved again; ours does the same and trains on unchanged."""
    for build in (lambda params: torch.optim.SGD(params, lr=0.1), lambda params: make(name, backend, params)):
        model = tiny()
        opt = build(model.parameters())
        opt.register_state_dict_post_hook(_add_extra_state)
        train(model, opt, batches(2))
        sd = frozen_state_dict(opt)
        model2 = copy.deepcopy(model)
        opt2 = build(model2.parameters())
        opt2.load_state_dict(sd)
        assert opt2.state["extra"]["note"] == "kept" and torch.equal(opt2.state["extra"]["count"], torch.tensor(7.0))
        assert opt2.state_dict()["state"]["extra"]["note"] == "kept"
        data = batches(2, seed=3)
        train(model, opt, data)
        train(model2, opt2, data)
        assert_equal_tensors(values(model2), values(model), "param")


# ==================================================================================================
# odd parameters and missing gradients
# ==================================================================================================
@pytest.mark.parametrize("name, backend", ALL)
def test_zero_size_parameters(name, backend):
    params = [P(0), P(0, 3), P(3, 4, seed=1), P(4, seed=2)]
    real = [torch.nn.Parameter(p.detach().clone()) for p in params[2:]]
    opt, ref_opt = make(name, backend, params), make(name, backend, real)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=F64)
        for p, r in zip(params[2:], real):
            r.grad = p.grad.clone()
        opt.step()
        ref_opt.step()
    assert [tuple(p.shape) for p in params] == [(0,), (0, 3), (3, 4), (4,)]
    assert_equal_tensors(values(params[2:]), values(real), "non-empty param")
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    make(name, backend, copies).load_state_dict(frozen_state_dict(opt))


@pytest.mark.parametrize("name, backend", ALL)
def test_step_without_any_gradient_is_a_no_op(name, backend):
    model = tiny()
    opt = make(name, backend, model.parameters())
    before, sd = values(model), frozen_state_dict(opt)
    opt.step()
    assert_equal_tensors(values(model), before, "param")
    compare_state_dicts(frozen_state_dict(opt), sd)
    train(model, opt, batches(2))
    opt.zero_grad()
    before, sd = values(model), frozen_state_dict(opt)
    opt.step()
    assert_equal_tensors(values(model), before, "param")
    compare_state_dicts(frozen_state_dict(opt), sd)


@pytest.mark.parametrize("name, backend", ALL)
def test_parameter_whose_grad_is_none_is_left_alone(name, backend):
    """No weight decay, no momentum, no step count for a parameter without a gradient; the others step as
    if it were not there."""
    a, b, c = P(3, 4), P(3, 4, seed=1), P(4, seed=2)
    a_alone = torch.nn.Parameter(a.detach().clone())
    opt, ref_opt = make(name, backend, [a, b, c]), make(name, backend, [a_alone])
    gen = torch.Generator().manual_seed(0)
    for step in range(4):
        a.grad = torch.randn(a.shape, generator=gen, dtype=F64)
        a_alone.grad = a.grad.clone()
        if step == 0:
            b.grad, c.grad = torch.randn_like(b), torch.randn_like(c)
        else:
            b.grad = c.grad = None
        opt.step()
        ref_opt.step()
        if step == 0:
            frozen, state = values([b, c]), state_snapshot(opt)
    assert_equal_tensors(values([b, c]), frozen, "param without grad")
    now = state_snapshot(opt)
    for i in (1, 2):
        assert_same_snapshot({i: now.get(i)}, {i: state.get(i)})
    assert_equal_tensors(values([a]), values([a_alone]), "param with grad")


@pytest.mark.parametrize("name, backend", ALL)
def test_frozen_parameters_then_unfrozen(name, backend):
    model = mlp(4, 5, 5, 3)
    model[2].requires_grad_(False)
    opt = make(name, backend, model.parameters())
    frozen, before = values(model[2]), values(model)
    train(model, opt, batches(3))
    assert_equal_tensors(values(model[2]), frozen, "frozen param")
    assert changed(model[0], before[:2]) == [True, True] and changed(model[4], before[4:]) == [True, True]
    model[2].requires_grad_(True)
    train(model, opt, batches(2, seed=3))
    assert all(changed(model[2], frozen)), "an unfrozen layer does not train"


@pytest.mark.parametrize("name, backend", ALL)
def test_model_built_on_meta_then_to_empty(name, backend):
    with torch.device("meta"):
        model = mlp(4, 5, 3)
    model.to_empty(device="cpu")
    ref = tiny()
    with torch.no_grad():
        for p, r in zip(model.parameters(), ref.parameters()):
            p.copy_(r)
    before = values(model)
    opt, ref_opt = make(name, backend, model.parameters()), make(name, backend, ref.parameters())
    data = batches(3)
    train(model, opt, data)
    train(ref, ref_opt, data)
    assert all(changed(model, before))
    assert_equal_tensors(values(model), values(ref), "param")


# ==================================================================================================
# AMP, dtypes, determinism
# ==================================================================================================
@pytest.mark.parametrize("name, backend", ALL)
def test_grad_scaler_skipping_the_first_step(name, backend):
    """An inf in the very first gradients: nothing moves, and the run then equals one that never had that
    step (float64, scales are powers of two: unscaling is exact)."""
    model, ref = tiny(), tiny()
    opt, ref_opt = make(name, backend, model.parameters()), make(name, backend, ref.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    data = batches(4)
    before = values(model)
    opt.zero_grad()
    scaler.scale(loss_of(model, data[0])).backward()
    with torch.no_grad():
        model[0].weight.grad[0, 0] = float("inf")
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 2.0 ** 9, "the step was not seen as skipped"
    assert_equal_tensors(values(model), before, "param after the skipped step")
    for index, entry in opt.state_dict()["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                assert torch.isfinite(value).all(), f"state[{index}][{key!r}] holds garbage after the skipped step"
    for batch in data[1:]:
        opt.zero_grad()
        scaler.scale(loss_of(model, batch)).backward()
        scaler.step(opt)
        scaler.update()
        train(ref, ref_opt, [batch])
    assert_close_tensors(values(model), values(ref), atol=PARITY, what="param")
    compare_state_dicts(frozen_state_dict(opt), frozen_state_dict(ref_opt), atol=PARITY)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name, backend", case_params(only("NAG")))
def test_half_precision_parameters_match_torch_sgd(name, backend, dtype):
    """Tensors of 65 536 elements and more included (torch's fused CPU kernel is wrong for them)."""
    params = [P(256, 320, dtype=dtype), P(7, seed=1, dtype=dtype)]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in params]
    if backend in ("torch", "cpp"):  # these kernels are for fp32/fp64 parameters: a clear refusal is fine
        _constructs(name, backend)
        try:
            opt = make(name, backend, params)
        except ValueError as error:
            assert "backend" in str(error), str(error)
            return
    else:
        opt = make(name, backend, params)
    cls, kwargs = TORCH_TWIN[name]
    ref_opt = cls(ref, **kwargs)
    before = values(params)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        for p, r in zip(params, ref):
            p.grad = torch.randn(p.shape, generator=gen).to(dtype)
            r.grad = p.grad.clone()
        opt.step()
        ref_opt.step()
    for p, b in zip(params, before):
        assert (p.detach() != b).float().mean() > 0.9, f"{tuple(p.shape)}: the {dtype} parameter did not move"
    # torch rounds every intermediate (buffer, g + μb, the product with lr) to the half type; we may
    # round once. Over 3 steps that is a few ulps of the parameter (bf16: 2^-8 relative) plus a few ulps
    # of the update lr·|g + μb| ≲ 0.1·6 near zero.
    eps = torch.finfo(dtype).eps
    assert_close_tensors(values(params), values(ref), rtol=4 * eps, atol=0.6 * 4 * eps, what="param")


@pytest.mark.parametrize("name, backend", case_params(only("NAG")))
def test_momentum_zero_with_a_large_tensor_equals_torch_sgd(name, backend):
    params = [P(300, 256, dtype=torch.float32), P(5, seed=1, dtype=torch.float32)]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt = make(name, backend, params, momentum=0.0)
    ref_opt = torch.optim.SGD(ref, lr=KWARGS[name]["lr"], momentum=0.0, weight_decay=KWARGS[name]["weight_decay"])
    for step in range(3):
        set_grads(params, step)
        set_grads(ref, step)
        opt.step()
        ref_opt.step()
    # float32: p − η(g + λp) evaluated in another order or fused (FMA): a few ulps of values of order 1
    assert_close_tensors(values(params), values(ref), atol=2e-6, rtol=2e-6, what="param")


@pytest.mark.parametrize("name, backend", ALL)
def test_bf16_state_trains_and_resumes_bit_for_bit(name, backend):
    """The stochastic rounding stream is part of the state: a resumed run rounds as the unbroken one."""
    def build(model):
        return make(name, backend, model.parameters(), state_dtype=torch.bfloat16)

    whole = tiny(torch.float32)
    if backend in ("torch", "cpp"):  # these kernels keep state in the param's dtype: a clear refusal is fine
        _constructs(name, backend)
        try:
            build(whole)
        except ValueError as error:
            assert re.search(r"state_dtype|backend", str(error)), str(error)
            return
    data = batches(6, dtype=torch.float32)
    before = values(whole)
    whole_opt = build(whole)
    train(whole, whole_opt, data)
    assert all(changed(whole, before))
    first = tiny(torch.float32)
    first_opt = build(first)
    train(first, first_opt, data[:3])
    sd = frozen_state_dict(first_opt)
    resumed = copy.deepcopy(first)
    resumed_opt = build(resumed)
    resumed_opt.load_state_dict(sd)
    train(resumed, resumed_opt, data[3:])
    assert_equal_tensors(values(resumed), values(whole), "param")
    final = frozen_state_dict(whole_opt)
    compare_state_dicts(frozen_state_dict(resumed_opt), final)
    big_states = [v for entry in final["state"].values() for v in entry.values()
                  if isinstance(v, torch.Tensor) and v.is_floating_point() and v.numel() > 1]
    assert big_states and all(v.dtype == torch.bfloat16 for v in big_states), "state is not kept in bf16"


@pytest.mark.parametrize("name, backend", ALL)
def test_two_identical_runs_are_bit_identical(name, backend):
    def run():
        model = mlp(4, 5, 5, 3)
        opt = make(name, backend, model.parameters())
        train(model, opt, batches(4))
        return values(model), frozen_state_dict(opt)

    (first, first_sd), (second, second_sd) = run(), run()
    assert_equal_tensors(second, first, "param")
    compare_state_dicts(second_sd, first_sd)


# ==================================================================================================
# torch.compile
# ==================================================================================================
@pytest.mark.parametrize("name, backend", ALL)
def test_many_models_one_after_another_in_one_process(name, backend):
    """LR finders, k-fold loops, notebooks: models in turn, 2 to 7 tensors each, with tensors of one and of
    zero elements at different positions, each stepping as the readable rule (backend "eager") does
    (float64, 1e-12: the order of a fused or compiled evaluation, a few ulps).

    A compiled kernel must serve them all: one that specialises on sizes or counts recompiles for each new
    model and, in a long process, reaches dynamo's recompile limit (8 per kernel), after which a
    ``fullgraph`` kernel fails. The limit is set to 1 here, so that such a kernel fails at the second model
    instead of the ninth (and the test stays short)."""
    gen = torch.Generator().manual_seed(0)
    with torch._dynamo.config.patch(recompile_limit=1):
        for k in range(6):
            n = 2 + k
            shapes = [(1,) if i == k % n else (0, 3) if i == (3 * k + 1) % n else (i + 2, 3) for i in range(n)]
            params = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=F64)) for s in shapes]
            ref = [torch.nn.Parameter(p.detach().clone()) for p in params]
            opt, ref_opt = make(name, backend, params), make(name, "eager", ref)
            for _ in range(2):
                for p, r in zip(params, ref):
                    p.grad = torch.randn(p.shape, generator=gen, dtype=F64)
                    r.grad = p.grad.clone()
                opt.step()
                ref_opt.step()
            assert_close_tensors(values(params), values(ref), atol=PARITY, what=f"model {k}: param")


@pytest.mark.parametrize("name, backend", ALL)
def test_compiled_training_step_compiles_nothing_per_parameter(name, backend):
    """A torch.compile'd step (zero_grad, forward, backward, step) compiles as many frames for a model of
    20 parameter tensors as for one of 10, so no model size reaches dynamo's recompile limit (8 per frame);
    after the third step nothing compiles any more; and it trains as the eager step does (float64; dynamo's
    ``aot_eager`` backend runs the ops eager runs: its guards and recompiles are what is checked here,
    inductor's code generation is not needed for that).

    The limit itself is raised during the test: torch's own step wrapper (``Optimizer.profile_hook_step``)
    keeps a cache entry per optimizer instance, so the cases of this module would exhaust it between them,
    torch.optim.SGD's included; a fresh process with one optimizer does not."""
    from torch._dynamo.utils import counters

    def frames_compiled(widths) -> int:
        model = mlp(*widths)
        ref = copy.deepcopy(model)
        opt, ref_opt = make(name, backend, model.parameters()), make(name, backend, ref.parameters())
        batch = batches(1, widths[0], widths[-1])[0]

        def step():
            opt.zero_grad()
            loss_of(model, batch).backward()
            opt.step()

        # dynamo caches compiled frames per code object: this model's step gets one of its own
        code = step.__code__.replace(co_name=f"train_step_{len(widths)}_{name}_{backend}")
        step = torch.compile(types.FunctionType(code, step.__globals__, code.co_name, None, step.__closure__),
                             backend="aot_eager")
        start = counters["frames"]["total"]
        for i in range(5):
            step()
            train(ref, ref_opt, [batch])
            if i == 2:
                after_three = counters["frames"]["total"]
        assert counters["frames"]["total"] == after_three, f"{len(widths) - 1} layers: steps 4 and 5 compiled again"
        assert_close_tensors(values(model), values(ref), atol=PARITY, what="param")
        return after_three - start

    with torch._dynamo.config.patch(recompile_limit=10_000, accumulated_recompile_limit=100_000,
                                    fail_on_recompile_limit_hit=True):
        frames_compiled((6, 8, 3))  # a first model: what dynamo compiles once per process is counted here
        ten = frames_compiled((6, 8, 8, 8, 8, 3))
        twenty = frames_compiled((6,) + (8,) * 9 + (3,))
    assert twenty == ten, f"a 20-tensor model compiled {twenty} frames, a 10-tensor one {ten}: something per tensor"


def test_rule_without_foreach_is_refused_where_auto_or_foreach_would_step_on_it():
    """``auto`` steps on a rule's foreach restatement while its kernel compiles: a rule that declares none
    is refused at construction (naming the backend), and still runs where it needs none."""
    import dataclasses

    from nesterov.rules.nag import NAG_RULE

    class Bare(nesterov.NAG):
        rule = dataclasses.replace(NAG_RULE, name="nag_without_foreach", foreach=None)

    for backend in ("auto", "foreach"):
        with pytest.raises(ValueError, match=f"backend='{backend}'.*no foreach"):
            Bare([torch.nn.Parameter(torch.zeros(3))], lr=0.1, backend=backend)
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    Bare([p], lr=0.1, momentum=0.9, backend="eager").step()
    assert torch.allclose(p.detach(), torch.full((3,), 1 - 0.1 * 1.9))
