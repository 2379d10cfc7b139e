"""The ``cpp`` backend (the C++ kernels of LARS, LAMB and NAG): many tensors and threads against the rule as
written, bf16 state, what ``auto`` does with it, and what it refuses.

tests/test_restatements.py ties each kernel to its rule for every flag combination on small tensors; here
the tensors are long enough to be split among threads, and the slices meet at the norm barrier.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import nesterov
from nesterov.engine import cpp_kernels

KWARGS = {"LARS": dict(lr=0.5, momentum=0.9, weight_decay=0.01, trust_coefficient=0.02),
          "LAMB": dict(lr=0.01, weight_decay=0.01), "NAG": dict(lr=0.1, momentum=0.9, weight_decay=0.01)}
# Matrices and vectors (with and without a trust ratio), lengths that do and do not fill a cache line per thread.
SHAPES = [(300, 401), (1000,), (64, 3, 5, 5), (7,), (2, 50001), (1,)]


def params(dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in SHAPES]


def run(name, backend, threads, steps=3, dtype=torch.float64, **kw):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ps = params(dtype)
        opt = getattr(nesterov, name)(ps, backend=backend, **{**KWARGS[name], **kw})
        for t in range(steps):
            gen = torch.Generator().manual_seed(100 + t)
            for p in ps:
                p.grad = torch.randn(p.shape, generator=gen, dtype=dtype)
            opt.step()
        return ps, opt
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("name", ["LARS", "LAMB"])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("exclude_1d", [True, False])
def test_cpp_kernel_equals_the_rule_on_tensors_split_among_threads(name, threads, exclude_1d):
    want, _ = run(name, "eager", threads, exclude_1d=exclude_1d)
    got, opt = run(name, "cpp", threads, exclude_1d=exclude_1d)
    assert opt.backends_seen == {"cpp"}
    for g, w in zip(got, want):
        assert ((g - w).abs().max() / w.abs().max().clamp(min=1)).item() <= 1e-12


@pytest.mark.parametrize("threads", [1, 2])
def test_nag_cpp_kernel_with_bf16_state_rounds_as_the_rule_bit_for_bit(threads):
    """Stochastic rounding into bf16: the counter hash of engine/precision.py, restated in per_tensor.h."""
    want, ref = run("NAG", "eager", threads, steps=4, dtype=torch.float32, state_dtype=torch.bfloat16)
    got, opt = run("NAG", "cpp", threads, steps=4, dtype=torch.float32, state_dtype=torch.bfloat16)
    assert opt.backends_seen == {"cpp"}
    for g, w in zip(got, want):
        assert torch.equal(g, w)
        assert torch.equal(opt.state[g]["momentum_buffer"], ref.state[w]["momentum_buffer"])
        assert opt.state[g]["momentum_buffer"].dtype == torch.bfloat16


@pytest.mark.parametrize("name", ["LARS", "LAMB"])
def test_cpp_kernel_with_bf16_state_steps_as_the_rule(name):
    """LARS and LAMB sum their norms in another order than the rule (in double), so bf16 state may round a
    value the other way now and then: within a few bf16 steps of the rule's."""
    want, ref = run(name, "eager", 2, steps=4, dtype=torch.float32, state_dtype=torch.bfloat16)
    got, opt = run(name, "cpp", 2, steps=4, dtype=torch.float32, state_dtype=torch.bfloat16)
    assert opt.backends_seen == {"cpp"}
    for g, w in zip(got, want):
        for a, b in [(g, w), *((opt.state[g][k].float(), ref.state[w][k].float()) for k in opt.rule.states)]:
            torch.testing.assert_close(a, b, rtol=3 * 2**-8, atol=1e-3)


@pytest.mark.parametrize("name", ["LARS", "LAMB"])
def test_cpp_kernel_is_deterministic_for_a_thread_count(name):
    a, _ = run(name, "cpp", 2, dtype=torch.float32)
    b, _ = run(name, "cpp", 2, dtype=torch.float32)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("name", ["LARS", "LAMB"])
def test_auto_steps_a_float32_cpu_group_on_the_cpp_kernel(name, monkeypatch):
    from nesterov.engine import kernels as K

    monkeypatch.setattr(K, "AUTO_COMPILE_MIN_NUMEL", 0)  # (SHAPES are a "small" group: foreach, otherwise)
    got, opt = run(name, "auto", 2, dtype=torch.float32)
    want, _ = run(name, "eager", 2, dtype=torch.float32)
    assert opt.backends_seen == {"cpp"}
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)  # float32: the norms are summed in another order


def test_auto_builds_the_kernel_at_a_large_groups_first_step_and_leaves_small_ones_on_foreach(monkeypatch):
    """2¹⁸ elements or more: the first step builds the kernel (seconds once) and steps on it, so a run steps
    on one kernel throughout; a smaller group stays on foreach (as it does for the compiled rule)."""
    monkeypatch.setattr(cpp_kernels, "CPP", cpp_kernels.CppKernels())  # a fresh cache: nothing built yet
    large, small = torch.nn.Parameter(torch.randn(600, 500)), torch.nn.Parameter(torch.randn(60, 50))
    opt_large, opt_small = nesterov.LARS([large], **KWARGS["LARS"]), nesterov.LARS([small], **KWARGS["LARS"])
    for _ in range(3):
        for p, opt in ((large, opt_large), (small, opt_small)):
            p.grad = torch.randn_like(p)
            opt.step()
    assert opt_large.backends_seen == {"cpp"}
    assert opt_small.backends_seen == {"foreach"}


def test_auto_warns_once_and_steps_on_when_the_kernel_does_not_build(monkeypatch, tmp_path):
    """C++ that does not compile: auto warns once and keeps stepping without it."""
    from nesterov.engine import kernels as K

    broken = tmp_path / "per_tensor.h"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(cpp_kernels, "HEADER", broken)
    monkeypatch.setattr(cpp_kernels, "CPP", cpp_kernels.CppKernels())  # a fresh cache: nothing built yet
    monkeypatch.setattr(K, "AUTO_COMPILE_MIN_NUMEL", 0)
    ps = params(torch.float32)
    opt = nesterov.LARS(ps, **KWARGS["LARS"])

    def step():
        for p in ps:
            p.grad = torch.full_like(p, 0.01)
        before = [p.detach().clone() for p in ps]
        opt.step()
        assert all(not torch.equal(p, b) for p, b in zip(ps, before))

    with pytest.warns(RuntimeWarning, match="building the C\\+\\+ kernel of lars failed"):
        step()
    assert ("lars", torch.float32, torch.float32) in cpp_kernels.CPP.errors
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once
        step()
    assert opt.backends_seen == {"foreach"}


@pytest.mark.parametrize("name", ["NAdamW", "Adan"])
def test_cpp_backend_is_refused_for_rules_without_a_kernel(name):
    with pytest.raises(ValueError, match="backend='cpp'.*no C\\+\\+ kernel"):
        getattr(nesterov, name)([torch.nn.Parameter(torch.zeros(3))], backend="cpp")


@pytest.mark.parametrize("dtype, state_dtype", [(torch.bfloat16, None), (torch.float64, torch.bfloat16)])
def test_cpp_backend_is_refused_for_what_its_kernel_does_not_step(dtype, state_dtype):
    with pytest.raises(ValueError, match=r"backend='cpp' cannot step params \(param group 0\)\[0\]"):
        nesterov.LARS([torch.nn.Parameter(torch.zeros(3, 3, dtype=dtype))], backend="cpp", state_dtype=state_dtype)
