"""What ``nesterov bench step`` measures for each rule: our optimizer, the torch alternatives a user would pick
instead, and the bytes an ideal step must move (the floor).  Rules register in :data:`OPTIMIZERS`; their
entries live beside their own code (:mod:`nesterov.bench.family`, :mod:`nesterov.bench.muon`) and load lazily.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import torch

__all__ = ["DTYPES", "OPTIMIZERS", "BenchSpec", "compiled_step"]

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


@dataclass
class BenchSpec:
    """One rule in the bench: our optimizer, the torch alternatives, and the ideal bytes per element.

    ``bytes_per_param(param_bytes, state_bytes)`` is what an ideal fused step must move per element:
    e.g. NAG reads p, g, b and writes p, b.
    """

    ours: Callable[..., torch.optim.Optimizer]  # (params, backend=, state_dtype=) -> optimizer
    torch_alternatives: dict[str, Callable[[list], torch.optim.Optimizer]]
    bytes_per_param: Callable[[int, int], int]
    reference: str  # the torch alternative ratios are taken against
    backends: tuple[str, ...] = ("eager", "foreach", "compile", "auto")
    extra: dict = field(default_factory=dict)


def _nag_spec() -> BenchSpec:
    from nesterov import NAG

    hp = dict(lr=1e-3, momentum=0.9, weight_decay=1e-4)
    sgd = torch.optim.SGD
    return BenchSpec(
        ours=lambda params, **kw: NAG(params, **hp, **kw),
        torch_alternatives={
            "torch SGD for-loop": lambda ps: sgd(ps, **hp, nesterov=True, foreach=False),
            "torch SGD foreach": lambda ps: sgd(ps, **hp, nesterov=True, foreach=True),
            "torch SGD fused": lambda ps: sgd(ps, **hp, nesterov=True, fused=True),
            "torch SGD compiled": lambda ps: compiled_step(sgd(ps, **hp, nesterov=True, foreach=True)),
        },
        bytes_per_param=lambda pb, sb: 3 * pb + 2 * sb,  # read p, g, b; write p, b
        reference="torch SGD fused",
        backends=("eager", "foreach", "compile", "torch", "cpp", "auto"),
        extra={"hp": hp},
    )


# Rules register here: name -> a function building its BenchSpec (imports stay lazy).
def _lazy(module: str, name: str) -> Callable[[], BenchSpec]:
    return lambda: getattr(importlib.import_module(module), name)()


OPTIMIZERS: dict[str, Callable[[], BenchSpec]] = {
    "nag": _nag_spec,
    "muon": _lazy("nesterov.bench.muon", "muon_spec"),
    "nadamw": _lazy("nesterov.bench.family", "nadamw_spec"),
    "adan": _lazy("nesterov.bench.family", "adan_spec"),
    "lars": _lazy("nesterov.bench.family", "lars_spec"),
    "lamb": _lazy("nesterov.bench.family", "lamb_spec"),
    "sf-sgd": _lazy("nesterov.bench.schedulefree", "sf_sgd_spec"),
    "sf-adamw": _lazy("nesterov.bench.schedulefree", "sf_adamw_spec"),
}


def compiled_step(opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """torch's recommended way to compile an optimizer: ``torch.compile`` around ``opt.step``."""
    step = torch.compile(opt.step, fullgraph=False)
    opt.step = step
    return opt
