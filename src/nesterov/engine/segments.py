"""Per-span inputs: what a rule needs beyond elementwise state, computed once per run of parameters.

Two kinds, both declared on a :class:`SpanRule` (a :class:`~nesterov.rules.base.Rule` with extra fields):

- **running 0-d states** (``scalars``), like torch NAdam's ``mu_product``: one 0-d tensor per parameter in
  ``optimizer.state[p]`` (torch's layout), shared by the members of a run exactly like ``step`` (a run
  never mixes step counts). ``advance(step, *old, **hypers) -> (new_scalars, derived)`` moves them one
  step (a GradScaler-skipped step keeps the old values); ``derived``, the per-step scalars the update
  reads, is handed to ``update`` as keyword arguments. ``advance`` is where a rule computes those
  scalars (bias corrections, NAdam's μ_t) once per run in float64, as torch does with Python floats (in
  float32, 1 − 0.999^t loses three of its seven digits): on the host for CPU steps, as 0-d tensors on
  other devices (no synchronisation), through :class:`Scalars`.
- **per-tensor segments** (``per_tensor``), for layer-wise trust ratios (LARS, LAMB): the span is a
  matrix of ``block``-element rows (:func:`rows`), each inside one tensor's slot; ``update`` gets ``block``,
  ``block_ids`` (int32, each row's tensor within the span), ``segment_lengths`` (each slot's length, on the
  CPU) and ``matrix`` (bool, ``ndim > 1``), one per tensor plus a padding segment with no rows.
  :func:`segment_norm` (row sums, then an ``index_add`` over rows) and :func:`expand` (a per-row column)
  are the one mechanism for per-tensor reductions and broadcasts, which eager and ``torch.compile`` run alike.

The engine calls :func:`span_inputs` for every run it steps; for plain rules it returns ``{}``.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Callable

import torch

from nesterov.rules.base import Rule


@dataclass(frozen=True)
class SpanRule(Rule):
    scalars: tuple[str, ...] = ()
    init_scalars: Callable | None = None  # (device) -> {name: 0-d tensor}: the values before step 1
    advance: Callable | None = None  # (step, *old_scalars, **hypers) -> ({name: new 0-d}, {name: derived})
    per_tensor: bool = False


class Scalars:
    """Float64 arithmetic for ``advance``: Python floats when ``step`` is on the CPU (a handful of host
    operations instead of ~30 0-d tensor kernels: the difference is most of a small model's step),
    0-d float64 tensors on the device otherwise (no host synchronisation)."""

    def __init__(self, step: torch.Tensor):
        self.device = step.device
        self.host = step.device.type == "cpu"
        self.t = step.item() if self.host else step.to(torch.float64)

    def __call__(self, x):
        """A hyperparameter (float or 0-d tensor) as a float64 number."""
        if self.host:
            return float(x)
        return torch.as_tensor(x, dtype=torch.float64, device=self.device)

    def sqrt(self, x):
        return math.sqrt(x) if self.host else x.sqrt()

    def positive(self, x):
        """1 where ``x > 0``, else 0."""
        return float(x > 0) if self.host else (x > 0).to(torch.float64)

    def pack(self, values: dict) -> dict:
        """The results as 0-d float64 tensors (what ``update`` takes under every backend)."""
        if self.host:
            return {k: torch.tensor(v, dtype=torch.float64) for k, v in values.items()}
        return values


# Arenas of per-tensor rules give every tensor a slot of a whole number of BLOCK elements (the padding is
# zero in params, grads and states, and a zero stays zero under LARS and LAMB), so a span is a matrix of
# rows that each lie inside one tensor: per-tensor norms are row sums and per-tensor factors broadcast
# along rows, which torch.compile fuses into the elementwise pass without a gather per element.
BLOCK = 256


def rows(x: torch.Tensor, block: int | None) -> torch.Tensor:
    """``x`` as rows of ``block`` elements (each row inside one tensor's slot); ``None`` means
    :data:`BLOCK`. Arena spans arrive as rows already (the engine views them so, and the compiled
    kernel's outputs then need no reshape); a lone tensor outside any arena becomes one row."""
    return x if x.dim() == 2 and x.shape[1] == (block or BLOCK) else x.reshape(-1, block or BLOCK)


def segment_norm(x: torch.Tensor, block_ids: torch.Tensor, segments: int) -> torch.Tensor:
    """L2 norm of each tensor's rows of ``x`` (``(blocks, block)``; ``block_ids[i]`` is row i's tensor).

    Squares summed along rows (fused into the pass that produces ``x``), then per tensor with an
    ``index_add`` over the few rows: one value per segment.
    """
    row_sums = x.square().sum(dim=1)
    return torch.zeros(segments, dtype=x.dtype, device=x.device).index_add(0, block_ids, row_sums).sqrt()


@torch.library.custom_op("nesterov::per_tensor", mutates_args=())
def _per_tensor(values: torch.Tensor) -> torch.Tensor:
    return values.clone()


@_per_tensor.register_fake
def _(values):
    return torch.empty_like(values)


def expand(per_tensor: torch.Tensor, block_ids: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """One value per tensor as a column that broadcasts along the rows of ``like`` (the span's rows).

    The values pass through an opaque op first, so that torch.compile computes them once per tensor:
    left to itself, inductor inlines the per-tensor arithmetic (square roots, divisions) into the pass
    and redoes it for every vector of every row.
    """
    # Tell torch.compile that there is one id per row: two unrelated dynamic sizes would make it
    # materialise every broadcast result instead of fusing it into the pass.
    torch._check(block_ids.shape[0] == like.shape[0])
    return _per_tensor(per_tensor)[block_ids].view(like.shape[0], 1)


# id(first param of a span) -> (member ids, block, block_ids, lengths, matrix); dropped when that param dies.
_SEGMENTS: dict[int, tuple] = {}


def _segments(params: list[torch.Tensor], device, cache: bool, block: int) -> tuple[torch.Tensor, ...]:
    key = tuple(id(p) for p in params)
    hit = _SEGMENTS.get(key[0]) if cache else None
    if hit is not None and hit[0] == key and hit[1] == block:
        return hit[2:]
    # Each tensor's slot rounded up to whole blocks, plus one padding segment with no rows: a count of 1
    # is a size torch.compile specialises on, and inductor fails to generate some reductions of that size.
    lengths = torch.tensor([-(-p.numel() // block) * block for p in params] + [0])  # CPU: foreach splits by it
    ids = torch.repeat_interleave(torch.arange(len(params) + 1, dtype=torch.int32), lengths // block).to(device)
    matrix = torch.tensor([p.dim() > 1 for p in params] + [False], device=device)
    if cache:
        if key[0] not in _SEGMENTS:
            weakref.finalize(params[0], _SEGMENTS.pop, key[0], None)
        _SEGMENTS[key[0]] = (key, block, ids, lengths, matrix)
    return ids, lengths, matrix


def span_inputs(rule: Rule, state, params: list[torch.Tensor], members: list[int], step, found_inf,
                hypers: dict, store: bool = True, block: int | None = None) -> dict:
    """Extra keyword inputs of ``rule.update`` for the run ``[params[i] for i in members]`` (``{}`` for
    plain rules). With ``store`` the advanced 0-d states are written to ``state[p]`` of every member.
    ``block`` is the arena's slot granularity (:data:`BLOCK` for per-tensor rules); ``None`` for a lone
    tensor outside any arena, which is then one row.
    """
    if not isinstance(rule, SpanRule):
        return {}
    params = [params[i] for i in members]
    extra: dict = {}
    device = params[0].device
    if rule.advance is not None:
        first = state.get(params[0]) or {}
        init = None
        old = []
        for name in rule.scalars:
            value = first.get(name)
            if value is None or not isinstance(value, torch.Tensor):  # absent, or a float (old checkpoints)
                init = init or rule.init_scalars(device)
                value = init[name] if value is None else torch.tensor(float(value), dtype=init[name].dtype,
                                                                      device=device)
            old.append(value)
        hypers = {name: hypers[name] for name in rule.hypers}
        if not store:  # a warm-up on throw-away inputs: zeros would divide by zero in the scalars
            hypers = {name: torch.full_like(h, 0.5) if isinstance(h, torch.Tensor) else 0.5
                      for name, h in hypers.items()}
        new, derived = rule.advance(step, *old, **hypers)
        if found_inf is not None and new:
            skip = found_inf.reshape(()) != 0
            new = {name: torch.where(skip, o, new[name]) for name, o in zip(rule.scalars, old)}
        if store and new:
            for p in params:
                state[p].update(new)
        extra.update(derived)
    if rule.per_tensor:
        if block is None:
            assert len(params) == 1, "a span of several tensors comes from an arena, which has a block"
            block = params[0].numel()
        # ``block`` reaches the rule only when it is not BLOCK: an int argument would be a dynamic size
        extra["block"] = None if block == BLOCK else block
        extra["block_ids"], extra["segment_lengths"], extra["matrix"] = _segments(params, device, store, block)
    return extra
