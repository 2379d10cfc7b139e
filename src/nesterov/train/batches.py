"""What each training step sees: the global batch of step ``s`` and this rank's share of it, as the model takes it.

The order of examples in epoch ``e`` is a pure function of ``(seed, e)``; augmentation draws and text windows of
step ``s`` are pure functions of ``(seed, s)``.  So any step can be produced again from the step number alone,
which is what makes a resumed run replay the exact batches of an uninterrupted one.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data import epoch_permutation
from . import dist as D
from .config import Config
from .evaluation import evaluate, evaluate_streamed

__all__ = ["Batches", "StepIndices", "n_train"]


def n_train(data, cfg: Config) -> int:
    """Training examples: images/rows, or context windows in the training bytes of a text dataset."""
    if getattr(data, "kind", "classify") == "text":
        return max(1, (len(data.train) - 1) // (cfg.context or 128))
    return len(data.y)


def _gen(seed: int, step: int, salt: int) -> torch.Generator:
    """A CPU generator that is a pure function of ``(seed, step, salt)``."""
    state = np.random.SeedSequence([int(seed), int(step), salt]).generate_state(2, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


class Batches:
    """The global batch of every step, and this rank's share of it, as the model takes it."""

    def __init__(self, data, cfg: Config, dist: D.Dist, device, dtype):
        self.data, self.cfg, self.dist, self.device, self.dtype = data, cfg, dist, device, dtype
        self.text = getattr(data, "kind", "classify") == "text"
        if self.text:
            self.context = cfg.context or 128
            self.n = max(1, (len(data.train) - 1) // self.context)  # windows per "epoch"
            ends = min(len(data.val), cfg.eval_bytes + 1)
            if ends < self.context + 1:
                raise ValueError(f"{data.name}: the validation split ({len(data.val)} bytes) is shorter than one "
                                 f"context window ({self.context + 1} bytes); use a smaller --context")
            starts = torch.arange(0, ends - self.context, self.context)
            self.val_x, self.val_y = data.windows(starts, self.context, "val")
        else:
            self.n = len(data.y)
        self.bs = min(cfg.batch_size, self.n) if not self.text else cfg.batch_size
        self.spe = cfg.steps_per_epoch(self.n)
        self._perm, self._perm_epoch = None, -1
        self.streamed = getattr(data, "streamed", False)
        self._stream, self._stream_step = None, None

    def _indices(self, step: int) -> torch.Tensor:
        """The global batch of ``step``: indices into the training set (on the CPU)."""
        epoch, i = divmod(step, self.spe)
        if epoch != self._perm_epoch:
            self._perm, self._perm_epoch = epoch_permutation(self.n, self.cfg.seed, epoch), epoch
        return self._perm[i * self.bs:(i + 1) * self.bs]

    def _streamed_step(self, step: int):
        """This rank's share of ``step``, decoded by the DataLoader workers (which run ahead)."""
        if self._stream is None or self._stream_step != step:
            lo, hi = self.dist.share(self.bs)
            order = StepIndices(self, step, lo, hi)
            self._stream = iter(self.data.loader(order))
        self._stream_step = step + 1
        try:
            xb, yb = next(self._stream)
        except Exception as e:  # noqa: BLE001 - a file that no longer decodes: one line naming it
            from ..data.images import worker_error

            raise worker_error(e) from None
        return xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)

    def inputs(self, xb, gen=None, train=False):
        if self.text:
            return xb
        x = self.data.inputs(xb, self.cfg.augment if train else "none", gen)
        return x.to(self.dtype) if x.is_floating_point() else x

    def step(self, step: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(inputs, targets, global count of scored targets) of this rank's share of step ``step``."""
        lo, hi = self.dist.share(self.bs)
        if self.text:
            g = _gen(self.cfg.seed, step, 0x74657874)
            starts = torch.randint(0, len(self.data.train) - self.context - 1 + 1, (self.bs,), generator=g)
            xb, yb = self.data.windows(starts[lo:hi], self.context)
            return xb, yb, self.bs * self.context
        if self.streamed:
            xb, yb = self._streamed_step(step)
            gen = _gen(self.cfg.seed, step, 0x61756780) if self.cfg.augment != "none" else None
            x = self.data.inputs(xb, self.cfg.augment, gen, share=(lo, hi, self.bs))
            return x.to(self.dtype), yb, self.bs
        idx = self._indices(step).to(self.device)
        xb = self.data.x[idx]
        if self.data.image and self.cfg.augment != "none":  # draw for the whole global batch, then take a share
            xb = self.inputs(xb, _gen(self.cfg.seed, step, 0x61756780), train=True)[lo:hi]
        else:
            xb = self.inputs(xb[lo:hi])
        return xb, self.data.y[idx[lo:hi]], self.bs

    def evaluate(self, model, autocast):
        """(test loss, test accuracy) of ``model`` on the held-out split: validation windows for text."""
        if self.streamed:
            return evaluate_streamed(model, self.data, self.dist, self.device, self.dtype, autocast)
        if self.text:
            loss, acc = evaluate(model, self.val_x, self.val_y, autocast=autocast, dist=self.dist)
        else:
            inputs = self.inputs if (self.data.image or self.dtype != torch.float32) else None
            loss, acc = evaluate(model, self.data.x_test, self.data.y_test, inputs=inputs, autocast=autocast,
                                 dist=self.dist)
        return loss, acc

    def describe(self) -> str:
        return self.data.describe() + (f"; context {self.context}, {len(self.val_y)} validation windows"
                                       if self.text else "")


class StepIndices:
    """Index lists of this rank's share of each step from ``start`` on: a DataLoader batch_sampler."""

    def __init__(self, batches: Batches, start: int, lo: int, hi: int):
        self.b, self.start, self.lo, self.hi = batches, start, lo, hi
        self._perm, self._epoch = None, -1

    def __iter__(self):
        b = self.b
        for step in range(self.start, b.cfg.steps):
            epoch, i = divmod(step, b.spe)
            if epoch != self._epoch:
                self._perm, self._epoch = epoch_permutation(b.n, b.cfg.seed, epoch), epoch
            yield self._perm[i * b.bs:(i + 1) * b.bs][self.lo:self.hi].tolist()

    def __len__(self):
        return max(0, self.b.cfg.steps - self.start)
