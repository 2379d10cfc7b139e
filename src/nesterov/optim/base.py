"""``RuleOptimizer``: the torch.optim front end shared by every rule of nesterov.

A subclass names its :class:`~nesterov.rules.base.Rule` and validates its hyperparameters; this class
does the rest on top of ``torch.optim.Optimizer`` — param groups, hooks, ``zero_grad``, ``state_dict``
and ``load_state_dict`` are torch's own. Parameters and gradients stay the user's: a step reads
``p.grad``, writes ``p`` in place, and keeps its state per parameter in ``self.state[p]`` in torch's
layout; nothing is re-pointed and no hook is registered.
"""

from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor

from nesterov.engine import compat, cpp_kernels
from nesterov.engine import kernels as K
from nesterov.engine.dispatch import Bucket, Dispatcher, local, step_gathered, storage_ptr
from nesterov.engine.precision import mix_seed
from nesterov.optim.validate import dtype_names
from nesterov.rules.base import Rule

STATE_DTYPES = (None, torch.float32, torch.bfloat16, torch.float16, torch.float64)

# Group keys a state_dict from another version of torch or nesterov may lack; filled from the defaults
# on load, as torch's own optimizers fill them in ``__setstate__``.
OPTIONAL_KEYS = ("maximize", "foreach", "differentiable", "fused", "capturable", "decoupled_weight_decay", "use_muon",
                 "nesterov", "momentum_decay", "no_prox", "exclude_1d", "ns_method", "cautious_weight_decay")


def scalar_dtype() -> torch.dtype:
    """The dtype torch.optim gives its 0-d ``step`` tensors."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def refuse_duplicates(param_group: dict, where: str) -> None:
    """Raise ValueError if ``param_group`` lists one parameter twice (``params`` is made a list first, so a
    generator is read once).

    torch warns and then steps such a parameter once per entry in its for-loop path, while its foreach and
    fused paths read every entry before writing any: three results for one input. We refuse, as torch says
    it will (pytorch/pytorch#40967)."""
    entries = param_group.get("params")
    if entries is None or isinstance(entries, (torch.Tensor, set)):
        return  # torch's add_param_group takes a lone tensor and refuses a set
    param_group["params"] = entries = list(entries)
    first: dict[int, int] = {}
    for k, entry in enumerate(entries):
        p = entry[1] if isinstance(entry, tuple) and len(entry) == 2 else entry
        j = first.setdefault(id(p), k)
        if j != k:
            raise ValueError(f"params{where} lists one parameter twice, at positions {j} and {k}: pass each "
                             f"parameter once (torch.optim warns and steps it once per entry)")


class RuleOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` whose step is ``rule`` run by the multi-tensor engine.

    Args:
        backend: ``"auto"`` (default), ``"compile"``, ``"foreach"``, ``"torch"`` (torch's own fused kernel,
            where the rule has one), ``"cpp"`` (the rule's C++ kernel for CPU, where it has one) or ``"eager"``
            (the rule as written, the reference). See :mod:`nesterov.engine.kernels`.
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
        if backend == "cpp" and self.rule.cpp_kernel is None:
            raise ValueError(f"backend='cpp': {type(self).__name__} has no C++ kernel (LARS, LAMB, NAG and the "
                             f"schedule-free rules have one); "
                             f"use 'auto', 'compile', 'foreach' or 'eager'")
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

    def group_defaults(self, group: dict) -> dict:
        """The values a key missing from ``group`` (an older state_dict's) takes: the defaults this
        optimizer was built with (not ``differentiable``, which torch's ``__setstate__`` adds to them)."""
        return {k: v for k, v in self.defaults.items() if k != "differentiable"}

    # -- pickling: torch's __getstate__ keeps defaults, state and param_groups; ours adds the engine's
    def __getstate__(self):
        return {**super().__getstate__(), "backend": self.backend, "state_dtype": self.state_dtype}

    def __setstate__(self, state):
        super().__setstate__(state)
        self.__dict__.setdefault("backend", "auto")
        self.__dict__.setdefault("state_dtype", None)
        for group in self.param_groups:  # older state: newer keys get their defaults, as torch's optimizers do
            for key, value in self.group_defaults(group).items():
                group.setdefault(key, value)
        self._reset_caches()

    def _reset_caches(self) -> None:
        self._plans: dict[int, tuple] = {}  # group index -> (signature, buckets): see step_group
        self._dispatch = Dispatcher(self.backend)
        self._salts: dict[int, int] | None = None  # id(param) -> its position: the rounding stream of each

    # -- param groups --------------------------------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        refuse_duplicates(param_group, f" (param group {len(self.param_groups)})")
        super().add_param_group(param_group)  # torch's: generators, named parameters, defaults, other groups
        try:
            self.check_group(self.param_groups[-1], f" (param group {len(self.param_groups) - 1})")
        except BaseException:
            self.param_groups.pop()
            raise
        self._salts, self._plans = None, {}

    def check_group(self, group: dict, where: str) -> None:
        """Everything a new group can be refused for: hyperparameters, tensor kinds, backend support."""
        self.check_hypers(group, where)
        rule = self.rule_for(group)
        if rule is not None and rule.foreach is None and self.backend in ("auto", "foreach"):
            raise ValueError(f"backend={self.backend!r}: the rule {rule.name!r}{where} declares no foreach "
                             f"restatement (auto steps on it while compiling); use backend='compile' or 'eager'")
        for k, p in enumerate(group["params"]):
            if p.layout != torch.strided:
                raise ValueError(f"params{where}[{k}]: {p.layout} parameters are not supported (dense tensors only)")
            if not (p.is_floating_point() or p.is_complex()):
                raise TypeError(f"params{where}[{k}]: an optimizer needs floating-point parameters, got {p.dtype}")
            if p.is_complex() and self.state_dtype is not None:
                raise ValueError(f"state_dtype={self.state_dtype} is for real parameters; params{where}[{k}] is "
                                 f"{p.dtype}")
            real = p.real.dtype if p.is_complex() else p.dtype
            refusal = None
            if self.backend == "torch" and (not self.rule.torch_kernel_supports(p.device, real)
                                            or self.state_dtype not in (None, p.dtype)):
                refusal = "torch's kernel is not exact there"
            if self.backend == "cpp" and not cpp_kernels.supports(self.rule, p.device, real, self.state_dtype or real):
                refusal = ("the C++ kernel steps float32 and float64 CPU tensors with state of their dtype, or float32 "
                           "with bfloat16 state")
            if refusal:
                raise ValueError(f"backend={self.backend!r} cannot step params{where}[{k}] ({real} on {p.device.type}, "
                                 f"state_dtype={self.state_dtype}): {refusal}; use backend='auto'")

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
            self.check_hypers({**self.group_defaults(ours), **{k: v for k, v in saved.items() if k != "params"}},
                              f" (state_dict param group {i})")
            index_to_param.update(zip(saved["params"], ours["params"]))
        for index, entry in state_dict["state"].items():
            p = index_to_param.get(index)
            if p is None:
                continue  # not a parameter's: torch keeps such state (a post hook's, say) as it is, and so do we
            if not isinstance(entry, dict):
                raise ValueError(f"state_dict state[{index!r}] must be a dict of the parameter's state, got "
                                 f"{type(entry).__name__}")
            for name, value in entry.items():
                want = self.state_shape(name, p)
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != want:
                    raise ValueError(f"state_dict state[{index}][{name!r}] has shape {tuple(value.shape)}, its "
                                     f"parameter {tuple(p.shape)} (so it must be {tuple(want)})")
        super().load_state_dict(state_dict)

    def state_shape(self, name: str, p: torch.Tensor) -> torch.Size:
        """The shape of state entry ``name`` of ``p`` (the parameter's, unless a subclass keeps less)."""
        return p.shape

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
        group_derived = {}
        if rule.advance_group is not None:
            new, group_derived = rule.advance_group({name: group[name] for name in rule.group_scalars}, **hypers)
            group.update(new)
        signature = (id(self.state), tuple(map(id, params)), tuple(map(storage_ptr, params)))
        plan = self._plans.get(index)
        if plan is None or plan[0] != signature:
            plan = self._plans[index] = (signature, self._plan(index, rule, params))
        for bucket in plan[1]:
            self._step_bucket(index, rule, hypers, flags, bucket, group_derived)

    def _plan(self, index: int, rule: Rule, params: list[torch.Tensor]) -> list[Bucket]:
        buckets: dict = {}
        for p in params:
            state = self.state[p]
            self._fit_state(rule, p, state)
            key = (p.device, p.dtype, isinstance(p, DTensor), self._step_key(rule, state))
            buckets.setdefault(key, []).append(p)
        salts = self._salt_map()
        return [Bucket.of(rule, members, [self.state[p] for p in members], salts,
                           seeded=self.state_dtype is not None and self.state_dtype != members[0].dtype)
                for members in buckets.values()]

    def _fit_state(self, rule: Rule, p: torch.Tensor, state: dict) -> None:
        """Create what is missing in ``state[p]`` and bring loaded or stale tensors to the parameter's device,
        dtype and memory layout (the state is the optimizer's own; the parameter is never touched)."""
        dtype = self.state_dtype or p.dtype
        for name in rule.states:
            s = state.get(name)
            if s is None:
                state[name] = (torch.empty_like(p, dtype=dtype).copy_(p) if name in rule.states_from_param
                               else torch.zeros_like(p, dtype=dtype))
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

    def _step_bucket(self, index: int, rule: Rule, hypers: dict, flags: dict, bucket: Bucket,
                     group_derived: dict) -> None:
        derived = dict(group_derived)
        if bucket.steps:
            if rule.uses_step:
                first = bucket.states[0]
                t = float(first["step"]) + 1
                if rule.advance is not None:
                    new, bucket_derived = rule.advance(t, {n: first[n] for n in rule.scalars}, **hypers)
                    derived.update(bucket_derived)
                    for name, value in new.items():
                        torch._foreach_copy_([s[name] for s in bucket.states], [value] * len(bucket.states))
            # The members of a bucket share their step count: one add, copied to each (a foreach add on
            # 161 0-d CPU tensors takes ~420 µs here, the copy ~50 µs).
            torch._foreach_copy_(bucket.steps, [bucket.steps[0] + 1] * len(bucket.steps))
        seeds = None
        if bucket.salts is not None:
            step = int(bucket.steps[0])  # shared by the bucket: one host read, not one per tensor
            seeds = [mix_seed(step, salt) for salt in bucket.salts]
        if bucket.gathered:
            step_gathered(rule, bucket.members, bucket.states, hypers, derived, flags, seeds)
            return
        grads = [bucket.members[i].grad for i in bucket.keep]
        if not bucket.plain:
            grads = [local(g) for g in grads]
        aligned = [st is not None and g.stride() == st for g, st in zip(grads, bucket.strides)]
        batch = K.Batch(bucket.params, grads, bucket.state_lists, bucket.matrix,
                        None if seeds is None else [seeds[i] for i in bucket.keep], aligned, bucket.compilable,
                        bucket.flat_params, bucket.flat_states)
        if batch.params:
            self._dispatch.run(index, rule, batch, hypers, derived, flags)

    @property
    def backends_seen(self) -> set[str]:
        """The backends that have stepped this optimizer (``nesterov bench`` reports ``auto``'s choice)."""
        return self._dispatch.backends_seen

    def _salt_map(self) -> dict[int, int]:
        """Each parameter's position in the optimizer: its own stream of stochastic-rounding bits."""
        if self._salts is None:
            self._salts = {id(p): k for k, p in enumerate(p for g in self.param_groups for p in g["params"])}
        return self._salts
