"""What ``prox=`` of :func:`nesterov.minimize` accepts, made a :class:`~.base.Prox` by :func:`as_prox`: ``None``
(:func:`zero`), one of the operators, your own through :func:`custom`, or a bare callable ``prox(x, step)``."""

from __future__ import annotations

from collections.abc import Callable

from .base import Prox

__all__ = ["zero", "custom", "as_prox"]


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
