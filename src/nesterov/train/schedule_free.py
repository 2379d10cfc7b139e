"""Schedule-free optimizers in the trainer: evaluation and checkpoints at x, BatchNorm statistics at x.

A schedule-free optimizer (``sf-sgd``, ``sf-adamw``) keeps three sequences; while it trains, the parameters hold
y, the point where gradients are taken, and after ``optimizer.eval()`` they hold x, the average that is the
model to score and to keep.  So the loop, at every evaluation:

1. switches the optimizer to eval mode (parameters := x);
2. recomputes the BatchNorm running statistics at x (:func:`recompute_batchnorm`): the ones accumulated during
   training describe the activations at the y's the run passed through, not at x;
3. evaluates and writes the checkpoint (so ``last.pt`` and ``best.pt`` hold x and an optimizer in eval mode);
4. switches back to train mode and trains on.

A resumed run loads x and the eval-mode optimizer and switches to train mode, the same arithmetic the
uninterrupted run did after writing that checkpoint, so it continues bit for bit.  A checkpoint written at
Ctrl-C between two evaluations holds x too, and beside it the model as it was training (``train_model``: y and
the training BatchNorm buffers), which a resumed run loads after switching to train mode: the uninterrupted
run never went through x at that step, and y -> x -> y is not exact in floating point.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

__all__ = ["BN_BATCHES", "recompute_batchnorm", "to_x"]

# Training batches run through the model at x (under no_grad) to estimate each BatchNorm's mean and variance
# before an evaluation.  Four batches of the default 128 are 512 examples, a channel mean's standard error 1/sqrt(512)
# ≈ 4 % of its standard deviation; on the MNIST-1D default the final test loss no longer moves from 4 batches on
# (1, 2, 4, 8, 16 batches: sf-sgd 0.1832, 0.1819, 0.1803, 0.1807, 0.1803; docs/training.md, "Schedule-free").
BN_BATCHES = 4


def _norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, inputs, autocast=None) -> int:
    """Replace every BatchNorm's running mean and variance by their average over the batches ``inputs``
    (an iterable of model inputs, consumed only if the model has BatchNorm); returns the batches used.

    The BatchNorm layers alone run in training mode (the rest in eval mode: no dropout draws, so no RNG is
    consumed), with ``momentum=None`` (torch's cumulative average) after their statistics are reset: the result
    depends on the batches only, not on the statistics accumulated before.
    """
    norms = _norms(model)
    if not norms:
        return 0
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in norms}
    try:
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        used = 0
        for x in inputs:
            with autocast or contextlib.nullcontext():
                model(x)
            used += 1
        return used
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        for m, training in modes.items():
            m.training = training


def to_x(opt, model: nn.Module, inputs, autocast=None) -> None:
    """Put the parameters at x (``opt.eval()``) and the BatchNorm statistics with them."""
    opt.eval()
    recompute_batchnorm(model, inputs, autocast)
