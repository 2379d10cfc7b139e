"""``Muon``: torch.optim.Muon's update for the hidden matrices of a model, an auxiliary rule for the rest.

One optimizer for a whole model: ``Muon(model.parameters())`` sends every hidden matrix (linear weights,
conv kernels flattened to ``(out, in·kh·kw)``) to Muon and everything else to an auxiliary rule inside
the same optimizer, NAdamW by default: biases and norm scales (fewer than two dimensions), tensors of three
or more dimensions with a leading 1 (``(1, 1, D)`` class tokens, ``(1, N, D)`` position embeddings),
and — when given as ``model.named_parameters()`` — embeddings and output heads by name (see
:func:`aux_by_name`; :func:`nesterov.muon_param_groups` routes by module type instead). A group with
``use_muon=False`` sends all its parameters to the auxiliary rule.

How a step runs (the math is :mod:`nesterov.rules.muon`, stated once):

1. auxiliary groups step through the engine with their rule, like NAdamW or NAG would;
2. per Muon group and (device, dtype), the momentum update is a few foreach kernels over the group's
   matrices (bf16 state widened and rounded back stochastically);
3. the Nesterov directions are gathered by shape and Newton–Schulz runs once per shape on the
   stack (:func:`~nesterov.engine.matrices.batched_apply`), in ``ns_dtype``; under FSDP2 each matrix is
   orthogonalised once, on an owner rank (:func:`~nesterov.engine.matrices.sharded_apply`); with a
   ``process_group`` (DDP) each rank orthogonalises its share and the ranks exchange the results
   (:func:`~nesterov.engine.matrices.replicated_apply`);
4. each matrix takes its step ``p ← p·(1 − ηλ) − η'·O``.
"""

from __future__ import annotations

import re
import warnings
from functools import partial

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from nesterov.engine.matrices import full_tensor, replicated_apply, row_sharded, shard_like, sharded_apply
from nesterov.engine.precision import mix_seed, round_to
from nesterov.optim.base import RuleOptimizer
from nesterov.optim.nag import check_nag
from nesterov.optim.validate import check_adaptive, check_flags, check_number, dtype_names
from nesterov.rules import muon as R
from nesterov.rules.nadamw import NADAMW_RULE
from nesterov.rules.nag import NAG_RULE

NS_DTYPES = (None, torch.float32, torch.float64, torch.bfloat16, torch.float16)
BACKENDS = ("auto", "compile", "foreach", "eager")

# The words that mark a matrix Muon should not orthogonalise (embeddings, output heads) in a parameter's name:
# see aux_by_name.
AUX_NAME_PARTS = ("embed", "unembed", "wte", "wpe", "lm_head", "head", "classifier")


def _check_nadamw(group: dict, where: str) -> None:
    check_adaptive(group, where, betas=2)
    check_number(f"momentum_decay{where}", group["momentum_decay"], low=0.0)
    check_flags(group, where, ("decoupled_weight_decay", "maximize"))


# The auxiliary rules: (rule, defaults, check).
AUX = {
    "nadamw": (NADAMW_RULE, dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                                 decoupled_weight_decay=True, maximize=False), _check_nadamw),
    "nag": (NAG_RULE, dict(lr=1e-3, momentum=0.9, dampening=0.0, weight_decay=0.0, maximize=False,
                           nesterov=True), check_nag),
}


def aux_by_name(name: str) -> bool:
    """Whether a parameter's name marks an embedding or an output head: one of its words — the lower-cased
    name split at dots and underscores — begins with one of :data:`AUX_NAME_PARTS`. So ``lm_head.weight``,
    ``embed_tokens.weight``, ``tok_embeddings.weight``, ``pos_embed`` and ``heads.0.weight`` match, and
    ``multihead_attn.in_proj_weight`` (a word that only contains ``head``) does not."""
    return any(word.startswith(part) for word in re.split(r"[._]", name.lower()) for part in AUX_NAME_PARTS)


def is_hidden_matrix(p: torch.Tensor, name: str | None = None) -> bool:
    """Whether ``Muon(params)`` orthogonalises ``p``: two or more dimensions but not a stack of vectors
    (three or more with a leading 1: class tokens, position embeddings), and a name (when there is one)
    that is not an embedding's or an output head's (:func:`aux_by_name`)."""
    if p.dim() < 2 or (p.dim() > 2 and p.shape[0] == 1):
        return False
    return name is None or not aux_by_name(name)


def _as_tuples(coefficients):
    """``ns_coefficients`` with lists made tuples (a param group's value stays comparable and hashable)."""
    if isinstance(coefficients, (list, tuple)):
        return tuple(_as_tuples(c) if isinstance(c, (list, tuple)) else c for c in coefficients)
    return coefficients


def _schedule_length(coefficients) -> int | None:
    """The number of steps a per-step schedule (or the name of one) fixes; None for one triple."""
    if isinstance(coefficients, str):
        coefficients = R.NS_COEFFICIENT_SETS.get(coefficients, ())
    if isinstance(coefficients, (tuple, list)) and R.is_schedule(coefficients):
        return len(coefficients)
    return None


def _check_coefficients(coefficients, steps: int, where: str) -> None:
    """Refuse an ``ns_coefficients`` that is no set's name, triple or schedule of triples, or whose schedule
    has another length than ``ns_steps``."""
    accepted = (f"one of {tuple(R.NS_COEFFICIENT_SETS)}, a tuple of 3 numbers (a, b, c), or a sequence of such "
                f"triples (one per step)")
    if isinstance(coefficients, str):
        if coefficients not in R.NS_COEFFICIENT_SETS:
            raise ValueError(f"ns_coefficients{where} must be {accepted}; got {coefficients!r}")
    elif not isinstance(coefficients, (tuple, list)) or not coefficients:
        raise ValueError(f"ns_coefficients{where} must be {accepted}; got {coefficients!r}")
    else:
        triples = coefficients if R.is_schedule(coefficients) else [coefficients]
        for t, triple in enumerate(triples):
            if not isinstance(triple, (tuple, list)) or len(triple) != 3:
                raise ValueError(f"ns_coefficients{where} must be {accepted}; got {coefficients!r}")
            for name, value in zip("abc", triple):
                check_number(f"ns_coefficients[{t}][{name}]{where}" if len(triples) > 1
                             else f"ns_coefficients[{name}]{where}", value)
    length = _schedule_length(coefficients)
    if length is not None and length != steps:
        raise ValueError(f"ns_steps{where} ({steps}) must equal the number of per-step triples of ns_coefficients "
                         f"({length}); leave ns_steps out to take that length")


def _split(entry):
    return (entry[0], entry[1]) if isinstance(entry, tuple) else (None, entry)


class Muon(RuleOptimizer):
    r"""Muon (Nesterov momentum, then Newton–Schulz orthogonalisation) for matrices; an auxiliary rule for
    the rest.

    On the matrices it is exactly ``torch.optim.Muon`` (same momentum blend, normalisation, transposition
    of tall matrices, decoupled weight decay, ``adjust_lr_fn``), except that Newton–Schulz runs in
    ``ns_dtype`` (torch always uses bf16) and that conv kernels are accepted, flattened to 2-D. The
    state layout is torch's (``momentum_buffer`` per matrix), so checkpoints load either way.

    Args:
        params: parameters, named parameters, or param groups. A group may set ``use_muon=False``
            (embeddings, output heads): all its parameters then go to the auxiliary rule, with the group's
            other keys (``lr``, ``betas``, ...) as that rule's hyperparameters. The parameters of a Muon
            group that are not hidden matrices (:func:`is_hidden_matrix`) are split off into an auxiliary
            group placed right after it (with the auxiliary rule's defaults), so ``param_groups`` can be
            longer than what was passed; each group has a ``use_muon`` key saying which it is.
        lr: η ≥ 0. momentum: μ in [0, 1). nesterov: Nesterov blend of gradient and buffer.
        ns_steps: Newton–Schulz iterations, 0 ≤ k < 100; ``None`` (default): the length of a per-step
            schedule, else 5.
        ns_coefficients: the quintic's coefficients: ``"jordan"`` (default: (3.4445, −4.775, 2.0315) every
            step, torch's), ``"polar_express"`` (five per-step triples and their own normalisation, see
            :mod:`nesterov.rules.muon`), one triple (a, b, c), or a sequence of per-step triples (then
            ``ns_steps`` must equal its length).
        eps: ε > 0, floor of the Frobenius norm that normalises the direction.
        weight_decay: λ ≥ 0, decoupled: ``p ← p·(1 − ηλ)``.
        ns_method: ``"auto"`` (default: Gram where it measured faster for the shape and dtype,
            :func:`nesterov.rules.muon.gram_pays`, else standard), ``"standard"`` (torch.optim.Muon's
            iteration) or ``"gram"`` (Gram Newton–Schulz: the same polynomial through the small Gram matrix,
            fewer products on rectangular matrices).
        cautious_weight_decay: decay only where the parameter and the update agree in sign
            (``p ← p − ηλ·p·[p·O ≥ 0]``).
        adjust_lr_fn: ``None``/``"original"`` (η·√max(1, A/B)) or ``"match_rms_adamw"`` (0.2·η·√max(A, B)).
        aux: the auxiliary rule: ``"nadamw"`` (default), ``"nag"``, or ``None`` to refuse parameters that
            are not hidden matrices.
        aux_defaults: the auxiliary rule's hyperparameters for the groups Muon splits off (e.g.
            ``{"lr": 3e-4, "weight_decay": 0.01}``); unset keys take that rule's defaults (NAdamW's:
            lr 2e-3, betas (0.9, 0.999), eps 1e-8, no weight decay).
        ns_dtype: dtype of the Newton–Schulz products; ``None`` picks per device
            (:func:`nesterov.rules.muon.default_ns_dtype`).
        process_group: ``None`` (default: every rank orthogonalises every matrix it holds), or the
            ``torch.distributed`` group over which the matrices are replicated (DDP: ``dist.group.WORLD``, or
            the group DDP was given): each rank then orthogonalises a share balanced by cost and the ranks
            exchange the results, so every matrix is orthogonalised once and all ranks end bit-identical.
            Every rank of the group must step the same parameters. FSDP2's row-sharded parameters keep their
            owner-rank scheme whatever this is; the ``eager`` backend orthogonalises every matrix on every
            rank. Not saved by pickling (a copy steps without it).
        backend: ``"auto"`` (default), ``"foreach"`` and ``"compile"`` run the batched step (the auxiliary
            rule gets the same backend); ``"eager"`` runs :func:`nesterov.rules.muon.update` matrix by matrix.
        state_dtype: dtype of every state buffer (``None``: the parameter's); ``torch.bfloat16`` halves
            their memory, written with stochastic rounding.
    """

    rule = None  # the Muon step is below; auxiliary groups name their rule in ``rule_for``

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True,
                 ns_steps: int | None = None, ns_coefficients=R.NS_COEFFICIENTS, eps: float = R.EPS,
                 weight_decay: float = 0.0, adjust_lr_fn: str | None = None, *, aux="nadamw",
                 aux_defaults: dict | None = None, ns_dtype: torch.dtype | None = None, backend: str = "auto",
                 state_dtype: torch.dtype | None = None, ns_method: str = "auto",
                 cautious_weight_decay: bool = False, process_group=None):
        if ns_dtype not in NS_DTYPES:
            raise ValueError(f"ns_dtype must be one of {dtype_names(NS_DTYPES)}; got {ns_dtype!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS} for Muon, got {backend!r}")
        if aux is not None and aux not in AUX:
            raise ValueError(f"aux must be one of {tuple(AUX)} or None; got {aux!r}")
        if process_group is not None and not (dist.is_available() and isinstance(process_group, dist.ProcessGroup)):
            raise TypeError("process_group must be a torch.distributed.ProcessGroup (e.g. torch.distributed.group.WORLD "
                            f"under DDP) or None; got {type(process_group).__name__}")
        self.process_group = process_group
        self.aux = aux
        self.aux_defaults = {**AUX[aux][1], **(aux_defaults or {})} if aux is not None else {}
        if aux is not None:
            unknown = set(aux_defaults or {}) - set(AUX[aux][1])
            if unknown:
                raise ValueError(f"aux_defaults has keys {sorted(unknown)} that {aux} does not take; it takes "
                                 f"{sorted(AUX[aux][1])}")
            AUX[aux][2](self.aux_defaults, " (aux_defaults)")
        self.ns_dtype = ns_dtype
        ns_coefficients = _as_tuples(ns_coefficients)
        if ns_steps is None:
            ns_steps = _schedule_length(ns_coefficients) or R.NS_STEPS
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                        ns_coefficients=ns_coefficients, eps=eps, weight_decay=weight_decay,
                        adjust_lr_fn=adjust_lr_fn, ns_method=ns_method,
                        cautious_weight_decay=cautious_weight_decay, **self.extra_defaults(), use_muon=True)
        super().__init__(params, defaults, backend=backend, state_dtype=state_dtype)
        if not any(g["use_muon"] for g in self.param_groups):
            warnings.warn("Muon: no parameter is a hidden matrix, so every parameter steps with the auxiliary "
                          f"rule ({self.aux}); nothing is orthogonalised", UserWarning, stacklevel=2)

    def __getstate__(self):
        return {**super().__getstate__(), "aux": self.aux, "aux_defaults": self.aux_defaults,
                "ns_dtype": self.ns_dtype,
                "process_group": None}  # a group does not pickle: a copy orthogonalises every matrix itself

    def group_defaults(self, group: dict) -> dict:
        if group.get("use_muon", True):
            return super().group_defaults(group)
        return self.__dict__.get("aux_defaults", {})  # (unpickling restores it before asking)

    # -- validation ----------------------------------------------------------------------------------
    def check_hypers(self, group: dict, where: str) -> None:
        """Raise ValueError/TypeError naming the bad hyperparameter of a Muon or an auxiliary group."""
        if not group.get("use_muon", True):
            AUX[self.aux][2](group, where)
            return
        check_number(f"lr{where}", group["lr"], low=0.0)
        check_number(f"momentum{where}", group["momentum"], low=0.0, high=1.0, high_open=True)
        check_flags(group, where, ("nesterov", "cautious_weight_decay"))
        steps = group["ns_steps"]
        if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps < 100:
            raise ValueError(f"ns_steps{where} must be an int with 0 <= ns_steps < 100, got {steps!r}")
        _check_coefficients(group["ns_coefficients"], steps, where)
        if group["ns_method"] not in R.NS_METHODS:
            raise ValueError(f"ns_method{where} must be one of {R.NS_METHODS}, got {group['ns_method']!r}")
        check_number(f"eps{where}", group["eps"], low=0.0, low_open=True)
        check_number(f"weight_decay{where}", group["weight_decay"], low=0.0)
        if group["adjust_lr_fn"] not in R.ADJUST_LR_FNS:
            raise ValueError(f"adjust_lr_fn{where} must be one of {R.ADJUST_LR_FNS}, got {group['adjust_lr_fn']!r}")

    def extra_defaults(self) -> dict:
        """Hyperparameters a subclass adds to each Muon group (NorMuon's ``beta2``)."""
        return {}

    def rule_for(self, group: dict):
        """The rule of an auxiliary group (None for a Muon group: its step is :meth:`step_group`'s own)."""
        return None if group["use_muon"] else AUX[self.aux][0]

    # -- param groups --------------------------------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        """Add a group; its hidden matrices become a Muon group, its other parameters an auxiliary group."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        where = f" (param group {len(self.param_groups)})"
        entries = param_group.get("params")
        if entries is None:
            raise ValueError(f"params{where}: a param group needs a 'params' entry")
        if isinstance(entries, torch.Tensor):
            entries = [entries]
        elif isinstance(entries, set):
            raise TypeError(f"params{where} must be an ordered collection of tensors, not a set")
        entries = list(entries)
        use_muon = param_group.get("use_muon", True)
        if not isinstance(use_muon, bool):
            raise TypeError(f"use_muon{where} must be a bool, got {type(use_muon).__name__}")
        for k, entry in enumerate(entries):
            p = _split(entry)[1]
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"params{where}[{k}] must be a torch.Tensor, got {type(p).__name__}")
            if p.is_complex():
                raise ValueError(f"params{where}[{k}]: Muon does not support complex parameters ({p.dtype})")
        matrices = [e for e in entries if use_muon and is_hidden_matrix(_split(e)[1], _split(e)[0])]
        others = [e for e in entries if not (use_muon and is_hidden_matrix(_split(e)[1], _split(e)[0]))]
        if others and self.aux is None:
            shape = tuple(_split(others[0])[1].shape)
            raise ValueError(
                f"params{where} include {len(others)} parameter(s) that Muon does not orthogonalise (e.g. shape "
                f"{shape}: not a hidden matrix, or use_muon=False) and aux=None: pass aux='nadamw' (the default) "
                f"or 'nag', or leave those parameters out")
        if not entries:
            raise ValueError(f"params{where} is empty")
        rest = {k: v for k, v in param_group.items() if k not in ("params", "use_muon")}
        groups = []
        if matrices:
            groups.append({**rest, "params": matrices, "use_muon": True})
        if others:
            aux_group = {**self.aux_defaults, **(rest if not use_muon else {}), "params": others, "use_muon": False}
            groups.append(aux_group)
        added = 0
        try:
            for group in groups:
                super().add_param_group(group)
                added += 1
        except BaseException:
            del self.param_groups[len(self.param_groups) - added:]
            raise

    def check_group(self, group: dict, where: str) -> None:
        super().check_group(group, where)
        if group["use_muon"]:
            for k, p in enumerate(group["params"]):
                if p.dim() < 2:
                    raise ValueError(f"params{where}[{k}]: a Muon group needs matrices, got shape {tuple(p.shape)}")

    # -- step ----------------------------------------------------------------------------------------
    def _ns_dtype(self, p: torch.Tensor) -> torch.dtype:
        return self.ns_dtype or R.default_ns_dtype(p.device, p.dtype)

    def step_group(self, index: int, group: dict, params: list[torch.Tensor]) -> None:
        if not group["use_muon"]:
            return super().step_group(index, group, params)
        lr, momentum, weight_decay = float(group["lr"]), float(group["momentum"]), float(group["weight_decay"])
        ns = dict(steps=group["ns_steps"], coefficients=_as_tuples(group["ns_coefficients"]), eps=float(group["eps"]),
                  method=group["ns_method"])
        salts = self._salt_map()
        bufs = []
        for p in params:
            state = self.state[p]
            self._fit_state_muon(p, state)
            bufs.append(state["momentum_buffer"])
        if self.backend == "eager" and not any(isinstance(p, DTensor) for p in params):
            for p in params:
                self._eager_step(p, group, ns, salts)
            return
        # 1. momentum: foreach kernels per (device, dtype), bf16 state widened and rounded back
        directions = [None] * len(params)
        by_kind: dict = {}
        for j, p in enumerate(params):
            by_kind.setdefault((p.device, p.dtype), []).append(j)
        for members in by_kind.values():
            grads = [params[j].grad for j in members]
            stored = [bufs[j] for j in members]
            wide = [b.to(g.dtype) for b, g in zip(stored, grads)] if stored[0].dtype != grads[0].dtype else stored
            torch._foreach_lerp_(wide, grads, 1 - momentum)
            us = torch._foreach_lerp(grads, wide, momentum) if group["nesterov"] else wide
            for j, b, w, u in zip(members, stored, wide, us):
                if w is not b:
                    b.copy_(round_to(w, b.dtype, self._seed(params[j], salts)))
                directions[j] = u
        # 2. Newton–Schulz, one batched product per shape (FSDP2 shards: once per matrix, on an owner)
        by_mesh: dict = {}
        for j, p in enumerate(params):
            u = directions[j]
            if row_sharded(p):  # the rows this rank holds; sharded_apply does the rest
                u = u.redistribute(p.device_mesh, p.placements).to_local()
                directions[j] = u.reshape(-1, R.matrix_shape(p.shape)[1])
            else:  # a plain tensor, or any other DTensor layout: the whole matrix on every rank
                directions[j] = R.as_matrix(full_tensor(u))
            mesh = p.device_mesh if row_sharded(p) else None
            by_mesh.setdefault((mesh, self._ns_dtype(p), isinstance(p, DTensor)), []).append(j)
        fn = partial(R.newton_schulz, **ns)
        updates = [None] * len(params)
        for (mesh, dtype, dtensor), js in by_mesh.items():
            if mesh is None:  # whole matrices; plain tensors split over process_group (DDP replicas)
                replicas = None if dtensor else self.__dict__.get("process_group")
                outs = replicated_apply(fn, [directions[j] for j in js], replicas, dtype=dtype)
            else:
                shapes = [R.matrix_shape(params[j].shape) for j in js]
                outs = sharded_apply(fn, [directions[j] for j in js], shapes, mesh.get_group(), dtype=dtype)
            for j, out in zip(js, outs):
                updates[j] = out
        # 3. the step
        for p, O in zip(params, updates):
            if row_sharded(p):
                O = DTensor.from_local(O.reshape(p.to_local().shape), p.device_mesh, p.placements, shape=p.shape,
                                       stride=p.stride())
            else:
                O = shard_like(O.reshape(p.shape), p)
            O = self._shape_update(p, O, group, salts)
            R.descend_(p, O, lr=lr, weight_decay=weight_decay, adjusted=R.adjusted_lr(lr, group["adjust_lr_fn"], p.shape),
                       cautious=group["cautious_weight_decay"])

    def _rule_kwargs(self, p: torch.Tensor, group: dict, ns: dict) -> dict:
        """The keyword arguments of :func:`nesterov.rules.muon.update` for ``p`` in ``group``."""
        return dict(lr=float(group["lr"]), momentum=float(group["momentum"]), nesterov=group["nesterov"],
                    weight_decay=float(group["weight_decay"]), ns_steps=ns["steps"], ns_coefficients=ns["coefficients"],
                    eps=ns["eps"], adjust_lr_fn=group["adjust_lr_fn"], ns_dtype=self._ns_dtype(p),
                    ns_method=ns["method"], cautious_weight_decay=group["cautious_weight_decay"])

    def _eager_step(self, p: torch.Tensor, group: dict, ns: dict, salts: dict) -> None:
        """``backend="eager"``: the rule as written, for one matrix."""
        buf = self.state[p]["momentum_buffer"]
        new_p, new_buf = R.update(p, p.grad, buf.to(p.dtype), **self._rule_kwargs(p, group, ns))
        p.copy_(new_p)
        buf.copy_(round_to(new_buf, buf.dtype, self._seed(p, salts)))

    def _shape_update(self, p: torch.Tensor, O: torch.Tensor, group: dict, salts: dict) -> torch.Tensor:
        """The update that steps ``p``, from its orthogonalised direction ``O`` (Muon's is ``O``; NorMuon
        normalises its rows here)."""
        return O

    def _fit_state_muon(self, p: torch.Tensor, state: dict) -> None:
        dtype = self.state_dtype or p.dtype
        buf = state.get("momentum_buffer")
        if buf is None:
            state["momentum_buffer"] = torch.zeros_like(p, dtype=dtype)
        elif buf.dtype != dtype or buf.device != p.device or buf.shape != p.shape:
            state["momentum_buffer"] = torch.empty_like(p, dtype=dtype).copy_(buf.reshape(p.shape))
        if self.state_dtype is not None:
            step = state.get("step")
            state["step"] = (step if isinstance(step, torch.Tensor) else torch.tensor(float(step or 0))) + 1

    def _seed(self, p: torch.Tensor, salts: dict) -> int | None:
        """The stochastic-rounding seed of ``p`` this step (None when its state is as wide as ``p``)."""
        if self.state_dtype is None or self.state_dtype == p.dtype:
            return None
        return mix_seed(int(self.state[p]["step"]), salts[id(p)])
