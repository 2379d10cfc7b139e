"""Muon's Newton–Schulz split across replicated (DDP) ranks: the plan, the exchange, and Muon(process_group=...)
on a real two-process gloo group against one process."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

import nesterov
from nesterov.engine.matrices import batched_apply, product_cost, replicated_apply, split_by_cost
from nesterov.rules import muon as R

from _dist import on_two_ranks


def transformer_matrices(blocks: int = 4, d: int = 512) -> list[tuple[int, int]]:
    return [s for _ in range(blocks) for s in ((3 * d, d), (d, d), (4 * d, d), (d, 4 * d))]


def test_split_by_cost_is_balanced_and_deterministic():
    shapes = transformer_matrices()
    owner = split_by_cost(shapes, 2)
    assert owner == split_by_cost(list(shapes), 2)  # the same plan on every rank
    loads = [sum(product_cost(*s) for s, o in zip(shapes, owner) if o == r) for r in range(2)]
    assert loads[0] == loads[1]  # the 16 matrices of a 4-layer d=512 transformer halve exactly
    odd = [(8, 8), (4, 16), (2, 2)]
    assert sorted(split_by_cost(odd, 5)) == [0, 1, 2]  # more ranks than matrices: some compute nothing
    assert split_by_cost([], 3) == []
    assert split_by_cost([(3, 3)] * 4, 1) == [0] * 4


def test_split_by_cost_puts_the_costliest_first():
    # greedy by cost: one big matrix weighs as much as the three small ones together
    shapes = [(2, 2), (2, 2), (4, 4), (2, 2)]
    owner = split_by_cost(shapes, 2, cost=lambda m, n: m * n)
    assert owner[2] == 0 and owner[:2] + owner[3:] == [1, 1, 1]
    with pytest.raises(ValueError, match="world must be an int >= 1"):
        split_by_cost(shapes, 0)


def test_replicated_apply_without_a_group_is_batched_apply():
    gen = torch.Generator().manual_seed(0)
    ms = [torch.randn(s, generator=gen, dtype=torch.float64) for s in ((3, 5), (5, 3), (4, 4))]
    fn = lambda b: b @ b.mT @ b  # noqa: E731
    for got, want in zip(replicated_apply(fn, ms, None), batched_apply(fn, ms)):
        assert torch.equal(got, want)


@pytest.mark.parametrize("group", ["WORLD", 3, object()])
def test_process_group_must_be_a_process_group(group):
    p = torch.nn.Parameter(torch.randn(4, 4))
    with pytest.raises(TypeError, match="process_group must be a torch.distributed.ProcessGroup .* or None; got"):
        nesterov.Muon([p], process_group=group)


def _replicated_apply_work(rank: int, world: int) -> dict:
    gen = torch.Generator().manual_seed(5)  # the same matrices on every rank
    shapes = [(6, 4), (4, 6), (5, 5), (3, 9), (5, 5), (1, 7), (9, 2)]
    ms = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    calls = []

    def fn(batch):
        calls.append(batch.shape[0])
        return batch @ batch.mT @ batch - 0.5 * batch

    got = replicated_apply(fn, ms, dist.group.WORLD)
    want = batched_apply(lambda b: b @ b.mT @ b - 0.5 * b, ms)
    single = replicated_apply(fn, ms[:1], dist.group.WORLD)  # one matrix: rank 1 computes nothing
    return {"got": got, "diff": max((g - w).abs().max().item() for g, w in zip(got, want)),
            "shapes_ok": all(g.shape == m.shape for g, m in zip(got, ms)), "computed": sum(calls) - 1 + rank,
            "single": single[0]}


def test_replicated_apply_computes_each_matrix_once_and_hands_every_rank_all(tmp_path):
    results = on_two_ranks(_replicated_apply_work, tmp_path)
    assert all(r["shapes_ok"] for r in results)
    assert max(r["diff"] for r in results) <= 1e-12
    assert sum(r["computed"] for r in results) == 7 and min(r["computed"] for r in results) >= 3
    assert all(torch.equal(a, b) for a, b in zip(results[0]["got"], results[1]["got"]))  # the same bits
    assert torch.equal(results[0]["single"], results[1]["single"])


def _net(dtype):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv1d(2, 6, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(),
        torch.nn.Linear(6 * 5, 12), torch.nn.Tanh(), torch.nn.Linear(12, 12), torch.nn.Tanh(),
        torch.nn.Linear(12, 20), torch.nn.Tanh(), torch.nn.Linear(20, 4)).to(dtype)


def _muon_ddp_work(rank: int, world: int, dtype: torch.dtype, state_dtype, name: str, options: dict) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    counted = []
    newton_schulz = R.newton_schulz

    def counting_newton_schulz(G, **kwargs):
        counted.append(G.shape[0] if G.dim() == 3 else 1)
        return newton_schulz(G, **kwargs)

    split, single = DDP(_net(dtype)), _net(dtype)
    cls = getattr(nesterov, name)
    opts = [cls(split.parameters(), lr=0.05, weight_decay=0.01, state_dtype=state_dtype, **options,
                process_group=dist.group.WORLD),
            cls(single.parameters(), lr=0.05, weight_decay=0.01, state_dtype=state_dtype, **options)]
    gen = torch.Generator().manual_seed(100 + rank)  # each rank its own data: DDP averages the gradients
    R.newton_schulz = counting_newton_schulz
    try:
        for _ in range(3):
            x, y = torch.randn(8, 2, 5, generator=gen, dtype=dtype), torch.randint(0, 4, (8,), generator=gen)
            split.zero_grad()
            torch.nn.functional.cross_entropy(split(x), y).backward()
            for p, q in zip(split.parameters(), single.parameters()):  # one process, the same averaged gradient
                q.grad = p.grad.clone()
            before = sum(counted)
            opts[0].step()
            split_count = sum(counted) - before
            opts[1].step()
    finally:
        R.newton_schulz = newton_schulz
    return {"params": [p.detach().clone() for p in split.parameters()],
            "single": [p.detach().clone() for p in single.parameters()],
            "buffers": [t.clone() for p in split.parameters() if p.dim() >= 2 for t in opts[0].state[p].values()],
            "matrices": split_count}


@pytest.mark.parametrize("name,options,dtype,state_dtype,tol", [
    ("Muon", {}, torch.float64, None, 1e-12),
    ("NorMuon", {"ns_coefficients": "polar_express", "ns_method": "gram", "cautious_weight_decay": True},
     torch.float64, None, 1e-12),
    ("Muon", {}, torch.float32, torch.bfloat16, 1e-6)])
def test_muon_with_a_process_group_splits_the_work_and_equals_one_process(tmp_path, name, options, dtype, state_dtype,
                                                                         tol):
    """DDP on two gloo ranks, each with its own batches: 5 matrices (a conv kernel, a tall and a wide one among
    them) orthogonalised once in all, the ranks bit-identical, and equal to one process given the same
    (averaged) gradients."""
    results = on_two_ranks(_muon_ddp_work, tmp_path, dtype, state_dtype, name, options)
    assert sorted(r["matrices"] for r in results) == [2, 3]
    for a, b in zip(results[0]["params"] + results[0]["buffers"], results[1]["params"] + results[1]["buffers"]):
        assert torch.equal(a, b)
    moved = max((p - q).abs().max().item() for p, q in zip(results[0]["single"], _net(dtype).parameters()))
    assert moved > 1e-2
    diff = max((p - q).abs().max().item() for p, q in zip(results[0]["params"], results[0]["single"]))
    assert diff <= tol, diff


def test_bench_muon_dist_runs_its_own_gloo_group(capsys):
    from nesterov.bench.muon_dist import main

    assert main(["--blocks", "1", "--width", "32", "--repeats", "1", "--warmup", "0", "--dtype", "float64",
                 "--json"]) == 0
    import json

    r = json.loads(capsys.readouterr().out)
    assert r["identical"] and r["diff"] <= 1e-12 and r["matrices"] == 4 and r["ns_dtype"] == "float64"
    assert r["ratio"] > 0 and 0 < r["parallel"]
    with pytest.raises(SystemExit, match="--ranks must be an integer >= 2; got 1"):
        main(["--ranks", "1"])
