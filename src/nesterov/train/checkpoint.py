"""Atomic checkpoints: write a temp file in the same directory, flush, fsync, then ``os.replace``.

A reader (or a resumed run after ``kill -9``) therefore sees either the previous checkpoint or the new one,
never a torn file.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

__all__ = ["atomic_write_bytes", "atomic_write_text", "load_checkpoint", "rng_state", "save_checkpoint",
           "set_rng_state"]


def _atomic(path, write) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def save_checkpoint(path, payload: dict) -> None:
    _atomic(path, lambda f: torch.save(payload, f))


def load_checkpoint(path, map_location="cpu") -> dict:
    """A checkpoint this package wrote; ValueError naming ``path`` for a file that is not one (truncated,
    overwritten, another program's)."""
    # Our own files: plain tensors, dicts, numbers and numpy RNG state (hence weights_only=False).
    try:
        ck = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - unpickling a damaged file raises almost anything
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e}); "
                         "restore it, or start the run again with --overwrite") from None
    if not isinstance(ck, dict) or "state" not in ck:
        raise ValueError(f"{path}: not a nesterov train checkpoint (no run state in it)")
    return ck


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
