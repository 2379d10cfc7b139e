"""The optimizers inside torch.distributed's own wrappers, on a real two-process gloo group (public API only).

- ``ZeroRedundancyOptimizer(params, optimizer_class=NAG / NAdamW, parameters_as_bucket_view=False / True)`` under
  DDP equals one process running the same optimizer on the whole batch;
- DDP with ``gradient_as_bucket_view`` True / False × ``zero_grad(set_to_none=True / False)`` equals one process for
  every optimizer, and ``step()`` leaves the gradients DDP wrote (the same tensors, the same values);
- FSDP2 (``fully_shard``) + DCP: ``get_state_dict`` / ``set_state_dict`` with our optimizer, ``dcp.save`` to a temp
  dir, a fresh model and optimizer loaded from it continue exactly as the uninterrupted run.

All numbers in float64. Each rank runs every case of a family in one process group (one spawn per family keeps
the suite fast); a case that raises reports its error and the others still run. DDP and ZeRO cases each get a
process group of their own, so a case that fails on one rank only cannot pair its collectives with the next case.

Tolerances: data parallelism averages two half-batch gradients where one process takes the mean of the whole
batch, the same sum in another order: float64 rounding (1e-16 relative per operation) over 4 steps of O(1)
weights stays below 1e-14, and we allow 1e-12. A resumed run does the same arithmetic in the same order as the
uninterrupted one: it must be exact (torch.optim.SGD, run through the same code as a control, is).
"""

from __future__ import annotations

import datetime

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

import nesterov
from _dist import on_two_ranks

NAMES = ("NAG", "NAdamW", "Adan", "Muon", "LARS", "LAMB")
HYPERS = {
    "NAG": dict(lr=0.1, momentum=0.9, weight_decay=0.01),
    "NAdamW": dict(lr=0.01, weight_decay=0.01),
    "Adan": dict(lr=0.01, weight_decay=0.01),
    "Muon": dict(lr=0.02, weight_decay=0.01),
    "LARS": dict(lr=1.0, momentum=0.9, weight_decay=0.01, trust_coefficient=0.02),
    "LAMB": dict(lr=0.01, weight_decay=0.01),
}
ZERO_NAMES = ("NAG", "NAdamW", "torch.SGD")  # torch.SGD: the control
STEPS = 4
TOL = 1e-12  # see the module docstring


def optimizer(name: str):
    if name == "torch.SGD":
        return torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True)
    return getattr(nesterov, name), dict(HYPERS[name])


def net(seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 12), torch.nn.Tanh(),
                               torch.nn.Linear(12, 3)).double()


def batches(steps: int = STEPS, size: int = 16):
    """The global batches, the same on every rank (rank r trains on rows [r·size/2, (r+1)·size/2))."""
    gen = torch.Generator().manual_seed(5)
    return [(torch.randn(size, 6, generator=gen, dtype=torch.float64), torch.randint(0, 3, (size,), generator=gen))
            for _ in range(steps)]


def half(batch, rank: int, world: int):
    x, y = batch
    n = len(x) // world
    return x[rank * n:(rank + 1) * n], y[rank * n:(rank + 1) * n]


def one_process(name: str) -> list[torch.Tensor]:
    """The reference: one process, the same optimizer, the whole batch."""
    model = net()
    cls, kwargs = optimizer(name)
    opt = cls(model.parameters(), **kwargs)
    for x, y in batches():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def max_diff(a, b) -> float:
    return max((x.detach() - y.detach()).abs().max().item() for x, y in zip(a, b))


def guarded(case):
    """Run one case; return its result, or the error it raised (so one failing case does not hide the others)."""
    try:
        return case()
    except Exception as e:  # noqa: BLE001 - reported per case by the tests
        return {"error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}


def case_group():
    return dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=60))


def check(result: dict):
    assert "error" not in result, result["error"]


# ---------------------------------------------------------------------------------------------------------------
# ZeroRedundancyOptimizer and DDP
# ---------------------------------------------------------------------------------------------------------------

def _zero_case(rank: int, world: int, name: str, bucket_view: bool) -> dict:
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    group = case_group()
    model = net()
    ddp = DDP(model, process_group=group)
    cls, kwargs = optimizer(name)
    opt = ZeroRedundancyOptimizer(ddp.parameters(), optimizer_class=cls, process_group=group,
                                  parameters_as_bucket_view=bucket_view, **kwargs)
    for batch in batches():
        x, y = half(batch, rank, world)
        opt.zero_grad()
        F.cross_entropy(ddp(x), y).backward()
        opt.step()
    params = [p.detach().clone() for p in model.parameters()]
    return {"params": params, "diff": max_diff(params, one_process(name))}


def _ddp_case(rank: int, world: int, name: str, bucket_view: bool, set_to_none: bool) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    group = case_group()
    model = net()
    ddp = DDP(model, process_group=group, gradient_as_bucket_view=bucket_view)
    cls, kwargs = optimizer(name)
    opt = cls(ddp.parameters(), **kwargs)
    grads_kept = True
    for batch in batches():
        x, y = half(batch, rank, world)
        opt.zero_grad(set_to_none=set_to_none)
        F.cross_entropy(ddp(x), y).backward()
        grads = [p.grad for p in model.parameters()]
        values = [g.clone() for g in grads]
        opt.step()
        grads_kept &= all(p.grad is g for p, g in zip(model.parameters(), grads))
        grads_kept &= all(torch.equal(g, v) for g, v in zip(grads, values))
    params = [p.detach().clone() for p in model.parameters()]
    return {"params": params, "diff": max_diff(params, one_process(name)), "grads_kept": grads_kept}


DDP_CASES = [(name, bucket_view, set_to_none) for name in NAMES + ("torch.SGD",) for bucket_view in (False, True)
             for set_to_none in (True, False)]
ZERO_CASES = [(name, bucket_view) for name in ZERO_NAMES for bucket_view in (False, True)]


def _data_parallel_work(rank: int, world: int) -> dict:
    results = {("zero",) + case: guarded(lambda: _zero_case(rank, world, *case)) for case in ZERO_CASES}
    results.update({("ddp",) + case: guarded(lambda: _ddp_case(rank, world, *case)) for case in DDP_CASES})
    return results


@pytest.fixture(scope="module")
def data_parallel(tmp_path_factory):
    return on_two_ranks(_data_parallel_work, tmp_path_factory.mktemp("data_parallel"))


@pytest.mark.parametrize("name, bucket_view", ZERO_CASES)
def test_zero_redundancy_optimizer_equals_one_process(data_parallel, name, bucket_view):
    """torch's ZeRO-1 with our optimizer as ``optimizer_class``: each rank steps its partition, the ranks
    broadcast, and every rank ends on the weights of one process on the whole batch (1e-12, float64)."""
    results = [r[("zero", name, bucket_view)] for r in data_parallel]
    for r in results:
        check(r)
    drift = max_diff(results[0]["params"], results[1]["params"])
    assert drift == 0.0, f"the ranks drifted apart by {drift:.3g} (ZeRO broadcasts each partition's weights)"
    assert max(r["diff"] for r in results) <= TOL, f"{max(r['diff'] for r in results):.3g} from one process"


@pytest.mark.parametrize("name, bucket_view, set_to_none", DDP_CASES)
def test_ddp_equals_one_process(data_parallel, name, bucket_view, set_to_none):
    """DDP averages the gradients (into p.grad, or into its buckets with ``gradient_as_bucket_view``); each
    rank's optimizer steps on them and ends on the weights of one process on the whole batch (1e-12, float64).
    ``step()`` leaves every ``p.grad`` as DDP left it: the same tensor, the same values."""
    results = [r[("ddp", name, bucket_view, set_to_none)] for r in data_parallel]
    for r in results:
        check(r)
    drift = max_diff(results[0]["params"], results[1]["params"])
    assert drift == 0.0, f"the ranks drifted apart by {drift:.3g} (same averaged gradient, same step)"
    assert max(r["diff"] for r in results) <= TOL, f"{max(r['diff'] for r in results):.3g} from one process"
    assert all(r["grads_kept"] for r in results), "step() replaced or changed a p.grad that DDP wrote"


# ---------------------------------------------------------------------------------------------------------------
# FSDP2 + distributed checkpoint
# ---------------------------------------------------------------------------------------------------------------

def sharded(seed: int):
    from torch.distributed.fsdp import fully_shard

    model = net(seed)
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    return model


def train(model, opt, steps, rank: int, world: int) -> list[float]:
    losses = []
    for batch in steps:
        x, y = half(batch, rank, world)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _dcp_case(rank: int, world: int, name: str, root: str) -> dict:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    cls, kwargs = optimizer(name)
    data = batches(steps=6)

    straight = sharded(0)
    straight_opt = cls(straight.parameters(), **kwargs)
    straight_losses = train(straight, straight_opt, data, rank, world)

    first = sharded(0)
    first_opt = cls(first.parameters(), **kwargs)
    train(first, first_opt, data[:3], rank, world)
    model_sd, optim_sd = get_state_dict(first, first_opt)
    path = f"{root}/{name}"
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=path)

    fresh = sharded(1)  # other initial weights: everything must come from the checkpoint
    fresh_opt = cls(fresh.parameters(), **kwargs)
    model_sd, optim_sd = get_state_dict(fresh, fresh_opt)  # (initialises the optimizer's state: a step at lr 0)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(fresh, fresh_opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    resumed_losses = train(fresh, fresh_opt, data[3:], rank, world)

    full = [p.full_tensor() for p in straight.parameters()]
    return {"diff": max_diff(full, [p.full_tensor() for p in fresh.parameters()]),
            "moved": max_diff(full, net(0).parameters()),
            "losses": (straight_losses[3:], resumed_losses)}


DCP_NAMES = NAMES + ("torch.SGD",)


def _dcp_work(rank: int, world: int, root: str) -> dict:
    return {name: guarded(lambda: _dcp_case(rank, world, name, root)) for name in DCP_NAMES}


@pytest.fixture(scope="module")
def fsdp_dcp(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsdp_dcp")
    return on_two_ranks(_dcp_work, tmp, str(tmp / "checkpoints"))


@pytest.mark.parametrize("name", DCP_NAMES)
def test_fsdp2_dcp_resume_equals_uninterrupted(fsdp_dcp, name):
    """FSDP2 shards every layer across the two ranks; after 3 steps ``get_state_dict`` + ``dcp.save`` write model
    and optimizer, a fresh model (other initial weights) and optimizer take them back through ``dcp.load`` +
    ``set_state_dict`` and take 3 more steps: the same losses and weights as 6 uninterrupted steps, exactly."""
    for r in fsdp_dcp:
        check(r[name])
        assert r[name]["moved"] > 1e-3
        straight, resumed = r[name]["losses"]
        assert resumed == straight, f"resumed losses {resumed} != uninterrupted {straight}"
        assert r[name]["diff"] == 0.0, f"resumed weights {r[name]['diff']:.3g} from the uninterrupted run"
