"""Peer libraries in ``nesterov bench step --peers``: heavyball and pytorch-optimizer, and a rule's reference
package (schedulefree), where installed.

Each rule lists the peer optimizers that compute it (or the nearest thing the library has), built with the
rule's benchmark hyperparameters (``BenchSpec.extra["hp"]``) mapped onto the peer's own arguments as
closely as its semantics allow. ``note`` says in one line where the peer's update differs from ours;
docs/benchmarks.md has the longer account. A library that is not installed, or has no such optimizer,
gives one line saying so instead of a row.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass
from typing import Callable

import torch

LIBRARIES = {"heavyball": "heavyball", "pytorch_optimizer": "pytorch-optimizer"}  # import name -> PyPI name
# A rule's reference package: a row for the rules it defines, and no line for the others.
REFERENCE_LIBRARIES = {"schedulefree": "schedulefree"}


@dataclass(frozen=True)
class Peer:
    name: str  # the row's name
    library: str  # import name
    make: Callable[[list, dict], torch.optim.Optimizer]  # (params, hp) -> optimizer
    note: str  # where its update differs from ours


def _hb():
    return importlib.import_module("heavyball")


def _po():
    return importlib.import_module("pytorch_optimizer")


def _matrices_and_rest(params):
    matrices = [p for p in params if p.dim() >= 2]
    return matrices, [p for p in params if p.dim() < 2]


# -- the makers: (params, hp) -> optimizer, hp being the rule's BenchSpec.extra["hp"] ----------------
def _heavyball_sgd(params, hp):
    return _hb().SGD(params, lr=hp["lr"], beta=hp["momentum"], weight_decay=hp["weight_decay"])


def _heavyball_nadam(params, hp):
    beta1, beta2 = hp["betas"]
    return _hb().NAdam(params, lr=hp["lr"], betas=(beta1, beta2), eps=hp["eps"], weight_decay=hp["weight_decay"],
                       decoupled_weight_decay=True)


def _heavyball_muon_adamw(params, hp):
    matrices, rest = _matrices_and_rest(params)
    aux = hp["aux"]
    # heavyball's β1 is Muon's momentum in the matrices' group; the vectors' group gets the aux rule's betas
    groups = [{"params": matrices, "betas": (hp["momentum"], aux["betas"][1])}]
    if rest:
        groups.append({"params": rest, "lr": aux["lr"], "betas": tuple(aux["betas"]), "eps": aux["eps"],
                       "weight_decay": aux["weight_decay"]})
    return _hb().MuonAdamW(groups, lr=hp["lr"], weight_decay=hp["weight_decay"], nesterov=True)


def _po_adan(params, hp):
    return _po().Adan(params, lr=hp["lr"], betas=tuple(hp["betas"]), eps=hp["eps"], weight_decay=hp["weight_decay"],
                      weight_decouple=False, foreach=True)


def _po_lars(params, hp):
    return _po().LARS(params, lr=hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"],
                      trust_coefficient=hp["trust_coefficient"], nesterov=True, foreach=True)


def _po_lamb(params, hp):
    return _po().Lamb(params, lr=hp["lr"], betas=tuple(hp["betas"]), eps=hp["eps"], weight_decay=hp["weight_decay"],
                      weight_decouple=False, foreach=True)


def _po_muon(params, hp):
    matrices, rest = _matrices_and_rest(params)
    aux = hp["aux"]
    groups = [{"params": matrices, "use_muon": True}]
    if rest:
        groups.append({"params": rest, "use_muon": False, "lr": aux["lr"], "betas": tuple(aux["betas"]),
                       "eps": aux["eps"], "weight_decay": aux["weight_decay"]})
    return _po().Muon(groups, lr=hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"], nesterov=True,
                      foreach=True)


def _in_train_mode(opt):
    """A schedule-free port that starts in eval mode (the reference's convention), put where it can step."""
    opt.train()
    return opt


def _schedulefree_sgd(params, hp):
    return _in_train_mode(importlib.import_module("schedulefree").SGDScheduleFree(params, **hp, foreach=True))


def _schedulefree_adamw(params, hp):
    return _in_train_mode(importlib.import_module("schedulefree").AdamWScheduleFree(params, **hp, foreach=True))


def _heavyball_sf_adamw(params, hp):
    return _in_train_mode(_hb().SFAdamW(params, **hp))


def _po_sf_sgd(params, hp):
    return _in_train_mode(_po().ScheduleFreeSGD(params, **hp, foreach=True))


def _po_sf_adamw(params, hp):
    return _in_train_mode(_po().ScheduleFreeAdamW(params, **hp, foreach=True))


PEERS: dict[str, tuple[Peer, ...]] = {
    "nag": (
        Peer("heavyball SGD", "heavyball", _heavyball_sgd,
             "heavy-ball momentum, not Nesterov; decoupled weight decay"),
    ),
    "nadamw": (
        Peer("heavyball NAdam", "heavyball", _heavyball_nadam, "compiled on its first step"),
    ),
    "adan": (
        Peer("pytorch-optimizer Adan", "pytorch_optimizer", _po_adan, "foreach; the same update"),
    ),
    "lars": (
        Peer("pytorch-optimizer LARS", "pytorch_optimizer", _po_lars, "foreach; no ε in the trust ratio"),
    ),
    "lamb": (
        Peer("pytorch-optimizer Lamb", "pytorch_optimizer", _po_lamb,
             "no v bias correction, trust ratio on 1-D tensors too"),
    ),
    "muon": (
        Peer("heavyball MuonAdamW", "heavyball", _heavyball_muon_adamw,
             "u = g + EMA(g), per-step NS coefficients, AdamW on vectors"),
        Peer("pytorch-optimizer Muon", "pytorch_optimizer", _po_muon, "bf16 NS, AdamW on vectors"),
    ),
    "sf-sgd": (
        Peer("schedulefree SGDScheduleFree", "schedulefree", _schedulefree_sgd,
             "the reference, foreach; writes into p.grad (restored, untimed)"),
        Peer("pytorch-optimizer ScheduleFreeSGD", "pytorch_optimizer", _po_sf_sgd, "foreach"),
    ),
    "sf-adamw": (
        Peer("schedulefree AdamWScheduleFree", "schedulefree", _schedulefree_adamw,
             "the reference, foreach; writes into p.grad (restored, untimed)"),
        Peer("heavyball SFAdamW", "heavyball", _heavyball_sf_adamw, "compiled on its first step"),
        Peer("pytorch-optimizer ScheduleFreeAdamW", "pytorch_optimizer", _po_sf_adamw, "foreach"),
    ),
}

# What a library has (or lacks) for a rule where it gives no row: (rule, library) -> why.
NO_ROW: dict[tuple[str, str], str] = {
    ("nag", "pytorch_optimizer"): "its SGD is torch.optim.SGD (timed above)",
    ("nadamw", "pytorch_optimizer"): "its NAdam is torch.optim.NAdam (timed above)",
    ("adan", "heavyball"): "has no Adan",
    ("lars", "heavyball"): "has no LARS",
    ("lamb", "heavyball"): "has no LAMB",
    ("sf-sgd", "heavyball"): "has no schedule-free SGD",
}


def version(library: str) -> str | None:
    """The installed version of ``library`` (an import name), or None when it does not import."""
    try:
        importlib.import_module(library)
    except Exception:  # noqa: BLE001 - a broken install counts as absent, and is said so
        return None
    try:
        return importlib.metadata.version({**LIBRARIES, **REFERENCE_LIBRARIES}[library])
    except importlib.metadata.PackageNotFoundError:
        return "?"


def peers_for(rule: str) -> tuple[list[Peer], list[str]]:
    """The installed peers of ``rule`` and one line for each library that gives no row (and why)."""
    usable, lines = [], []
    for library, pypi in {**LIBRARIES, **REFERENCE_LIBRARIES}.items():
        mine = [p for p in PEERS.get(rule, ()) if p.library == library]
        if not mine and library in REFERENCE_LIBRARIES:
            continue
        if not mine:
            lines.append(f"{pypi}: no row for {rule}: {NO_ROW.get((rule, library), 'no matching optimizer')}")
            continue
        if version(library) is None:
            names = ", ".join(p.name for p in mine)
            lines.append(f"{pypi} not installed: skipping {names} (pip install {pypi}, or nesterov[bench])")
            continue
        usable += mine
    return usable, lines


def library_versions() -> dict[str, str | None]:
    return {pypi: version(lib) for lib, pypi in {**LIBRARIES, **REFERENCE_LIBRARIES}.items()}
