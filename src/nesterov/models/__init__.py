"""Models for the small classification datasets of :mod:`nesterov.data`; each returns logits.

- ``linear``  logistic regression: one Linear layer on the flattened input;
- ``mlp``     Linear-ReLU-Linear-ReLU-Linear (100 hidden units, as in the MNIST-1D paper's MLP);
- ``cnn1d``   a 1-D CNN for MNIST-1D: five conv-BatchNorm-GELU blocks (widths 24, 24, 48, 48, 48; kernel 5;
              max pools after the 2nd and 4th), a global max pool and a linear head.  33 k parameters;
              98.3-99 % test accuracy on MNIST-1D in five epochs, against 94 % for the paper's CNN.

``build_model(name, input_shape, num_classes)``; an unknown name raises ``ValueError`` listing valid ones.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["MODELS", "CNN1d", "build_model", "mlp", "linear"]


def linear(input_shape, num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


def mlp(input_shape, num_classes: int, hidden: int = 100) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), hidden), nn.ReLU(),
        nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def _block(c_in: int, c_out: int, kernel: int, pool: bool) -> list[nn.Module]:
    layers = [nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2, bias=False), nn.BatchNorm1d(c_out), nn.GELU()]
    return layers + [nn.MaxPool1d(2)] if pool else layers


class CNN1d(nn.Sequential):
    """Conv1d-BN-GELU x5 (max pool after the 2nd and 4th), global max pool, Linear.

    Inputs of shape (N, L) are treated as one channel; (N, C, L) are used as is.
    """

    def __init__(self, input_shape, num_classes: int, width: int = 24, kernel: int = 5):
        if len(input_shape) not in (1, 2):
            raise ValueError(f"cnn1d needs inputs of shape (L,) or (C, L); got {tuple(input_shape)}")
        c_in = 1 if len(input_shape) == 1 else input_shape[0]
        w, w2 = width, 2 * width
        super().__init__(
            *_block(c_in, w, kernel, False), *_block(w, w, kernel, True),
            *_block(w, w2, kernel, False), *_block(w2, w2, kernel, True),
            *_block(w2, w2, kernel, False),
            nn.AdaptiveMaxPool1d(1), nn.Flatten(), nn.Linear(w2, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.unsqueeze(1) if x.dim() == 2 else x)


MODELS = {"cnn1d": CNN1d, "mlp": mlp, "linear": linear}


def build_model(name: str, input_shape, num_classes: int) -> nn.Module:
    """The model ``name`` for inputs of ``input_shape`` (without the batch dimension)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")
    return MODELS[name](tuple(input_shape), num_classes)
