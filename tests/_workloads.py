"""Real data written by the tests: scikit-learn's digits as PNG files (ImageFolder layout) and as a CIFAR-format
python batch, and text files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def digits_uint8(size: int = 8):
    """Digits images as uint8 (N, size, size) in 0..255 and labels; a fixed 80/20 split (train, test)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.clip(np.round(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    if size != 8:
        x = x.repeat(size // 8, axis=1).repeat(size // 8, axis=2)
    order = np.random.default_rng(0).permutation(len(x))
    cut = int(0.8 * len(x))
    return (x[order[:cut]], d.target[order[:cut]]), (x[order[cut:]], d.target[order[cut:]])


def write_digits_pngs(root: Path, size: int = 8, rgb: bool = False) -> Path:
    """``root/train/<class>/<i>.png`` and ``root/val/<class>/<i>.png``, greyscale (or grey as RGB)."""
    from PIL import Image

    (xtr, ytr), (xte, yte) = digits_uint8(size)
    for split, xs, ys in (("train", xtr, ytr), ("val", xte, yte)):
        for i, (img, label) in enumerate(zip(xs, ys)):
            d = root / split / str(label)
            d.mkdir(parents=True, exist_ok=True)
            im = Image.fromarray(np.repeat(img[:, :, None], 3, 2) if rgb else img)
            im.save(d / f"{i:05d}.png")
    return root


def write_digits_cifar(root: Path) -> Path:
    """The digits of ``write_digits_pngs(size=32, rgb=True)`` as CIFAR-10 python batches (32x32x3 by format),
    in the same order as the PNG folder lists them (by class, then by file name)."""
    (xtr, ytr), (xte, yte) = digits_uint8(32)
    root.mkdir(parents=True, exist_ok=True)

    def batch(x, y):
        order = np.argsort(y, kind="stable")  # ImageFolder order: class folders, files within in index order
        x, y = x[order], y[order]
        img = np.repeat(x[:, None], 3, 1)
        return {b"batch_label": b"digits", b"labels": [int(v) for v in y], b"data": img.reshape(len(x), -1),
                b"filenames": [f"{i}.png".encode() for i in range(len(x))]}

    with open(root / "data_batch_1", "wb") as f:
        pickle.dump(batch(xtr, ytr), f, protocol=2)
    with open(root / "test_batch", "wb") as f:
        pickle.dump(batch(xte, yte), f, protocol=2)
    return root
