"""Batched matrix work: stack same-shaped matrices, run one batched function, unstack.

Newton–Schulz on a 512×512 matrix is a handful of matrix products; on a transformer's 24–36 weight
matrices, one batched product per shape fills the machine better than 36 small ones and launches a
fraction of the kernels. Tall matrices are transposed into the wide orientation before stacking, so
an MLP's ``d×4d`` and ``4d×d`` weights share one batch. Every function here is exact bookkeeping: what a
matrix gets back is what the batched function computed for it, at the same position of the stack.
"""

from __future__ import annotations

from typing import Callable, Hashable, Sequence

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Replicate, Shard


def wide(m: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``(m or mᵀ, transposed)`` so that the result has no more rows than columns."""
    if m.size(-2) > m.size(-1):
        return m.mT, True
    return m, False


def buckets(matrices: Sequence[torch.Tensor], key: Callable[[int], Hashable] | None = None) -> dict:
    """``{(device, rows, cols, extra): [index, ...]}``: matrices that can share one batched product.

    ``rows ≤ cols`` is the wide orientation (see :func:`wide`); ``key(i)`` adds what else must match
    (e.g. the Newton–Schulz step count and coefficients of matrix ``i``'s param group).
    """
    out: dict = {}
    for i, m in enumerate(matrices):
        if m.dim() != 2:
            raise ValueError(f"matrix {i} has shape {tuple(m.shape)}; expected 2 dimensions")
        rows, cols = sorted(m.shape)
        out.setdefault((m.device, rows, cols, None if key is None else key(i)), []).append(i)
    return out


def batched_apply(fn: Callable[[torch.Tensor], torch.Tensor], matrices: Sequence[torch.Tensor], *,
                  dtype: torch.dtype | None = None, key: Callable[[int], Hashable] | None = None,
                  max_batch_bytes: int | None = None) -> list[torch.Tensor]:
    """``[fn(m) for m in matrices]`` computed as one ``fn(stack)`` per bucket of equal wide shapes.

    ``fn`` maps a ``(k, rows, cols)`` batch to a batch of the same shape, matrix by matrix (each
    output matrix depends only on its own input). Matrices are cast to ``dtype`` while stacking (one copy
    each, the one ``torch.stack`` would make anyway); results keep ``dtype`` and each matrix's own orientation.
    ``max_batch_bytes`` splits a bucket into several stacks of at most that size (bounds the
    temporaries for very large models); ``None`` means one stack per bucket.
    """
    results: list[torch.Tensor | None] = [None] * len(matrices)
    for (_, rows, cols, _), members in buckets(matrices, key).items():
        item = rows * cols * torch.empty((), dtype=dtype or matrices[members[0]].dtype).element_size()
        per = len(members) if max_batch_bytes is None else max(1, max_batch_bytes // max(item, 1))
        for start in range(0, len(members), per):
            chunk = members[start:start + per]
            oriented = [wide(matrices[i]) for i in chunk]
            first = oriented[0][0]
            stack = torch.empty((len(chunk), rows, cols), dtype=dtype or first.dtype, device=first.device)
            for slot, (m, _) in enumerate(oriented):
                stack[slot].copy_(m)  # torch.stack with the cast fused into the one copy
            out = fn(stack)
            for slot, (i, (_, transposed)) in enumerate(zip(chunk, oriented)):
                results[i] = out[slot].mT if transposed else out[slot]
    return results  # type: ignore[return-value]


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """``t`` whole on every rank: a DTensor (FSDP2 shards each matrix by rows) is all-gathered, since an
    orthogonalisation needs the entire matrix; a plain tensor is returned as it is."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The part of ``full`` (the same on every rank) that ``like``'s sharding puts on this rank.

    Replicate → ``like.placements`` is a local slice: no communication."""
    if not isinstance(like, DTensor):
        return full
    mesh = like.device_mesh
    replicated = DTensor.from_local(full, mesh, [Replicate()] * mesh.ndim, run_check=False)
    return replicated.redistribute(mesh, like.placements)


def row_sharded(t: torch.Tensor) -> bool:
    """Whether ``t`` is a DTensor split by rows over a 1-D mesh (what FSDP2's ``fully_shard`` makes)."""
    return isinstance(t, DTensor) and t.device_mesh.ndim == 1 and tuple(t.placements) == (Shard(0),)


def sharded_apply(fn: Callable[[torch.Tensor], torch.Tensor], local_rows: Sequence[torch.Tensor],
                  shapes: Sequence[tuple[int, int]], group, *, dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """For matrices split by rows over ``group`` (this rank holds the 2-D ``local_rows[i]`` of the
    ``shapes[i]`` matrix, in ``torch.chunk`` order), the rows of ``fn(matrix)`` this rank holds — each
    ``fn`` computed once.

    Every matrix gets one owner rank (round robin, bucket after bucket of equal wide shape, so an owner's
    share still batches): its rows are gathered there, the owners run :func:`batched_apply` on their
    matrices, and the result rows are scattered back. Each rank does 1/world of the products, and each
    matrix crosses the network twice (there and back) instead of being all-gathered everywhere.
    """
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    order = [i for members in buckets([torch.empty(s, device="meta") for s in shapes]).values() for i in members]
    owner = {i: n % world for n, i in enumerate(order)}
    chunks = [-(-rows // world) for rows, _ in shapes]  # torch.chunk's piece length

    def padded(t: torch.Tensor, rows: int) -> torch.Tensor:
        out = t.new_zeros((rows, t.shape[1]))
        out[:t.shape[0]] = t
        return out

    gathered = {}
    for i in order:
        (_, cols), c, local = shapes[i], chunks[i], local_rows[i]
        gathered[i] = [local.new_empty((c, cols)) for _ in range(world)] if owner[i] == rank else None
        dist.gather(padded(local, c), gathered[i], group_dst=owner[i], group=group)
    mine = [i for i in order if owner[i] == rank]
    outs = dict(zip(mine, batched_apply(fn, [torch.cat(gathered[i])[:shapes[i][0]] for i in mine], dtype=dtype)))
    results = {}
    for i in order:
        (_, cols), c, local = shapes[i], chunks[i], local_rows[i]
        pieces = list(padded(outs[i].to(local.dtype), c * world).split(c)) if owner[i] == rank else None
        results[i] = local.new_empty((c, cols))
        dist.scatter(results[i], pieces, group_src=owner[i], group=group)
    return [results[i][:local_rows[i].shape[0]] for i in range(len(shapes))]
