"""Where each parameter of a model goes under Muon, decided by the module that holds it.

``Muon(model.parameters())`` can only judge a tensor by its shape (and, given names, by its name): an
``nn.Sequential``'s embedding table ``0.weight`` and output head ``3.weight`` look like any hidden matrix.
:func:`muon_routes` looks at the modules instead:

- the weights of hidden ``nn.Linear`` layers, conv kernels (``nn.Conv*d``, transposed ones too) and
  ``nn.MultiheadAttention``'s input projections go to Newton–Schulz;
- ``nn.Embedding`` / ``nn.EmbeddingBag`` tables, the output head — the last ``nn.Linear`` of the model (in
  module order), and any ``nn.Linear`` whose weight is an embedding's (tied) — and every tensor of fewer than
  2 dimensions go to the auxiliary rule (``use_muon=False``);
- any other parameter is judged as ``Muon(model.named_parameters())`` would
  (:func:`nesterov.optim.muon.is_hidden_matrix`: its shape and its name);
- a Newton–Schulz candidate that Muon would not take as a matrix (a conv kernel with one output channel:
  a stack of one row) goes to the auxiliary rule too, so the table says what Muon will do.

Each parameter is listed once, under its first name (tied parameters name their other names); frozen ones
(``requires_grad=False``) are listed and left out of the groups. :func:`muon_param_groups` turns the routes
into param groups for ``Muon`` (and its subclasses).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import nn

from nesterov.optim.muon import is_hidden_matrix

__all__ = ["AUX", "FROZEN", "NEWTON_SCHULZ", "MuonRoutes", "Route", "muon_param_groups", "muon_routes"]

NEWTON_SCHULZ, AUX, FROZEN = "newton-schulz", "aux", "frozen"
EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)
CONVS = (nn.modules.conv._ConvNd,)
ATTENTION_PROJECTIONS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


@dataclass(frozen=True)
class Route:
    """One parameter: its (first) name, shape, route (``newton-schulz``, ``aux`` or ``frozen``) and why."""

    name: str
    shape: tuple[int, ...]
    route: str
    why: str
    param: nn.Parameter = field(repr=False, compare=False)
    aliases: tuple[str, ...] = ()  # the other names of a tied parameter


class MuonRoutes(tuple):
    """The routes of a model's parameters, in ``model.named_parameters()`` order; ``str()`` is a table."""

    def params(self, route: str) -> list[nn.Parameter]:
        return [r.param for r in self if r.route == route]

    def __str__(self) -> str:
        def dims(shape):
            return "×".join(map(str, shape)) or "scalar"

        rows = [("name", "shape", "route", "why")]
        rows += [(r.name, dims(r.shape), r.route,
                  r.why + (f" (also {', '.join(r.aliases)})" if r.aliases else "")) for r in self]
        widths = [max(len(row[k]) for row in rows) for k in range(3)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3] for row in rows]
        ns = [r for r in self if r.route == NEWTON_SCHULZ]
        values = sum(math.prod(r.shape) for r in self)
        lines.append(f"{len(ns)} of {len(self)} tensors orthogonalised "
                     f"({sum(math.prod(r.shape) for r in ns):,} of {values:,} values)")
        return "\n".join(line.rstrip() for line in lines)

    def __repr__(self) -> str:
        return f"MuonRoutes({len(self)} parameters, {len(self.params(NEWTON_SCHULZ))} to Newton–Schulz)"


def _decide(p: nn.Parameter, name: str, owners: list[tuple[nn.Module, str]], heads: set[int]) -> tuple[str, str]:
    if p.dim() < 2:
        return AUX, "fewer than 2 dimensions"
    if any(isinstance(m, EMBEDDINGS) for m, _ in owners):
        kind = next(type(m).__name__ for m, _ in owners if isinstance(m, EMBEDDINGS))
        return AUX, f"{kind} table" + (", tied to a Linear" if any(isinstance(m, nn.Linear) for m, _ in owners) else "")
    if id(p) in heads:
        return AUX, "output head (the last Linear)"
    candidate = None
    for module, attr in owners:
        if isinstance(module, nn.Linear) and attr == "weight":
            candidate = "hidden Linear"
        elif isinstance(module, CONVS) and attr == "weight":
            candidate = "conv kernel"
        elif isinstance(module, nn.MultiheadAttention) and attr in ATTENTION_PROJECTIONS:
            candidate = "attention projection"
    if candidate is not None:
        if is_hidden_matrix(p):
            return NEWTON_SCHULZ, candidate
        return AUX, f"{candidate} with one output row"
    if is_hidden_matrix(p, name):
        return NEWTON_SCHULZ, "matrix (by shape and name)"
    if is_hidden_matrix(p):
        return AUX, "an embedding's or a head's name"
    return AUX, "stack of vectors (leading 1)"


def muon_routes(model: nn.Module) -> MuonRoutes:
    """Where each parameter of ``model`` goes under Muon, by the type of the module that holds it (see the
    module's docstring); ``print(nesterov.muon_routes(model))`` shows the table."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    owners: dict[int, list[tuple[nn.Module, str]]] = {}
    for module in model.modules():
        for attr, p in module.named_parameters(recurse=False):
            owners.setdefault(id(p), []).append((module, attr))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    heads = {id(linears[-1].weight)} if linears else set()
    names: dict[int, list[str]] = {}
    params: dict[int, nn.Parameter] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
        params[id(p)] = p
    routes = []
    for key, (first, *aliases) in names.items():
        p = params[key]
        route, why = (FROZEN, "requires_grad=False") if not p.requires_grad else \
            _decide(p, first, owners.get(key, []), heads)
        routes.append(Route(first, tuple(p.shape), route, why, p, tuple(aliases)))
    return MuonRoutes(routes)


def muon_param_groups(model: nn.Module, **overrides) -> list[dict]:
    """Param groups for ``nesterov.Muon`` (or a subclass) from :func:`muon_routes`: a Muon group of the
    matrices for Newton–Schulz, then a ``use_muon=False`` group of the rest (empty groups left out).

    ``overrides`` are group keys: ``aux_``-prefixed ones go to the auxiliary group without the prefix, the
    others to the Muon group, e.g. ``muon_param_groups(model, weight_decay=0.01, aux_lr=3e-4)``.
    """
    reserved = sorted(k for k in overrides if k.removeprefix("aux_") in ("params", "use_muon"))
    if reserved:
        raise ValueError(f"overrides {reserved}: muon_param_groups sets params and use_muon itself; pass "
                         f"hyperparameters (lr, weight_decay, ... or aux_lr, aux_weight_decay, ...)")
    routes = muon_routes(model)
    muon = {k: v for k, v in overrides.items() if not k.startswith("aux_")}
    aux = {k.removeprefix("aux_"): v for k, v in overrides.items() if k.startswith("aux_")}
    groups = [{"params": routes.params(NEWTON_SCHULZ), "use_muon": True, **muon},
              {"params": routes.params(AUX), "use_muon": False, **aux}]
    return [g for g in groups if g["params"]]

