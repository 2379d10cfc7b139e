"""Convnets for small images ``(C, H, W)``: a CIFAR-style ResNet-18 and a small fast net after airbench.

- ``resnet18``  He et al.'s ResNet-18 as used for CIFAR: a 3x3 stem (no max pool), four stages of two
                BasicBlocks (widths w, 2w, 4w, 8w; stride 2 from the second stage), global average pool, Linear.
                w = 64: 11.2 M parameters for 10 classes.
- ``airbench``  Keller Jordan's airbench94 shape: a 2x2 conv stem, three blocks of
                (conv3x3 -> max pool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU) with widths w, 4w, 4w, a global
                max pool, and a bias-free Linear head whose logits are scaled by 1/9.  w = 64: 1.97 M parameters.
                (Not its whitening initialisation, its lookahead or its test-time augmentation.)
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["AirNet", "ResNet18"]


def _check(input_shape, name):
    if len(input_shape) != 3:
        raise ValueError(f"{name} needs images of shape (C, H, W); got {tuple(input_shape)} "
                         "(use an image dataset: imagefolder:PATH, cifar10:PATH, cifar100:PATH)")


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, input_shape, num_classes: int, width: int | None = None):
        super().__init__()
        _check(input_shape, "resnet18")
        w = width or 64
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        layers, c = [], w
        for i, c_out in enumerate((w, 2 * w, 4 * w, 8 * w)):
            layers += [BasicBlock(c, c_out, 1 if i == 0 else 2), BasicBlock(c_out, c_out, 1)]
            c = c_out
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class _ConvGroup(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding="same", bias=False)
        self.norm1 = nn.BatchNorm2d(c_out, momentum=0.4)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding="same", bias=False)
        self.norm2 = nn.BatchNorm2d(c_out, momentum=0.4)
        self.act = nn.GELU()

    def forward(self, x):
        x = self.conv1(x)
        if x.shape[-1] > 1:
            x = nn.functional.max_pool2d(x, 2, ceil_mode=True)
        x = self.act(self.norm1(x))
        return self.act(self.norm2(self.conv2(x)))


class AirNet(nn.Module):
    SCALE = 1 / 9  # airbench's logit scale

    def __init__(self, input_shape, num_classes: int, width: int | None = None):
        super().__init__()
        _check(input_shape, "airbench")
        w = width or 64
        c0 = 24 if input_shape[0] == 3 else 8 * input_shape[0]
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], c0, 2, padding=0, bias=True), nn.GELU())
        self.blocks = nn.Sequential(_ConvGroup(c0, w), _ConvGroup(w, 4 * w), _ConvGroup(4 * w, 4 * w))
        self.head = nn.Linear(4 * w, num_classes, bias=False)

    def forward(self, x):
        if min(x.shape[-2:]) < 2:
            raise ValueError(f"airbench needs images of at least 2x2; got {tuple(x.shape[-2:])}")
        x = self.blocks(self.stem(x))
        return self.head(torch.amax(x, dim=(2, 3))) * self.SCALE
