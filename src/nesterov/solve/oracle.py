"""The problem as :func:`nesterov.minimize`'s iteration sees it: ``f``, ``∇f``, ``prox`` and ``g`` on a batch
``X`` of shape ``(B, ...)`` (one problem is a batch of one), each returning per-problem values of shape ``(B,)``.

Here the user's functions are called as they were written (one problem without ``batched=True``; a custom prox
sees one problem and a 0-d step), what they return is checked (an error names the function, the shape it
should have and the iteration), and the evaluations are counted (``nfev``, ``ngev``).
"""

from __future__ import annotations

import numbers

import torch

from .prox import _Custom

__all__ = ["Oracle"]


class Oracle:
    """``fun`` (and ``grad``), and the proximal operator ``op``, over batched ``X``."""

    def __init__(self, fun, grad, op, *, batched: bool, B: int, bshape: tuple, dtype, device):
        self.fun, self.grad, self.op = fun, grad, op
        self.custom = isinstance(op, _Custom)
        self.batched, self.B, self.bshape = batched, B, bshape
        self.batch_dims = 1 if batched else 0
        self.dtype, self.device = dtype, device
        self.nfev = self.ngev = 0

    def _check_value(self, v, where):
        B, dtype = self.B, self.dtype
        if not isinstance(v, torch.Tensor):
            if self.grad is not None and isinstance(v, numbers.Real):
                v = torch.tensor(float(v), dtype=dtype, device=self.device)
            else:
                raise TypeError(f"fun must return a tensor (autograd needs it), got {type(v).__name__} at {where}")
        if self.batched:
            if v.shape != (B,):
                raise ValueError(f"fun must return shape ({B},) (one value per problem) with batched=True, got "
                                 f"shape {tuple(v.shape)} at {where}")
        elif v.numel() != 1:
            raise ValueError(f"fun must return a scalar (one element), got shape {tuple(v.shape)} at {where}; "
                             "for many independent problems use batched=True")
        return v.reshape(B).to(dtype)

    def _call_fun(self, X):
        return self.fun(X) if self.batched else self.fun(X[0])

    def value(self, X, where):
        """f(X), per problem."""
        self.nfev += 1
        with torch.no_grad():
            return self._check_value(self._call_fun(X), where)

    def value_grad(self, X, where):
        """(f(X), ∇f(X)): by autograd, or by ``grad`` when given."""
        self.nfev += 1
        self.ngev += 1
        grad, batched, batch_dims = self.grad, self.batched, self.batch_dims
        if grad is None:
            Xr = X.detach().requires_grad_(True)
            with torch.enable_grad():
                v = self._call_fun(Xr)
                v = self._check_value(v, where)
                if not v.requires_grad:
                    raise TypeError("fun's output does not depend on x through autograd (did it leave torch, "
                                    "or run under no_grad?); pass grad= or keep fun differentiable")
                (G,) = torch.autograd.grad(v.sum(), Xr, allow_unused=True)
            if G is None:
                G = torch.zeros_like(X)
            return v.detach(), G.detach()
        with torch.no_grad():
            v = self._check_value(self._call_fun(X), where)
            G = grad(X) if batched else grad(X[0])
            if not isinstance(G, torch.Tensor):
                raise TypeError(f"grad must return a tensor, got {type(G).__name__}")
            G = G if batched else G.unsqueeze(0)
            if G.shape != X.shape:
                raise ValueError(f"grad must return the shape of x {tuple(X.shape[1 - batch_dims:])}, got "
                                 f"{tuple(G.shape[1 - batch_dims:])}")
        return v, G.to(self.dtype)

    def prox(self, V, s):
        """prox_{s g}(V), ``s`` of shape (B,)."""
        op, batch_dims = self.op, self.batch_dims
        S = s.reshape(self.bshape)
        with torch.no_grad():
            if self.batched or not self.custom:
                P = op.prox(V, S, batch_dims=1)
            else:   # a user function sees one problem and a 0-d step
                P = op.prox(V[0], S.reshape(()), batch_dims=0)
                P = P.unsqueeze(0) if isinstance(P, torch.Tensor) else P
        if not isinstance(P, torch.Tensor):
            raise TypeError(f"prox must return a tensor, got {type(P).__name__}")
        if P.shape != V.shape:
            raise ValueError(f"prox returned shape {tuple(P.shape[1 - batch_dims:])}, expected the shape of x "
                             f"{tuple(V.shape[1 - batch_dims:])}")
        return P.to(self.dtype)

    def g_value(self, X):
        """g(X), per problem (zeros when the operator has no value function)."""
        op, B, dtype, device = self.op, self.B, self.dtype, self.device
        if not op.has_value:
            return torch.zeros(B, dtype=dtype, device=device)
        with torch.no_grad():
            if self.batched or not self.custom:
                v = op.value(X, batch_dims=1)
            else:
                v = op.value(X[0], batch_dims=0)
        if not isinstance(v, torch.Tensor):
            v = torch.as_tensor(v, dtype=dtype, device=device)
        if v.numel() != B:
            raise ValueError(f"prox value g(x) must return {'shape (%d,)' % B if self.batched else 'a scalar'}, got "
                             f"shape {tuple(v.shape)}")
        return v.reshape(B).to(dtype)
