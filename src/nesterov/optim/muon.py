"""``Muon``: torch.optim.Muon's update for every matrix of a model, an auxiliary rule for the rest.

One optimizer for a whole model: ``Muon(model.parameters())`` sends every parameter with two or more
dimensions (linear weights, conv kernels flattened to ``(out, in·kh·kw)``) to Muon and everything else
(biases, norm scales, scalars) to an auxiliary optimizer built inside, NAdamW by default. Embeddings and
output heads are matrices that Muon should not touch; mark their param group with ``use_muon=False``.

How a step runs (the math is :mod:`nesterov.rules.muon`, stated once):

1. the auxiliary optimizer steps its parameters (it validates first, so a rejected step writes nothing);
2. per param group and (device, dtype), the matrices' momentum buffers live in one flat arena
   (:class:`~nesterov.engine.arena.Arena`): the momentum update is a few elementwise kernels over the
   whole group, however many matrices it has;
3. the Nesterov directions are gathered by wide shape and Newton–Schulz runs once per shape on the
   stack (:func:`~nesterov.engine.matrices.batched_apply`), in ``ns_dtype``;
4. each matrix takes its step ``p ← p·(1 − ηλ) − η'·O``.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import torch
from torch.distributed.tensor import DTensor

from nesterov.engine.arena import Arena, partition, zero_loose_grads
from nesterov.engine.matrices import batched_apply, full_tensor, row_sharded, shard_like, sharded_apply
from nesterov.engine.precision import mix_seed, round_to
from nesterov.optim.base import check_number
from nesterov.rules import muon as R

STATE_DTYPES = (None, torch.float32, torch.float64, torch.bfloat16, torch.float16)
NS_DTYPES = (None, torch.float32, torch.float64, torch.bfloat16, torch.float16)
AUX_NAMES = ("nadamw", "nag")
MUON_KEYS = ("lr", "momentum", "nesterov", "ns_steps", "ns_coefficients", "eps", "weight_decay",
             "adjust_lr_fn")


def _nadamw(param_groups: list[dict], state_dtype=None) -> torch.optim.Optimizer:
    from nesterov.optim.nadamw import NAdamW

    return NAdamW(param_groups, state_dtype=state_dtype)


def _nag(param_groups: list[dict], state_dtype=None) -> torch.optim.Optimizer:
    from nesterov.optim.nag import NAG

    return NAG(param_groups, state_dtype=state_dtype)


def aux_factory(aux, state_dtype=None) -> Callable[[list[dict]], torch.optim.Optimizer] | None:
    """The factory behind Muon's ``aux`` argument (``None`` when the auxiliary rule is disabled).

    The named rules get Muon's ``state_dtype`` too, so ``state_dtype=torch.bfloat16`` shrinks every
    buffer of the optimizer; a callable is used as given.
    """
    if aux is None or aux is False:
        return None
    if isinstance(aux, str):
        if aux == "nadamw":
            return partial(_nadamw, state_dtype=state_dtype)
        if aux == "nag":
            return partial(_nag, state_dtype=state_dtype)
        raise ValueError(f"aux must be one of {AUX_NAMES}, a callable or None; got {aux!r}")
    if callable(aux):
        return aux
    raise TypeError(f"aux must be one of {AUX_NAMES}, a callable (param groups -> optimizer) or None; "
                    f"got {type(aux).__name__}")


@dataclass
class _MuonRuntime:
    """The matrices of one Muon param group: arenas per (device, dtype), and loose tensors."""

    arenas: list[Arena]
    loose: list[torch.Tensor] = field(default_factory=list)


def _tensor(entry) -> torch.Tensor:
    return entry[1] if isinstance(entry, tuple) else entry


class Muon(torch.optim.Optimizer):
    r"""Muon (Nesterov momentum, then Newton–Schulz orthogonalisation) for matrices; NAdamW for the rest.

    On the matrices it is exactly ``torch.optim.Muon`` (same momentum blend, normalisation, transposition
    of tall matrices, decoupled weight decay, ``adjust_lr_fn``), except that Newton–Schulz runs in
    ``ns_dtype`` (torch always uses bf16) and that conv kernels are accepted, flattened to 2-D. The
    state layout is torch's (``momentum_buffer`` per matrix), so checkpoints load either way.

    Args:
        params: parameters, named parameters, or param groups. A group may set ``use_muon=False``
            (embeddings, output heads): all its parameters then go to the auxiliary optimizer, with the
            group's other keys (``lr``, ``betas``, ...) as that optimizer's hyperparameters. In a Muon
            group, parameters with fewer than 2 dimensions are split off into an auxiliary group placed
            right after it (with the auxiliary optimizer's defaults), so ``param_groups`` can be longer
            than what was passed; each group has a ``use_muon`` key saying which it is.
        lr: η ≥ 0. momentum: μ in [0, 1). nesterov: Nesterov blend of gradient and buffer.
        ns_steps: Newton–Schulz iterations, 0 ≤ k < 100. ns_coefficients: (a, b, c) of the quintic.
        eps: ε > 0, floor of the Frobenius norm that normalises the direction.
        weight_decay: λ ≥ 0, decoupled: ``p ← p·(1 − ηλ)``.
        adjust_lr_fn: ``None``/``"original"`` (η·√max(1, A/B)) or ``"match_rms_adamw"`` (0.2·η·√max(A, B)).
        aux: the auxiliary rule for non-matrix parameters: ``"nadamw"`` (default, ``nesterov.NAdamW``
            with its defaults), ``"nag"``, a callable ``param_groups -> torch.optim.Optimizer`` (e.g.
            ``functools.partial(torch.optim.AdamW, lr=3e-4)``), or ``None`` to refuse non-matrices.
        ns_dtype: dtype of the Newton–Schulz products; ``None`` picks per device
            (:func:`nesterov.rules.muon.default_ns_dtype`): bf16 where the hardware multiplies bf16
            natively (CUDA GPUs with bf16, CPUs with AVX512-BF16 or AMX), float32 elsewhere (CPUs
            without bf16 units emulate it, many times slower), float64 for float64 parameters.
        state_dtype: dtype of the momentum buffers (``None``: the parameter's); ``torch.bfloat16`` halves
            their memory, written with stochastic rounding.
    """

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True,
                 ns_steps: int = R.NS_STEPS, ns_coefficients=R.NS_COEFFICIENTS, eps: float = R.EPS,
                 weight_decay: float = 0.0, adjust_lr_fn: str | None = None, *, aux="nadamw",
                 ns_dtype: torch.dtype | None = None, state_dtype: torch.dtype | None = None):
        if ns_dtype not in NS_DTYPES:
            raise ValueError(f"ns_dtype must be one of {_names(NS_DTYPES)}; got {ns_dtype!r}")
        if state_dtype not in STATE_DTYPES:
            raise ValueError(f"state_dtype must be one of {_names(STATE_DTYPES)}; got {state_dtype!r}")
        self._aux_factory = aux_factory(aux, state_dtype)
        self.aux: torch.optim.Optimizer | None = None
        self.ns_dtype = ns_dtype
        self.state_dtype = state_dtype
        self._runtimes: list[_MuonRuntime | None] = []  # parallel to param_groups; None for aux groups
        self._seed_counter = 0
        if isinstance(ns_coefficients, (list, tuple)):
            ns_coefficients = tuple(ns_coefficients)
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                        ns_coefficients=ns_coefficients, eps=eps, weight_decay=weight_decay,
                        adjust_lr_fn=adjust_lr_fn, use_muon=True)
        self.check_hypers(defaults, "")
        super().__init__(params, defaults)

    # -- validation ----------------------------------------------------------------------------------
    @staticmethod
    def check_hypers(group: dict, where: str) -> None:
        """Raise ValueError/TypeError naming the bad hyperparameter of a Muon group."""
        check_number(f"lr{where}", group["lr"], low=0.0)
        check_number(f"momentum{where}", group["momentum"], low=0.0, high=1.0, high_open=True)
        if not isinstance(group["nesterov"], bool):
            raise TypeError(f"nesterov{where} must be a bool, got {type(group['nesterov']).__name__}")
        steps = group["ns_steps"]
        if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps < 100:
            raise ValueError(f"ns_steps{where} must be an int with 0 <= ns_steps < 100, got {steps!r}")
        coefficients = group["ns_coefficients"]
        if not isinstance(coefficients, (tuple, list)) or len(coefficients) != 3:
            raise ValueError(f"ns_coefficients{where} must be a tuple of 3 numbers (a, b, c), got {coefficients!r}")
        for name, value in zip("abc", coefficients):
            check_number(f"ns_coefficients[{name}]{where}", value)
        check_number(f"eps{where}", group["eps"], low=0.0, low_open=True)
        check_number(f"weight_decay{where}", group["weight_decay"], low=0.0)
        if group["adjust_lr_fn"] not in R.ADJUST_LR_FNS:
            raise ValueError(f"adjust_lr_fn{where} must be one of {R.ADJUST_LR_FNS}, got {group['adjust_lr_fn']!r}")

    # -- param groups --------------------------------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        """Add a group; its matrices become a Muon group, its other parameters an auxiliary group."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        where = f" (param group {len(self.param_groups)})"
        entries = param_group.get("params")
        if isinstance(entries, torch.Tensor):
            entries = [entries]
        elif isinstance(entries, set):
            raise TypeError(f"params{where} must be an ordered collection of tensors, not a set")
        elif entries is None:
            raise ValueError(f"params{where}: a param group needs a 'params' entry")
        else:
            entries = list(entries)
        use_muon = param_group.get("use_muon", True)
        if not isinstance(use_muon, bool):
            raise TypeError(f"use_muon{where} must be a bool, got {type(use_muon).__name__}")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for k, entry in enumerate(entries):
            p = _tensor(entry)
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"params{where}[{k}] must be a torch.Tensor, got {type(p).__name__}")
            if id(p) in seen:
                raise ValueError(f"params{where}[{k}] is given twice (in this or an earlier param group)")
            seen.add(id(p))
        matrices = [e for e in entries if use_muon and _tensor(e).dim() >= 2]
        others = [e for e in entries if not (use_muon and _tensor(e).dim() >= 2)]
        if others and self._aux_factory is None:
            shape = tuple(_tensor(others[0]).shape)
            raise ValueError(
                f"params{where} include {len(others)} parameter(s) that Muon does not handle (e.g. shape "
                f"{shape}: fewer than 2 dimensions, or use_muon=False) and aux=None: pass aux='nadamw' "
                f"(the default), 'nag' or an optimizer factory, or leave those parameters out"
            )
        muon_group = None
        if matrices:
            muon_group = {k: v for k, v in param_group.items() if k != "params"}
            for key, value in self.defaults.items():
                muon_group.setdefault(key, value)
            self.check_hypers(muon_group, where)
            for k, entry in enumerate(matrices):
                p = _tensor(entry)
                if not p.is_floating_point() or p.is_sparse:
                    raise ValueError(f"params{where}: Muon needs dense real floating-point matrices, got "
                                     f"{p.dtype} {p.layout}")
            muon_group["params"] = matrices
        if not matrices and not others:
            raise ValueError(f"params{where} is empty")
        # Everything that can be rejected has been; the auxiliary optimizer validates its own group
        # (hyperparameters given with use_muon=False) before the Muon group is built.
        if others:
            aux_group = {"params": others}
            if not use_muon:
                aux_group.update({k: v for k, v in param_group.items() if k not in ("params", "use_muon")})
            if self.aux is None:
                aux_opt = self._aux_factory([aux_group])
                if not isinstance(aux_opt, torch.optim.Optimizer):
                    raise TypeError(f"aux must build a torch.optim.Optimizer, got {type(aux_opt).__name__}")
                self.aux = aux_opt
                self._share_state()
            else:
                self.aux.add_param_group(aux_group)
            shared = self.aux.param_groups[-1]
            shared["use_muon"] = False  # the same dict object in both optimizers: schedulers reach it
        if muon_group is not None:
            super().add_param_group(muon_group)
            self._runtimes.append(self._build_runtime(self.param_groups[-1]["params"]))
        if others:
            self.param_groups.append(shared)
            self._runtimes.append(None)

    def _share_state(self) -> None:
        """One ``state`` dict for both optimizers (their parameters are disjoint), so that
        ``optimizer.state[p]`` answers for every parameter of ``param_groups``, as torch.optim's does."""
        for p, entry in self.aux.state.items():
            self.state[p] = entry
        self.aux.state = self.state

    def _build_runtime(self, params: list[torch.Tensor]) -> _MuonRuntime:
        by_key, loose = partition(params)
        arenas = [Arena(members, {"momentum_buffer": self.state_dtype or dtype})
                  for (_, dtype), members in by_key.items()]
        return _MuonRuntime(arenas, loose)

    def _muon_groups(self):
        for i, (group, rt) in enumerate(zip(self.param_groups, self._runtimes)):
            if rt is not None:
                yield i, group, rt

    # -- zero_grad / step ----------------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        for _, _, rt in self._muon_groups():
            for arena in rt.arenas:
                arena.zero_grad(set_to_none)
            zero_loose_grads(rt.loose, set_to_none)
        if self.aux is not None:
            self.aux.zero_grad(set_to_none)

    def _ns_dtype(self, p: torch.Tensor) -> torch.dtype:
        return self.ns_dtype or R.default_ns_dtype(p.device, p.dtype)

    def step(self, closure=None):
        """One step of Muon on the matrices and of the auxiliary rule on the rest."""
        if torch.compiler.is_compiling():
            # Inside a torch.compile'd training step: one graph break, then the step as always (its
            # bookkeeping and per-shape batching would otherwise be retraced, and guarded, every step).
            return self._step_outside_compile(closure)
        return self._step(closure)

    @torch.no_grad()
    def _step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Everything that can reject the step does so before anything is written.
        spans = {}
        for i, group, rt in self._muon_groups():
            self.check_hypers(group, f" (param group {i})")
            spans[i] = [arena.run_spans() for arena in rt.arenas]
            for p in rt.loose:
                if p.grad is not None and (p.grad.is_sparse or p.grad.shape != p.shape):
                    raise ValueError(f"param group {i}: Muon needs dense gradients shaped like their "
                                     f"parameters, got {p.grad.layout} {tuple(p.grad.shape)} for {tuple(p.shape)}")
        if self.aux is not None:
            self.aux.step()
        self._seed_counter += 1
        params, directions, groups = [], [], []
        for i, group, rt in self._muon_groups():
            hyper = dict(momentum=float(group["momentum"]), nesterov=group["nesterov"])
            for a_index, (arena, arena_spans) in enumerate(zip(rt.arenas, spans[i])):
                flat_buf = arena.flat_states["momentum_buffer"]
                seed = mix_seed(self._seed_counter, i * 4099 + a_index)
                for start, end, members, _ in arena_spans:  # Muon's arenas copy every gradient in
                    g = arena.flat_grad[start:end]
                    buf = flat_buf[start:end]
                    new_buf, u = R.nesterov_momentum(g, buf.to(g.dtype), **hyper)
                    buf.copy_(round_to(new_buf, buf.dtype, seed))
                    for k in members:
                        p = arena.params[k]
                        # u in the parameter's own layout (channels-last kernels included), then 2-D
                        u_p = u.as_strided(p.shape, p.stride(), arena.offsets[k] - start)
                        params.append(p)
                        directions.append(R.as_matrix(u_p))
                        groups.append(i)
                        if arena.counts[k] == 0:
                            self.state[p]["momentum_buffer"] = arena.state_views["momentum_buffer"][k]
                        arena.counts[k] += 1
            for p in rt.loose:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p, dtype=self.state_dtype or p.dtype)
                buf = state["momentum_buffer"]
                new_buf, u = R.nesterov_momentum(p.grad, buf.to(p.dtype), **hyper)
                buf.copy_(round_to(new_buf, buf.dtype, mix_seed(self._seed_counter, id(p) & 0xFFFF)))
                params.append(p)
                if row_sharded(p):  # FSDP2: the rows this rank holds; sharded_apply below does the rest
                    u = u.redistribute(p.device_mesh, p.placements).to_local()  # already so: no communication
                    directions.append(u.reshape(-1, R.matrix_shape(p.shape)[1]))
                else:  # any other DTensor layout: every rank orthogonalises the whole matrix
                    directions.append(R.as_matrix(full_tensor(u)))
                groups.append(i)
        if not params:
            return loss
        # Newton–Schulz: one batched product per (wide shape, NS hyperparameters, dtype, device).
        def ns_key(j):
            group = self.param_groups[groups[j]]
            return (group["ns_steps"], tuple(float(c) for c in group["ns_coefficients"]), float(group["eps"]),
                    self._ns_dtype(params[j]))

        by_dtype: dict = {}
        for j in range(len(params)):
            by_dtype.setdefault(ns_key(j), []).append(j)
        updates: list = [None] * len(params)
        for (steps, coefficients, eps, dtype), members in by_dtype.items():
            fn = partial(R.newton_schulz, steps=steps, coefficients=coefficients, eps=eps)
            by_mesh: dict = {}  # FSDP2 matrices: Newton–Schulz once per matrix across the ranks
            for j in members:
                by_mesh.setdefault(params[j].device_mesh if row_sharded(params[j]) else None, []).append(j)
            for mesh, js in by_mesh.items():
                if mesh is None:
                    outs = batched_apply(fn, [directions[j] for j in js], dtype=dtype)
                else:
                    shapes = [R.matrix_shape(params[j].shape) for j in js]
                    outs = sharded_apply(fn, [directions[j] for j in js], shapes, mesh.get_group(), dtype=dtype)
                for j, out in zip(js, outs):
                    updates[j] = out
        for p, O, i in zip(params, updates, groups):
            group = self.param_groups[i]
            lr = float(group["lr"])
            if row_sharded(p):
                O = DTensor.from_local(O.reshape(p.to_local().shape), p.device_mesh, p.placements, shape=p.shape,
                                       stride=p.stride())
            else:
                O = shard_like(O.reshape(p.shape), p)
            R.descend_(p, O, lr=lr, weight_decay=float(group["weight_decay"]),
                       adjusted=R.adjusted_lr(lr, group["adjust_lr_fn"], p.shape))
        return loss

    _step_outside_compile = torch._disable_dynamo(_step)

    # -- state_dict ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """torch.optim's layout over all groups; Muon groups hold torch.optim.Muon's ``momentum_buffer``.

        Like torch's, the tensors are the live buffers (save or copy the dict to keep a snapshot);
        state-dict hooks registered on this optimizer run as torch's do.
        """
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        muon_ids = {id(p) for _, group, _ in self._muon_groups() for p in group["params"]}
        state = {index[id(p)]: dict(entry) for p, entry in self.state.items() if id(p) in muon_ids}
        if self.aux is not None:
            aux_params = [p for g in self.aux.param_groups for p in g["params"]]
            aux_ids = {id(p) for p in aux_params}
            shared = self.state
            # the auxiliary optimizer packs its own state (its state_dict may be specialised), seeing
            # only its own parameters while it does
            self.aux.state = defaultdict(dict, {p: v for p, v in shared.items() if id(p) in aux_ids})
            try:
                aux_sd = self.aux.state_dict()
            finally:
                self.aux.state = shared
            aux_index = dict(zip((k for g in aux_sd["param_groups"] for k in g["params"]), aux_params))
            for k, entry in aux_sd["state"].items():
                state[index[id(aux_index[k])]] = entry
        # The stochastic-rounding stream position, so that a resumed bf16-state run rounds as the
        # uninterrupted one would (torch.optim.Muon ignores the extra key).
        state_dict = {"state": dict(sorted(state.items())), "param_groups": groups,
                      "seed_counter": self._seed_counter}
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            result = post_hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    def load_state_dict(self, state_dict: dict) -> None:
        """Load ours, or torch.optim.Muon's for the same matrices; a rejected dict changes nothing."""
        if isinstance(state_dict, dict):
            state_dict = state_dict.copy()
            for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
                result = pre_hook(self, state_dict)
                if result is not None:
                    state_dict = result
        self._load_state_dict(state_dict)
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def _load_state_dict(self, state_dict: dict) -> None:
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups' (an optimizer state_dict)")
        saved_groups = copy.deepcopy(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(saved_groups)} param groups, this optimizer has "
                             f"{len(self.param_groups)} (non-matrix parameters form their own auxiliary groups)")
        id_to_param, aux_ids = {}, []
        for i, (ours, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(ours["params"]) != len(saved["params"]):
                raise ValueError(f"state_dict param group {i} has {len(saved['params'])} params, this "
                                 f"optimizer's has {len(ours['params'])}")
            is_muon = self._runtimes[i] is not None
            if saved.get("use_muon", True) != is_muon:
                raise ValueError(f"state_dict param group {i} is {'a Muon' if saved.get('use_muon', True) else 'an auxiliary'} "
                                 f"group, this optimizer's is {'a Muon' if is_muon else 'an auxiliary'} group")
            if is_muon:
                merged = {**{k: v for k, v in ours.items() if k != "params"},
                          **{k: v for k, v in saved.items() if k != "params"}}
                self.check_hypers(merged, f" (state_dict param group {i})")
            else:
                aux_ids.extend(saved["params"])
            id_to_param.update(zip(saved["params"], ours["params"]))
        aux_set = set(aux_ids)
        for k, entry in state_dict["state"].items():
            p = id_to_param.get(k)
            if p is None:
                raise ValueError(f"state_dict has state for param index {k!r}, which no group lists")
            if k in aux_set:
                continue
            buf = entry.get("momentum_buffer")
            if buf is not None and (not isinstance(buf, torch.Tensor) or buf.numel() != p.numel()):
                shape = tuple(buf.shape) if isinstance(buf, torch.Tensor) else type(buf).__name__
                raise ValueError(f"state_dict state[{k}]['momentum_buffer'] has shape {shape}, its "
                                 f"parameter {tuple(p.shape)}")
        # Validated. The auxiliary optimizer loads first: if it rejects its part, nothing has changed.
        if self.aux is not None:
            aux_groups = [g for g, rt in zip(saved_groups, self._runtimes) if rt is None]
            self.aux.load_state_dict({
                "state": {k: v for k, v in state_dict["state"].items() if k in aux_set},
                "param_groups": [{k: v for k, v in g.items() if k != "use_muon"} for g in aux_groups],
            })
            aux_ids = {id(p) for g in self.aux.param_groups for p in g["params"]}
            for p in [p for p in self.state if id(p) in aux_ids]:
                del self.state[p]
            self._share_state()
            slots = [i for i, rt in enumerate(self._runtimes) if rt is None]
            for slot, group in zip(slots, self.aux.param_groups):
                group["use_muon"] = False
                self.param_groups[slot] = group
        self._seed_counter = int(state_dict.get("seed_counter", self._seed_counter))
        with torch.no_grad():
            for i, group, rt in self._muon_groups():
                saved = saved_groups[i]
                group.update({k: v for k, v in saved.items() if k != "params"})
                group["use_muon"] = True
                if isinstance(group["ns_coefficients"], list):
                    group["ns_coefficients"] = tuple(group["ns_coefficients"])
                loaded = {id(id_to_param[k]): entry for k, entry in state_dict["state"].items()
                          if k not in aux_set}
                for arena in rt.arenas:
                    for k, p in enumerate(arena.params):
                        view = arena.state_views["momentum_buffer"][k]
                        entry = loaded.get(id(p))
                        buf = None if entry is None else entry.get("momentum_buffer")
                        if buf is None:
                            view.zero_()
                            self.state.pop(p, None)
                            arena.counts[k] = 0
                        else:
                            view.copy_(buf.reshape(p.shape))
                            self.state[p] = {**entry, "momentum_buffer": view}
                            arena.counts[k] = max(arena.counts[k], 1)
                for p in rt.loose:
                    entry = loaded.get(id(p))
                    buf = None if entry is None else entry.get("momentum_buffer")
                    if buf is None:
                        self.state.pop(p, None)
                    else:
                        dtype = self.state_dtype or p.dtype
                        self.state[p] = {**entry, "momentum_buffer": buf.to(p.device, dtype).reshape(p.shape).clone()}


def _names(dtypes) -> str:
    return ", ".join("None" if d is None else str(d) for d in dtypes)
