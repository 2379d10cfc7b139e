from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Rule:
    """One optimizer's update, written once.

    ``update(p, g, *states, step, **hypers, **flags) -> (p_new, *states_new)`` is pure: it never writes
    its inputs. ``p``/``g``/states are tensors of the parameter's dtype (states are widened by the
    engine before the call and rounded back after), ``hypers`` are 0-d tensors (so changing them never
    recompiles), ``flags`` are Python bools (each value is its own compiled kernel), ``step`` is the
    1-based step count as a 0-d tensor (``None`` for rules that do not use it).

    ``update_foreach_`` optionally restates the same math in place with ``torch._foreach_*`` ops on lists
    of tensors and Python-float hyperparameters: the fast path for small parameter sets, where kernel
    launch overhead, not bandwidth, is the cost. It handles plain steps only (state in the parameter's
    dtype, no GradScaler); the engine falls back to ``update`` otherwise.

    ``update_lists_`` optionally restates it in place on lists of tensors whose gradients lie outside the
    arena (state in the parameter's dtype; ``found_inf`` but no ``grad_scale``): with it, the engine leaves
    large fresh gradients where autograd made them instead of copying each into its slot.
    """

    name: str
    states: tuple[str, ...]
    hypers: tuple[str, ...]
    update: Callable
    flags: tuple[str, ...] = ()
    uses_step: bool = False
    update_foreach_: Callable | None = field(default=None, compare=False)
    update_lists_: Callable | None = field(default=None, compare=False)
