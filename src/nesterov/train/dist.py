"""Many processes through torch.distributed: what a rank needs to know, and how the group is started and ended.

``torchrun --nproc-per-node N -m nesterov train ...`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; :func:`init`
starts a gloo (CPU) or NCCL (CUDA) group with a bounded timeout, so a peer that dies takes the run down with an
error instead of a hang.  A run without those variables is one process and touches nothing here.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Dist", "TIMEOUT_S", "current", "finish", "init"]

TIMEOUT_S = int(os.environ.get("NESTEROV_DIST_TIMEOUT", "300"))  # a collective that waits longer fails the run


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def on(self) -> bool:
        return self.world > 1 or (dist.is_available() and dist.is_initialized())

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, n: int) -> tuple[int, int]:
        """The slice ``[lo, hi)`` of ``n`` items this rank takes (the first ``n % world`` ranks take one more)."""
        q, r = divmod(n, self.world)
        lo = self.rank * q + min(self.rank, r)
        return lo, lo + q + (self.rank < r)

    def replica_group(self, fsdp: bool):
        """The group over which the model is replicated (DDP: every process), or None (one process, FSDP2)."""
        return dist.group.WORLD if self.world > 1 and not fsdp else None

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(t)
        return t


def current() -> Dist:
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return Dist()


def launched() -> bool:
    """True under torchrun (or any launcher that sets WORLD_SIZE)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def init(device: str = "auto") -> Dist:
    """Join the process group described by the environment (idempotent)."""
    if not launched() or (dist.is_initialized()):
        return current()
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=TIMEOUT_S))
    return current()


def init_single() -> Dist:
    """A one-process group (gloo, in-memory store) for what needs one on a single process: FSDP2 on one
    process, e.g. to resume an FSDP2 checkpoint saved by N processes on one."""
    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1,
                                timeout=datetime.timedelta(seconds=TIMEOUT_S))
    return current()


def finish() -> None:
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()
