"""Parameter sets the benchmarks step: the shapes of real models, made with random values."""

from __future__ import annotations

from typing import Callable

import torch


def resnet50_shapes() -> list[tuple[int, ...]]:
    """Parameter shapes of ResNet-50 (torchvision layout: conv, BN weight and bias, fc)."""
    shapes: list[tuple[int, ...]] = [(64, 3, 7, 7), (64,), (64,)]
    in_ch = 64
    for width, blocks in zip((64, 128, 256, 512), (3, 4, 6, 3)):
        for b in range(blocks):
            out = width * 4
            shapes += [(width, in_ch, 1, 1), (width,), (width,)]
            shapes += [(width, width, 3, 3), (width,), (width,)]
            shapes += [(out, width, 1, 1), (out,), (out,)]
            if b == 0:
                shapes += [(out, in_ch, 1, 1), (out,), (out,)]
            in_ch = out
    return shapes + [(1000, 2048), (1000,)]


def mnist1d_cnn_shapes() -> list[tuple[int, ...]]:
    """A small 1-D CNN for MNIST-1D: 8 tensors, ~4k parameters (three convs and a linear head)."""
    return [(32, 1, 5), (32,), (32, 32, 3), (32,), (32, 32, 3), (32,), (10, 64), (10,)]


def transformer_shapes(blocks: int = 6, d: int = 512) -> list[tuple[int, ...]]:
    """A GPT-style block stack: qkv, projection and MLP matrices plus LayerNorm vectors."""
    shapes: list[tuple[int, ...]] = []
    for _ in range(blocks):
        shapes += [(d,), (d,), (3 * d, d), (d, d), (d,), (d,), (4 * d, d), (d, 4 * d)]
    return shapes


SHAPES: dict[str, Callable[[], list[tuple[int, ...]]]] = {
    "resnet50": resnet50_shapes,
    "mnist1d-cnn": mnist1d_cnn_shapes,
    "transformer": transformer_shapes,
}


def scaled_shapes(shapes, numel: int | None) -> list[tuple[int, ...]]:
    """Scale every tensor's first dimension so the set has about ``numel`` elements (same count)."""
    if numel is None:
        return shapes
    total = sum(torch.Size(s).numel() for s in shapes)
    factor = numel / total
    return [(max(1, round(s[0] * factor)),) + tuple(s[1:]) for s in shapes]
