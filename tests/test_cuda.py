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
