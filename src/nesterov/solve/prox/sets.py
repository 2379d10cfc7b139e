"""Indicators of convex sets, whose prox is the projection onto the set and whose value is 0 inside and +inf
outside: :func:`nonneg`, :func:`box`, :func:`l2_ball`."""

from __future__ import annotations

import math
import numbers

import torch

from .base import Prox, _as, _check_param, _indicator, _slack

__all__ = ["nonneg", "box", "l2_ball"]


class _NonNeg(Prox):
    _name = "nonneg"

    def prox(self, x, step, batch_dims=0):
        return torch.clamp_min(x, 0)

    def value(self, x, batch_dims=0):
        inside = x >= 0
        if x.dim() > batch_dims:
            inside = inside.flatten(batch_dims).all(-1)
        return _indicator(inside, x)


def nonneg() -> Prox:
    r"""Indicator of the nonnegative orthant :math:`\{x \ge 0\}`; prox: :math:`\max(x, 0)`."""
    return _NonNeg()


class _Box(Prox):
    _name = "box"

    def __init__(self, lo, hi):
        def conv(v, name):
            if isinstance(v, torch.Tensor):
                if not v.is_floating_point():
                    v = v.to(torch.get_default_dtype())
                if bool(torch.isnan(v).any()):
                    raise ValueError(f"{name} contains NaN")
                return v.detach()
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise TypeError(f"{name} must be a real number or a tensor, got {v!r}")
            v = float(v)
            if math.isnan(v):
                raise ValueError(f"{name} is NaN")
            return v

        self.lo, self.hi = conv(lo, "lo"), conv(hi, "hi")
        lo_t, hi_t = torch.as_tensor(self.lo), torch.as_tensor(self.hi)
        try:
            bad = bool((lo_t > hi_t).any())
        except RuntimeError as e:
            raise ValueError(f"lo and hi must broadcast to each other: {e}") from None
        if bad:
            raise ValueError("box(lo, hi) needs lo <= hi everywhere")

    def prox(self, x, step, batch_dims=0):
        lo, hi = _as(self.lo, x), _as(self.hi, x)
        if isinstance(lo, float) and isinstance(hi, float):
            return torch.clamp(x, lo, hi)
        return torch.clamp(x, torch.as_tensor(lo, dtype=x.dtype, device=x.device),
                           torch.as_tensor(hi, dtype=x.dtype, device=x.device))

    def value(self, x, batch_dims=0):
        inside = (x >= _as(self.lo, x)) & (x <= _as(self.hi, x))
        inside = inside.expand(x.shape)
        if x.dim() > batch_dims:
            inside = inside.flatten(batch_dims).all(-1)
        return _indicator(inside, x)


def box(lo=-math.inf, hi=math.inf) -> Prox:
    r"""Indicator of the box :math:`\{lo \le x \le hi\}` (numbers or tensors broadcastable to one problem's
    shape; ``lo <= hi``); prox: ``clamp(x, lo, hi)``."""
    return _Box(lo, hi)


class _L2Ball(Prox):
    _name = "l2_ball"

    def __init__(self, r):
        self.r = _check_param(r, "r", allow_tensor=False)

    def _norm(self, x, batch_dims):
        n = x.flatten(batch_dims).norm(dim=-1) if x.dim() > batch_dims else x.abs()
        return n.reshape(n.shape + (1,) * (x.dim() - batch_dims))

    def prox(self, x, step, batch_dims=0):
        n = self._norm(x, batch_dims)
        scale = torch.clamp(self.r / torch.clamp_min(n, torch.finfo(x.dtype).tiny), max=1.0)
        return x * scale

    def value(self, x, batch_dims=0):
        n = self._norm(x, batch_dims).reshape(x.shape[:batch_dims])
        return _indicator(n <= self.r * (1 + _slack(x)), x)


def l2_ball(r) -> Prox:
    r"""Indicator of the Euclidean ball :math:`\{\lVert x\rVert_2 \le r\}` (over all of one problem's
    entries); prox: :math:`x \min(1, r/\lVert x\rVert)`."""
    return _L2Ball(r)
