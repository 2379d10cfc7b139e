r"""Proximal operators for composite problems  min_x f(x) + g(x).

The proximal operator of a closed convex function ``g`` with step ``s > 0`` is

.. math::  \operatorname{prox}_{s g}(x) = \arg\min_z \; g(z) + \frac{1}{2s}\lVert z - x\rVert^2 .

Every operator here is a :class:`Prox`: calling ``op(x, step)`` returns ``prox_{step g}(x)`` for one problem,
and ``op.value(x)`` returns ``g(x)`` (``inf`` outside the domain of an indicator). Inside
:func:`nesterov.minimize` with ``batched=True`` the solver calls ``op.prox(x, step, batch_dims=1)`` and
``op.value(x, batch_dims=1)``, where ``x`` has a leading batch dimension and ``step`` has shape
``(B, 1, ..., 1)``: each problem uses its own step.

Your own operator
-----------------
Any of these works as ``prox=`` in :func:`nesterov.minimize`:

* ``custom(prox_fn, value_fn=None)`` -- ``prox_fn(x, step)`` returns ``prox_{step g}(x)`` with the shape of ``x``;
  ``value_fn(x)`` returns ``g(x)`` (a scalar tensor, or one value per problem when batched);
* a subclass of :class:`Prox` overriding ``prox`` and ``value``;
* a bare callable ``prox_fn(x, step)`` (then ``g`` is unknown: the reported objective is ``f`` alone and
  ``restart="function"`` / ``method="mfista"``, which compare objective values, are refused).

With ``batched=True`` a custom ``prox_fn`` receives the whole batch ``x`` of shape ``(B, ...)`` and ``step`` of
shape ``(B, 1, ..., 1)``; ``value_fn`` must return shape ``(B,)``.

Example: the prox of ``g(x) = lam * ||x||_inf`` by Moreau's identity would be ``x - step*proj_{l1 ball of radius
lam}(x/step)``; wrap it with ``custom``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch

__all__ = ["Prox", "custom", "l1", "nonneg", "box", "l2_ball", "group_l1", "elastic_net", "zero"]


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


def _soft(x: torch.Tensor, thresh) -> torch.Tensor:
    """Soft thresholding sign(x) * max(|x| - thresh, 0)."""
    return torch.sign(x) * torch.clamp_min(x.abs() - thresh, 0)


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


class _Zero(Prox):
    r"""g = 0: the identity map (a smooth problem)."""
    _name = "zero"

    def prox(self, x, step, batch_dims=0):
        return x

    def value(self, x, batch_dims=0):
        return x.new_zeros(x.shape[:batch_dims])


def zero() -> Prox:
    """``g = 0``; its prox is the identity (what ``prox=None`` means)."""
    return _Zero()


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


class _GroupL1(Prox):
    _name = "group_l1"

    def __init__(self, lam, groups):
        if isinstance(groups, torch.Tensor):
            if groups.dtype.is_floating_point or groups.dtype == torch.bool:
                raise TypeError("groups as a tensor must hold integer group labels (-1 = no group)")
            labels = groups.detach().flatten().to(torch.int64).cpu()
            if labels.numel() == 0:
                raise ValueError("groups is empty")
            if bool((labels < -1).any()):
                raise ValueError("group labels must be >= 0 (or -1 for unpenalised entries)")
            uniq = torch.unique(labels[labels >= 0])
            remap = torch.full((int(labels.max()) + 2,), -1, dtype=torch.int64)
            remap[uniq] = torch.arange(uniq.numel())
            labels = torch.where(labels >= 0, remap[labels.clamp_min(0)], labels)
            self.n_groups = int(uniq.numel())
            self.size = int(labels.numel())
        elif isinstance(groups, Sequence) and not isinstance(groups, (str, bytes)):
            idx_lists = []
            for j, g in enumerate(groups):
                try:
                    idx = torch.as_tensor(list(g) if not isinstance(g, torch.Tensor) else g, dtype=torch.int64)
                except (TypeError, ValueError, RuntimeError):
                    raise TypeError(f"groups[{j}] must be a sequence of integer indices") from None
                idx_lists.append(idx.flatten())
            if not idx_lists:
                raise ValueError("groups is empty")
            allidx = torch.cat(idx_lists)
            if bool((allidx < 0).any()):
                raise ValueError("group indices must be >= 0")
            if allidx.unique().numel() != allidx.numel():
                raise ValueError("groups must be disjoint (an index appears in two groups or twice)")
            self.size = int(allidx.max()) + 1
            labels = torch.full((self.size,), -1, dtype=torch.int64)
            for j, idx in enumerate(idx_lists):
                labels[idx] = j
            self.n_groups = len(idx_lists)
        else:
            raise TypeError("groups must be a sequence of index sequences or an integer label tensor")
        self.labels = labels
        self.lam = _check_param(lam, "lam")
        if isinstance(self.lam, torch.Tensor) and self.lam.numel() not in (1, self.n_groups):
            raise ValueError(f"lam as a tensor must have one weight per group ({self.n_groups}), "
                             f"got shape {tuple(self.lam.shape)}")
        self._cache = {}

    def _setup(self, x, batch_dims):
        n = x[(0,) * batch_dims].numel() if batch_dims else x.numel()
        if n < self.size:
            raise ValueError(f"group_l1: groups cover {self.size} entries but a problem has only {n}")
        key = (x.device, n)
        if key not in self._cache:
            lab = self.labels
            if lab.numel() < n:   # entries past the largest listed index are in no group
                lab = torch.cat([lab, torch.full((n - lab.numel(),), -1, dtype=torch.int64)])
            elif lab.numel() > n:
                raise ValueError(f"group_l1: groups label {lab.numel()} entries but a problem has {n}")
            mask = lab >= 0
            self._cache[key] = (lab.clamp_min(0).to(x.device), mask.to(x.device))
        return self._cache[key]

    def _group_norms(self, x, batch_dims):
        lab, mask = self._setup(x, batch_dims)
        flat = x.reshape(x.shape[:batch_dims] + (-1,))
        sq = torch.where(mask, flat * flat, torch.zeros((), dtype=x.dtype, device=x.device))
        norms2 = flat.new_zeros(flat.shape[:-1] + (self.n_groups,)).index_add_(-1, lab, sq)
        return norms2.sqrt(), lab, mask, flat

    def _lam(self, x):
        lam = _as(self.lam, x)
        return lam.reshape(-1) if isinstance(lam, torch.Tensor) else lam

    def prox(self, x, step, batch_dims=0):
        norms, lab, mask, flat = self._group_norms(x, batch_dims)
        s = step.reshape(step.shape[:batch_dims] + (1,)) if step.dim() > 0 else step
        thresh = self._lam(x) * s
        scale = torch.clamp_min(1 - thresh / torch.clamp_min(norms, torch.finfo(x.dtype).tiny), 0)
        scale_e = torch.where(mask, scale.index_select(-1, lab), torch.ones((), dtype=x.dtype, device=x.device))
        return (flat * scale_e).reshape(x.shape)

    def value(self, x, batch_dims=0):
        norms = self._group_norms(x, batch_dims)[0]
        return (self._lam(x) * norms).sum(-1)


def group_l1(lam, groups) -> Prox:
    r"""Group lasso :math:`g(x) = \sum_j \lambda_j \lVert x_{G_j}\rVert_2` over disjoint groups of one
    problem's flattened entries.

    ``groups``: a list of index lists (entries in no group are unpenalised), or an integer tensor with one
    label per entry (``-1`` = no group). ``lam``: a number, or a tensor of one weight per group (the usual
    choice is ``lam * sqrt(len(G_j))``).

    prox: :math:`z_{G_j} = \max(0, 1 - s\lambda_j/\lVert x_{G_j}\rVert)\, x_{G_j}` (block soft thresholding).
    """
    return _GroupL1(lam, groups)


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


class _Custom(Prox):
    _name = "custom"

    def __init__(self, prox_fn, value_fn=None):
        if not callable(prox_fn):
            raise TypeError(f"prox must be callable as prox(x, step), got {type(prox_fn).__name__}")
        if value_fn is not None and not callable(value_fn):
            raise TypeError(f"value must be callable as value(x) or None, got {type(value_fn).__name__}")
        self.prox_fn, self.value_fn = prox_fn, value_fn
        self.has_value = value_fn is not None

    def prox(self, x, step, batch_dims=0):
        return self.prox_fn(x, step)

    def value(self, x, batch_dims=0):
        if self.value_fn is None:
            raise TypeError("this custom prox has no value function; pass value= to nesterov.prox.custom")
        return self.value_fn(x)


def custom(prox: Callable, value: Callable | None = None) -> Prox:
    """Wrap your own operator: ``prox(x, step)`` returns ``prox_{step g}(x)``; ``value(x)`` returns ``g(x)``.

    Batched solves pass the whole batch (leading dimension) and a step of shape ``(B, 1, ..., 1)``; ``value``
    must then return one value per problem.
    """
    return _Custom(prox, value)


def as_prox(p) -> Prox:
    """Normalise the ``prox=`` argument of :func:`nesterov.minimize` (None, a Prox, or a callable)."""
    if p is None:
        return _Zero()
    if isinstance(p, Prox):
        return p
    if callable(p):
        value = getattr(p, "value", None)
        return _Custom(p, value if callable(value) else None)
    raise TypeError(f"prox must be None, a nesterov.prox operator or a callable prox(x, step), got "
                    f"{type(p).__name__}")
