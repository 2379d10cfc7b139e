"""Separable penalties, whose prox is soft thresholding coordinate by coordinate: :func:`l1` (the lasso, with
per-coordinate weights) and :func:`elastic_net`."""

from __future__ import annotations

import torch

from .base import Prox, _as, _check_param, _sum_problem

__all__ = ["l1", "elastic_net"]


def _soft(x: torch.Tensor, thresh) -> torch.Tensor:
    """Soft thresholding sign(x) * max(|x| - thresh, 0)."""
    return torch.sign(x) * torch.clamp_min(x.abs() - thresh, 0)


class _L1(Prox):
    r"""g(x) = sum_i lam_i |x_i|; prox = soft thresholding at lam*step."""
    _name = "l1"

    def __init__(self, lam):
        self.lam = _check_param(lam, "lam")

    def prox(self, x, step, batch_dims=0):
        return _soft(x, _as(self.lam, x) * step)

    def value(self, x, batch_dims=0):
        return _sum_problem(_as(self.lam, x) * x.abs(), batch_dims)


def l1(lam) -> Prox:
    r"""``g(x) = lam * ||x||_1``; ``lam >= 0`` a number, or a tensor broadcastable to one problem's shape
    (per-coordinate weights; 0 leaves a coordinate, e.g. an intercept, unpenalised).

    prox: :math:`z_i = \operatorname{sign}(x_i)\max(|x_i| - s\lambda_i, 0)`.
    """
    return _L1(lam)


class _ElasticNet(Prox):
    _name = "elastic_net"

    def __init__(self, l1, l2):
        self.l1 = _check_param(l1, "l1")
        self.l2 = _check_param(l2, "l2")

    def prox(self, x, step, batch_dims=0):
        return _soft(x, _as(self.l1, x) * step) / (1 + _as(self.l2, x) * step)

    def value(self, x, batch_dims=0):
        return _sum_problem(_as(self.l1, x) * x.abs() + 0.5 * _as(self.l2, x) * x * x, batch_dims)


def elastic_net(l1, l2) -> Prox:
    r""":math:`g(x) = \ell_1\lVert x\rVert_1 + \frac{\ell_2}{2}\lVert x\rVert_2^2` (``l1, l2 >= 0``);
    prox: :math:`\operatorname{soft}(x, s\ell_1) / (1 + s\ell_2)`."""
    return _ElasticNet(l1, l2)
