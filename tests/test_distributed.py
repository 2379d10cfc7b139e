"""Every optimizer under FSDP2 and DDP, and Muon's sharded Newton–Schulz, on real two-process gloo groups.

FSDP2's DTensor params are stepped on their local shards (per-tensor rules gather each tensor for its
norms); under DDP the step reads the averaged gradients where DDP's reducer left them.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

import nesterov
from _dist import on_two_ranks as _on_two_ranks


def _make_model():
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    fully_shard(model)
    return model


def _nag_work(rank: int, world: int) -> dict:
    ours, ref = _make_model(), _make_model()
    opt = nesterov.NAG(ours.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True)
    gen = torch.Generator().manual_seed(rank)
    for _ in range(4):
        x, y = torch.randn(16, 6, generator=gen), torch.randint(0, 3, (16,), generator=gen)
        for model, o in ((ours, opt), (ref, ref_opt)):
            o.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            o.step()
    diff = max((p.full_tensor() - q.full_tensor()).abs().max().item()
               for p, q in zip(ours.parameters(), ref.parameters()))
    ddp_diffs = [_ddp_diff(rank, bucket_view) for bucket_view in (False, True)]
    return {"diff": diff, "ddp": ddp_diffs}


def _ddp_diff(rank: int, bucket_view: bool) -> float:
    from torch.nn.parallel import DistributedDataParallel as DDP

    def make():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        return DDP(net, gradient_as_bucket_view=bucket_view)

    ours, ref = make(), make()
    opt = nesterov.NAG(ours.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True)
    gen = torch.Generator().manual_seed(100 + rank)  # each rank its own data: DDP must average
    for _ in range(4):
        x, y = torch.randn(16, 6, generator=gen), torch.randint(0, 3, (16,), generator=gen)
        for model, o in ((ours, opt), (ref, ref_opt)):
            o.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            o.step()
    return max((p - q).abs().max().item() for p, q in zip(ours.parameters(), ref.parameters()))


def test_nag_matches_torch_sgd_under_fsdp2_and_ddp(tmp_path):
    result = _on_two_ranks(_nag_work, tmp_path)[0]
    assert result["diff"] <= 1e-6
    assert max(result["ddp"]) <= 1e-6


def _muon_nets(dtype):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 9), torch.nn.Tanh(), torch.nn.Linear(9, 9), torch.nn.Tanh(),
                              torch.nn.Linear(9, 9), torch.nn.Tanh(), torch.nn.Linear(9, 3))
    return net.to(dtype)


def _muon_work(rank: int, world: int) -> dict:
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel as DDP

    from nesterov.rules import muon as R

    orthogonalised = []  # how many matrices this rank ran Newton–Schulz on (a spy: it calls through)
    newton_schulz = R.newton_schulz

    def counting_newton_schulz(G, **kwargs):
        orthogonalised.append(G.shape[0] if G.dim() == 3 else 1)
        return newton_schulz(G, **kwargs)

    R.newton_schulz = counting_newton_schulz
    try:
        dtype = torch.float64
        sharded, ddp, single = _muon_nets(dtype), DDP(_muon_nets(dtype)), _muon_nets(dtype)
        fully_shard(sharded)
        opts = [nesterov.Muon(m.parameters(), lr=0.05, weight_decay=0.01) for m in (sharded, ddp, single)]
        gen = torch.Generator().manual_seed(7)  # the same data on every rank: averaging changes nothing
        for _ in range(4):
            x = torch.randn(16, 6, generator=gen, dtype=dtype)
            y = torch.randint(0, 3, (16,), generator=gen)
            for model, opt in zip((sharded, ddp, single), opts):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
                before = sum(orthogonalised)
                opt.step()
                if model is sharded:
                    fsdp_matrices = sum(orthogonalised) - before
    finally:
        R.newton_schulz = newton_schulz
    reference = [p.detach() for p in single.parameters()]
    return {
        "fsdp": max((p.full_tensor() - q).abs().max().item() for p, q in zip(sharded.parameters(), reference)),
        "ddp": max((p.detach() - q).abs().max().item() for p, q in zip(ddp.parameters(), reference)),
        "moved": max((p.detach() - q).abs().max().item() for p, q in zip(_muon_nets(dtype).parameters(), reference)),
        "fsdp_matrices": fsdp_matrices,
    }


def test_muon_under_fsdp2_and_ddp_equals_one_process(tmp_path):
    """FSDP2 shards each matrix by rows; each matrix is gathered on one rank, orthogonalised there, and its
    rows scattered back: the ranks share the Newton–Schulz work (4 matrices: 2 each) and agree with one process."""
    results = _on_two_ranks(_muon_work, tmp_path)
    assert [r["fsdp_matrices"] for r in results] == [2, 2]
    result = results[0]
    assert result["moved"] > 1e-3  # the steps did something
    assert result["fsdp"] <= 1e-12
    assert result["ddp"] <= 1e-12


FAMILY = ("NAdamW", "Adan", "LARS", "LAMB")


def _family_work(rank: int, world: int) -> dict:
    return {name: _family_run(name) for name in FAMILY}


def _family_run(name: str) -> float:
    """Max difference between an FSDP2-sharded model and one unsharded process, same data on every rank."""
    from torch.distributed.fsdp import fully_shard

    sharded, single = _muon_nets(torch.float64), _muon_nets(torch.float64)
    fully_shard(sharded)
    cls = getattr(nesterov, name)
    opts = [cls(m.parameters(), lr=0.01, weight_decay=0.1) for m in (sharded, single)]
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        x = torch.randn(8, 6, generator=gen, dtype=torch.float64)
        y = torch.randint(0, 3, (8,), generator=gen)
        for model, opt in zip((sharded, single), opts):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return max((p.full_tensor() - q).abs().max().item() for p, q in zip(sharded.parameters(), single.parameters()))


def test_family_under_fsdp2_equals_one_process(tmp_path):
    """Elementwise rules step each shard; LARS and LAMB, whose trust ratios need whole-tensor norms, step
    the gathered tensor and keep their shard."""
    for diffs in _on_two_ranks(_family_work, tmp_path):
        assert max(diffs.values()) <= 1e-14, diffs


def _sharded_apply_work(rank: int, world: int) -> dict:
    from nesterov.engine.matrices import batched_apply, sharded_apply

    gen = torch.Generator().manual_seed(11)  # the same matrices on every rank
    shapes = [(1, 4), (2, 3), (5, 5), (5, 5), (7, 2), (3, 8), (5, 5), (4, 1)]
    full = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    mine = [m.chunk(world)[rank] if rank < len(m.chunk(world)) else m[:0] for m in full]  # torch.chunk rows
    calls = []

    def fn(batch):  # any function that maps each matrix on its own
        calls.append(batch.shape[0])
        return batch @ batch.mT @ batch + 1.0

    got = sharded_apply(fn, mine, shapes, dist.group.WORLD)
    want = [out.chunk(world)[rank] if rank < len(out.chunk(world)) else out[:0]
            for out in batched_apply(lambda b: b @ b.mT @ b + 1.0, full)]
    diff = max((g - w).abs().max().item() if w.numel() else float(g.numel()) for g, w in zip(got, want))
    shapes_ok = all(g.shape == w.shape for g, w in zip(got, want))
    return {"diff": diff, "shapes_ok": shapes_ok, "matrices": sum(calls)}


def test_sharded_apply_computes_each_matrix_once_and_returns_each_rank_its_rows(tmp_path):
    """Row-sharded matrices, ranks holding no rows included: every rank gets exactly its rows of fn(matrix),
    and the 8 matrices are computed once in all, 4 on each rank."""
    results = _on_two_ranks(_sharded_apply_work, tmp_path)
    assert all(r["shapes_ok"] for r in results)
    assert max(r["diff"] for r in results) <= 1e-12
    assert [r["matrices"] for r in results] == [4, 4]
