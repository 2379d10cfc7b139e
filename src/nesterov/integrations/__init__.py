"""Glue for training frameworks, one module per framework; each imports its framework, this package does not
(``import nesterov`` never imports Lightning).

- :mod:`nesterov.integrations.lightning`: :class:`~nesterov.integrations.lightning.ScheduleFreeCallback`, which
  puts schedule-free optimizers in eval mode (parameters at x) for validation, testing, prediction and
  checkpoints, and back in train mode (at y) for training.

Hugging Face's Trainer needs nothing: it calls ``optimizer.train()`` before each training step and
``optimizer.eval()`` before evaluating.
"""
