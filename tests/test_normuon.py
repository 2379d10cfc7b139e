"""NorMuon and the newer Muon options (Polar Express, per-step coefficients, Gram Newton–Schulz, cautious
weight decay) against references written here from the published formulas, in float64, on every backend."""

from __future__ import annotations

import io
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nesterov
from nesterov import Muon, NorMuon
from nesterov.rules import muon as R

BACKENDS = ("eager", "foreach", "compile", "auto")

# Polar Express (arXiv 2505.16932), step by step, as the issue states them; normalisation u / (1.02‖u‖ + 1e-6)
POLAR_EXPRESS = [(8.156554524902461, -22.48329292557795, 15.878769915207462),
                 (4.042929935166739, -2.808917465908714, 0.5000178451051316),
                 (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
                 (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
                 (2.3465413258596377, -1.7097828382687081, 0.42323551169305323)]
JORDAN = (3.4445, -4.775, 2.0315)


def reference_ns(u, schedule, polar_express_norm=False, eps=1e-7):
    """Quintic Newton–Schulz on the matrix view of u, one matrix, the textbook loop."""
    G = u.reshape(u.shape[0], -1)
    tall = G.shape[0] > G.shape[1]
    X = G.T if tall else G
    norm = torch.linalg.norm(X)
    X = X / (1.02 * norm + 1e-6) if polar_express_norm else X / max(norm.item(), eps)
    for a, b, c in schedule:
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return (X.T if tall else X).reshape(u.shape)


def reference_step(p, g, state, *, lr, momentum, weight_decay, schedule, pe_norm, normuon, beta2, cautious):
    """One Muon / NorMuon step of one matrix from the formulas (Nesterov blend, torch's adjusted lr)."""
    buf = momentum * state["buf"] + (1 - momentum) * g
    u = (1 - momentum) * g + momentum * buf
    O = reference_ns(u, schedule, pe_norm)
    if normuon:
        rows = O.reshape(O.shape[0], -1)
        v = beta2 * state["v"] + (1 - beta2) * (rows ** 2).mean(dim=1)
        N = rows / (v.sqrt() + 1e-8)[:, None]
        O = (N * torch.linalg.norm(rows) / torch.linalg.norm(N)).reshape(O.shape)
        state["v"] = v
    A, B = p.shape[0], p[0].numel()
    if cautious:
        decay = p * ((p * O) >= 0)
        p = p - lr * weight_decay * decay
    else:
        p = p * (1 - lr * weight_decay)
    state["buf"] = buf
    return p - lr * math.sqrt(max(1.0, A / B)) * O


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-300)).item()


SHAPES = [(6, 10), (10, 6), (6, 10), (4, 3, 3, 3), (7, 7)]


def run_against_reference(cls, backend, *, coefficients, steps, ns_method, cautious, beta2=0.9, seed=0):
    gen = torch.Generator().manual_seed(seed)
    start = [torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES]
    params = [torch.nn.Parameter(x.clone()) for x in start]
    kw = dict(beta2=beta2) if cls is NorMuon else {}
    opt = cls(params, lr=0.03, momentum=0.9, weight_decay=0.2, ns_coefficients=coefficients, ns_steps=steps,
              ns_method=ns_method, cautious_weight_decay=cautious, ns_dtype=torch.float64, backend=backend, aux=None,
              **kw)
    if coefficients == "polar_express":
        schedule, pe = POLAR_EXPRESS, True
    elif isinstance(coefficients[0], (tuple, list)):
        schedule, pe = list(coefficients), False
    else:
        schedule, pe = [coefficients] * steps, False
    refs = [x.clone() for x in start]
    states = [{"buf": torch.zeros_like(x), "v": torch.zeros(x.shape[0], dtype=torch.float64)} for x in start]
    worst = 0.0
    for _ in range(4):
        for i, p in enumerate(params):
            p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            refs[i] = reference_step(refs[i], p.grad, states[i], lr=0.03, momentum=0.9, weight_decay=0.2,
                                     schedule=schedule, pe_norm=pe, normuon=cls is NorMuon, beta2=beta2,
                                     cautious=cautious)
        opt.step()
        worst = max(worst, max(rel(p.detach(), r) for p, r in zip(params, refs)))
    if cls is NorMuon:
        for p, s in zip(params, states):
            assert rel(opt.state[p]["row_second_moment"], s["v"]) <= 1e-10
    return worst


PER_STEP = ((3.0, -3.2, 1.2), (3.4445, -4.775, 2.0315), (2.0, -1.5, 0.5))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls", [Muon, NorMuon], ids=["Muon", "NorMuon"])
@pytest.mark.parametrize("coefficients,steps,ns_method,cautious", [
    ("polar_express", None, "standard", False),
    (PER_STEP, 3, "gram", True),
    (JORDAN, 5, "auto", True),
    ("polar_express", 5, "gram", False),
], ids=["polar_express", "per_step-gram-cautious", "jordan-auto-cautious", "polar_express-gram"])
def test_equals_the_formulas_in_float64(cls, backend, coefficients, steps, ns_method, cautious):
    assert run_against_reference(cls, backend, coefficients=coefficients, steps=steps, ns_method=ns_method,
                                 cautious=cautious) <= 1e-10


def _with_singular_values(shape, gen, s):
    """A float64 matrix of ``shape`` with singular values ``s`` and random singular vectors."""
    m, n = shape
    k = min(m, n)
    U, _ = torch.linalg.qr(torch.randn(m, k, generator=gen, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, k, generator=gen, dtype=torch.float64))
    return U @ torch.diag(s) @ V.T


def _spectrum_matrix(shape, gen, decay):
    return _with_singular_values(shape, gen, torch.logspace(0, -decay, min(shape), dtype=torch.float64))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(1, 24), n=st.integers(1, 24), batch=st.integers(0, 3), decay=st.floats(0.0, 4.0),
       named=st.sampled_from(["jordan", "polar_express"]), seed=st.integers(0, 2**16))
def test_gram_equals_standard_in_float64(m, n, batch, decay, named, seed):
    gen = torch.Generator().manual_seed(seed)
    shape = (m, n)
    G = torch.stack([_spectrum_matrix(shape, gen, decay) for _ in range(max(batch, 1))])
    G = G if batch else G[0]
    steps = 10 if named == "jordan" else 5
    a = R.newton_schulz(G, steps=steps, coefficients=named, method="standard")
    b = R.newton_schulz(G, steps=steps, coefficients=named, method="gram")
    assert rel(b, a) <= 1e-9


def test_gram_equals_standard_on_conv_kernels_and_in_16_bit_with_the_restart():
    gen = torch.Generator().manual_seed(2)
    u = torch.randn(8, 3, 3, 3, generator=gen, dtype=torch.float64)  # (8, 27): rectangular
    for coefficients in ("jordan", "polar_express"):
        a = R.orthogonalize(u, ns_dtype=torch.float64, coefficients=coefficients)
        b = R.orthogonalize(u, ns_dtype=torch.float64, coefficients=coefficients, method="gram")
        assert b.shape == u.shape and rel(b, a) <= 1e-9
    # bf16: the restarted Gram iteration stays as orthogonal as the standard one
    G = _spectrum_matrix((32, 128), gen, 3.0)
    for method in ("standard", "gram"):
        s = torch.linalg.svdvals(R.newton_schulz(G.bfloat16(), coefficients="polar_express", method=method).double())
        assert s.min() > 0.5 and s.max() < 1.3, method


def _near_singular_gradient(shape, gen):
    """A matrix with the spectrum of a bf16 gradient of the small pysrc GPT (docs/training.md) on which Gram
    Newton–Schulz with Polar Express once blew up: 1, 0.18, …, 4e-5, down to 2.5e-6, random singular vectors."""
    knots = [(0, 0.0), (1, -0.74), (6, -1.66), (18, -2.24), (36, -3.01), (60, -4.36), (63, -5.6)]
    at = torch.linspace(0, 63, min(shape), dtype=torch.float64)
    log_s = torch.empty_like(at)
    for (i0, v0), (i1, v1) in zip(knots, knots[1:]):
        inside = (at >= i0) & (at <= i1)
        log_s[inside] = v0 + (at[inside] - i0) * (v1 - v0) / (i1 - i0)
    return _with_singular_values(shape, gen, 10 ** log_s)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("coefficients,steps", [("jordan", 5), ("jordan", 10), ("polar_express", 5)])
def test_16_bit_gram_restarts_keep_near_singular_gradients_orthogonal(dtype, coefficients, steps):
    """Rounding gives R = X Xᵀ spurious negative eigenvalues that each step multiplies by P_t(λ)²; with the
    restarts of ``gram_restarts`` Gram stays within 0.1 of the standard iteration's largest singular value
    (restarts at steps 2 and 4 only gave 3e4–2e5 for Polar Express in bf16 on these matrices)."""
    assert R.gram_restarts(dtype, 5) == (1, 3) and R.gram_restarts(torch.float32, 5) == ()
    gen = torch.Generator().manual_seed(0)
    for shape in [(64, 64), (64, 192), (192, 64)]:
        G = _near_singular_gradient(shape, gen).to(dtype)
        largest = {method: torch.linalg.svdvals(R.newton_schulz(G, steps=steps, coefficients=coefficients,
                                                                method=method).double()).max().item()
                   for method in ("standard", "gram")}
        assert largest["gram"] <= largest["standard"] + 0.1, (shape, largest)


def test_polar_express_orthogonalises_better_than_jordan():
    gen = torch.Generator().manual_seed(1)
    G = _spectrum_matrix((64, 256), gen, 3.0)
    errors = {}
    for name in ("jordan", "polar_express"):
        s = torch.linalg.svdvals(R.newton_schulz(G, coefficients=name))
        errors[name] = (s - 1).abs().max().item()
    assert errors["polar_express"] < errors["jordan"]


def test_default_muon_still_equals_torch_muon():
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(s, generator=gen, dtype=torch.float64) for s in [(6, 10), (10, 6), (7, 7)]]
    ours, theirs = ([torch.nn.Parameter(x.clone()) for x in start] for _ in range(2))
    o = Muon(ours, lr=0.02, weight_decay=0.05, aux=None, ns_dtype=torch.float64)  # our defaults otherwise
    t = torch.optim.Muon(theirs, lr=0.02, weight_decay=0.05)
    original = torch.Tensor.bfloat16
    for _ in range(10):
        for a, b in zip(ours, theirs):
            a.grad = torch.randn(a.shape, generator=gen, dtype=torch.float64)
            b.grad = a.grad.clone()
        o.step()
        torch.Tensor.bfloat16 = lambda self, *args, **kwargs: self.clone()  # torch's NS in float64 too
        try:
            t.step()
        finally:
            torch.Tensor.bfloat16 = original
    assert max(rel(a.detach(), b.detach()) for a, b in zip(ours, theirs)) <= 1e-10


# -- NorMuon's state ------------------------------------------------------------------------------
def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8), torch.nn.Tanh(),
                               torch.nn.Linear(8, 3))


def _train(model, opt, seeds):
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        x, y = torch.randn(16, 6, generator=gen), torch.randn(16, 3, generator=gen)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("state_dtype", [None, torch.bfloat16])
def test_normuon_resumes_bit_for_bit(state_dtype):
    model, twin = _model(), _model()
    make = lambda m: NorMuon(m.parameters(), lr=0.02, state_dtype=state_dtype, ns_dtype=torch.float32)  # noqa: E731
    opt = make(model)
    _train(model, opt, range(3))
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    twin.load_state_dict(model.state_dict())
    other = make(twin)
    other.load_state_dict(torch.load(buffer))
    v = opt.state[model[0].weight]["row_second_moment"]
    assert v.shape == (8,) and v.dtype == (state_dtype or torch.float32)
    _train(model, opt, range(3, 6))
    _train(twin, other, range(3, 6))
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_normuon_refuses_a_row_state_of_the_wrong_shape():
    model = _model()
    opt = NorMuon(model.parameters())
    _train(model, opt, range(1))
    sd = opt.state_dict()
    index = next(i for i, s in sd["state"].items() if "row_second_moment" in s)
    sd["state"][index]["row_second_moment"] = torch.zeros(5)
    with pytest.raises(ValueError, match="row_second_moment"):
        opt.load_state_dict(sd)


def test_normuon_trains_and_is_exported():
    assert nesterov.NorMuon is NorMuon and issubclass(NorMuon, Muon)
    model = _model()
    opt = NorMuon(model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(9)
    x, y = torch.randn(64, 6, generator=gen), torch.randn(64, 3, generator=gen)
    first = torch.nn.functional.mse_loss(model(x), y).item()
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    assert torch.nn.functional.mse_loss(model(x), y).item() < 0.7 * first


# -- bad input ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [Muon, NorMuon], ids=["Muon", "NorMuon"])
@pytest.mark.parametrize("kwargs,pattern", [
    ({"ns_coefficients": "newton"}, "ns_coefficients"),
    ({"ns_coefficients": PER_STEP, "ns_steps": 5}, r"ns_steps.*ns_coefficients"),
    ({"ns_coefficients": "polar_express", "ns_steps": 4}, r"ns_steps.*ns_coefficients"),
    ({"ns_coefficients": ((1.0, 2.0, 3.0), (1.0, 2.0))}, "ns_coefficients"),
    ({"ns_coefficients": ()}, "ns_coefficients"),
    ({"ns_method": "fast"}, "ns_method"),
    ({"cautious_weight_decay": 1}, "cautious_weight_decay"),
])
def test_bad_options_name_themselves(cls, kwargs, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        cls([torch.nn.Parameter(torch.randn(4, 4))], **kwargs)


@pytest.mark.parametrize("beta2", [1.0, -0.1, float("nan"), "0.9"])
def test_bad_beta2_names_itself(beta2):
    with pytest.raises((ValueError, TypeError), match="beta2"):
        NorMuon([torch.nn.Parameter(torch.randn(4, 4))], beta2=beta2)


def test_per_step_coefficients_set_ns_steps():
    opt = Muon([torch.nn.Parameter(torch.randn(4, 4))], ns_coefficients=[list(t) for t in PER_STEP])
    assert opt.param_groups[0]["ns_steps"] == 3 and opt.param_groups[0]["ns_coefficients"] == PER_STEP


# -- FSDP2 ----------------------------------------------------------------------------------------------
def _fsdp_nets():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 9), torch.nn.Tanh(), torch.nn.Linear(9, 9), torch.nn.Tanh(),
                               torch.nn.Linear(9, 3)).double()


def _normuon_fsdp_work(rank: int, world: int) -> dict:
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    sharded, single = _fsdp_nets(), _fsdp_nets()
    fully_shard(sharded)
    make = lambda m: NorMuon(m.parameters(), lr=0.05, weight_decay=0.1, cautious_weight_decay=True,  # noqa: E731
                             ns_coefficients="polar_express", ns_method="gram")
    opts = [make(m) for m in (sharded, single)]
    gen = torch.Generator().manual_seed(3)  # the same data on every rank
    for _ in range(3):
        x, y = torch.randn(8, 6, generator=gen, dtype=torch.float64), torch.randint(0, 3, (8,), generator=gen)
        for model, opt in zip((sharded, single), opts):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    v = opts[0].state[sharded[2].weight]["row_second_moment"]
    return {"diff": max((p.full_tensor() - q.detach()).abs().max().item()
                        for p, q in zip(sharded.parameters(), single.parameters())),
            "v_diff": (v.full_tensor() - opts[1].state[single[2].weight]["row_second_moment"]).abs().max().item(),
            "v_local_rows": v.to_local().shape[0], "v_is_dtensor": isinstance(v, DTensor)}


def test_normuon_under_fsdp2_keeps_its_row_state_with_its_rows_and_equals_one_process(tmp_path):
    from _dist import on_two_ranks

    results = on_two_ranks(_normuon_fsdp_work, tmp_path)
    for r in results:
        assert r["diff"] <= 1e-12 and r["v_diff"] <= 1e-12
        assert r["v_is_dtensor"] and r["v_local_rows"] in (4, 5)  # 9 rows split 5 + 4, as the weight's
