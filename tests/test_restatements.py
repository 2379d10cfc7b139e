"""Every restatement of every rule, for every combination of its flags, against the rule as written.

Generated from the rules' own declarations (``Rule.foreach``, ``Rule.torch_kernel``, ``Rule.cpp_kernel``,
``Rule.flags``): a restatement added to a rule is tested here without another line. float64, fresh random
inputs and hyperparameters from hypothesis, first and later steps (the per-step scalars differ), bound
≤ 1e-12.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nesterov.engine import cpp_kernels
from nesterov.rules.adan import ADAN_RULE
from nesterov.rules.lamb import LAMB_RULE
from nesterov.rules.lars import LARS_RULE
from nesterov.rules.nadamw import NADAMW_RULE
from nesterov.rules.nag import NAG_RULE
from nesterov.rules.schedulefree import SF_ADAMW_RULE, SF_SGD_RULE

FLOAT = dict(allow_nan=False, allow_infinity=False)
unit = st.floats(0.0, 0.99, **FLOAT)
# Schedule-free's schedule and the running scalars its param group holds mid-run.
SCHEDULE = {"lr": st.floats(0.0, 1.0, **FLOAT), "weight_decay": st.floats(0.0, 0.1, **FLOAT),
            "warmup_steps": st.integers(0, 10), "r": st.floats(0.0, 2.0, **FLOAT),
            "weight_lr_power": st.floats(0.0, 3.0, **FLOAT), "k": st.integers(0, 20),
            "lr_max": st.floats(-1.0, 1.0, **FLOAT), "weight_sum": st.floats(0.0, 10.0, **FLOAT),
            "scheduled_lr": st.just(0.0)}

# A param group for each rule (the rule's hypers_of reads it), drawn fresh.
GROUPS = {
    NAG_RULE: st.fixed_dictionaries({"lr": st.floats(0.0, 1.0, **FLOAT), "momentum": unit, "dampening": st.just(0.0),
                                     "weight_decay": st.floats(0.0, 0.1, **FLOAT)}),
    NADAMW_RULE: st.fixed_dictionaries({"lr": st.floats(0.0, 0.1, **FLOAT), "betas": st.tuples(unit, unit),
                                        "eps": st.floats(1e-10, 1e-3, **FLOAT),
                                        "weight_decay": st.floats(0.0, 0.1, **FLOAT),
                                        "momentum_decay": st.floats(0.0, 0.02, **FLOAT)}),
    ADAN_RULE: st.fixed_dictionaries({"lr": st.floats(0.0, 0.1, **FLOAT), "betas": st.tuples(unit, unit, unit),
                                      "eps": st.floats(1e-10, 1e-3, **FLOAT),
                                      "weight_decay": st.floats(0.0, 0.1, **FLOAT)}),
    LARS_RULE: st.fixed_dictionaries({"lr": st.floats(0.0, 1.0, **FLOAT), "momentum": unit,
                                      "weight_decay": st.floats(0.0, 0.1, **FLOAT),
                                      "trust_coefficient": st.floats(1e-4, 1.0, **FLOAT),
                                      "eps": st.floats(1e-10, 1e-6, **FLOAT)}),
    LAMB_RULE: st.fixed_dictionaries({"lr": st.floats(0.0, 0.1, **FLOAT), "betas": st.tuples(unit, unit),
                                      "eps": st.floats(1e-10, 1e-3, **FLOAT),
                                      "weight_decay": st.floats(0.0, 0.1, **FLOAT)}),
    SF_SGD_RULE: st.fixed_dictionaries({**SCHEDULE, "momentum": st.floats(0.01, 0.99, **FLOAT)}),
    SF_ADAMW_RULE: st.fixed_dictionaries({**SCHEDULE, "betas": st.tuples(st.floats(0.01, 0.99, **FLOAT), unit),
                                          "eps": st.floats(1e-10, 1e-3, **FLOAT)}),
}


def cases():
    """(rule, restatement name, flags) for every declared restatement and every flag combination."""
    for rule in GROUPS:
        for name in ("foreach", "torch_kernel", "cpp_kernel"):
            if getattr(rule, name) is None:
                continue
            for values in itertools.product((False, True), repeat=len(rule.flags)):
                yield pytest.param(rule, name, dict(zip(rule.flags, values)),
                                   id=f"{rule.name}-{name}-" + "-".join(f"{k}{int(v)}" for k, v in zip(rule.flags, values)))


shapes_st = st.lists(st.lists(st.integers(1, 6), min_size=0, max_size=3).map(tuple), min_size=1, max_size=4)


@pytest.mark.parametrize("rule,restatement,flags", list(cases()))
@settings(max_examples=20, deadline=None)
@given(data=st.data(), shapes=shapes_st, t=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_restatement_equals_the_rule(rule, restatement, flags, data, shapes, t, seed):
    gen = torch.Generator().manual_seed(seed)
    group = data.draw(GROUPS[rule])
    hypers = rule.hypers_of(group)
    derived = {}
    if rule.advance is not None:
        scalars = {name: value * (1 - torch.rand((), generator=gen, dtype=value.dtype) * 0.5)  # a running product
                   for name, value in (rule.init_scalars() if rule.scalars else {}).items()}
        derived = rule.advance(t, scalars, **hypers)[1]
    if rule.advance_group is not None:
        derived.update(rule.advance_group({name: group[name] for name in rule.group_scalars}, **hypers)[1])
    randn = lambda s: torch.randn(s, generator=gen, dtype=torch.float64)  # noqa: E731
    params, grads = [randn(s) for s in shapes], [randn(s) for s in shapes]
    # Adam-type second moments are non-negative; everything else may have any sign.
    states = [[randn(s).abs() if name in ("exp_avg_sq",) else randn(s) for s in shapes] for name in rule.states]
    matrix = [len(s) > 1 for s in shapes]

    want = []
    for i, (p, g) in enumerate(zip(params, grads)):
        extra = {"matrix": torch.tensor(matrix[i])} if rule.per_tensor else {}
        want.append(rule.update(p, g, *(s[i] for s in states), **hypers, **derived, **flags, **extra))

    got_p, got_g = [p.clone() for p in params], [g.clone() for g in grads]
    got_s = [[t_.clone() for t_ in s] for s in states]
    extra = {"matrix": matrix} if rule.per_tensor else {}
    if restatement == "foreach":
        rule.foreach(got_p, got_g, *got_s, **hypers, **derived, **flags, **extra)
    elif restatement == "cpp_kernel":
        cpp_kernels.step(rule, got_p, got_g, got_s, matrix, hypers, derived, flags)
    else:
        if not rule.torch_kernel_supports(torch.device("cpu"), torch.float64):
            pytest.skip("torch's kernel does not run here")
        rule.torch_kernel(got_p, got_g, *got_s, **hypers, **flags)

    for g, g0 in zip(got_g, grads):
        assert torch.equal(g, g0), "a restatement must never write the gradients"
    for i, expected in enumerate(want):
        for got, exp in zip((got_p[i], *(s[i] for s in got_s)), expected):
            scale = max(exp.abs().max().item() if exp.numel() else 0.0, 1.0)
            assert (got - exp).abs().max().item() / scale <= 1e-12 if exp.numel() else True
