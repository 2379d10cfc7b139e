"""The :class:`Prox` interface, and what the operators share: checking their parameters, casting them to the
point's dtype and device, sums over one problem's entries, and the 0 / +inf value of an indicator."""

from __future__ import annotations

import math
import numbers

import torch

__all__ = ["Prox"]


def _sum_problem(v: torch.Tensor, batch_dims: int) -> torch.Tensor:
    """Sum over every dimension after the first ``batch_dims`` (one value per problem)."""
    if v.dim() <= batch_dims:
        return v
    return v.flatten(batch_dims).sum(-1)


def _indicator(inside: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """0 where ``inside`` is true, +inf elsewhere, in the dtype of ``like``."""
    zero = torch.zeros((), dtype=like.dtype, device=like.device)
    return torch.where(inside, zero, torch.full_like(zero, math.inf))


def _slack(x: torch.Tensor) -> float:
    """Relative rounding slack for membership tests of a projected point."""
    return 64 * torch.finfo(x.dtype).eps if x.is_floating_point() else 0.0


def _check_param(value, name: str, *, positive: bool = False, allow_tensor: bool = True):
    """A finite real >= 0 (or > 0), or a finite tensor of such values; returns a float or a tensor."""
    if isinstance(value, torch.Tensor) and allow_tensor:
        if not value.is_floating_point() and value.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"{name} must be a real number or a real tensor, got dtype {value.dtype}")
        value = value.detach()
        bad = ~torch.isfinite(value) | ((value <= 0) if positive else (value < 0))
        if bool(bad.any()):
            rel = "> 0" if positive else ">= 0"
            raise ValueError(f"{name} must be finite and {rel} everywhere")
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number{' or a tensor' if allow_tensor else ''}, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or (value <= 0 if positive else value < 0):
        raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'}, got {value!r}")
    return value


def _as(param, x: torch.Tensor):
    """Move a tensor parameter to ``x``'s device and dtype (floats stay Python floats)."""
    if isinstance(param, torch.Tensor):
        return param.to(device=x.device, dtype=x.dtype)
    return param


class Prox:
    """A proximal operator ``prox_{s g}`` together with the value of ``g``.

    Subclasses implement :meth:`prox` and :meth:`value`; both take ``batch_dims`` (0 for one problem, 1 when
    the first dimension indexes independent problems).
    """

    #: whether :meth:`value` is available (False for ``custom`` without ``value_fn``)
    has_value = True

    def __call__(self, x: torch.Tensor, step) -> torch.Tensor:
        step = torch.as_tensor(step, dtype=x.dtype, device=x.device)
        return self.prox(x, step, batch_dims=0)

    def prox(self, x: torch.Tensor, step: torch.Tensor, batch_dims: int = 0) -> torch.Tensor:
        raise NotImplementedError

    def value(self, x: torch.Tensor, batch_dims: int = 0) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                         if not k.startswith("_") and k not in ("labels", "has_value"))
        return f"nesterov.prox.{getattr(self, '_name', type(self).__name__)}({args})"
