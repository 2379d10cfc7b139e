"""Muon against torch.optim.Muon (Newton–Schulz in the same dtype on both sides) and against its rule."""

from __future__ import annotations

import contextlib
import functools
import io
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nesterov
from nesterov import Muon
from nesterov.engine.matrices import batched_apply
from nesterov.rules import muon as R

from _compiled import train_compiled_and_eager

NADAM = "nadamw"  # torch.optim.NAdam(decoupled_weight_decay=True)'s update, with its defaults


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Normwise relative difference ‖a − b‖∞ / ‖b‖∞ (0 when both are 0)."""
    scale = b.abs().max().item()
    diff = (a.double() - b.double()).abs().max().item()
    return diff / scale if scale > 0 else diff


@contextlib.contextmanager
def torch_ns_in_input_dtype():
    """Run torch.optim.Muon's own code with Newton–Schulz in the gradient's dtype instead of bf16.

    torch's ``_zeropower_via_newtonschulz`` starts with ``grad.bfloat16()``; inside this block that
    call returns a copy in the original dtype, and the rest of torch's code runs unchanged.
    """
    original = torch.Tensor.bfloat16
    torch.Tensor.bfloat16 = lambda self, *args, **kwargs: self.clone()
    try:
        yield
    finally:
        torch.Tensor.bfloat16 = original


def torch_step(opt):
    with torch_ns_in_input_dtype():
        opt.step()


def make_params(shapes, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in shapes]


def clone_params(params):
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


def noisy_grads(param_sets, targets, gen):
    """The same gradient for every set: fresh noise plus the pull of ½Σ‖p − t‖².

    The pull makes the gradient depend on the trajectory, so drift between two optimizers feeds back;
    the noise keeps it away from zero. (Near a minimum with a constant lr, Muon's normalised step
    amplifies rounding differences by ~2× per step — chaos that no two implementations would share.)
    """
    noise = [torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in targets]
    for params in param_sets:
        for p, t, n in zip(params, targets, noise):
            p.grad = n + 0.5 * (p.detach() - t)


# -- parity with torch.optim.Muon ------------------------------------------------------------------
dims = st.integers(1, 12)
shapes_st = st.lists(st.tuples(dims, dims), min_size=1, max_size=5)
config_st = st.fixed_dictionaries({
    "lr": st.floats(1e-3, 0.1),
    "momentum": st.floats(0.0, 0.99),
    "nesterov": st.booleans(),
    "weight_decay": st.one_of(st.just(0.0), st.floats(0.0, 0.2)),
    "adjust_lr_fn": st.sampled_from([None, "original", "match_rms_adamw"]),
    "ns_steps": st.integers(1, 6),
    "eps": st.sampled_from([1e-7, 1e-3]),
})


def run_pair(shapes, config, dtype, steps, seed=0, **ours_kw):
    gen = torch.Generator().manual_seed(seed + 1)
    base = make_params(shapes, dtype, seed)
    targets = [torch.randn(p.shape, generator=gen, dtype=dtype) for p in base]
    theirs, ours = clone_params(base), clone_params(base)
    t_opt = torch.optim.Muon(theirs, **config)
    o_opt = Muon(ours, aux=None, ns_dtype=dtype, **config, **ours_kw)
    worst = 0.0
    for _ in range(steps):
        noisy_grads([theirs, ours], targets, gen)
        torch_step(t_opt)
        o_opt.step()
        worst = max(worst, max(rel_diff(o, t) for o, t in zip(ours, theirs)))
    return worst, t_opt, o_opt, theirs, ours


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shapes=shapes_st, config=config_st, repeat=st.booleans())
def test_matches_torch_muon_float64(shapes, config, repeat):
    if repeat:  # same-shaped (and transposed) matrices: exercises the batched products
        shapes = shapes + shapes + [s[::-1] for s in shapes]
    worst, *_ = run_pair(shapes, config, torch.float64, steps=50)
    assert worst <= 1e-10


def test_matches_torch_muon_float32_transformer_like():
    shapes = [(48, 16), (16, 16), (64, 16), (16, 64)] * 3
    config = dict(lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.01, adjust_lr_fn=None)
    worst, *_ = run_pair(shapes, config, torch.float32, steps=50)
    assert worst <= 1e-5


def test_rule_matches_torch_single_matrix():
    gen = torch.Generator().manual_seed(3)
    for shape in [(7, 3), (3, 7), (5, 5)]:
        p = torch.randn(shape, generator=gen, dtype=torch.float64)
        q = torch.nn.Parameter(p.clone())
        buf = torch.zeros_like(p)
        opt = torch.optim.Muon([q], lr=0.03, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
        for _ in range(10):
            g = torch.randn(shape, generator=gen, dtype=torch.float64)
            q.grad = g.clone()
            torch_step(opt)
            p, buf = R.update(p, g, buf, lr=0.03, weight_decay=0.1, adjust_lr_fn="match_rms_adamw",
                              ns_dtype=torch.float64)
        assert rel_diff(p, q.detach()) <= 1e-13
        assert rel_diff(buf, opt.state[q]["momentum_buffer"]) <= 1e-13


# -- batching ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_batched_newton_schulz_equals_per_matrix(dtype, tol):
    gen = torch.Generator().manual_seed(0)
    shapes = [(8, 24), (24, 8), (8, 24), (16, 16), (16, 16), (5, 3), (8, 24)]
    mats = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    ns = functools.partial(R.newton_schulz, steps=5)
    batched = batched_apply(ns, mats, dtype=dtype)
    for m, b in zip(mats, batched):
        assert b.shape == m.shape and b.dtype == dtype
        assert rel_diff(b, ns(m)) <= tol
    # The iteration does what it is for: singular values pulled into roughly [0.5, 1.5].
    s = torch.linalg.svdvals(batched[3])
    assert s.min() > 0.3 and s.max() < 1.6


def test_batched_apply_stacks_by_shape_in_its_own_orientation():
    calls = []

    def fn(stack):
        calls.append(tuple(stack.shape))
        return stack * 2

    mats = [torch.ones(2, 6), torch.ones(6, 2), torch.ones(3, 3), torch.ones(2, 6), torch.ones(6, 2)]
    out = batched_apply(fn, mats)
    assert sorted(calls) == [(1, 3, 3), (2, 2, 6), (2, 6, 2)]  # a tall matrix is not transposed into a wide batch
    assert [o.shape for o in out] == [m.shape for m in mats]
    assert all(torch.equal(o, 2 * m) for o, m in zip(out, mats))
    batched_apply(fn, mats, max_batch_bytes=12 * 4)
    assert sorted(calls[3:]) == [(1, 2, 6), (1, 2, 6), (1, 3, 3), (1, 6, 2), (1, 6, 2)]


@pytest.mark.parametrize("method", ["standard", "gram"])
def test_newton_schulz_of_a_tall_stack_keeps_its_layout(method):
    """A tall stack is worked on through its transposed view: the output is contiguous in the input's
    orientation (the step then reads it contiguously) and equals the transpose of the wide computation."""
    G = torch.randn(3, 24, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    O = R.newton_schulz(G, method=method)
    assert O.shape == G.shape and O.is_contiguous()
    assert rel_diff(O, R.newton_schulz(G.mT.contiguous(), method=method).mT) <= 1e-13


def test_optimizer_makes_one_batched_product_per_shape(monkeypatch):
    seen = []
    real = R.newton_schulz

    def spy(G, **kw):
        seen.append(tuple(G.shape))
        return real(G, **kw)

    monkeypatch.setattr(R, "newton_schulz", spy)
    params = make_params([(32, 96), (32, 32), (128, 32), (32, 128)] * 3, torch.float32)
    opt = Muon(params, aux=None)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    assert sorted(seen) == [(3, 32, 32), (3, 32, 96), (3, 32, 128), (3, 128, 32)]


def test_missing_grads_loose_params_and_late_groups():
    """Params without a gradient are left alone; a strided slice with gaps and groups added later take
    the same update."""
    gen = torch.Generator().manual_seed(5)
    big = torch.randn(12, 20, generator=gen, dtype=torch.float64)
    loose = torch.nn.Parameter(big[:, ::2])  # not dense
    assert loose.stride() == (20, 2)
    dense = make_params([(6, 10), (6, 10), (5, 5)], seed=1)
    late = make_params([(10, 6)], seed=2)
    everything = [loose, *dense, *late]
    ref = [p.detach().clone() for p in everything]
    bufs = [torch.zeros_like(r) for r in ref]
    opt = Muon([loose, *dense], aux=None, lr=0.03, weight_decay=0.1)
    opt.add_param_group({"params": late, "lr": 0.01})
    lrs = [0.03] * 4 + [0.01]
    for step in range(4):
        present = [True, step % 2 == 0, True, step != 1, True]
        for i, (p, keep) in enumerate(zip(everything, present)):
            p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64) if keep else None
            if keep:
                ref[i], bufs[i] = R.update(ref[i], p.grad, bufs[i], lr=lrs[i], weight_decay=0.1,
                                           ns_dtype=torch.float64)
        opt.step()
    for i, (p, r) in enumerate(zip(everything, ref)):
        assert rel_diff(p.detach(), r) <= 1e-12, i
        assert rel_diff(opt.state[p]["momentum_buffer"], bufs[i]) <= 1e-12, i
    fresh = make_params([(4, 4)])
    opt2 = Muon(fresh + make_params([(3, 3)]), aux=None)
    fresh[0].grad = torch.ones(4, 4, dtype=torch.float64)
    opt2.step()
    assert len(opt2.state) == 1  # state appears with the first gradient, as in torch


def test_bf16_parameters_step():
    params = make_params([(16, 32), (32, 16)], torch.bfloat16)
    opt = Muon(params, aux=None)
    before = [p.detach().clone() for p in params]
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    assert all(p.dtype == torch.bfloat16 and not torch.equal(p, b) for p, b in zip(params, before))
    assert opt.state[params[0]]["momentum_buffer"].dtype == torch.bfloat16


# -- conv kernels -----------------------------------------------------------------------------------
@pytest.mark.parametrize("channels_last", [False, True])
def test_conv_kernels_are_flattened_matrices(channels_last):
    gen = torch.Generator().manual_seed(1)
    conv = torch.nn.Conv2d(3, 8, 3).double()
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
    w0 = conv.weight.detach().clone()
    buf = torch.zeros_like(w0)
    opt = Muon([conv.weight], lr=0.05, weight_decay=0.1, aux=None)
    ref = w0.clone()
    for _ in range(5):
        g = torch.randn(w0.shape, generator=gen, dtype=torch.float64)
        conv.weight.grad = g.clone()
        opt.step()
        ref, buf = R.update(ref, g, buf, lr=0.05, weight_decay=0.1, ns_dtype=torch.float64)
    assert rel_diff(conv.weight.detach(), ref) <= 1e-12
    assert rel_diff(opt.state[conv.weight]["momentum_buffer"], buf) <= 1e-12
    # ... the same as torch.optim.Muon on the (8, 27) matrix
    flat = torch.nn.Parameter(w0.reshape(8, 27).clone())
    t_opt = torch.optim.Muon([flat], lr=0.05, weight_decay=0.1)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        flat.grad = torch.randn(w0.shape, generator=gen, dtype=torch.float64).reshape(8, 27)
        torch_step(t_opt)
    assert rel_diff(conv.weight.detach().reshape(8, 27), flat.detach()) <= 1e-12


# -- the auxiliary rule -----------------------------------------------------------------------------
class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(11, 8)
        self.fc1 = torch.nn.Linear(8, 16)
        self.norm = torch.nn.LayerNorm(16)
        self.fc2 = torch.nn.Linear(16, 16)
        self.head = torch.nn.Linear(16, 11)

    def forward(self, x):
        h = self.embed(x).mean(1)
        h = self.norm(torch.relu(self.fc1(h)))
        return self.head(torch.relu(self.fc2(h)))


def tiny_loss(model, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 11, (32, 4), generator=gen)
    y = torch.randint(0, 11, (32,), generator=gen)
    return torch.nn.functional.cross_entropy(model(x), y)


def test_aux_params_go_to_the_aux_rule():
    torch.manual_seed(0)
    ours_model = Tiny().double()
    ref_model = Tiny().double()
    ref_model.load_state_dict(ours_model.state_dict())
    special = {"embed.weight", "head.weight"}

    def split(model):
        named = dict(model.named_parameters())
        muon = [p for n, p in named.items() if p.dim() == 2 and n not in special]
        rest = [p for n, p in named.items() if p.dim() < 2]
        return muon, rest, [named[n] for n in sorted(special)]

    o_muon, o_rest, o_special = split(ours_model)
    r_muon, r_rest, r_special = split(ref_model)
    nadam = functools.partial(torch.optim.NAdam, lr=1e-2, decoupled_weight_decay=True, weight_decay=0.01)
    opt = Muon([{"params": o_muon + o_rest},
                {"params": o_special, "use_muon": False, "lr": 3e-3}], lr=0.02, aux="nadamw",
               aux_defaults=dict(lr=1e-2, weight_decay=0.01))
    ref = [torch.optim.Muon(r_muon, lr=0.02, weight_decay=0.0),
           nadam([{"params": r_rest}, {"params": r_special, "lr": 3e-3}])]
    assert [g["use_muon"] for g in opt.param_groups] == [True, False, False]
    assert len(opt.param_groups[0]["params"]) == len(o_muon)
    assert opt.param_groups[2]["lr"] == 3e-3 and opt.param_groups[1]["lr"] == 1e-2
    for step in range(8):
        opt.zero_grad()
        tiny_loss(ours_model, step).backward()
        opt.step()
        for o in ref:
            o.zero_grad()
        tiny_loss(ref_model, step).backward()
        torch_step(ref[0])
        ref[1].step()
    for (name, a), b in zip(ours_model.named_parameters(), ref_model.parameters()):
        assert rel_diff(a.detach(), b.detach()) <= 1e-10, name
    # one state for the whole optimizer, in torch's layout for each rule
    assert set(opt.state[o_rest[0]]) == set(ref[1].state[r_rest[0]])
    assert "momentum_buffer" in opt.state[o_muon[0]]


def test_state_dtype_reaches_the_named_aux_rule():
    model = Tiny()
    opt = Muon(model.parameters(), aux="nag", state_dtype=torch.bfloat16)
    tiny_loss(model, 0).backward()
    opt.step()
    assert {s["momentum_buffer"].dtype for s in opt.state.values()} == {torch.bfloat16}
    assert len(opt.state) == len(list(model.parameters()))


def test_default_aux_takes_a_whole_model():
    torch.manual_seed(0)
    model = Tiny()
    opt = Muon(model.parameters())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss0 = tiny_loss(model, 0).item()
    for _ in range(10):
        opt.zero_grad()
        tiny_loss(model, 0).backward()
        opt.step()
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())
    assert tiny_loss(model, 0).item() < loss0
    # A scheduler reaches the auxiliary group too.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.5)
    assert math.isclose(opt.param_groups[1]["lr"], 0.5 * opt.param_groups[1]["initial_lr"])
    del sched


def test_named_parameters_are_accepted():
    model = Tiny()
    opt = Muon(model.named_parameters())
    tiny_loss(model, 0).backward()
    opt.step()
    assert "param_names" in opt.param_groups[0]
    # by name, the embedding and the output head go to the auxiliary rule
    assert opt.param_groups[0]["param_names"] == ["fc1.weight", "fc2.weight"]
    assert "embed.weight" in opt.param_groups[1]["param_names"] and "head.weight" in opt.param_groups[1]["param_names"]


def test_tokens_and_position_embeddings_are_not_orthogonalised():
    """(1, 1, D) and (1, N, D) parameters are vectors in matrix clothing: the auxiliary rule steps them."""
    cls, pos, w = (torch.nn.Parameter(torch.randn(s)) for s in [(1, 1, 8), (1, 5, 8), (8, 8)])
    opt = Muon([cls, pos, w])
    assert opt.param_groups[0]["params"] == [w] and opt.param_groups[1]["params"] == [cls, pos]


def test_only_non_matrices_warns_once():
    with pytest.warns(UserWarning, match="no parameter is a hidden matrix"):
        Muon(make_params([(4,), (3,)]))


# -- bf16 state ---------------------------------------------------------------------------------------
def digits_problem():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    return x, y


def train_digits(make_opt, steps=60, seed=0):
    x, y = digits_problem()
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = make_opt(model)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        full = torch.nn.functional.cross_entropy(model(x), y).item()
    return losses, full, opt


def test_bf16_state_trains():
    _, fp32, _ = train_digits(lambda m: Muon(m.parameters(), lr=0.05, aux=NADAM))
    _, bf16, opt = train_digits(lambda m: Muon(m.parameters(), lr=0.05, aux=NADAM, state_dtype=torch.bfloat16))
    assert opt.state[opt.param_groups[0]["params"][0]]["momentum_buffer"].dtype == torch.bfloat16
    assert fp32 < 0.3  # from ln 10 ≈ 2.3 in 60 steps
    assert abs(bf16 - fp32) < 0.1 * fp32 + 0.02


# -- bad input ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,name", [
    ({"lr": -1.0}, "lr"),
    ({"momentum": 1.0}, "momentum"),
    ({"momentum": -0.1}, "momentum"),
    ({"nesterov": 1}, "nesterov"),
    ({"ns_steps": 100}, "ns_steps"),
    ({"ns_steps": 2.5}, "ns_steps"),
    ({"ns_coefficients": (1.0, 2.0)}, "ns_coefficients"),
    ({"ns_coefficients": (1.0, float("nan"), 2.0)}, "ns_coefficients"),
    ({"eps": 0.0}, "eps"),
    ({"weight_decay": -0.1}, "weight_decay"),
    ({"adjust_lr_fn": "sqrt"}, "adjust_lr_fn"),
    ({"aux": "adam"}, "aux"),
    ({"aux": 3}, "aux"),
    ({"ns_dtype": torch.int32}, "ns_dtype"),
    ({"state_dtype": "bf16"}, "state_dtype"),
])
def test_bad_arguments_name_themselves(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        Muon(make_params([(4, 4)]), **kwargs)


def test_only_non_matrices_without_aux_is_refused():
    with pytest.raises(ValueError, match="aux"):
        Muon(make_params([(4,), (3,)]), aux=None)
    with pytest.raises(ValueError, match="aux"):
        Muon([{"params": make_params([(4, 4)]), "use_muon": False}], aux=None)
    with pytest.raises(TypeError, match="use_muon"):
        Muon([{"params": make_params([(4, 4)]), "use_muon": "no"}])
    with pytest.raises(ValueError, match="more than one parameter group"):  # torch's own check and message
        p = make_params([(4, 4)])
        Muon([{"params": p}, {"params": p}])


def test_rejected_step_changes_nothing():
    model = Tiny().double()
    opt = Muon(model.parameters(), aux="nag")  # NAG validates its group at step time
    for step in range(2):
        opt.zero_grad()
        tiny_loss(model, step).backward()
        opt.step()
    tiny_loss(model, 5).backward()
    params = [p.detach().clone() for p in model.parameters()]
    state = {k: {n: v.clone() if torch.is_tensor(v) else v for n, v in s.items()}
             for k, s in opt.state_dict()["state"].items()}
    for bad in [("lr", -1.0), ("momentum", 2.0), ("ns_steps", -1)]:
        opt.param_groups[0][bad[0]], good = bad[1], opt.param_groups[0][bad[0]]
        with pytest.raises(ValueError, match=bad[0]):
            opt.step()
        opt.param_groups[0][bad[0]] = good
    opt.param_groups[1]["lr"], good = -1.0, opt.param_groups[1]["lr"]  # the aux group: NAG rejects it
    with pytest.raises(ValueError, match="lr"):
        opt.step()
    opt.param_groups[1]["lr"] = good
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters()))
    after = opt.state_dict()["state"]
    for k, s in state.items():
        for n, v in s.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(after[k][n])), (k, n)


# -- state_dict ---------------------------------------------------------------------------------------
def through_disk(state_dict):
    """torch.save / torch.load, as a checkpoint would (in memory both optimizers share tensors:
    torch.optim's load_state_dict keeps the given tensors when dtype and device already match)."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer)


@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
def test_state_dict_round_trip_with_torch_muon(direction):
    shapes = [(6, 10), (10, 6), (6, 10), (8, 8)]
    config = dict(lr=0.02, momentum=0.9, nesterov=True, weight_decay=0.05, adjust_lr_fn="original")
    gen = torch.Generator().manual_seed(0)
    base = make_params(shapes)
    targets = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in base]
    first, second = clone_params(base), clone_params(base)
    make_torch = lambda ps: torch.optim.Muon(ps, **config)  # noqa: E731
    make_ours = lambda ps: Muon(ps, aux=None, **config)  # noqa: E731
    make_a, make_b = (make_torch, make_ours) if direction == "torch_to_ours" else (make_ours, make_torch)
    step = lambda o: torch_step(o) if isinstance(o, torch.optim.Muon) else o.step()  # noqa: E731
    a = make_a(first)
    for _ in range(5):
        noisy_grads([first], targets, gen)
        step(a)
    second_params = clone_params(first)
    b = make_b(second_params)
    b.load_state_dict(through_disk(a.state_dict()))
    for _ in range(10):
        noisy_grads([first, second_params], targets, gen)
        step(a)
        step(b)
    for x, y in zip(first, second_params):
        assert rel_diff(y.detach(), x.detach()) <= 1e-12
    for x, y in zip(first, second_params):
        assert rel_diff(b.state[y]["momentum_buffer"], a.state[x]["momentum_buffer"]) <= 1e-12


def test_state_dict_with_aux_and_bf16_state_round_trips():
    torch.manual_seed(0)
    model = Tiny()
    clone = Tiny()
    clone.load_state_dict(model.state_dict())
    make = lambda m: Muon(m.parameters(), state_dtype=torch.bfloat16, aux=NADAM)  # noqa: E731
    opt = make(model)
    for step in range(3):
        opt.zero_grad()
        tiny_loss(model, step).backward()
        opt.step()
    sd = opt.state_dict()
    assert set(sd["state"]) == set(range(sum(len(g["params"]) for g in sd["param_groups"])))
    other = make(clone)
    clone.load_state_dict(model.state_dict())
    other.load_state_dict(through_disk(sd))
    for step in range(3, 6):
        for o, m in [(opt, model), (other, clone)]:
            o.zero_grad()
            tiny_loss(m, step).backward()
            o.step()
    for a, b in zip(model.parameters(), clone.parameters()):
        assert torch.equal(a, b)


def test_load_state_dict_rejects_mismatches_and_changes_nothing():
    params = make_params([(4, 4), (4, 6)])
    opt = Muon(params, aux=None)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    before = {k: v["momentum_buffer"].clone() for k, v in opt.state_dict()["state"].items()}
    good = opt.state_dict()
    bad_shape = {"state": {0: {"momentum_buffer": torch.zeros(3)}, 1: good["state"][1]},
                 "param_groups": good["param_groups"]}
    with pytest.raises(ValueError, match="momentum_buffer"):
        opt.load_state_dict(bad_shape)
    bad_hyper = {"state": good["state"], "param_groups": [{**good["param_groups"][0], "eps": -1.0}]}
    with pytest.raises(ValueError, match="eps"):
        opt.load_state_dict(bad_hyper)
    with pytest.raises(ValueError, match="param groups"):
        opt.load_state_dict({"state": {}, "param_groups": []})
    after = opt.state_dict()["state"]
    assert all(torch.equal(before[k], after[k]["momentum_buffer"]) for k in before)


def test_state_dict_hooks_run():
    params = make_params([(4, 4)])
    opt = Muon(params, aux=None)
    calls = []
    opt.register_state_dict_pre_hook(lambda o: calls.append("pre"))
    opt.register_state_dict_post_hook(lambda o, sd: {**sd, "extra": 1})
    opt.register_load_state_dict_post_hook(lambda o: calls.append("load"))
    sd = opt.state_dict()
    assert sd["extra"] == 1
    opt.load_state_dict(sd)
    assert calls == ["pre", "load"]


def test_grad_scaler_unscales_and_skips():
    model = Tiny().double()
    clone = Tiny().double()
    clone.load_state_dict(model.state_dict())
    opt, ref = Muon(model.parameters(), aux=NADAM), Muon(clone.parameters(), aux=NADAM)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    for step in range(3):
        opt.zero_grad()
        scaler.scale(tiny_loss(model, step)).backward()
        scaler.step(opt)
        scaler.update()
        ref.zero_grad()
        tiny_loss(clone, step).backward()
        ref.step()
    for a, b in zip(model.parameters(), clone.parameters()):
        assert rel_diff(a.detach(), b.detach()) <= 1e-12
    before = [p.detach().clone() for p in model.parameters()]
    buf = opt.state[opt.param_groups[0]["params"][0]]["momentum_buffer"].clone()
    opt.zero_grad()
    scaler.scale(tiny_loss(model, 9) * float("inf")).backward()
    scaler.step(opt)  # found inf: skipped, nothing written
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert torch.equal(buf, opt.state[opt.param_groups[0]["params"][0]]["momentum_buffer"])


def test_capping_onednn_below_bf16_means_no_native_bf16(monkeypatch):
    for cap in ("AVX2", "avx512_core", "AVX2_VNNI_2"):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        assert not R.cpu_has_native_bf16()
        assert R.default_ns_dtype(torch.device("cpu"), torch.float32) == torch.float32
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "ALL")
    assert R.cpu_has_native_bf16() == bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def test_default_ns_dtype_follows_the_hardware(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(R, "cpu_has_native_bf16", lambda: False)
    assert R.default_ns_dtype(cpu, torch.float32) == torch.float32
    assert R.default_ns_dtype(cpu, torch.bfloat16) == torch.float32
    monkeypatch.setattr(R, "cpu_has_native_bf16", lambda: True)
    assert R.default_ns_dtype(cpu, torch.float32) == torch.bfloat16
    assert R.default_ns_dtype(cpu, torch.float64) == torch.float64
    params = make_params([(4, 6)], torch.float32)
    assert Muon(params, aux=None)._ns_dtype(params[0]) == torch.bfloat16
    assert Muon(make_params([(4, 6)], torch.float32), aux=None, ns_dtype=torch.float32)._ns_dtype(params[0]) == torch.float32


def test_public_name():
    assert nesterov.Muon is Muon


def test_step_inside_a_torch_compiled_training_step():
    """A compiled training step runs Muon's step eagerly (one graph break) and equals an eager run."""

    def make():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))

    model, ref = make(), make()
    # standard Newton–Schulz: the compiled and eager gradients differ by float32 rounding (~1e-7), and fp32
    # Gram Newton–Schulz (auto's pick for the 3×8 head) passes such differences on ~30 × more strongly than
    # the standard iteration (`python -m nesterov.bench.muon orthogonality` prints both errors)
    opt = Muon(model.parameters(), lr=0.05, ns_dtype=torch.float32, ns_method="standard")
    ref_opt = Muon(ref.parameters(), lr=0.05, ns_dtype=torch.float32, ns_method="standard")
    train_compiled_and_eager(model, opt, ref, ref_opt)
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)
    assert all(len(opt.state[p]) > 0 for p in model.parameters())


@pytest.mark.parametrize("backend", ["foreach", "compile", "auto"])
def test_batched_step_matches_the_eager_rule(backend):
    """The batched step (foreach momentum, stacked Newton–Schulz) equals ``rules.muon.update`` matrix by
    matrix (``backend="eager"``), conv kernels, tall and wide matrices and the auxiliary rule included."""
    shapes = [(6, 10), (10, 6), (6, 10), (4, 3, 3, 3), (5,)]
    runs = []
    for b in ("eager", backend):
        params = make_params(shapes, seed=3)
        opt = Muon(params, lr=0.05, weight_decay=0.1, ns_dtype=torch.float64, backend=b)
        gen = torch.Generator().manual_seed(4)
        for _ in range(4):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            opt.step()
        runs.append(params)
    for a, b in zip(*runs):
        assert rel_diff(b.detach(), a.detach()) <= 1e-12
