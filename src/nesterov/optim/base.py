"""``ArenaOptimizer``: the torch.optim front end shared by every rule of nesterov.

A subclass names its :class:`~nesterov.rules.Rule` and validates its hyperparameters; this class does
the rest: param groups (one arena per group and (device, dtype)), ``zero_grad``, ``step(closure)``,
GradScaler's fused unscale-and-skip, torch's state_dict layout, and the choice of backend.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch
import torch.optim.optimizer as torch_optimizer
from torch.distributed.tensor import DTensor

from nesterov.engine import backends as B
from nesterov.engine.arena import Arena, partition, zero_loose_grads
from nesterov.engine.matrices import shard_like
from nesterov.engine.precision import mix_seed
from nesterov.engine.segments import BLOCK, rows, span_inputs
from nesterov.rules.base import Rule

STATE_DTYPES = (None, torch.float32, torch.bfloat16, torch.float16, torch.float64)


def check_number(name: str, value, *, low=None, high=None, low_open=False, high_open=False) -> None:
    """Raise ValueError naming ``name`` unless ``value`` is a finite real number within the bounds."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a number or a one-element tensor, got shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value >= high if high_open else value > high):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")


@dataclass
class _ArenaRuntime:
    """What one arena needs between steps: its backend and its hyperparameters as 0-d tensors."""

    arena: Arena
    backend: str
    hyper_tensors: dict[str, torch.Tensor]
    state_in_param_dtype: bool  # the foreach restatement handles only full-width state
    hyper_values: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        self.flat_state_list = list(self.arena.flat_states.values())  # in rule.states order
        self.whole_lists = [[t] for t in (self.arena.flat_param, self.arena.flat_grad, *self.flat_state_list)]

    def hypers(self, group: dict) -> dict[str, torch.Tensor]:
        for name, tensor in self.hyper_tensors.items():
            value = float(group[name])
            if self.hyper_values.get(name) != value:  # refill only what a scheduler changed
                tensor.fill_(value)
                self.hyper_values[name] = value
        return self.hyper_tensors


@dataclass
class _GroupRuntime:
    arenas: list[_ArenaRuntime]
    loose: list[torch.Tensor]  # params that cannot live in an arena (DTensor, overlapping views, ...)


class ArenaOptimizer(torch.optim.Optimizer):
    """A torch.optim.Optimizer whose step is ``rule`` fused over flat arenas (see ``nesterov.engine``).

    Args:
        backend: ``"auto"`` (default), ``"compile"``, ``"triton"``, ``"foreach"`` or ``"eager"``.
        state_dtype: dtype of the optimizer state; ``None`` keeps the parameter's dtype,
            ``torch.bfloat16`` halves state memory and traffic, written with stochastic rounding.
    """

    rule: Rule
    _step_supports_amp_scaling = True  # GradScaler hands us grad_scale / found_inf: fused unscale+skip

    def __init__(self, params, defaults: dict, *, backend: str = "auto", state_dtype=None):
        if backend not in B.BACKENDS:
            raise ValueError(f"backend must be one of {B.BACKENDS}, got {backend!r}")
        if state_dtype not in STATE_DTYPES:
            names = ", ".join("None" if d is None else str(d) for d in STATE_DTYPES)
            raise ValueError(f"state_dtype must be one of {names}; got {state_dtype!r}")
        self.check_hypers(defaults, where="")
        self.backend = backend
        self.state_dtype = state_dtype
        self._runtimes: list[_GroupRuntime] = []
        self._seed_counter = 0
        self._checked_values: dict[int, tuple] = {}  # per group: the hyperparameters last validated
        self._group_kwargs: dict[int, dict] = {}  # per group: the rule's keyword arguments
        self._group_flags: dict[int, dict] = {}  # per group: the rule's flags
        super().__init__(params, defaults)

    # -- what a subclass provides ------------------------------------------------------------------
    def check_hypers(self, group: dict, where: str) -> None:
        """Raise ValueError/TypeError naming the bad hyperparameter (``where`` says which group)."""
        raise NotImplementedError

    # -- param groups --------------------------------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        where = f" (param group {len(self.param_groups)})"
        self.check_hypers({**self.defaults, **param_group}, where)
        for p in self._group_params(param_group):
            if p.is_sparse:
                raise ValueError(f"sparse parameters are not supported{where}")
        super().add_param_group(param_group)
        try:
            self._runtimes.append(self._build_runtime(self.param_groups[-1]["params"]))
        except BaseException:
            self.param_groups.pop()
            raise

    @staticmethod
    def _group_params(param_group: dict) -> list:
        params = param_group.get("params", [])
        if isinstance(params, torch.Tensor):
            return [params]
        return [p[1] if isinstance(p, tuple) else p for p in params if isinstance(p, (torch.Tensor, tuple))]

    def _build_runtime(self, params: list[torch.Tensor]) -> _GroupRuntime:
        buckets, loose = partition(params)
        arenas = []
        for (device, dtype), members in buckets.items():
            state_dtype = self.state_dtype or dtype
            align = BLOCK if getattr(self.rule, "per_tensor", False) else 1
            # see Rule.update_lists_; ``eager`` stays the rule as written, the reference for the others
            adopt = self.rule.update_lists_ is not None and state_dtype == dtype and self.backend != "eager"
            arena = Arena(members, {name: state_dtype for name in self.rule.states}, align, adopt_large_grads=adopt)
            hyper_dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
            hyper_tensors = {
                name: torch.zeros((), dtype=hyper_dtype, device=device) for name in self.rule.hypers
            }
            arenas.append(_ArenaRuntime(arena, self._initial_backend(arena), hyper_tensors, state_dtype == dtype))
        return _GroupRuntime(arenas, loose)

    def _initial_backend(self, arena: Arena) -> str:
        backend = self.backend
        if backend == "triton":
            if B.triton_kernel(self.rule) is None:
                raise ValueError(f"backend='triton': rule {self.rule.name!r} has no Triton kernel")
            if not B.triton_available(arena.device):
                raise ValueError(
                    f"backend='triton' needs CUDA tensors and the triton package (or TRITON_INTERPRET=1 "
                    f"on CPU); got parameters on {arena.device}"
                )
        if backend != "auto":
            return backend
        if arena.device.type == "cuda":
            if B.triton_available(arena.device) and B.triton_kernel(self.rule) is not None:
                return "triton"
            return "auto-compile"
        return "auto-compile" if arena.numel >= B.AUTO_COMPILE_MIN_NUMEL else "foreach"

    # -- zero_grad / step ----------------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        for runtime in self._runtimes:
            for ar in runtime.arenas:
                ar.arena.zero_grad(set_to_none)
            zero_loose_grads(runtime.loose, set_to_none)

    def step(self, closure=None):
        """Perform one optimisation step; ``closure`` re-evaluates the model and returns the loss."""
        if torch.compiler.is_compiling():
            # Inside a torch.compile'd training step: run the step eagerly (a graph break), since its
            # bookkeeping (pointer checks, background compiles) is not traceable and needn't be.
            return self._step_outside_compile(closure)
        # torch wraps every step in a profiler range and hook loops (~10 µs, a third of a small model's
        # step); we take that path only when a hook or a profiler is there to see it.
        if (
            self._optimizer_step_pre_hooks
            or self._optimizer_step_post_hooks
            or torch_optimizer._global_optimizer_pre_hooks
            or torch_optimizer._global_optimizer_post_hooks
            or torch._C._autograd._profiler_enabled()
        ):
            return self._observed_step(closure)
        return self._step(closure)

    step.hooked = True  # tells torch.optim.Optimizer not to wrap it again

    def _step(self, closure=None):
        # No torch.no_grad() here: arena buffers never require grad, and the small-model path cannot
        # afford the context switch. Kernels that need it (compiled: grad mode is part of dynamo's
        # guards; per-tensor updates of leaf params) enter it themselves.
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Everything that can reject the step does so before anything is written.
        self._check_groups()
        grad_scale = self.__dict__.get("grad_scale")  # set by GradScaler.step around our step
        found_inf = self.__dict__.get("found_inf")
        split = self.rule.uses_step
        # torch's fused kernel (Rule.update_lists_) unscales the gradients it reads in place: with a
        # GradScaler, every gradient is read from the arena, so that p.grad stays as it was.
        in_place = grad_scale is None
        spans = [[ar.arena.run_spans(split, in_place) for ar in rt.arenas] for rt in self._runtimes]
        for rt in self._runtimes:
            for p in rt.loose:
                if p.grad is not None and p.grad.is_sparse:
                    raise ValueError("sparse gradients are not supported")
        self._seed_counter += 1
        for g_index, (rt, group_spans) in enumerate(zip(self._runtimes, spans)):
            for a_index, (ar, arena_spans) in enumerate(zip(rt.arenas, group_spans)):
                if arena_spans:
                    self._step_arena(ar, arena_spans, g_index, a_index, grad_scale, found_inf)
            for p in rt.loose:
                if p.grad is not None:
                    self._step_loose(p, g_index, grad_scale, found_inf)
        return loss

    _observed_step = torch.optim.Optimizer.profile_hook_step(_step)
    _step_outside_compile = torch._disable_dynamo(_observed_step)

    def _check_groups(self) -> None:
        """Validate every group's hyperparameters, re-checking only groups whose values changed.

        Also keeps ``self._group_kwargs[i]``: group i's hyperparameters and flags as the keyword
        arguments of the rule (Python values), rebuilt only when a value changed.
        """
        keys = tuple(self.defaults)
        for i, group in enumerate(self.param_groups):
            values = tuple(group.get(k) for k in keys)
            if self._checked_values.get(i) != values:
                self.check_hypers(group, f" (param group {i})")
                self._checked_values[i] = values
                flags = {name: bool(group[name]) for name in self.rule.flags}
                self._group_kwargs[i] = {**{name: group[name] for name in self.rule.hypers}, **flags}
                self._group_flags[i] = flags

    def _step_arena(self, ar: _ArenaRuntime, spans, g_index, a_index, grad_scale, found_inf) -> None:
        arena = ar.arena
        adopted = [s for s in spans if s[3] is not None]  # large gradients read where they lie
        if adopted:
            self._step_adopted(ar, adopted, g_index, found_inf)
            spans = [s for s in spans if s[3] is None]
            if not spans:
                return
        flags = self._group_flags[g_index]
        backend = self._backend_now(ar, flags, grad_scale, found_inf)
        if backend == "foreach":  # the small-model path: keep Python work to the minimum
            kwargs = self._group_kwargs[g_index]
            for start, end, members, _ in spans:
                if end - start == arena.numel:
                    lists = ar.whole_lists
                else:
                    lists = [[t[start:end]] for t in (arena.flat_param, arena.flat_grad, *ar.flat_state_list)]
                step = self._next_step(arena, members, found_inf)
                if self.rule.uses_step:
                    kwargs = {**kwargs, "step": arena.counts[members[0]] + 1}
                span = span_inputs(self.rule, self.state, arena.params, members, step, None, kwargs,
                                   block=arena.align)  # segments.py
                if span:
                    kwargs = {**kwargs, **span}
                self.rule.update_foreach_(*lists, **kwargs)
                self._after_step(arena, members, step)
            return
        hypers = ar.hypers(self.param_groups[g_index])
        seed = mix_seed(self._seed_counter, g_index * 4099 + a_index)
        if backend == "triton":
            kernel = B.triton_kernel(self.rule)
        elif backend == "eager":
            kernel = functools.partial(B.fused_step, self.rule)
        else:
            kernel = functools.partial(B.COMPILED.get(self._kernel_key(arena, flags, grad_scale, found_inf)), self.rule)
        for start, end, members, _ in spans:
            step = self._next_step(arena, members, found_inf)
            param, grad = arena.flat_param[start:end], arena.flat_grad[start:end]
            states = [s[start:end] for s in ar.flat_state_list]
            if arena.align > 1:  # per-tensor rules take the span as rows (segments.py)
                param, grad, *states = (rows(t, arena.align) for t in (param, grad, *states))
            span = span_inputs(self.rule, self.state, arena.params, members, step, found_inf, hypers,
                               block=arena.align)
            args = (param, grad, states, {**hypers, **span}, flags)
            with torch.no_grad():  # grad mode is part of dynamo's guards: always the same one
                if backend == "triton":
                    kernel(*args, grad_scale, found_inf, seed)
                else:
                    kernel(*args, step, grad_scale, found_inf, seed)
            self._after_step(arena, members, step)

    def _step_adopted(self, ar: _ArenaRuntime, spans, g_index, found_inf) -> None:
        """The runs whose gradients lie outside the arena: one call of the rule's list restatement."""
        arena = ar.arena
        params = [arena.flat_param[start:end] for start, end, _, _ in spans]
        states = [[flat[start:end] for start, end, _, _ in spans] for flat in ar.flat_state_list]
        with torch.no_grad():
            self.rule.update_lists_(params, [grad for *_, grad in spans], *states, **self._group_kwargs[g_index],
                                    found_inf=found_inf)
        for _, _, members, _ in spans:
            self._after_step(arena, members, None)

    def _kernel_key(self, arena: Arena, flags, grad_scale, found_inf) -> tuple:
        state_dtypes = tuple(str(arena.flat_states[n].dtype)[6:] for n in self.rule.states)
        return (
            self.rule.name, arena.device.type, str(arena.dtype)[6:], *state_dtypes,
            *(f"{k}{int(v)}" for k, v in flags.items()),
            "scaled" if grad_scale is not None else "", "skip" if found_inf is not None else "",
        )

    def _backend_now(self, ar: _ArenaRuntime, flags, grad_scale, found_inf) -> str:
        """The backend for this step: ``auto-compile`` uses foreach until its kernel is compiled."""
        plain = (
            grad_scale is None
            and found_inf is None
            and self.rule.update_foreach_ is not None
            and ar.state_in_param_dtype
        )
        backend = ar.backend
        if backend == "auto-compile":
            key = self._kernel_key(ar.arena, flags, grad_scale, found_inf)
            if B.COMPILED.is_ready(key):
                return "compile"
            if key in B.COMPILED.errors:
                B.warn_once(
                    f"nesterov: torch.compile failed for {key} ({B.COMPILED.errors[key]!r}); "
                    "falling back to the foreach backend"
                )
            else:
                B.COMPILED.warm_in_background(key, self._warmup_args(ar, flags, grad_scale, found_inf))
            backend = "foreach"
        if backend == "foreach" and not plain:
            return "eager"
        return backend

    def _warmup_args(self, ar: _ArenaRuntime, flags, grad_scale, found_inf) -> tuple:
        """Throw-away inputs shaped like this arena's, for compiling its kernel in the background.

        Sizes are dynamic, but inductor takes its codegen decisions (parallelise the loop or not) from
        the example's size: a tiny example gave a single-threaded kernel that later served every
        arena, 2× slower on two cores. So the example is as long as the arena, up to 2²⁰ elements.
        """
        arena = ar.arena
        n = -(-max(64, min(arena.numel, 1 << 20)) // arena.align) * arena.align
        shape = (n,) if arena.align == 1 else (n // arena.align, arena.align)  # as _step_arena passes them
        p = torch.zeros(shape, dtype=arena.dtype, device=arena.device)
        states = [torch.zeros(shape, dtype=s.dtype, device=arena.device) for s in arena.flat_states.values()]
        hypers = {k: torch.zeros_like(t) for k, t in ar.hyper_tensors.items()}
        step = torch.ones((), dtype=torch.float32, device=arena.device) if self.rule.uses_step else None
        scale = None if grad_scale is None else torch.ones_like(grad_scale)
        inf = None if found_inf is None else torch.zeros_like(found_inf)
        hypers.update(span_inputs(self.rule, {}, [p], [0], step, inf, hypers, store=False, block=arena.align))
        return (self.rule, p, torch.zeros_like(p), states, hypers, flags, step, scale, inf, 0)

    # -- step counting (rules with bias corrections) -------------------------------------------------
    def _next_step(self, arena: Arena, members: list[int], found_inf):
        """The 1-based step of the params in ``members`` (equal by construction), as a 0-d tensor.

        A step that GradScaler skips does not count: the tensor is decremented by ``found_inf`` on the
        device, without a host synchronisation.
        """
        if not self.rule.uses_step:
            return None
        previous = self.state[arena.params[members[0]]].get("step")
        if previous is None:
            previous = torch.zeros((), dtype=torch.float32, device=arena.device)
        step = previous + 1
        if found_inf is not None:
            step = step - (found_inf.reshape(()) != 0).to(step.dtype)
        return step

    def _after_step(self, arena: Arena, members: list[int], step) -> None:
        if step is None and arena.all_stepped and len(members) == len(arena.params):
            return  # the normal case: nothing per parameter to record
        names = self.rule.states
        arena.all_stepped = arena.all_stepped or len(members) == len(arena.params)
        for i in members:
            p = arena.params[i]
            if arena.counts[i] == 0:
                state = self.state[p]
                for name in names:
                    state[name] = arena.state_views[name][i]
            if step is not None:
                self.state[p]["step"] = step
            arena.counts[i] += 1

    def _step_loose(self, p: torch.Tensor, g_index: int, grad_scale, found_inf) -> None:
        """A parameter outside every arena (DTensor, overlapping view): the eager rule, per tensor."""
        group, flags = self.param_groups[g_index], self._group_flags[g_index]
        state = self.state[p]
        dtype = self.state_dtype or p.dtype
        for name in self.rule.states:
            if name not in state:
                state[name] = torch.zeros_like(p, dtype=dtype)
        step = None
        if self.rule.uses_step:
            previous = state.get("step", torch.zeros((), dtype=torch.float32, device=p.device))
            step = previous + 1
            if found_inf is not None:
                step = step - (found_inf.reshape(()) != 0).to(step.dtype)
            state["step"] = step
        hypers = {name: float(group[name]) for name in self.rule.hypers}
        hypers.update(span_inputs(self.rule, self.state, [p], [0], step, found_inf, hypers))
        seed = mix_seed(self._seed_counter, id(p) & 0xFFFF)
        states = [state[name] for name in self.rule.states]
        with torch.no_grad():
            if isinstance(p, DTensor) and getattr(self.rule, "per_tensor", False):
                # A trust ratio needs the whole tensor's norms: step the gathered tensor on every rank,
                # then each keeps its own shard.
                whole = [t.full_tensor() for t in (p, p.grad, *states)]
                B.fused_step(self.rule, whole[0], whole[1], whole[2:], hypers, flags, step, grad_scale, found_inf,
                             seed)
                for t, new in zip((p, *states), (whole[0], *whole[2:])):
                    t.to_local().copy_(shard_like(new, t).to_local())
            else:
                B.fused_step(self.rule, p, p.grad, states, hypers, flags, step, grad_scale, found_inf, seed)

    # -- state_dict ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """torch's layout, with the 0-d states (``step``, ``mu_product``) that the members of a run share
        here given one tensor each: torch's optimizers advance them in place, once per parameter."""
        sd = super().state_dict()
        sd["state"] = {index: {k: v.clone() if isinstance(v, torch.Tensor) and v.dim() == 0 else v
                               for k, v in entry.items()} for index, entry in sd["state"].items()}
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state_dict in torch.optim's layout (ours, or the matching torch optimizer's)."""
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups' (an optimizer state_dict)")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"state_dict has {len(saved_groups)} param groups, this optimizer has {len(self.param_groups)}"
            )
        index_to_param = {}
        for i, (ours, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(ours["params"]) != len(saved["params"]):
                raise ValueError(
                    f"state_dict param group {i} has {len(saved['params'])} params, this optimizer's has "
                    f"{len(ours['params'])}"
                )
            self.check_hypers({**self.defaults, **{k: v for k, v in saved.items() if k != "params"}},
                              f" (state_dict param group {i})")
            index_to_param.update(zip(saved["params"], ours["params"]))
        for index, entry in state_dict["state"].items():
            p = index_to_param.get(index)
            if p is None:
                raise ValueError(f"state_dict has state for param index {index!r}, which no group lists")
            for name in self.rule.states:
                value = entry.get(name)
                if value is not None and (not isinstance(value, torch.Tensor) or value.shape != p.shape):
                    shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                    raise ValueError(
                        f"state_dict state[{index}][{name!r}] has shape {shape}, its parameter {tuple(p.shape)}"
                    )
        super().load_state_dict(state_dict)
        self._relink_state()

    def _relink_state(self) -> None:
        """Copy loaded per-parameter state into the arenas and point ``self.state`` at the views."""
        with torch.no_grad():
            for rt in self._runtimes:
                for ar in rt.arenas:
                    arena = ar.arena
                    ar.hyper_values.clear()
                    for i, p in enumerate(arena.params):
                        loaded = self.state.get(p, {})
                        have = [loaded.get(name) is not None for name in self.rule.states]
                        for name in self.rule.states:
                            view = arena.state_views[name][i]
                            value = loaded.get(name)
                            view.copy_(value) if value is not None else view.zero_()
                        if any(have) or "step" in loaded:
                            state = self.state[p]
                            for name in self.rule.states:
                                state[name] = arena.state_views[name][i]
                            count = int(loaded["step"]) if "step" in loaded else 1
                            if "step" in loaded and self.rule.uses_step:
                                state["step"] = torch.as_tensor(loaded["step"], dtype=torch.float32,
                                                                device=arena.device).clone().reshape(())
                            arena.counts[i] = max(count, 1)
                        else:
                            self.state.pop(p, None)
                            arena.counts[i] = 0
                    arena.all_stepped = all(arena.counts)
                for p in rt.loose:
                    state = self.state.get(p)
                    if state:
                        dtype = self.state_dtype or p.dtype
                        for name in self.rule.states:
                            if state.get(name) is not None:
                                state[name] = state[name].to(dtype)
