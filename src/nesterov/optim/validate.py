"""Hyperparameter checks shared by every optimizer: each raises an error that names the argument."""

from __future__ import annotations

import math

import torch


def check_number(name: str, value, *, low=None, high=None, low_open=False, high_open=False) -> None:
    """Raise ValueError/TypeError naming ``name`` unless ``value`` is a finite real number within the bounds.

    A one-element tensor counts as its value (torch accepts a tensor ``lr``)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a number or a one-element tensor, got shape {tuple(value.shape)}")
        if value.is_complex():
            raise TypeError(f"{name} must be real, got a {value.dtype} tensor")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value >= high if high_open else value > high):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")


def check_betas(group: dict, where: str, count: int) -> None:
    """``group['betas']``: a tuple of ``count`` numbers, each in [0, 1)."""
    betas = group["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != count:
        raise ValueError(f"betas{where} must be a tuple of {count} numbers in [0, 1), got {betas!r}")
    for i, beta in enumerate(betas):
        check_number(f"betas[{i}]{where}", beta, low=0.0, high=1.0, high_open=True)


def check_adaptive(group: dict, where: str, betas: int) -> None:
    """The checks every Adam-type rule shares: lr ≥ 0, ``betas`` betas in [0, 1), eps > 0, weight_decay ≥ 0."""
    check_number(f"lr{where}", group["lr"], low=0.0)
    check_betas(group, where, betas)
    check_number(f"eps{where}", group["eps"], low=0.0, low_open=True)
    check_number(f"weight_decay{where}", group["weight_decay"], low=0.0)


def check_flags(group: dict, where: str, names) -> None:
    for name in names:
        if not isinstance(group[name], bool):
            raise TypeError(f"{name}{where} must be a bool, got {type(group[name]).__name__}")


def dtype_names(dtypes) -> str:
    return ", ".join("None" if d is None else str(d) for d in dtypes)
