"""Schedule-free optimizers under Lightning: :class:`ScheduleFreeCallback`.

A schedule-free optimizer (``nesterov.ScheduleFreeSGD``, ``nesterov.ScheduleFreeAdamW``, or any optimizer with
``train()`` and ``eval()``, such as the ``schedulefree`` package's) trains at y and is meant to be scored and kept
at x, the average: ``optimizer.eval()`` moves the parameters to x, ``optimizer.train()`` back to y.  Lightning
calls neither, so a plain ``Trainer`` validates and checkpoints y.  The callback calls them::

    import lightning as L
    from nesterov.integrations.lightning import ScheduleFreeCallback

    trainer = L.Trainer(callbacks=[ScheduleFreeCallback()])

- train mode at the start of every training batch;
- eval mode at the start of validation, testing and prediction, and at the end of ``fit`` (the model you are
  left with is x);
- every checkpoint holds x: one written while training (``ModelCheckpoint(every_n_train_steps=...)``, at a
  training epoch's end without validation, or ``trainer.save_checkpoint`` mid-fit) has its model and optimizer
  states taken at x, after which training goes on from y.  ``fit(ckpt_path=...)`` loads x and the eval-mode
  optimizer, and the next training batch switches to y: the same arithmetic as the uninterrupted run, so the
  resumed run continues bit for bit.

BatchNorm running statistics are not recomputed at x here (the callback does not choose data): recompute them
in ``on_validation_start`` of your module if your model has BatchNorm (``nesterov train`` does it for its models).
"""

from __future__ import annotations

import lightning.pytorch as pl

__all__ = ["ScheduleFreeCallback"]


def _schedule_free(trainer) -> list:
    """The trainer's optimizers that have a train and an eval mode."""
    return [o for o in trainer.optimizers if callable(getattr(o, "train", None)) and callable(getattr(o, "eval", None))]


class ScheduleFreeCallback(pl.Callback):
    """Eval mode (parameters at x) for validation, testing, prediction and checkpoints; train mode (at y) for
    training steps.  See the module's documentation."""

    def __init__(self):
        self._at_x = None  # None: not switched yet (the optimizer's own starting mode)

    def _eval(self, trainer) -> None:
        for opt in _schedule_free(trainer):
            opt.eval()
        self._at_x = True

    def _train(self, trainer) -> None:
        for opt in _schedule_free(trainer):
            opt.train()
        self._at_x = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._train(trainer)

    def on_validation_start(self, trainer, pl_module):
        self._eval(trainer)

    def on_test_start(self, trainer, pl_module):
        self._eval(trainer)

    def on_predict_start(self, trainer, pl_module):
        self._eval(trainer)

    def on_train_end(self, trainer, pl_module):
        self._eval(trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if self._at_x is not False or not _schedule_free(trainer):
            return  # already at x (after validation), or never trained
        # Written while training: take the model and optimizer states at x, then go back to y.
        self._eval(trainer)
        try:
            checkpoint["state_dict"] = {k: v.clone() for k, v in trainer.strategy.lightning_module_state_dict().items()}
            if "optimizer_states" in checkpoint:
                import copy

                checkpoint["optimizer_states"] = [copy.deepcopy(trainer.strategy.optimizer_state(o))
                                                  for o in trainer.optimizers]
        finally:
            self._train(trainer)
