"""The names a run is configured with (datasets, augmentations, models and their options), without torch.

They live here, not in :mod:`nesterov.data` / :mod:`nesterov.models` (which import torch as packages), so that the
command line checks flags and config files and prints its first line before torch loads; those packages
re-export them.
"""

from __future__ import annotations

__all__ = ["AUGMENTS", "DATASETS", "MODEL_NAMES", "OPTIONS", "PREFIXES", "TEXT_MODELS", "is_text", "valid_spec"]

DATASETS = ("mnist1d", "digits", "npz:PATH", "imagefolder:PATH", "cifar10:PATH", "cifar100:PATH", "text:PATH",
            "pysrc")
PREFIXES = ("npz:", "imagefolder:", "cifar10:", "cifar100:", "text:")
AUGMENTS = ("auto", "none", "flip", "crop", "crop-flip")

MODEL_NAMES = ("cnn1d", "mlp", "linear", "resnet18", "airbench", "gpt")
OPTIONS = {"resnet18": ("width",), "airbench": ("width",), "gpt": ("width", "depth", "heads", "context")}
TEXT_MODELS = ("gpt",)


def is_text(spec: str) -> bool:
    return spec == "pysrc" or spec.startswith("text:")


def valid_spec(spec: str) -> bool:
    return spec in ("mnist1d", "digits", "pysrc") or spec.startswith(PREFIXES)
