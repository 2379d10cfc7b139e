"""Every optimizer and backend on a CUDA device against the rule as written on the CPU (skipped without
CUDA; ``scripts/gpu_check.sh`` runs it where there is a GPU)."""

from __future__ import annotations

import pytest
import torch

import nesterov

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SHAPES = [(64, 3, 3, 3), (64,), (300, 129), (7,)]
OPTIMIZERS = {
    "NAG": dict(lr=0.05, momentum=0.9, weight_decay=1e-2),
    "NAdamW": dict(lr=1e-2, weight_decay=1e-2),
    "Adan": dict(lr=1e-2, weight_decay=1e-2),
    "LARS": dict(lr=0.5, weight_decay=1e-3, trust_coefficient=0.01),
    "LAMB": dict(lr=1e-2, weight_decay=1e-2),
    "Muon": dict(lr=0.02, weight_decay=1e-2, ns_dtype=torch.float32),
    "ScheduleFreeSGD": dict(lr=0.1, weight_decay=1e-2, warmup_steps=2, r=0.5),
    "ScheduleFreeAdamW": dict(lr=1e-2, weight_decay=1e-2, warmup_steps=2, r=0.5),
}


def run(name, device, dtype, backend, state_dtype=None, steps=5):
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64).to(device, dtype)) for s in SHAPES]
    opt = getattr(nesterov, name)(params, backend=backend, state_dtype=state_dtype, **OPTIMIZERS[name])
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(device, dtype)
        opt.step()
    return torch.cat([p.detach().double().cpu().flatten() for p in params])


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("backend", ["eager", "foreach", "compile", "auto", "torch"])
@pytest.mark.parametrize("dtype,state_dtype,tol", [(torch.float32, None, 1e-5), (torch.float32, torch.bfloat16, 2e-2),
                                                   (torch.bfloat16, None, 2e-2)])
def test_cuda_matches_the_cpu_rule(name, backend, dtype, state_dtype, tol):
    if backend == "torch" and name != "NAG" or (name == "Muon" and backend == "torch"):
        pytest.skip("only NAG has a torch kernel")
    if backend == "torch" and state_dtype is not None:
        pytest.skip("torch's kernel keeps full-width state")
    want = run(name, "cpu", torch.float64, "eager")
    got = run(name, "cuda", dtype, backend, state_dtype)
    assert ((got - want).abs().max() / want.abs().max()).item() <= tol


@pytest.mark.parametrize("name", ["sf-sgd", "sf-adamw"])
def test_cuda_trainer_schedule_free_evaluates_at_x_and_resumes_exactly(name, tmp_path, monkeypatch):
    """`nesterov train --optimizer sf-*` on the device: the default model (cnn1d, BatchNorm recomputed at x) trains
    past 90 % in 60 steps; with the MLP (no convolutions, whose CUDA kernels may not repeat bit for bit) a run
    interrupted before its third evaluation and resumed ends as the uninterrupted one."""
    from nesterov.train import batches as B
    from nesterov.train import loop
    from nesterov.train.config import Config

    monkeypatch.setenv("NESTEROV_CACHE", str(tmp_path / "cache"))
    s = loop.run(Config(optimizer=name, device="cuda", steps=60, eval_every=20), None, progress=False).summary
    assert s["status"] == "completed" and s["test_accuracy"] > 0.9, s
    tiny = dict(optimizer=name, dataset="digits", model="mlp", device="cuda", steps=40, eval_every=10)
    full = loop.run(Config(**tiny), tmp_path / "full", progress=False).summary
    real_eval, calls = B.evaluate, []

    def interrupt_third_eval(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_eval(*a, **k)

    monkeypatch.setattr(B, "evaluate", interrupt_third_eval)
    assert loop.run(Config(**tiny), tmp_path / "part", progress=False).exit_code == 130
    monkeypatch.setattr(B, "evaluate", real_eval)
    resumed = loop.run(Config(**tiny), tmp_path / "part", resume=True, progress=False).summary
    for key in ("test_accuracy", "test_loss", "train_loss", "best_step"):
        assert resumed[key] == full[key], key


@pytest.mark.parametrize("coefficients", ["jordan", "polar_express"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_16_bit_newton_schulz_and_the_gram_restart(coefficients, dtype):
    """On CUDA, 16-bit Newton–Schulz (standard, and Gram with its restarts) keeps the singular values of a
    decaying spectrum where float64's iteration puts them."""
    from nesterov.rules import muon as R

    gen = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(256, 256, generator=gen, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(1024, 256, generator=gen, dtype=torch.float64))
    G = U @ torch.diag(torch.logspace(0, -3, 256, dtype=torch.float64)) @ V.T
    exact = torch.linalg.svdvals(R.newton_schulz(G, coefficients=coefficients))
    for method in ("standard", "gram"):
        s = torch.linalg.svdvals(R.newton_schulz(G.to("cuda", dtype), coefficients=coefficients, method=method)
                                 .double().cpu())
        assert (s.max() - exact.max()).abs() < 0.1 and (s.min() - exact.min()).abs() < 0.1, method


@pytest.mark.parametrize("backend", ["eager", "foreach", "auto"])
def test_cuda_normuon_and_the_new_muon_options_match_the_cpu_rule(backend):
    def run_on(device, dtype, b):
        gen = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64).to(device, dtype))
                  for s in [(64, 3, 3, 3), (300, 129), (129, 300)]]
        opt = nesterov.NorMuon(params, lr=0.02, weight_decay=1e-2, ns_dtype=torch.float32 if dtype != torch.float64
                               else torch.float64, ns_coefficients="polar_express", ns_method="gram",
                               cautious_weight_decay=True, backend=b, aux=None)
        for _ in range(5):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(device, dtype)
            opt.step()
        return torch.cat([p.detach().double().cpu().flatten() for p in params])

    want, got = run_on("cpu", torch.float64, "eager"), run_on("cuda", torch.float32, backend)
    assert ((got - want).abs().max() / want.abs().max()).item() <= 1e-4
