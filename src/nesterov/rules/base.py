from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Rule:
    """One optimizer's update, written once, and the restatements declared beside it.

    ``update(p, g, *states, **hypers, **derived, **flags) -> (p_new, *states_new)`` is the readable
    reference: pure (it never writes its inputs), one tensor at a time, states widened to the
    parameter's dtype. ``hypers`` are the group's hyperparameters (0-d tensors under ``compile``, so a
    scheduler never recompiles; Python floats elsewhere), ``derived`` the per-step scalars ``advance``
    computes, ``flags`` Python bools. Rules with ``per_tensor`` also get ``matrix`` (whether the
    parameter has more than one dimension, a 0-d bool tensor).

    ``hypers_of(group) -> {name: float}`` maps a param group to the rule's hyperparameters (e.g. betas
    to their complements), without writing into the group.

    ``uses_step``: a per-parameter ``step`` count in ``state[p]`` (torch's layout, a 0-d float32 CPU
    tensor). ``scalars``: further running 0-d states (torch NAdam's ``mu_product``), created by
    ``init_scalars()``. ``advance(t, scalars, **hypers) -> (new_scalars, derived)`` moves them to step
    ``t`` and computes the per-step scalars in float64 on the host, once for every parameter that shares
    the same step (as torch does with Python floats).

    ``group_scalars``: running scalars kept in the param group itself (schedule-free's step count, largest lr
    and weight sum, where its reference keeps them), moved once per step of a group with gradients by
    ``advance_group(scalars, **hypers) -> (new_scalars, derived)``; its per-step scalars join ``advance``'s.
    ``states_from_param``: the states that start as a copy of the parameter rather than as zeros.

    Restatements, each tied to ``update`` by ``tests/test_restatements.py`` for every flag combination:
    ``foreach`` (in place over lists of tensors with Python-float hyperparameters, states in the
    parameter's dtype), ``torch_kernel`` (in place, one of torch's own fused kernels that computes
    exactly this rule, usable where ``torch_kernel_supports(device, dtype)``) and ``cpp_kernel`` (the name of a
    C++ source beside the rule, in place over dense CPU tensors: float32 or float64 with state of their dtype,
    or float32 with bf16 state; its ``Args`` struct holds ``cpp_args`` — hyperparameters, per-step scalars and
    flags — by name, as doubles; see :mod:`nesterov.engine.cpp_kernels`).
    """

    name: str
    states: tuple[str, ...]
    hypers_of: Callable[[dict], dict]
    update: Callable
    flags: tuple[str, ...] = ()
    uses_step: bool = False
    scalars: tuple[str, ...] = ()
    init_scalars: Callable | None = None
    advance: Callable | None = None
    per_tensor: bool = False
    group_scalars: tuple[str, ...] = ()
    advance_group: Callable | None = None
    states_from_param: tuple[str, ...] = ()
    foreach: Callable | None = field(default=None, compare=False)
    torch_kernel: Callable | None = field(default=None, compare=False)
    torch_kernel_supports: Callable | None = field(default=None, compare=False)
    cpp_kernel: str | None = field(default=None, compare=False)
    cpp_args: tuple[str, ...] = field(default=(), compare=False)

    def flags_of(self, group: dict) -> dict:
        return {name: bool(group[name]) for name in self.flags}
