"""Models for the datasets of :mod:`nesterov.data`; each returns logits.

- ``linear``  logistic regression: one Linear layer on the flattened input;
- ``mlp``     Linear-ReLU-Linear-ReLU-Linear (100 hidden units, as in the MNIST-1D paper's MLP);
- ``cnn1d``   a 1-D CNN for MNIST-1D: five conv-BatchNorm-GELU blocks (widths 24, 24, 48, 48, 48; kernel 5;
              max pools after the 2nd and 4th), a global max pool and a linear head.  33 k parameters;
              98.3-99 % test accuracy on MNIST-1D in five epochs, against 94 % for the paper's CNN.

- ``resnet18``, ``airbench``  convnets for images (:mod:`nesterov.models.resnet`);
- ``gpt``     a nanoGPT-style byte-level decoder with tied embeddings (:mod:`nesterov.models.gpt`).

``build_model(name, input_shape, num_classes, **options)``; options are ``width`` (resnet18, airbench, gpt),
``depth``, ``heads``, ``context`` (gpt); an unknown name or option raises ``ValueError`` listing valid ones.
Which parameters Muon orthogonalises is the library's decision (:func:`nesterov.muon_routes`), not the models'.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..train.names import MODEL_NAMES, OPTIONS, TEXT_MODELS  # noqa: F401 - re-exported

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


def _resnet18(*a, **k):
    from .resnet import ResNet18

    return ResNet18(*a, **k)


def _airbench(*a, **k):
    from .resnet import AirNet

    return AirNet(*a, **k)


def _gpt(*a, **k):
    from .gpt import GPT

    return GPT(*a, **k)


MODELS = {"cnn1d": CNN1d, "mlp": mlp, "linear": linear, "resnet18": _resnet18, "airbench": _airbench,
          "gpt": _gpt}
assert tuple(MODELS) == MODEL_NAMES


def build_model(name: str, input_shape, num_classes: int, **options) -> nn.Module:
    """The model ``name`` for inputs of ``input_shape`` (without the batch dimension).

    ``options`` with the value ``None`` are ignored (the model's default).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")
    options = {k: v for k, v in options.items() if v is not None}
    bad = sorted(set(options) - set(OPTIONS.get(name, ())))
    if bad:
        ok = ", ".join(OPTIONS.get(name, ())) or "none"
        raise ValueError(f"model {name}: option(s) {', '.join(bad)} do not apply (valid: {ok})")
    return MODELS[name](tuple(input_shape) if input_shape is not None else None, num_classes, **options)
