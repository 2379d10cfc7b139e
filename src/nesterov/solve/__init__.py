"""Classical accelerated convex solver: :func:`minimize` (FISTA / Nesterov, restart, backtracking, batched)
and the proximal operators in :mod:`nesterov.solve.prox` (exposed as ``nesterov.prox``)."""

from . import prox
from .minimize import minimize
from .result import STATUS, OptimizeResult

__all__ = ["minimize", "OptimizeResult", "STATUS", "prox"]
