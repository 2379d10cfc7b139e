"""Where a run computes: the device asked for, autocast for its precision, and the module that trains
(the model itself, or wrapped by DDP, FSDP2 and ``torch.compile``)."""

from __future__ import annotations

import contextlib

import torch

from . import dist as D
from .config import Config

__all__ = ["autocast_for", "no_sync", "resolve_device", "wrap"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} asked for but CUDA is not available; use --device cpu")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise ValueError(f"device: {name!r} asked for but this machine has {torch.cuda.device_count()} CUDA "
                         f"device(s): cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device: 'mps' asked for but MPS is not available; use --device cpu")
    return torch.device(name)


def autocast_for(device, precision: str):
    if precision in ("bf16", "fp16"):
        return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return contextlib.nullcontext()


def wrap(model, cfg: Config, dist: D.Dist, device):
    """The module to call in training; the optimizer takes ``model``'s parameters (FSDP2 shards them in place)."""
    if cfg.fsdp:
        from torch.distributed.fsdp import fully_shard

        if not D.current().on:
            D.init_single()  # FSDP2 on one process (e.g. resuming a run saved by several)
        units = getattr(model, "blocks", None) or getattr(model, "layers", None)
        for m in (units if units is not None else []):
            fully_shard(m)
        fully_shard(model)
        wrapped = model
    elif dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        wrapped = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        wrapped = model
    if cfg.compile:
        wrapped = torch.compile(wrapped)
    return wrapped


def no_sync(net):
    """DDP's ``no_sync`` for the micro-batches before the last (a compiled DDP module: its inner one's)."""
    inner = getattr(net, "_orig_mod", net)
    return inner.no_sync() if hasattr(inner, "no_sync") else contextlib.nullcontext()
