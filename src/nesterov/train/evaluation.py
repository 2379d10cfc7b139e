"""Scoring a model on held-out data: mean cross-entropy and accuracy, in chunks, summed across ranks.

The sums stay on the device and are read once at the end: one host sync per evaluation, whatever the size of
the split.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from . import dist as D

__all__ = ["EVAL_CHUNK", "TEXT_EVAL_CHUNK", "evaluate", "evaluate_streamed"]

TEXT_EVAL_CHUNK = 64  # windows per forward pass at evaluation
EVAL_CHUNK = 4096  # examples per forward pass at evaluation


@torch.no_grad()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, inputs=None, autocast=None,
             dist: D.Dist | None = None) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` over ``(x, y)``; one host sync at the end.

    ``inputs``: maps a chunk of ``x`` to what the model takes (images: normalisation); ``dist``: each rank
    scores its share and the sums are added across ranks.  Logits of text models ``(B, T, V)`` are scored per
    token (``y`` is then ``(B, T)``).
    """
    dist = dist or D.Dist()
    lo, hi = dist.share(len(y))
    was_training = model.training
    model.eval()
    acc_dtype = torch.float32 if x.device.type == "mps" else torch.float64
    sums = torch.zeros(3, dtype=acc_dtype, device=x.device)  # loss, correct, count
    for i in range(lo, hi, EVAL_CHUNK if y.ndim == 1 else TEXT_EVAL_CHUNK):
        j = min(hi, i + (EVAL_CHUNK if y.ndim == 1 else TEXT_EVAL_CHUNK))
        xb = x[i:j] if inputs is None else inputs(x[i:j])
        with autocast or contextlib.nullcontext():
            logits = model(xb)
        _add_batch(sums, logits.reshape(-1, logits.shape[-1]), y[i:j].reshape(-1))
    model.train(was_training)
    return _means(sums, dist)


@torch.no_grad()
def evaluate_streamed(model, data, dist: D.Dist, device, dtype, autocast) -> tuple[float, float]:
    """:func:`evaluate` over the test split of a streamed image folder, decoded by DataLoader workers."""
    lo, hi = dist.share(len(data.y_test))
    chunks = [list(range(i, min(hi, i + EVAL_CHUNK // 16))) for i in range(lo, hi, EVAL_CHUNK // 16)]
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    it = iter(data.loader(chunks, test=True))
    while True:
        try:
            xb, yb = next(it)
        except StopIteration:
            break
        except Exception as e:  # noqa: BLE001
            from ..data.images import worker_error

            raise worker_error(e) from None
        xb, yb = xb.to(device), yb.to(device)
        with autocast or contextlib.nullcontext():
            logits = model(data.inputs(xb).to(dtype))
        _add_batch(sums, logits, yb)
    model.train(was_training)
    return _means(sums, dist)


def _add_batch(sums: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
    """Add one chunk's summed cross-entropy, correct predictions and count to ``sums`` (logits in ≥ fp32)."""
    logits = logits if logits.dtype == torch.float64 else logits.float()
    sums[0] += F.cross_entropy(logits, y, reduction="sum")
    sums[1] += (logits.argmax(1) == y).sum()
    sums[2] += len(y)


def _means(sums: torch.Tensor, dist: D.Dist) -> tuple[float, float]:
    """(mean loss, accuracy) from the sums of every rank: the evaluation's one host sync."""
    dist.all_sum(sums)
    loss, correct, count = sums.tolist()
    return loss / count, correct / count
