"""Byte-level text: ``text:PATH`` (a file or a folder of text files) and ``pysrc`` (the running Python's standard
library sources).  Vocabulary 256, next-byte prediction.

Validation is split by file: every tenth file (in sorted order) is held out; a single file holds out its last
10 %.  ``pysrc`` is ``*.py`` under ``sysconfig.get_paths()["stdlib"]``, without ``site-packages``, ``test``/``tests``
folders and ``idlelib``/``turtledemo``, in sorted path order; its SHA-256 is recorded so two runs can tell whether
they trained on the same bytes.
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["TextData", "load_pysrc", "load_text", "pysrc_files"]

VAL_EVERY = 10  # every 10th file goes to validation
EXCLUDE_DIRS = {"site-packages", "dist-packages", "test", "tests", "idlelib", "turtledemo", "__pycache__"}
TEXT_SUFFIXES = (".txt", ".md", ".py", ".rst", ".c", ".h", ".json", ".csv", ".tex", ".html", ".js", ".toml")


@dataclass
class TextData:
    """Train and validation bytes as uint8 tensors; a batch is ``B`` windows of ``context + 1`` bytes."""

    name: str
    train: torch.Tensor  # (T,) uint8
    val: torch.Tensor  # (V,) uint8
    sha256: str
    files: int
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    kind: str = "text"
    num_classes: int = 256

    def to(self, device) -> "TextData":
        from dataclasses import replace

        return replace(self, train=self.train.to(device), val=self.val.to(device))

    def describe(self) -> str:
        return (f"{self.name}: {len(self.train):,} train / {len(self.val):,} validation bytes from {self.files} "
                f"file(s), sha256 {self.sha256[:16]}" + "".join(f"; {n}" for n in self.notes))

    def windows(self, starts: torch.Tensor, context: int, split: str = "train"):
        """(inputs, targets): ``(B, context)`` int64 each, targets shifted by one byte."""
        data = self.train if split == "train" else self.val
        idx = starts.to(data.device)[:, None] + torch.arange(context + 1, device=data.device)
        w = data[idx].long()
        return w[:, :-1], w[:, 1:]


def _read(paths: list[Path]) -> list[bytes]:
    from . import DataError

    out = []
    for p in paths:
        try:
            out.append(p.read_bytes())
        except OSError as e:
            raise DataError(f"{p}: cannot read ({e.strerror})") from None
    return out


def _assemble(name: str, paths: list[Path], blobs: list[bytes], where: str, context_hint: int = 0) -> TextData:
    from . import DataError

    h = hashlib.sha256()
    for p, b in zip(paths, blobs):
        h.update(str(p.name).encode() + b"\0" + len(b).to_bytes(8, "little") + b)
    if len(blobs) >= 2:
        n = len(blobs)
        held = {i for i in range(n) if i % VAL_EVERY == VAL_EVERY - 1} or {n - 1}
        val = [b for i, b in enumerate(blobs) if i in held]
        train = [b for i, b in enumerate(blobs) if i not in held]
        note = f"validation: {len(val)} of {len(blobs)} files (every {VAL_EVERY}th; the last one if fewer)"
        train_b, val_b = b"\n".join(train), b"\n".join(val)
    else:
        whole = blobs[0]
        cut = int(len(whole) * 0.9)
        train_b, val_b = whole[:cut], whole[cut:]
        note = "validation: the last 10 % of the file"
    if len(train_b) < 2 or len(val_b) < 2:
        raise DataError(f"{where}: too little text ({len(train_b)} train / {len(val_b)} validation bytes)")
    t = torch.frombuffer(bytearray(train_b), dtype=torch.uint8)
    v = torch.frombuffer(bytearray(val_b), dtype=torch.uint8)
    return TextData(name, t, v, h.hexdigest(), len(blobs), [note])


def load_text(path: str) -> TextData:
    from . import DataError

    if not path:
        raise DataError("text: give a file or a folder, as in --dataset text:corpus/")
    p = Path(path).expanduser()
    if p.is_file():
        paths = [p]
    elif p.is_dir():
        paths = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES
                       and not any(part.startswith(".") for part in f.relative_to(p).parts))
        if not paths:
            raise DataError(f"{path}: no text files in this folder ({', '.join(TEXT_SUFFIXES)})")
    else:
        raise DataError(f"{path}: no such file or folder")
    blobs = _read(paths)
    if sum(map(len, blobs)) == 0:
        raise DataError(f"{path}: the text is empty")
    return _assemble(f"text:{path}", paths, blobs, path)


def pysrc_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(f for f in root.rglob("*.py")
                  if not EXCLUDE_DIRS.intersection(f.relative_to(root).parts[:-1]))


def load_pysrc() -> TextData:
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = pysrc_files()
    from . import DataError

    if not paths:
        raise DataError(f"pysrc: no Python sources under {root}")
    d = _assemble("pysrc", paths, _read(paths), str(root))
    d.notes.insert(0, f"Python standard library at {root}")
    return d
