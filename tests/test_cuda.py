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
