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

from .argument import _Custom, _Zero, as_prox, custom, zero
from .base import Prox
from .groups import _GroupL1, group_l1
from .penalties import _L1, _ElasticNet, elastic_net, l1
from .sets import _Box, _L2Ball, _NonNeg, box, l2_ball, nonneg

__all__ = ["Prox", "custom", "l1", "nonneg", "box", "l2_ball", "group_l1", "elastic_net", "zero"]

# This module once defined every operator: their classes and as_prox stay importable from here (minimize's
# as_prox, the oracle's _Custom, and operators pickled under these names). The operators now live by kind: base (the Prox
# interface, shared checks), penalties (l1, elastic_net), groups (group_l1), sets (nonneg, box, l2_ball) and
# argument (zero, custom, and as_prox for minimize's prox=).
_DEFINED_HERE_BEFORE = (as_prox, _Custom, _Zero, _L1, _ElasticNet, _GroupL1, _NonNeg, _Box, _L2Ball)
