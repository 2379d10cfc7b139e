"""ScheduleFreeSGD and ScheduleFreeAdamW against the reference package ``schedulefree`` 1.4.1.

float64, random configurations (hypothesis), every backend, with train/eval switches and a state_dict round trip
mid-run, within 1e-12; the mode in state_dict and resumes from either mode bit for bit; step() in eval mode and
bad input refused by name. torch.optim's contract for both is in tests/test_contract.py.
"""

from __future__ import annotations

import copy

import pytest
import schedulefree
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from _contract_cases import assert_equal_tensors, frozen_state_dict, values

import nesterov

F64 = torch.float64
PARITY = 1e-12
BACKENDS = ("eager", "foreach", "compile", "cpp", "auto")
REFERENCE = {"ScheduleFreeSGD": schedulefree.SGDScheduleFree, "ScheduleFreeAdamW": schedulefree.AdamWScheduleFree}
SHAPES = [(5, 3), (4,), (2, 3, 2), (1,)]
FLOAT = dict(allow_nan=False, allow_infinity=False)

schedule_st = st.fixed_dictionaries({
    "weight_decay": st.sampled_from([0.0, 0.01]) | st.floats(0.0, 0.1, **FLOAT),
    "warmup_steps": st.integers(0, 4), "r": st.floats(0.0, 2.0, **FLOAT),
    "weight_lr_power": st.floats(0.0, 3.0, **FLOAT)})
KWARGS_ST = {
    "ScheduleFreeSGD": st.fixed_dictionaries({"lr": st.floats(0.0, 2.0, **FLOAT),
                                              "momentum": st.floats(0.05, 0.99, **FLOAT)}),
    "ScheduleFreeAdamW": st.fixed_dictionaries({"lr": st.floats(0.0, 0.1, **FLOAT),
                                                "betas": st.tuples(st.floats(0.05, 0.99, **FLOAT),
                                                                   st.floats(0.0, 0.999, **FLOAT)),
                                                "eps": st.floats(1e-10, 1e-4, **FLOAT)}),
}


def fresh(seed: int) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=F64)) for s in SHAPES]


def assert_close(actual, expected, what):
    for i, (a, e) in enumerate(zip(actual, expected)):
        scale = max(e.abs().max().item(), 1.0)
        err = (a.detach() - e.detach()).abs().max().item() / scale
        assert err <= PARITY, f"{what} {i}: relative difference {err:.3g}"


def group_scalars(opt):
    return [(g["k"], g["lr_max"], g["weight_sum"], g["train_mode"]) for g in opt.param_groups]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(REFERENCE))
@settings(max_examples=8, deadline=None)
@given(data=st.data(), steps=st.integers(2, 7), seed=st.integers(0, 2**16))
def test_parity_with_the_reference(name, backend, data, steps, seed):
    """Train/eval switches at random steps, a state_dict round trip in the mode it was saved in, a parameter
    that has no gradient at some steps; the gradients are read, never written."""
    kwargs = {**data.draw(KWARGS_ST[name]), **data.draw(schedule_st)}
    switch_at = data.draw(st.sets(st.integers(0, steps - 1)))
    reload_at = data.draw(st.integers(0, steps - 1))
    ours, theirs = fresh(seed), fresh(seed)
    opt = getattr(nesterov, name)(ours, backend=backend, **kwargs)
    ref = REFERENCE[name](theirs, **kwargs)
    ref.train()
    gen = torch.Generator().manual_seed(seed + 1)
    for step in range(steps):
        for i, (p, q) in enumerate(zip(ours, theirs)):
            if i == 1 and step % 3 == 1:
                p.grad = q.grad = None
            else:
                p.grad = torch.randn(p.shape, generator=gen, dtype=F64)
                q.grad = p.grad.clone()
        grads = [None if p.grad is None else p.grad.clone() for p in ours]
        opt.step()
        ref.step()
        for i, (p, g) in enumerate(zip(ours, grads)):
            assert (p.grad is None) == (g is None) and (g is None or torch.equal(p.grad, g)), f"grad {i} was written"
        assert_close(ours, theirs, f"step {step}: y")
        if step in switch_at:
            opt.eval()
            ref.eval()
            assert_close(ours, theirs, f"step {step}: x")
        if step == reload_at:  # a checkpoint of the model and the optimizer, in whichever mode they are
            sd, saved = frozen_state_dict(opt), values(ours)
            ours = [torch.nn.Parameter(v) for v in saved]
            opt = getattr(nesterov, name)(ours, backend=backend, **kwargs)
            opt.load_state_dict(sd)
        opt.train()
        ref.train()
        assert_close(ours, theirs, f"step {step}: y after train()")
        assert group_scalars(opt) == [(g["k"], g["lr_max"], g["weight_sum"], g["train_mode"]) for g in ref.param_groups]
    for p, q in zip(ours, theirs):
        assert_close([opt.state[p]["z"]], [ref.state[q]["z"]], "z")
        if name == "ScheduleFreeAdamW":
            assert_close([opt.state[p]["exp_avg_sq"]], [ref.state[q]["exp_avg_sq"]], "exp_avg_sq")


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("name", list(REFERENCE))
def test_cpp_kernel_on_tensors_split_among_threads(name, threads):
    """Long tensors, split among threads (the restatement test ties the kernel to the rule on small ones):
    float64 within the parity bound; float32 with bf16 state as the rule rounds it (SGD bit for bit; AdamW's
    division and square root may round an ulp apart from torch's, and so its bf16 state)."""
    shapes = [(300, 401), (1000,), (64, 3, 5, 5), (7,), (2, 50001), (1,)]

    def run(backend, dtype, state_dtype):
        gen = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=F64).to(dtype)) for s in shapes]
        opt = getattr(nesterov, name)(params, backend=backend, state_dtype=state_dtype, lr=0.05,
                                      weight_decay=0.01, warmup_steps=2)
        _run(name, params, opt, range(4))
        return params, opt

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        (want, _), (got, opt) = run("eager", F64, None), run("cpp", F64, None)
        assert opt.backends_seen == {"cpp"}
        assert_close(got, want, "param")
        (want, _), (got, _) = run("eager", torch.float32, torch.bfloat16), run("cpp", torch.float32, torch.bfloat16)
        if name == "ScheduleFreeSGD":
            assert_equal_tensors(values(got), values(want), "param")
        else:
            for i, (a, b) in enumerate(zip(got, want)):
                assert ((a - b).abs().max() / b.abs().max()).item() <= 1e-5, f"param {i}"
    finally:
        torch.set_num_threads(before)


def test_auto_steps_a_large_group_on_the_cpp_kernel_from_its_first_step():
    params = [torch.nn.Parameter(torch.randn(600, 500)), torch.nn.Parameter(torch.randn(10))]
    opt = nesterov.ScheduleFreeAdamW(params)
    _run("ScheduleFreeAdamW", params, opt, range(1))
    assert opt.backends_seen == {"cpp"}


def _run(name, params, opt, data):
    for batch_seed in data:
        gen = torch.Generator().manual_seed(batch_seed)
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        opt.step()


@pytest.mark.parametrize("save_in", ["train", "eval"])
@pytest.mark.parametrize("name", list(REFERENCE))
def test_checkpoint_in_either_mode_resumes_bit_for_bit(name, save_in):
    kwargs = dict(lr=0.05, weight_decay=0.01, warmup_steps=2)
    whole = fresh(0)
    opt = getattr(nesterov, name)(whole, **kwargs)
    _run(name, whole, opt, range(3))
    if save_in == "eval":
        opt.eval()
    sd, saved = frozen_state_dict(opt), values(whole)
    assert [g["train_mode"] for g in sd["param_groups"]] == [save_in == "train"], "the mode is in state_dict"
    opt.train()
    _run(name, whole, opt, range(3, 6))

    resumed = [torch.nn.Parameter(v) for v in saved]
    resumed_opt = getattr(nesterov, name)(resumed, **kwargs)
    resumed_opt.load_state_dict(sd)
    assert all(g["train_mode"] == (save_in == "train") for g in resumed_opt.param_groups)
    resumed_opt.train()
    _run(name, resumed, resumed_opt, range(3, 6))
    assert_equal_tensors(values(resumed), values(whole), "param")
    opt.eval()
    resumed_opt.eval()
    assert_equal_tensors(values(resumed), values(whole), "x")


@pytest.mark.parametrize("name", list(REFERENCE))
def test_step_in_eval_mode_is_refused_before_anything_changes(name):
    params = fresh(0)
    opt = getattr(nesterov, name)(params, lr=0.05)
    _run(name, params, opt, range(2))
    opt.eval()
    opt.eval()  # a no-op in eval mode
    before, sd = values(params), frozen_state_dict(opt)
    for p in params:
        p.grad = torch.ones_like(p)
    with pytest.raises(RuntimeError, match=r"eval mode.*call optimizer\.train\(\) before step\(\)"):
        opt.step()
    assert_equal_tensors(values(params), before, "param")
    assert frozen_state_dict(opt)["param_groups"] == sd["param_groups"]
    opt.train()
    opt.train()  # a no-op in train mode
    opt.step()


@pytest.mark.parametrize("name", list(REFERENCE))
def test_starts_in_train_mode_and_a_group_added_in_eval_mode_starts_there(name):
    params = fresh(0)
    opt = getattr(nesterov, name)(params[:2], lr=0.05)
    assert all(g["train_mode"] for g in opt.param_groups)
    opt.train()  # nothing to move: no z yet
    assert_equal_tensors(values(params), values(fresh(0)), "param")
    _run(name, params[:2], opt, range(2))
    opt.eval()
    opt.add_param_group({"params": params[2:]})
    assert [g["train_mode"] for g in opt.param_groups] == [False, False]
    opt.train()
    _run(name, params, opt, range(2, 4))


@pytest.mark.parametrize("name", list(REFERENCE))
def test_loads_the_references_state_dict(name):
    """The reference's layout (z, exp_avg_sq; k, lr_max, weight_sum, train_mode in each group) is ours."""
    kwargs = dict(lr=0.05, weight_decay=0.01, warmup_steps=2, r=0.5)
    theirs = fresh(0)
    ref = REFERENCE[name](theirs, **kwargs)
    ref.train()
    _run(name, theirs, ref, range(3))
    ours = [torch.nn.Parameter(p.detach().clone()) for p in theirs]
    opt = getattr(nesterov, name)(ours, **kwargs)
    opt.load_state_dict(copy.deepcopy(ref.state_dict()))
    _run(name, ours, opt, range(3, 6))
    _run(name, theirs, ref, range(3, 6))
    assert_close(ours, theirs, "param")


BAD = {
    "lr": (-0.1, r"lr must be >= 0"),
    "weight_decay": (-1.0, r"weight_decay must be >= 0"),
    "warmup_steps": (-1, r"warmup_steps must be >= 0"),
    "r": (-0.5, r"r must be >= 0"),
    "weight_lr_power": (-2.0, r"weight_lr_power must be >= 0"),
}


@pytest.mark.parametrize("name", list(REFERENCE))
@pytest.mark.parametrize("argument", list(BAD))
def test_bad_schedule_argument_is_named(name, argument):
    value, message = BAD[argument]
    with pytest.raises(ValueError, match=message):
        getattr(nesterov, name)(fresh(0), **{argument: value})


def test_bad_argument_types_and_betas_are_named():
    with pytest.raises(TypeError, match=r"warmup_steps must be an int"):
        nesterov.ScheduleFreeSGD(fresh(0), warmup_steps=1.5)
    for momentum in (0.0, 1.0):
        with pytest.raises(ValueError, match=r"momentum must be (>|<) "):
            nesterov.ScheduleFreeSGD(fresh(0), momentum=momentum)
    with pytest.raises(ValueError, match=r"betas\[0\] must be > 0"):
        nesterov.ScheduleFreeAdamW(fresh(0), betas=(0.0, 0.999))
    with pytest.raises(ValueError, match=r"betas\[1\] must be < 1"):
        nesterov.ScheduleFreeAdamW(fresh(0), betas=(0.9, 1.0))
    with pytest.raises(ValueError, match=r"eps must be > 0"):
        nesterov.ScheduleFreeAdamW(fresh(0), eps=0.0)
    opt = nesterov.ScheduleFreeSGD(fresh(0))
    with pytest.raises(TypeError, match=r"train_mode \(param group 1\) must be a bool"):
        opt.add_param_group({"params": fresh(1), "train_mode": "yes"})
    assert len(opt.param_groups) == 1


# -- the bench's rows (nesterov bench step --optimizer sf-sgd | sf-adamw --peers) -------------------------------
@pytest.mark.parametrize("rule, name", [("sf-sgd", "ScheduleFreeSGD"), ("sf-adamw", "ScheduleFreeAdamW")])
def test_bench_peers_compute_our_update_with_the_bench_hyperparameters(rule, name):
    """The reference and pytorch-optimizer's port, as the bench builds them (in train mode), float64."""
    from nesterov.bench.peers import PEERS
    from nesterov.bench.specs import OPTIMIZERS

    hp = OPTIMIZERS[rule]().extra["hp"]
    for peer in PEERS[rule]:
        if peer.library == "heavyball":  # float32 storage and a compile on its first step: not the same bits
            continue
        pytest.importorskip(peer.library)
        theirs, mine = fresh(0), fresh(0)
        opt, ours = peer.make(theirs, hp), getattr(nesterov, name)(mine, **hp, backend="eager")
        for seed in range(3):
            for group in (theirs, mine):
                gen = torch.Generator().manual_seed(seed)
                for p in group:
                    p.grad = torch.randn(p.shape, generator=gen, dtype=F64)
            opt.step()
            ours.step()
        assert_close(mine, theirs, peer.name)


def test_bench_step_times_the_reference_beside_ours():
    from nesterov.bench import step

    args = step.step_parser().parse_args(
        ["--shapes", "mnist1d-cnn", "--warmup", "0", "--repeats", "2", "--auto-wait", "0", "--optimizer", "sf-adamw",
         "--peers", "--only", "torch AdamW fused,nesterov foreach,schedulefree AdamWScheduleFree", "--quiet"])
    rows = {r["name"]: r for r in step.run_step_bench(args)["rows"]}
    assert set(rows) == {"torch AdamW fused", "nesterov foreach", "schedulefree AdamWScheduleFree"}
    assert rows["schedulefree AdamWScheduleFree"]["grads_restored"]  # it normalises p.grad in place
    assert not rows["nesterov foreach"]["grads_restored"]
