"""The cases of tests/test_contract.py: every optimizer × backend, built through the public API only,
and the small models, data and comparisons the contract tests share."""

from __future__ import annotations

import copy
import io

import pytest
import torch

import nesterov

OPTIMIZERS = ("NAG", "NAdamW", "Adan", "LARS", "LAMB", "Muon", "NorMuon", "ScheduleFreeSGD", "ScheduleFreeAdamW")
BACKENDS = ("eager", "foreach", "compile", "auto")
# torch's own fused SGD kernel (fp32/fp64); the rules' C++ kernels (CPU: fp32/fp64, and fp32 with bf16 state)
EXTRA_BACKENDS = {"NAG": ("torch", "cpp"), "LARS": ("cpp",), "LAMB": ("cpp",), "ScheduleFreeSGD": ("cpp",),
                  "ScheduleFreeAdamW": ("cpp",)}

# Hyperparameters that exercise every term of each rule (momentum, weight decay, bias corrections);
# per-test overrides go through ``make(..., **overrides)``.
KWARGS = {
    "NAG": dict(lr=0.1, momentum=0.9, weight_decay=0.01),
    "NAdamW": dict(lr=0.01, weight_decay=0.01),
    "Adan": dict(lr=0.01, weight_decay=0.01),
    "LARS": dict(lr=0.5, momentum=0.9, weight_decay=0.01, trust_coefficient=0.02),
    "LAMB": dict(lr=0.01, weight_decay=0.01),
    "Muon": dict(lr=0.02, momentum=0.95, weight_decay=0.01),
    "NorMuon": dict(lr=0.02, momentum=0.95, weight_decay=0.01, beta2=0.9),
    "ScheduleFreeSGD": dict(lr=0.1, momentum=0.9, weight_decay=0.01, warmup_steps=2, r=0.5),
    "ScheduleFreeAdamW": dict(lr=0.01, weight_decay=0.01, warmup_steps=2, r=0.5),
}

# The optimizer whose state a test loads into the wrong class: one with other state names.
FOREIGN = {"NAG": "NAdamW", "NAdamW": "NAG", "Adan": "NAG", "LARS": "NAdamW", "LAMB": "NAG", "Muon": "NAdamW",
           "NorMuon": "NAdamW", "ScheduleFreeSGD": "NAdamW", "ScheduleFreeAdamW": "NAG"}

CASES = [(name, backend) for name in OPTIMIZERS for backend in BACKENDS + EXTRA_BACKENDS.get(name, ())]


def case_params(cases=CASES):
    return [pytest.param(name, backend, id=f"{name}-{backend}") for name, backend in cases]


def only(*names):
    return [c for c in CASES if c[0] in names]


ALL = case_params()


def make(name: str, backend: str, params, **overrides):
    """``nesterov.<name>(params, backend=backend, **KWARGS[name] | overrides)``."""
    return getattr(nesterov, name)(params, backend=backend, **{**KWARGS[name], **overrides})


# -- models and data ---------------------------------------------------------------------------------
def mlp(*widths: int, dtype=torch.float64, seed: int = 0, device=None) -> torch.nn.Sequential:
    """Linear layers with tanh between them: matrices and vectors, so Muon uses both of its paths."""
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        if i:
            layers.append(torch.nn.Tanh())
        layers.append(torch.nn.Linear(a, b, dtype=dtype, device=device))
    return torch.nn.Sequential(*layers)


def tiny(dtype=torch.float64, seed: int = 0) -> torch.nn.Sequential:
    return mlp(4, 5, 3, dtype=dtype, seed=seed)


def batches(n: int, d_in: int = 4, d_out: int = 3, dtype=torch.float64, seed: int = 1, size: int = 8):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, d_in, generator=gen).to(dtype), torch.randn(size, d_out, generator=gen).to(dtype))
            for _ in range(n)]


def loss_of(model, batch) -> torch.Tensor:
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


def train(model, opt, data, zero: bool = True) -> None:
    for batch in data:
        if zero:
            opt.zero_grad()
        loss_of(model, batch).backward()
        opt.step()


def set_grads(params, seed: int, scale: float = 1.0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = (scale * torch.randn(p.shape, generator=gen, dtype=torch.float64)).to(p.dtype)


# -- snapshots and comparisons -------------------------------------------------------------------------
def values(model_or_params) -> list[torch.Tensor]:
    params = model_or_params.parameters() if isinstance(model_or_params, torch.nn.Module) else model_or_params
    return [p.detach().clone() for p in params]


def assert_equal_tensors(actual, expected, what: str = "tensor") -> None:
    assert len(actual) == len(expected), f"{what}: {len(actual)} tensors, expected {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected)):
        a, e = a.detach(), e.detach()
        assert a.dtype == e.dtype and a.shape == e.shape, f"{what} {i}: {a.dtype}{tuple(a.shape)} vs {e.dtype}{tuple(e.shape)}"
        assert torch.equal(a, e), f"{what} {i} differs by {(a.double() - e.double()).abs().max().item():.3g}"


def assert_close_tensors(actual, expected, atol: float, rtol: float = 0.0, what: str = "tensor") -> None:
    assert len(actual) == len(expected), f"{what}: {len(actual)} tensors, expected {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected)):
        torch.testing.assert_close(a.detach(), e.detach(), atol=atol, rtol=rtol, msg=lambda m: f"{what} {i}: {m}")


def frozen_state_dict(opt) -> dict:
    """``opt.state_dict()`` detached from the optimizer: what a checkpoint written to disk holds, read back
    with ``torch.load``'s default ``weights_only=True`` (so it holds only what that accepts)."""
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer)


def compare_state_dicts(actual: dict, expected: dict, atol: float | None = None, ignore_keys=(),
                        top_level: bool = True) -> None:
    """Same keys, same param_groups, state tensors equal (bitwise, or within ``atol``); ``top_level=False``
    compares only ``state`` and ``param_groups`` (an optimizer may save more, e.g. a rounding seed)."""
    if top_level:
        assert set(actual) - set(ignore_keys) == set(expected) - set(ignore_keys), (
            f"top-level keys {sorted(actual)} vs {sorted(expected)}")
        for key in set(expected) - {"state", "param_groups"} - set(ignore_keys):
            assert _same_value(actual[key], expected[key]), f"state_dict[{key!r}] differs"
    assert set(actual["state"]) == set(expected["state"]), (
        f"state entries {sorted(map(str, actual['state']))} vs {sorted(map(str, expected['state']))}")
    for index, entry in expected["state"].items():
        got = actual["state"][index]
        assert set(got) == set(entry), f"state[{index}] keys {sorted(got)} vs {sorted(entry)}"
        for key, value in entry.items():
            other = got[key]
            if isinstance(value, torch.Tensor):
                assert isinstance(other, torch.Tensor), f"state[{index}][{key!r}] is not a tensor"
                if atol is None:  # equal values; the dtype of a 0-d count may differ (torch casts on load)
                    assert torch.equal(other.to(value.dtype), value), f"state[{index}][{key!r}] differs"
                else:
                    torch.testing.assert_close(other.to(value.dtype), value, atol=atol, rtol=0.0)
            else:
                assert other == value, f"state[{index}][{key!r}]: {other!r} vs {value!r}"
    assert len(actual["param_groups"]) == len(expected["param_groups"])
    for i, (got, group) in enumerate(zip(actual["param_groups"], expected["param_groups"])):
        extra, missing = set(got) - set(group) - set(ignore_keys), set(group) - set(got) - set(ignore_keys)
        assert not extra and not missing, f"param_groups[{i}] has extra keys {sorted(extra)}, lacks {sorted(missing)}"
        for key in group:
            if key not in ignore_keys:
                assert _same_value(got[key], group[key]), f"param_groups[{i}][{key!r}]: {got[key]!r} vs {group[key]!r}"


def _same_value(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    return a == b


def state_snapshot(opt) -> dict:
    """Every state entry of ``opt`` (keyed by the parameter's position in param_groups), deep-copied."""
    position = {id(p): i for i, p in enumerate(p for g in opt.param_groups for p in g["params"])}
    snap = {}
    for key, entry in opt.state.items():
        name = position.get(id(key), ("extra", repr(key)))
        snap[name] = copy.deepcopy({k: v.detach().clone() if isinstance(v, torch.Tensor) else v
                                    for k, v in entry.items()} if isinstance(entry, dict) else entry)
    return snap


def assert_same_snapshot(actual: dict, expected: dict) -> None:
    assert set(actual) == set(expected), f"state entries {sorted(map(str, actual))} vs {sorted(map(str, expected))}"
    for key, entry in expected.items():
        got = actual[key]
        if not isinstance(entry, dict):
            assert got == entry
            continue
        assert set(got) == set(entry), f"state[{key}] keys {sorted(got)} vs {sorted(entry)}"
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(got[name], value), f"state[{key}][{name!r}] changed"
            else:
                assert got[name] == value, f"state[{key}][{name!r}] changed"


def groups_snapshot(opt) -> list[dict]:
    return [{k: ([id(p) for p in v] if k == "params" else copy.deepcopy(v)) for k, v in g.items()}
            for g in opt.param_groups]
