"""Every private torch symbol the library uses exists on the torch this project pins (and is callable)."""

import contextlib

import pytest
import torch
import torch._functorch.config as functorch_config
import torch._inductor.config as inductor_config
from torch._inductor.utils import run_and_get_code

from nesterov.engine import compat
from nesterov.engine import compiled as C
from nesterov.engine.precision import stochastic_round_bf16


@pytest.mark.parametrize("name", sorted(compat.SYMBOLS))
def test_private_torch_symbol_exists(name):
    value = compat.SYMBOLS[name]
    assert value is not None, name
    if not name.endswith("use_duck_shape"):
        assert callable(value), name


def test_no_duck_shapes_patches_and_restores():
    before = compat.fx_config.use_duck_shape
    with compat.no_duck_shapes():
        assert compat.fx_config.use_duck_shape is False
    assert compat.fx_config.use_duck_shape == before


@pytest.mark.parametrize("name", sorted(compat.cpu_codegen_symbols()))
def test_inductor_symbol_the_cpu_refinements_use_exists(name):
    assert compat.cpu_codegen_symbols()[name] is not None, name
    assert compat.install_cpu_codegen_refinements()


@pytest.mark.parametrize("name", sorted(compat.cpp_kernel_symbols()))
def test_inductor_symbol_the_cpp_backend_uses_exists(name):
    assert callable(compat.cpp_kernel_symbols()[name]), name


def _bf16_state_step(p, g, b, seed):
    """A NAG step with bf16 momentum written by stochastic rounding: fp32 and bf16 in one loop, two bit casts."""
    nb = 0.9 * b.float() + g
    p.copy_(p - 0.01 * (g + 0.9 * nb))
    b.copy_(stochastic_round_bf16(nb, seed))


def _compiled_code(refined: bool, p, g, b, seed) -> str:
    torch._dynamo.reset()
    step = torch.compile(_bf16_state_step, dynamic=True, options={"cpp.dynamic_threads": True})
    # Generated afresh, not read from inductor's disk cache (whose key does not know the refinements).
    with torch.no_grad(), inductor_config.patch(fx_graph_cache=False), \
            functorch_config.patch(enable_autograd_cache=False), \
            (compat.refined_cpu_codegen() if refined else contextlib.nullcontext()):
        _, (code, *_) = run_and_get_code(step, p, g, b, seed)
    return code


def test_refined_cpu_codegen_tiles_for_bf16_vectorises_casts_and_indices_and_keeps_the_bits():
    gen = torch.Generator().manual_seed(3)
    n = 1000  # full 32-lane vectors and a tail
    p, g = torch.randn(n, generator=gen), torch.randn(n, generator=gen)
    b = torch.randn(n, generator=gen).to(torch.bfloat16)
    want = [t.clone() for t in (p, g, b)]
    _bf16_state_step(*want, 12345)

    plain = _compiled_code(False, p.clone(), g.clone(), b.clone(), 12345)
    assert "at::vec::cast<" not in plain  # what inductor makes of it alone: the casts go through a scalar loop
    got = [t.clone() for t in (p, g, b)]
    code = _compiled_code(True, *got, 12345)
    assert "at::vec::cast<int32_t>" in code and "at::vec::cast<float>" in code
    assert "x0+=static_cast<int64_t>(32L)" in code  # one bf16 register per step: no half-width masked accesses
    assert "::arange(0, " in code  # the index vector: a broadcast plus a constant
    assert torch.equal(got[0], want[0]) and torch.equal(got[2], want[2])  # the same bits as the eager rule


def test_a_backend_sees_where_each_graph_input_comes_from_and_the_compiled_graph_runs_without_dynamo():
    seen = {}

    def backend(gm, example_inputs):
        seen["expressions"] = compat.graph_input_expressions(gm)
        seen["compiled"] = compat.compile_graph(gm, example_inputs, {})
        return seen["compiled"]

    def step(params, grads, lr):
        for p, g in zip(params, grads):
            p.sub_(lr * g)

    params, grads, lr = [torch.ones(5), torch.ones(7)], [torch.full((5,), 2.0), torch.full((7,), 3.0)], torch.tensor(0.5)
    with torch.no_grad(), compat.no_duck_shapes():
        torch.compile(step, backend=backend, dynamic=True, fullgraph=True)(params, grads, lr)
        assert sorted(seen["expressions"]) == sorted(["L['params'][0]", "L['params'][0].size()[0]", "L['grads'][0]",
                                                      "L['params'][1]", "L['params'][1].size()[0]", "L['grads'][1]",
                                                      "L['lr']"])
        assert compat.takes_inputs_as_arguments(seen["compiled"])
        args = {"params": params, "grads": grads, "lr": lr}
        seen["compiled"](*[eval(e, {"L": args}) for e in seen["expressions"]])
    assert torch.equal(params[0], torch.full((5,), -1.0)) and torch.equal(params[1], torch.full((7,), -2.0))


def test_graph_inputs_maker_takes_plain_paths_into_multi_apply_arguments_only():
    make = C.graph_inputs_maker(["L['params'][1]", "L['params'][1].size()[0]", "L['hypers']['lr']", "L['seeds']"])
    params, hypers, seeds = [torch.zeros(2), torch.zeros(3)], {"lr": torch.tensor(0.1)}, torch.zeros(2)
    got = make(None, params, None, None, hypers, None, None, seeds, None)
    assert got[0] is params[1] and got[1] == 3 and got[2] is hypers["lr"] and got[3] is seeds
    assert C.graph_inputs_maker(["L['other'][0]"]) is None  # not an argument of multi_apply
    assert C.graph_inputs_maker(["___odict_getitem(L['hypers'], 'lr')"]) is None  # not a plain path
    assert C.graph_inputs_maker(["L['params'][0].stride()[0]"]) is None
