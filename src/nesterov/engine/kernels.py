"""The backends: ways to run one rule's step over lists of the user's tensors.

A :class:`Batch` is what one call steps: parameters (the user's tensors, or real views of complex ones),
their gradients (read, never written) and the optimizer's state tensors, all of one device and dtype
and one step count.

- ``eager``: ``rule.update`` one tensor at a time, as written — the reference every other backend is
  tested against (it materialises temporaries: the slowest).
- ``foreach``: the rule's in-place ``torch._foreach_*`` restatement, a handful of kernels per batch;
  the fastest where launches cost more than arithmetic (small models), and what ``auto`` steps with while
  the compiled kernel is being built. Low-precision state is widened, stepped, and rounded back.
- ``compile``: ``rule.update`` through ``torch.compile`` over chunks of flattened tensors
  (:mod:`nesterov.engine.compiled`).
- ``torch``: one of torch's own fused kernels where it computes exactly the rule (NAG: fused SGD).
- ``cpp``: the rule's hand-written C++ kernel for CPU, where it has one (LARS, LAMB:
  :mod:`nesterov.engine.cpp_kernels`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch

from nesterov.engine.precision import round_to
from nesterov.rules.base import Rule

BACKENDS = ("auto", "compile", "foreach", "torch", "cpp", "eager")

# Below this many elements per batch, ``auto`` on CPU stays on foreach: a compiled call has a fixed cost
# of tens of µs, more than the few foreach kernels it would replace on small tensors.
AUTO_COMPILE_MIN_NUMEL = int(os.environ.get("NESTEROV_AUTO_COMPILE_MIN_NUMEL", 1 << 18))

# ``auto`` starts a background compile once a group has taken this many foreach steps. A compile costs 20-60 s
# of CPU on this 2-core machine and slows the steps taken beside it ~3x (NAdamW's first 150 steps on
# ResNet-50 shapes: 36 s with a compile from step 10, against torch NAdam's 12.5 s), so a short run is
# better off without one; and a script that ends first never waits for one at exit (the interpreter
# waits for a running compile, since killing it mid-way can abort the process).
AUTO_COMPILE_AFTER_STEPS = int(os.environ.get("NESTEROV_AUTO_COMPILE_AFTER_STEPS", 200))

@dataclass
class Batch:
    params: list[torch.Tensor]
    grads: list[torch.Tensor]
    states: list[list[torch.Tensor]]  # one list per name in ``rule.states``
    matrix: list[bool]  # per tensor: more than one dimension (per-tensor rules read it)
    seeds: list[int] | None  # per tensor: the stochastic-rounding seed, when a state is narrower than its param
    aligned: list[bool]  # per tensor: dense, its gradient and states laid out like it (fused kernels need it)
    compilable: list[bool]  # per tensor: what the compiled kernel takes (dense, two or more elements)
    flat_params: list | None = None  # per tensor: :func:`flat` of the param where compilable (else None)
    flat_states: list[list] | None = None  # the same for each state

    @property
    def numel(self) -> int:
        return sum(p.numel() for p in self.params)

    def split(self, mask: list[bool]) -> tuple["Batch", "Batch"]:
        """(the tensors where ``mask`` is true, the others)."""
        if all(mask):
            return self, Batch([], [], [[] for _ in self.states], [], None, [], [])
        parts = ([i for i, m in enumerate(mask) if m], [i for i, m in enumerate(mask) if not m])

        def pick(ix):
            return Batch([self.params[i] for i in ix], [self.grads[i] for i in ix],
                         [[s[i] for i in ix] for s in self.states], [self.matrix[i] for i in ix],
                         None if self.seeds is None else [self.seeds[i] for i in ix],
                         [self.aligned[i] for i in ix], [self.compilable[i] for i in ix],
                         None if self.flat_params is None else [self.flat_params[i] for i in ix],
                         None if self.flat_states is None else [[s[i] for i in ix] for s in self.flat_states])

        return pick(parts[0]), pick(parts[1])


def apply_one(rule: Rule, p, g, states, hypers, derived, flags, seed, matrix) -> None:
    """One tensor's step, written back in place: the rule as written, states widened to the parameter's
    dtype and rounded back to their own (stochastically into bf16, with ``seed``)."""
    wide = [s.to(p.dtype) for s in states]
    extra = {"matrix": matrix} if rule.per_tensor else {}
    new_p, *new_states = rule.update(p, g, *wide, **hypers, **derived, **flags, **extra)
    p.copy_(new_p)
    for s, new in zip(states, new_states):
        s.copy_(round_to(new, s.dtype, seed))


def run_eager(rule: Rule, batch: Batch, hypers: dict, derived: dict, flags: dict) -> None:
    for i, (p, g) in enumerate(zip(batch.params, batch.grads)):
        seed = None if batch.seeds is None else batch.seeds[i]
        apply_one(rule, p, g, [s[i] for s in batch.states], hypers, derived, flags, seed, batch.matrix[i])


def run_foreach(rule: Rule, batch: Batch, hypers: dict, derived: dict, flags: dict) -> None:
    dtype = batch.params[0].dtype
    wide = [[s.to(dtype) for s in states] if states[0].dtype != dtype else states for states in batch.states]
    extra = {"matrix": batch.matrix} if rule.per_tensor else {}
    rule.foreach(batch.params, batch.grads, *wide, **hypers, **derived, **flags, **extra)
    for states, widened in zip(batch.states, wide):
        if widened is not states:
            for i, (s, w) in enumerate(zip(states, widened)):
                s.copy_(round_to(w, s.dtype, batch.seeds[i]))


def run_torch(rule: Rule, batch: Batch, hypers: dict, derived: dict, flags: dict) -> None:
    rule.torch_kernel(batch.params, batch.grads, *batch.states, **hypers, **flags)


def flat(t: torch.Tensor) -> torch.Tensor:
    """A dense tensor as a 1-D tensor over the same memory, in memory order (contiguous, channels-last, any
    permutation). Detached, so it is not a view of ``t`` to dynamo: guards on a view's base (its shape, its
    ``requires_grad``) would recompile the kernel for every model. A 1-D tensor that is no view and needs no
    grad (a bias's gradient) is already that, and is returned as it is (two fewer ops for most tensors)."""
    if t.dim() == 1 and t.is_contiguous() and not t.requires_grad and t._base is None:
        return t
    return (t.view(-1) if t.is_contiguous() else t.as_strided((t.numel(),), (1,))).detach()


def dense(t: torch.Tensor) -> bool:
    """Whether ``t``'s elements fill ``numel`` consecutive slots (so that :func:`flat` is a view of all of it)."""
    expected = 1
    for stride, size in sorted((st, s) for s, st in zip(t.shape, t.stride()) if s != 1):
        if stride != expected:
            return False
        expected *= size
    return True


_warned: set[str] = set()


def warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)
