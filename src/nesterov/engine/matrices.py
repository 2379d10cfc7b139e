"""Batched matrix work: stack same-shaped matrices, run one batched function, unstack.

Newton–Schulz on a 512×512 matrix is a handful of matrix products; on a transformer's 24–36 weight
matrices, one batched product per shape launches a fraction of the kernels (on a GPU it fills the device
better than 36 small ones). Matrices are stacked in their own orientation: a ``4d×d`` weight is not
transposed into a ``d×4d`` one's batch, since the copy that would take is a strided one, and so would be
the step's read of the result (Newton–Schulz works on a tall stack through its transposed view). Every
function here is exact bookkeeping: what a matrix gets back is what the batched function computed for it,
at the same position of the stack.

Across ranks: :func:`sharded_apply` for matrices split by rows (FSDP2: each matrix gathered on one owner),
:func:`replicated_apply` for matrices every rank holds whole (DDP: each rank computes a share balanced by
:func:`product_cost`, then all ranks exchange the results).
"""

from __future__ import annotations

from typing import Callable, Hashable, Sequence

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Replicate, Shard


def buckets(matrices: Sequence[torch.Tensor], key: Callable[[int], Hashable] | None = None) -> dict:
    """``{(device, rows, cols, extra): [index, ...]}``: matrices that can share one batched product.

    ``key(i)`` adds what else must match (e.g. the Newton–Schulz step count and coefficients of matrix
    ``i``'s param group).
    """
    out: dict = {}
    for i, m in enumerate(matrices):
        if m.dim() != 2:
            raise ValueError(f"matrix {i} has shape {tuple(m.shape)}; expected 2 dimensions")
        rows, cols = m.shape
        out.setdefault((m.device, rows, cols, None if key is None else key(i)), []).append(i)
    return out


def batched_apply(fn: Callable[[torch.Tensor], torch.Tensor], matrices: Sequence[torch.Tensor], *,
                  dtype: torch.dtype | None = None, key: Callable[[int], Hashable] | None = None,
                  max_batch_bytes: int | None = None) -> list[torch.Tensor]:
    """``[fn(m) for m in matrices]`` computed as one ``fn(stack)`` per bucket of equal shapes.

    ``fn`` maps a ``(k, rows, cols)`` batch to a batch of the same shape, matrix by matrix (each
    output matrix depends only on its own input). Matrices are cast to ``dtype`` while stacking (one copy
    each, the one ``torch.stack`` would make anyway); results keep ``dtype``.
    ``max_batch_bytes`` splits a bucket into several stacks of at most that size (bounds the
    temporaries for very large models); ``None`` means one stack per bucket.
    """
    results: list[torch.Tensor | None] = [None] * len(matrices)
    for (_, rows, cols, _), members in buckets(matrices, key).items():
        item = rows * cols * torch.empty((), dtype=dtype or matrices[members[0]].dtype).element_size()
        per = len(members) if max_batch_bytes is None else max(1, max_batch_bytes // max(item, 1))
        for start in range(0, len(members), per):
            chunk = members[start:start + per]
            first = matrices[chunk[0]]
            stack = torch.empty((len(chunk), rows, cols), dtype=dtype or first.dtype, device=first.device)
            for slot, i in enumerate(chunk):
                stack[slot].copy_(matrices[i])  # torch.stack with the cast fused into the one copy
            out = fn(stack)
            for slot, i in enumerate(chunk):
                results[i] = out[slot]
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

    Every matrix gets one owner rank (round robin, bucket after bucket of equal shape, so an owner's
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


def product_cost(rows: int, cols: int) -> int:
    """The multiply-adds of one Newton–Schulz-style iteration on a ``rows × cols`` matrix, up to a constant:
    with ``m ≤ n`` its sides, ``X·Xᵀ`` and ``M·X`` take ``m²·n`` each and ``M·M`` takes ``m³``."""
    m, n = sorted((rows, cols))
    return 2 * m * m * n + m ** 3


def split_by_cost(shapes: Sequence[tuple[int, int]], world: int,
                  cost: Callable[[int, int], float] = product_cost) -> list[int]:
    """The rank (0 … world−1) that computes each matrix: the costliest first, each to the least-loaded rank
    (the lowest such rank on a tie). Depends on nothing but its arguments, so every rank draws the same plan."""
    if not isinstance(world, int) or world < 1:
        raise ValueError(f"world must be an int >= 1, got {world!r}")
    costs = [cost(*shape) for shape in shapes]
    loads = [0] * world
    owner = [0] * len(shapes)
    for i in sorted(range(len(shapes)), key=lambda i: (-costs[i], i)):
        rank = min(range(world), key=lambda r: (loads[r], r))
        owner[i] = rank
        loads[rank] += costs[i]
    return owner


def replicated_apply(fn: Callable[[torch.Tensor], torch.Tensor], matrices: Sequence[torch.Tensor], group, *,
                     dtype: torch.dtype | None = None,
                     cost: Callable[[int, int], float] = product_cost) -> list[torch.Tensor]:
    """:func:`batched_apply` for matrices that every rank of ``group`` holds whole and equal (DDP), each
    ``fn`` computed on one rank only.

    Each rank runs :func:`batched_apply` on its share (:func:`split_by_cost`), packs the results into one
    flat buffer, and one ``all_gather`` hands every rank every result: all ranks end with the same bits,
    those of the rank that computed each matrix. ``fn`` must keep the dtype of its input (``dtype``, or the
    matrices' own, which must then agree). ``group=None`` (or a group of one) is :func:`batched_apply` here.
    """
    if group is None or dist.get_world_size(group) == 1 or not matrices:
        return batched_apply(fn, matrices, dtype=dtype)
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    results: list[torch.Tensor | None] = [None] * len(matrices)
    kinds: dict = {}  # one exchange per device type (a DDP rank's CUDA device has its own index)
    for i, m in enumerate(matrices):
        kinds.setdefault((m.device.type, dtype or m.dtype), []).append(i)
    if dtype is None and len({d for _, d in kinds}) > 1:
        raise ValueError("replicated_apply: matrices of several dtypes; pass dtype= to compute them in one")
    for (_, out_dtype), members in kinds.items():
        owner = split_by_cost([tuple(matrices[i].shape) for i in members], world, cost)
        share = {r: [i for i, o in zip(members, owner) if o == r] for r in range(world)}
        sizes = [sum(matrices[i].numel() for i in share[r]) for r in range(world)]
        device = matrices[members[0]].device
        mine = batched_apply(fn, [matrices[i] for i in share[rank]], dtype=dtype)
        send = torch.empty(max(sizes), dtype=out_dtype, device=device)
        offset = 0
        for out in mine:
            send[offset:offset + out.numel()].view(out.shape).copy_(out)
            offset += out.numel()
        received = [torch.empty_like(send) for _ in range(world)]
        dist.all_gather(received, send, group=group)
        for r in range(world):
            offset = 0
            for i in share[r]:
                results[i] = received[r][offset:offset + matrices[i].numel()].view(matrices[i].shape)
                offset += matrices[i].numel()
    return results  # type: ignore[return-value]
