"""Dispatch: which backend steps a batch, and the inputs each backend needs.

:class:`Bucket` holds what one group's step reads from parameters that step together (prepared once per
plan, see :meth:`nesterov.optim.base.RuleOptimizer.step_group`); :class:`Dispatcher` picks the backend for
each call (``auto``'s choice included) and keeps the 0-d hyperparameter tensors the compiled kernels read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.distributed.tensor import DTensor

from nesterov.engine import compiled as C
from nesterov.engine import cpp_kernels
from nesterov.engine import kernels as K
from nesterov.engine.matrices import shard_like
from nesterov.rules.base import Rule


def local(t: torch.Tensor) -> torch.Tensor:
    """The tensor a kernel writes: a DTensor's local shard, a complex tensor's real view, else ``t``."""
    if isinstance(t, DTensor):
        t = t.to_local()
    return torch.view_as_real(t) if t.is_complex() else t


def storage_ptr(p: torch.Tensor) -> int:
    """Where ``p``'s data lives (a DTensor's local shard's): changes when ``p.data`` is replaced."""
    return p.to_local().data_ptr() if isinstance(p, DTensor) else p.data_ptr()


@dataclass
class Bucket:
    """Parameters of one group that step together (same device, dtype and step count), with what a step
    reads from them prepared once: the tensors the kernels write and the running counters."""

    members: list[torch.Tensor]
    states: list[dict]
    keep: list[int]  # the members with elements
    params: list[torch.Tensor]  # local(p) of those
    state_lists: list[list[torch.Tensor]]  # per state name
    matrix: list[bool]
    strides: list[tuple]  # of params: a gradient with other strides is read through a copy (compile) or foreach
    compilable: list[bool]  # dense, two or more elements: the compiled kernel's (its length is then a symbol)
    flat_params: list  # K.flat of each compilable param (None elsewhere): what the compiled kernel writes
    flat_states: list[list]  # the same for each state
    steps: list[torch.Tensor]  # the 0-d step counters, when there are any
    salts: list[int] | None  # each member's stochastic-rounding stream, when its state is narrower
    plain: bool  # no DTensor, no complex: the gradient is the tensor the kernel reads
    gathered: bool  # a per-tensor rule on DTensor shards: stepped whole on every rank

    @classmethod
    def of(cls, rule: Rule, members, states, salts: dict, seeded: bool) -> "Bucket":
        keep = [i for i, p in enumerate(members) if p.numel() > 0]
        compilable = [members[i].numel() >= 2 and K.dense(local(members[i])) for i in keep]
        flats = lambda tensors: [K.flat(t) if ok else None for t, ok in zip(tensors, compilable)]  # noqa: E731
        return cls(
            members=members, states=states, keep=keep,
            params=[local(members[i]) for i in keep],
            state_lists=[[local(states[i][name]) for i in keep] for name in rule.states],
            matrix=[members[i].dim() > 1 for i in keep],
            strides=[local(members[i]).stride() if K.dense(local(members[i])) else None for i in keep],
            compilable=compilable,
            flat_params=flats([local(members[i]) for i in keep]),
            flat_states=[flats([local(states[i][name]) for i in keep]) for name in rule.states],
            steps=[s["step"] for s in states] if "step" in states[0] else [],
            salts=[salts[id(p)] for p in members] if seeded else None,
            plain=not any(isinstance(p, DTensor) or p.is_complex() for p in members),
            gathered=rule.per_tensor and isinstance(members[0], DTensor),
        )


class Dispatcher:
    """Runs batches on the optimizer's ``backend``; for ``auto``, chooses per call (see
    :mod:`nesterov.engine.kernels`)."""

    def __init__(self, backend: str):
        self.backend = backend
        self.backends_seen: set[str] = set()  # which kernels have stepped (``nesterov bench`` reports it)
        self.foreach_steps: dict[tuple, int] = {}  # compile key -> steps taken on foreach before compiling
        self.tensor_cache: dict = {}  # (group, kind, device, dtype) -> (values, 0-d tensors) for compiled kernels

    def run(self, index: int, rule: Rule, batch: K.Batch, hypers: dict, derived: dict, flags: dict) -> None:
        backend = self._backend_now(rule, batch, hypers, derived, flags)
        self.backends_seen.add(backend)
        if backend in ("torch", "cpp"):
            # torch's fused kernels and ours walk each tensor's memory in order, its gradient's and states' alike
            aligned, rest = batch.split(batch.aligned)
            if aligned.params:
                (K.run_torch if backend == "torch" else cpp_kernels.run_cpp)(rule, aligned, hypers, derived, flags)
            if rest.params:
                K.run_foreach(rule, rest, hypers, derived, flags)
        elif backend == "foreach":
            K.run_foreach(rule, batch, hypers, derived, flags)
        elif backend == "eager":
            K.run_eager(rule, batch, hypers, derived, flags)
        else:
            compiled, eager = self._compilable(batch)
            if eager.params:
                K.run_eager(rule, eager, hypers, derived, flags)
            if compiled.params:
                p = compiled.params[0]
                C.run_compiled(rule, compiled, self._tensors((index, "hypers", p.device, p.dtype), hypers, p),
                               self._tensors((index, "derived", p.device, p.dtype), derived, p), flags)

    def _backend_now(self, rule: Rule, batch: K.Batch, hypers: dict, derived: dict, flags: dict) -> str:
        """The backend for this call; ``auto`` steps on foreach while its compiled kernel is being built."""
        if self.backend != "auto":
            return self.backend
        p = batch.params[0]
        if rule.torch_kernel is not None and batch.seeds is None and batch.states[0][0].dtype == p.dtype \
                and rule.torch_kernel_supports(p.device, p.dtype):
            return "torch"
        state_dtype = batch.states[0][0].dtype
        if cpp_kernels.supports(rule, p.device, p.dtype, state_dtype) and batch.numel >= K.AUTO_COMPILE_MIN_NUMEL:
            # Built at the group's first step, which waits for it (~2 s once, then the disk cache), so a run
            # steps on one kernel from start to end. Built in the background beside foreach steps (which hold the
            # GIL through each kernel) it outlasted NAG's first 150 steps with bf16 state on ResNet-50 shapes, and
            # when it took over depended on timing. Small groups stay on foreach, as they do for the compiled rule.
            if cpp_kernels.CPP.try_get(rule, p.dtype, state_dtype) is not None:
                return "cpp"
            error = cpp_kernels.CPP.errors[(rule.name, p.dtype, state_dtype)]
            K.warn_once(f"nesterov: building the C++ kernel of {rule.name} failed ({error!r}); stepping with "
                        f"foreach, then the compiled rule")
        if p.device.type == "cpu" and batch.numel < K.AUTO_COMPILE_MIN_NUMEL:
            return "foreach"
        compiled, _ = batch.split(batch.compilable)
        if not compiled.params:
            return "foreach"
        classes = C.size_classes(compiled)
        keys = [C.compile_key(rule, part, flags, serial) for serial, part in classes]
        if all(C.COMPILED.is_ready(key) for key in keys):
            return "compile"
        failed = [key for key in keys if key in C.COMPILED.errors]
        if failed:
            K.warn_once(f"nesterov: torch.compile failed for {failed[0]} ({C.COMPILED.errors[failed[0]]!r}); "
                        f"stepping with the foreach backend")
        elif self.foreach_steps.setdefault(keys[0], 0) < K.AUTO_COMPILE_AFTER_STEPS:
            self.foreach_steps[keys[0]] += 1
        else:
            zeros = {k: torch.zeros((), dtype=self._hyper_dtype(p), device=p.device) for k in (*hypers, *derived)}
            for key, (_, part) in zip(keys, classes):
                C.COMPILED.warm_in_background(key, C.warm_example(
                    rule, part, {k: zeros[k] for k in hypers}, {k: zeros[k] for k in derived}, flags))
        return "foreach"

    @staticmethod
    def _compilable(batch: K.Batch) -> tuple[K.Batch, K.Batch]:
        """Split ``batch`` into what the compiled kernel takes and what runs eagerly, one tensor at a time.
        A gradient laid out unlike its parameter is read through a copy in the parameter's layout."""
        take, rest = batch.split(batch.compilable)
        if not all(take.aligned):
            take.grads = [g if ok else torch.empty_like(p).copy_(g)
                          for g, p, ok in zip(take.grads, take.params, take.aligned)]
        return take, rest

    @staticmethod
    def _hyper_dtype(p: torch.Tensor) -> torch.dtype:
        return torch.float64 if p.dtype == torch.float64 else torch.float32

    def _tensors(self, key: tuple, values: dict, p: torch.Tensor) -> dict:
        """``values`` as 0-d tensors on ``p``'s device, refilled only where a value changed (the compiled
        kernel reads them, so a scheduler never recompiles it)."""
        cached = self.tensor_cache.get(key)
        if cached is None or cached[1].keys() != values.keys():
            cached = self.tensor_cache[key] = ({}, {k: torch.zeros((), dtype=self._hyper_dtype(p), device=p.device)
                                                     for k in values})
        seen, tensors = cached
        for k, v in values.items():
            if seen.get(k) != v:
                tensors[k].fill_(v)
                seen[k] = v
        return tensors


def step_gathered(rule, members, states, hypers, derived, flags, seeds) -> None:
    """Per-tensor rules on FSDP2 shards: a trust ratio needs the whole tensor's norms, so each tensor is
    gathered, stepped whole on every rank, and each rank keeps its shard."""
    for i, (p, state) in enumerate(zip(members, states)):
        whole = [t.full_tensor() for t in (p, p.grad, *(state[n] for n in rule.states))]
        K.apply_one(rule, whole[0], whole[1], whole[2:], hypers, derived, flags,
                    None if seeds is None else seeds[i], p.dim() > 1)
        for t, new in zip((p, *(state[n] for n in rule.states)), (whole[0], *whole[2:])):
            t.to_local().copy_(shard_like(new, t).to_local())
