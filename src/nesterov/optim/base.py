"""``RuleOptimizer``: the torch.optim front end shared by every rule of nesterov.

A subclass names its :class:`~nesterov.rules.base.Rule` and validates its hyperparameters; this class
does the rest on top of ``torch.optim.Optimizer`` — param groups, hooks, ``zero_grad``, ``state_dict``
and ``load_state_dict`` are torch's own. Parameters and gradients stay the user's: a step reads
``p.grad``, writes ``p`` in place, and keeps its state per parameter in ``self.state[p]`` in torch's
layout; nothing is re-pointed and no hook is registered.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.distributed.tensor import DTensor

from nesterov.engine import compat
from nesterov.engine import kernels as K
from nesterov.engine.matrices import shard_like
from nesterov.engine.precision import mix_seed
from nesterov.optim.validate import dtype_names
from nesterov.rules.base import Rule

STATE_DTYPES = (None, torch.float32, torch.bfloat16, torch.float16, torch.float64)

# Group keys a state_dict from another version of torch or nesterov may lack; filled from the defaults
# on load, as torch's own optimizers fill them in ``__setstate__``.
OPTIONAL_KEYS = ("maximize", "foreach", "differentiable", "fused", "capturable", "decoupled_weight_decay", "use_muon",
                 "nesterov", "momentum_decay", "no_prox", "exclude_1d")


def scalar_dtype() -> torch.dtype:
    """The dtype torch.optim gives its 0-d ``step`` tensors."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def local(t: torch.Tensor) -> torch.Tensor:
    """The tensor a kernel writes: a DTensor's local shard, a complex tensor's real view, else ``t``."""
    if isinstance(t, DTensor):
        t = t.to_local()
    return torch.view_as_real(t) if t.is_complex() else t


def storage_ptr(p: torch.Tensor) -> int:
    """Where ``p``'s data lives (a DTensor's local shard's): changes when ``p.data`` is replaced."""
    return p.to_local().data_ptr() if isinstance(p, DTensor) else p.data_ptr()


@dataclass
class _Bucket:
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
    steps: list[torch.Tensor]  # the 0-d step counters, when there are any
    salts: list[int] | None  # each member's stochastic-rounding stream, when its state is narrower
    plain: bool  # no DTensor, no complex: the gradient is the tensor the kernel reads
    gathered: bool  # a per-tensor rule on DTensor shards: stepped whole on every rank

    @classmethod
    def of(cls, rule: Rule, members, states, salts: dict, seeded: bool) -> "_Bucket":
        keep = [i for i, p in enumerate(members) if p.numel() > 0]
        return cls(
            members=members, states=states, keep=keep,
            params=[local(members[i]) for i in keep],
            state_lists=[[local(states[i][name]) for i in keep] for name in rule.states],
            matrix=[members[i].dim() > 1 for i in keep],
            strides=[local(members[i]).stride() if K.dense(local(members[i])) else None for i in keep],
            compilable=[members[i].numel() >= 2 and K.dense(local(members[i])) for i in keep],
            steps=[s["step"] for s in states] if "step" in states[0] else [],
            salts=[salts[id(p)] for p in members] if seeded else None,
            plain=not any(isinstance(p, DTensor) or p.is_complex() for p in members),
            gathered=rule.per_tensor and isinstance(members[0], DTensor),
        )


class RuleOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` whose step is ``rule`` run by the multi-tensor engine.

    Args:
        backend: ``"auto"`` (default), ``"compile"``, ``"foreach"``, ``"torch"`` (torch's own fused kernel,
            where the rule has one) or ``"eager"`` (the rule as written, the reference). See
            :mod:`nesterov.engine.kernels`.
        state_dtype: dtype of the optimizer state; ``None`` keeps the parameter's dtype, ``torch.bfloat16``
            halves state memory and traffic, written with stochastic rounding.
    """

    rule: Rule

    def __init__(self, params, defaults: dict, *, backend: str = "auto", state_dtype=None):
        if backend not in K.BACKENDS:
            raise ValueError(f"backend must be one of {K.BACKENDS}, got {backend!r}")
        if backend == "torch" and self.rule.torch_kernel is None:
            raise ValueError(f"backend='torch': {type(self).__name__} has no torch kernel (torch has no fused "
                             f"kernel computing this rule); use 'auto', 'compile', 'foreach' or 'eager'")
        if state_dtype not in STATE_DTYPES:
            raise ValueError(f"state_dtype must be one of {dtype_names(STATE_DTYPES)}; got {state_dtype!r}")
        self.check_hypers(defaults, where="")
        self.backend = backend
        self.state_dtype = state_dtype
        self._reset_caches()
        super().__init__(params, defaults)

    # -- what a subclass provides ------------------------------------------------------------------
    def check_hypers(self, group: dict, where: str) -> None:
        """Raise ValueError/TypeError naming the bad hyperparameter (``where`` says which group)."""
        raise NotImplementedError

    def rule_for(self, group: dict) -> Rule:
        return self.rule

    # -- pickling: torch's __getstate__ keeps defaults, state and param_groups; ours adds the engine's
    def __getstate__(self):
        return {**super().__getstate__(), "backend": self.backend, "state_dtype": self.state_dtype}

    def __setstate__(self, state):
        super().__setstate__(state)
        self.__dict__.setdefault("backend", "auto")
        self.__dict__.setdefault("state_dtype", None)
        for group in self.param_groups:  # older state: newer keys get their defaults, as torch's optimizers do
            for key, value in self.defaults.items():
                group.setdefault(key, value)
        self._reset_caches()

    def _reset_caches(self) -> None:
        self._tensor_cache: dict = {}  # (group, device, dtype, kind) -> (values, 0-d tensors) for compiled kernels
        self._plans: dict[int, tuple] = {}  # group index -> (signature, buckets): see step_group
        self._salts: dict[int, int] | None = None  # id(param) -> its position: the rounding stream of each
        self.backends_seen: set[str] = set()  # which kernels have stepped (``nesterov bench`` reports it)
        self._foreach_steps: dict[tuple, int] = {}  # compile key -> steps taken on foreach before compiling

    # -- param groups --------------------------------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        super().add_param_group(param_group)  # torch's: generators, named parameters, defaults, duplicates
        try:
            self.check_group(self.param_groups[-1], f" (param group {len(self.param_groups) - 1})")
        except BaseException:
            self.param_groups.pop()
            raise
        self._salts, self._plans = None, {}

    def check_group(self, group: dict, where: str) -> None:
        """Everything a new group can be refused for: hyperparameters, tensor kinds, backend support."""
        self.check_hypers(group, where)
        for k, p in enumerate(group["params"]):
            if p.layout != torch.strided:
                raise ValueError(f"params{where}[{k}]: {p.layout} parameters are not supported (dense tensors only)")
            if not (p.is_floating_point() or p.is_complex()):
                raise TypeError(f"params{where}[{k}]: an optimizer needs floating-point parameters, got {p.dtype}")
            if p.is_complex() and self.state_dtype is not None:
                raise ValueError(f"state_dtype={self.state_dtype} is for real parameters; params{where}[{k}] is "
                                 f"{p.dtype}")
            if self.backend == "torch":
                real = p.real.dtype if p.is_complex() else p.dtype
                if not self.rule.torch_kernel_supports(p.device, real) or self.state_dtype not in (None, p.dtype):
                    raise ValueError(f"backend='torch' cannot step params{where}[{k}] ({real} on {p.device.type}, "
                                     f"state_dtype={self.state_dtype}): torch's kernel is not exact there; use "
                                     f"backend='auto'")

    # -- load_state_dict: refuse before anything changes -------------------------------------------------
    def load_state_dict(self, state_dict: dict) -> None:
        """torch's ``load_state_dict`` (ours, or the matching torch optimizer's), checked first: a dict that
        does not fit — another optimizer's, other groups, bad values or state shapes — changes nothing."""
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups' (an optimizer state_dict)")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(saved_groups)} param groups, this {type(self).__name__} has "
                             f"{len(self.param_groups)}")
        index_to_param = {}
        for i, (ours, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(ours["params"]) != len(saved["params"]):
                raise ValueError(f"state_dict param group {i} has {len(saved['params'])} params, this optimizer's "
                                 f"has {len(ours['params'])}")
            missing = [k for k in ours if k not in saved and k not in OPTIONAL_KEYS and k not in ("params", "param_names")]
            if missing:
                raise ValueError(f"state_dict param group {i} has no {missing}: it is another optimizer's state, "
                                 f"not {type(self).__name__}'s")
            self.check_hypers({**self.defaults, **{k: v for k, v in saved.items() if k != "params"}},
                              f" (state_dict param group {i})")
            index_to_param.update(zip(saved["params"], ours["params"]))
        for index, entry in state_dict["state"].items():
            p = index_to_param.get(index)
            if p is None:
                raise ValueError(f"state_dict has state for param index {index!r}, which no group lists")
            for name, value in entry.items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != p.shape:
                    raise ValueError(f"state_dict state[{index}][{name!r}] has shape {tuple(value.shape)}, its "
                                     f"parameter {tuple(p.shape)}")
        super().load_state_dict(state_dict)

    # -- step ----------------------------------------------------------------------------------------
    def step(self, closure=None):
        """Perform one optimisation step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._step_groups()
        return loss

    @compat.disable_dynamo  # inside a torch.compile'd training step: one graph break, then this as always
    @torch.no_grad()
    def _step_groups(self) -> None:
        plans = []
        for index, group in enumerate(self.param_groups):  # everything that can refuse the step comes first
            where = f" (param group {index})"
            self.check_hypers(group, where)
            params = []
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if g.layout != torch.strided:
                    raise ValueError(f"{type(self).__name__}: {g.layout} gradients are not supported{where}; use "
                                     f"torch.optim.SparseAdam or a dense embedding")
                if g.shape != p.shape:
                    raise ValueError(f"a gradient of shape {tuple(g.shape)} for a parameter of shape "
                                     f"{tuple(p.shape)}{where}")
                params.append(p)
            plans.append((index, group, params))
        for index, group, params in plans:
            if params:
                self.step_group(index, group, params)

    def step_group(self, index: int, group: dict, params: list[torch.Tensor]) -> None:
        """Step the parameters of one group that have a gradient.

        What does not change from step to step — which parameters step together (same device, dtype and
        step count), their state tensors and layouts — is planned once and reused while the same
        parameters have gradients, their storage stays where it was and the state is not replaced (a
        load_state_dict, a model cast); only the gradients are read afresh each step.
        """
        rule = self.rule_for(group)
        hypers, flags = rule.hypers_of(group), rule.flags_of(group)
        signature = (id(self.state), tuple(map(id, params)), tuple(map(storage_ptr, params)))
        plan = self._plans.get(index)
        if plan is None or plan[0] != signature:
            plan = self._plans[index] = (signature, self._plan(index, rule, params))
        for bucket in plan[1]:
            self._step_bucket(index, rule, hypers, flags, bucket)

    def _plan(self, index: int, rule: Rule, params: list[torch.Tensor]) -> list[_Bucket]:
        buckets: dict = {}
        for p in params:
            state = self.state[p]
            self._fit_state(rule, p, state)
            key = (p.device, p.dtype, isinstance(p, DTensor), self._step_key(rule, state))
            buckets.setdefault(key, []).append(p)
        salts = self._salt_map()
        return [_Bucket.of(rule, members, [self.state[p] for p in members], salts,
                           seeded=self.state_dtype is not None and self.state_dtype != members[0].dtype)
                for members in buckets.values()]

    def _fit_state(self, rule: Rule, p: torch.Tensor, state: dict) -> None:
        """Create what is missing in ``state[p]`` and bring loaded or stale tensors to the parameter's device,
        dtype and memory layout (the state is the optimizer's own; the parameter is never touched)."""
        dtype = self.state_dtype or p.dtype
        for name in rule.states:
            s = state.get(name)
            if s is None:
                state[name] = torch.zeros_like(p, dtype=dtype)
            elif s.dtype != dtype or s.device != p.device or (s.stride() != p.stride() and s.dim() > 0):
                state[name] = torch.empty_like(p, dtype=dtype).copy_(s)
        if rule.uses_step or self.state_dtype is not None:
            step = state.get("step")
            if not isinstance(step, torch.Tensor):
                state["step"] = torch.tensor(float(step or 0), dtype=scalar_dtype())
        for name, value in (rule.init_scalars() if rule.scalars else {}).items():
            old = state.get(name)
            if old is None:
                state[name] = value
            elif not isinstance(old, torch.Tensor) or old.dtype != value.dtype:
                # A float from an old checkpoint, or a tensor that torch's load_state_dict cast to the
                # parameter's dtype: back to the dtype the running product is kept in (losslessly: it was
                # saved from that dtype), so that a resumed run continues bit for bit.
                state[name] = torch.as_tensor(old).to(value.dtype).clone()

    @staticmethod
    def _step_key(rule: Rule, state: dict):
        """What the parameters of one kernel call must share: the step count and running scalars."""
        if not rule.uses_step:
            return None
        return (float(state["step"]), *(float(state[name]) for name in rule.scalars))

    def _step_bucket(self, index: int, rule: Rule, hypers: dict, flags: dict, bucket: _Bucket) -> None:
        derived = {}
        if bucket.steps:
            if rule.uses_step:
                first = bucket.states[0]
                t = float(first["step"]) + 1
                if rule.advance is not None:
                    new, derived = rule.advance(t, {n: first[n] for n in rule.scalars}, **hypers)
                    for name, value in new.items():
                        torch._foreach_copy_([s[name] for s in bucket.states], [value] * len(bucket.states))
            torch._foreach_add_(bucket.steps, 1.0)
        seeds = None
        if bucket.salts is not None:
            seeds = [mix_seed(int(step), salt) for step, salt in zip(bucket.steps, bucket.salts)]
        if bucket.gathered:
            self._step_gathered(rule, bucket.members, bucket.states, hypers, derived, flags, seeds)
            return
        grads = [bucket.members[i].grad for i in bucket.keep]
        if not bucket.plain:
            grads = [local(g) for g in grads]
        aligned = [st is not None and g.stride() == st for g, st in zip(grads, bucket.strides)]
        batch = K.Batch(bucket.params, grads, bucket.state_lists, bucket.matrix,
                        None if seeds is None else [seeds[i] for i in bucket.keep], aligned, bucket.compilable)
        if batch.params:
            self._run(index, rule, batch, hypers, derived, flags)

    def _run(self, index: int, rule: Rule, batch: K.Batch, hypers: dict, derived: dict, flags: dict) -> None:
        backend = self._backend_now(rule, batch, hypers, derived, flags)
        self.backends_seen.add(backend)
        if backend == "torch":
            fused, rest = batch.split(batch.aligned)  # torch's fused kernels assume one layout per tensor
            if fused.params:
                K.run_torch(rule, fused, hypers, derived, flags)
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
                K.run_compiled(rule, compiled, self._tensors((index, "hypers", p.device, p.dtype), hypers, p),
                               self._tensors((index, "derived", p.device, p.dtype), derived, p), flags)

    def _backend_now(self, rule: Rule, batch: K.Batch, hypers: dict, derived: dict, flags: dict) -> str:
        """The backend for this call; ``auto`` steps on foreach while its compiled kernel is being built."""
        if self.backend != "auto":
            return self.backend
        p = batch.params[0]
        if rule.torch_kernel is not None and batch.seeds is None and batch.states[0][0].dtype == p.dtype \
                and rule.torch_kernel_supports(p.device, p.dtype):
            return "torch"
        if p.device.type == "cpu" and batch.numel < K.AUTO_COMPILE_MIN_NUMEL:
            return "foreach"
        key = K.compile_key(rule, batch, flags)
        if K.COMPILED.is_ready(key):
            return "compile"
        if key in K.COMPILED.errors:
            K.warn_once(f"nesterov: torch.compile failed for {key} ({K.COMPILED.errors[key]!r}); stepping with "
                        f"the foreach backend")
        elif self._foreach_steps.setdefault(key, 0) < K.AUTO_COMPILE_AFTER_STEPS:
            self._foreach_steps[key] += 1
        else:
            compiled, _ = self._compilable(batch)
            if compiled.params:
                p = compiled.params[0]
                zeros = {k: torch.zeros((), dtype=self._hyper_dtype(p), device=p.device) for k in (*hypers, *derived)}
                K.COMPILED.warm_in_background(key, K.warm_example(
                    rule, compiled, {k: zeros[k] for k in hypers}, {k: zeros[k] for k in derived}, flags))
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
        cached = self._tensor_cache.get(key)
        if cached is None or cached[1].keys() != values.keys():
            cached = self._tensor_cache[key] = ({}, {k: torch.zeros((), dtype=self._hyper_dtype(p), device=p.device)
                                                     for k in values})
        seen, tensors = cached
        for k, v in values.items():
            if seen.get(k) != v:
                tensors[k].fill_(v)
                seen[k] = v
        return tensors

    def _salt_map(self) -> dict[int, int]:
        """Each parameter's position in the optimizer: its own stream of stochastic-rounding bits."""
        if self._salts is None:
            self._salts = {id(p): k for k, p in enumerate(p for g in self.param_groups for p in g["params"])}
        return self._salts

    def _step_gathered(self, rule, members, states, hypers, derived, flags, seeds) -> None:
        """Per-tensor rules on FSDP2 shards: a trust ratio needs the whole tensor's norms, so each tensor is
        gathered, stepped whole on every rank, and each rank keeps its shard."""
        for i, (p, state) in enumerate(zip(members, states)):
            whole = [t.full_tensor() for t in (p, p.grad, *(state[n] for n in rule.states))]
            K.apply_one(rule, whole[0], whole[1], whole[2:], hypers, derived, flags,
                        None if seeds is None else seeds[i], p.dim() > 1)
            for t, new in zip((p, *(state[n] for n in rule.states)), (whole[0], *whole[2:])):
                t.to_local().copy_(shard_like(new, t).to_local())

