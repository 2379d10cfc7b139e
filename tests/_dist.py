"""The two-process gloo harness of the distributed tests.

``on_two_ranks(work, tmp_path, *args)`` runs ``work(rank, world, *args)`` (a module-level function of a test
module) on each rank of a real two-process gloo group (localhost, ``file://`` rendezvous) and returns what each
rank returned. Each rank saves its result and leaves the group only once every rank has saved: destroying the
group while a peer is still finishing its last collective aborts that peer (it happened about one run in 30).
A rank that has saved its result and left the group then ends at once (``os._exit``), without the
interpreter's shutdown: a C++ thread destroyed there still joinable aborted a rank with "terminate called
without an active exception" once in a full test run, after its work was done. Every wait is bounded:
collectives time out after ``COLLECTIVE_TIMEOUT_S``, the final wait after 120 s.
"""

from __future__ import annotations

import datetime
import importlib
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

COLLECTIVE_TIMEOUT_S = 120


def _rank_main(rank: int, world: int, init_file: str, out_file: str, module: str, work: str, args: tuple) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    try:
        result = getattr(importlib.import_module(module), work)(rank, world, *args)
        torch.save(result, f"{out_file}.{rank}.tmp")
        os.replace(f"{out_file}.{rank}.tmp", f"{out_file}.{rank}")
        deadline = time.monotonic() + 120
        while not all(os.path.exists(f"{out_file}.{r}") for r in range(world)) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def on_two_ranks(work, tmp_path, *args) -> list:
    """What ``work(rank, world, *args)`` returns on each rank of a real two-process gloo group."""
    out = tmp_path / "result"
    mp.spawn(_rank_main, args=(2, str(tmp_path / "init"), str(out), work.__module__, work.__name__, args),
             nprocs=2, join=True)
    return [torch.load(f"{out}.{rank}", weights_only=False) for rank in range(2)]
