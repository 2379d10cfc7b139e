"""The checks of :func:`nesterov.minimize`'s arguments: each bad one raises a TypeError or ValueError naming it
and the values it accepts, before any evaluation of ``fun``."""

from __future__ import annotations

import math
import numbers

import torch

__all__ = ["METHODS", "RESTARTS", "check_positive_or_tensor", "validate"]

METHODS = ("nag", "gd", "mfista")
RESTARTS = ("gradient", "function", None)


def check_positive_or_tensor(value, name, B, dtype, device, *, allow_zero):
    """A finite number (> 0, or >= 0 with allow_zero) or, when batched, a tensor of shape (B,)."""
    rel = ">= 0" if allow_zero else "> 0"
    if isinstance(value, torch.Tensor):
        if value.dim() > 1 or value.numel() not in (1, B):
            raise ValueError(f"{name} must be a number or a tensor of shape ({B},) (one per problem), "
                             f"got shape {tuple(value.shape)}")
        v = value.detach().to(device=device, dtype=dtype).reshape(-1).expand(B).clone()
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    else:
        if not math.isfinite(float(value)) or (float(value) < 0 if allow_zero else float(value) <= 0):
            raise ValueError(f"{name} must be finite and {rel}, got {value!r}")
        return torch.full((B,), float(value), dtype=dtype, device=device)
    bad = ~torch.isfinite(v) | ((v < 0) if allow_zero else (v <= 0))
    if bool(bad.any()):
        raise ValueError(f"{name} must be finite and {rel} for every problem")
    return v


def validate(fun, x0, method, grad, L, mu, restart, line_search, tol, max_iter, callback, batched):
    if not callable(fun):
        raise TypeError(f"fun must be callable as fun(x) -> scalar tensor, got {type(fun).__name__}")
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if grad is not None and not callable(grad):
        raise TypeError(f"grad must be None or callable as grad(x) -> tensor, got {type(grad).__name__}")
    if restart not in RESTARTS:
        raise ValueError(f"restart must be one of {RESTARTS}, got {restart!r}")
    if not isinstance(line_search, bool):
        raise TypeError(f"line_search must be True or False, got {line_search!r}")
    if not isinstance(batched, bool):
        raise TypeError(f"batched must be True or False, got {batched!r}")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise TypeError(f"tol must be a real number >= 0, got {tol!r}")
    if not (float(tol) >= 0 and math.isfinite(float(tol))):
        raise ValueError(f"tol must be finite and >= 0, got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral):
        raise TypeError(f"max_iter must be an integer >= 0, got {max_iter!r}")
    if max_iter < 0:
        raise ValueError(f"max_iter must be >= 0, got {max_iter!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be None or callable, got {type(callback).__name__}")
    if L is None and not line_search:
        raise ValueError("L is None and line_search=False: give L (the Lipschitz constant of grad f) or "
                         "allow the backtracking line search")

    # x0: a floating tensor, finite. An array-like of integers becomes the default float dtype; an integer
    # tensor is refused: its dtype is the user's choice, and a silent cast would meet their own float64 data in
    # fun as a dtype mismatch deep inside it.
    if not isinstance(x0, torch.Tensor):
        try:
            x0 = torch.as_tensor(x0)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"x0 must be a tensor or array-like of numbers: {e}") from None
        if not (x0.is_floating_point() or x0.is_complex()):
            x0 = x0.to(torch.get_default_dtype())
    x0 = x0.detach()
    if x0.is_complex():
        raise TypeError("x0 must be real; complex tensors are not supported")
    if not x0.is_floating_point():
        raise TypeError(f"x0 must be a floating-point tensor (float32 or float64, the dtype the iterates keep), got "
                        f"{x0.dtype}: pass x0.to(torch.float64) or x0.float()")
    if x0.numel() == 0:
        raise ValueError(f"x0 is empty (shape {tuple(x0.shape)})")
    if batched and x0.dim() < 1:
        raise ValueError("batched=True needs x0 with a leading batch dimension, got a 0-d tensor")
    if not bool(torch.isfinite(x0).all()):
        raise ValueError("x0 contains NaN or inf")
    return x0.clone()
