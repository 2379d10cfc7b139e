"""The one table of optimizers the trainer knows: name -> constructor and default hyperparameters.

Library optimizers (``nesterov.NAG``, ``nesterov.NAdamW``, ...) are listed when they import; ``torch-sgd``
(heavy-ball momentum), ``torch-adamw`` and ``torch-nadam`` are torch's, kept as baselines.  Weight decay is
applied to weight matrices, conv kernels and embeddings (parameters with ``ndim >= 2``), never to biases or norms;
with Muon, hidden matrices and conv kernels go to Newton-Schulz and embeddings, the output head, biases and norms
to its auxiliary rule (``use_muon=False``), see :func:`nesterov.muon_param_groups`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the table and the name checks stay importable without torch (the CLI checks flags first)
    from torch import nn

__all__ = ["MUON_FAMILY", "OPTIMIZERS", "OptimizerError", "available", "check_known", "check_muon_flags",
           "is_schedule_free", "make_optimizer", "muon_options", "resolve_hparams"]


class OptimizerError(ValueError):
    """An unknown or unavailable optimizer, or a hyperparameter it does not take."""


@dataclass(frozen=True)
class Spec:
    target: str  # "module:attr"
    lr: float  # default learning rate for the built-in datasets/models (the sweep centres on it)
    weight_decay: float
    momentum: float | None  # SGD momentum or Adam beta1; None if the optimizer has neither
    extra: tuple = ()  # fixed constructor kwargs, as (key, value) pairs
    library: bool = True  # False for the torch baselines
    schedule_free: bool = False  # no lr schedule, its own warmup_steps; evaluated at x (train/schedule_free.py)


# Default lrs: the best of a sweep (x3 steps) by validation accuracy on MNIST-1D, cnn1d, batch 128, 6 epochs of
# warmup+cosine (validation = 20 % of the training set); `nesterov compare --sweep` revisits them per dataset.
OPTIMIZERS: dict[str, Spec] = {
    "nag": Spec("nesterov:NAG", lr=0.1, weight_decay=5e-4, momentum=0.9),
    "nadamw": Spec("nesterov:NAdamW", lr=1e-2, weight_decay=1e-2, momentum=0.9),
    "adan": Spec("nesterov:Adan", lr=3e-2, weight_decay=1e-2, momentum=0.98),
    "muon": Spec("nesterov:Muon", lr=0.1, weight_decay=0.0, momentum=0.95),
    # NorMuon rescales each update to Muon's Frobenius norm, and Polar Express approximates the same polar
    # factor: both take Muon's lr (not swept)
    "normuon": Spec("nesterov:NorMuon", lr=0.1, weight_decay=0.0, momentum=0.95),
    "muon-polar": Spec("nesterov:Muon", lr=0.1, weight_decay=0.0, momentum=0.95,
                       extra=(("ns_coefficients", "polar_express"),)),
    "lars": Spec("nesterov:LARS", lr=10.0, weight_decay=5e-4, momentum=0.9),
    "lamb": Spec("nesterov:LAMB", lr=3e-2, weight_decay=1e-2, momentum=0.9),
    "torch-sgd": Spec("torch.optim:SGD", lr=0.1, weight_decay=5e-4, momentum=0.9, library=False),
    "torch-adamw": Spec("torch.optim:AdamW", lr=1e-2, weight_decay=1e-2, momentum=0.9, library=False),
    "torch-nadam": Spec("torch.optim:NAdam", lr=1e-2, weight_decay=1e-2, momentum=0.9,
                        extra=(("decoupled_weight_decay", True),), library=False),
    # schedule-free: a constant lr after the optimizer's own warmup; lrs from `nesterov compare --optimizers
    # sf-sgd,sf-adamw --sweep` on the MNIST-1D default (docs/training.md, "Schedule-free")
    "sf-sgd": Spec("nesterov:ScheduleFreeSGD", lr=0.3, weight_decay=5e-4, momentum=0.9, schedule_free=True),
    "sf-adamw": Spec("nesterov:ScheduleFreeAdamW", lr=1e-2, weight_decay=1e-2, momentum=0.9, schedule_free=True),
}


def _load(name: str):
    """The optimizer class for ``name``, or an ImportError/AttributeError saying why not."""
    module, attr = OPTIMIZERS[name].target.split(":")
    return getattr(import_module(module), attr)


def available() -> tuple[list[str], dict[str, str]]:
    """``(names that construct, {name: why not} for the rest)``."""
    ok, missing = [], {}
    for name in OPTIMIZERS:
        try:
            _load(name)
            ok.append(name)
        except Exception as e:  # noqa: BLE001 - any import failure makes it unavailable
            missing[name] = f"{type(e).__name__}: {e}"
    return ok, missing


def check_known(name: str) -> None:
    """Raise OptimizerError unless ``name`` is in the table (imports nothing)."""
    if name not in OPTIMIZERS:
        raise OptimizerError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")


def _check_name(name: str):
    check_known(name)
    try:
        return _load(name)
    except Exception as e:  # noqa: BLE001
        ok, _ = available()
        raise OptimizerError(
            f"optimizer {name!r} ({OPTIMIZERS[name].target.replace(':', '.')}) is not available in this "
            f"installation ({type(e).__name__}: {e}); available: {', '.join(ok)}") from None


def resolve_hparams(name: str, lr=None, momentum=None, weight_decay=None) -> dict:
    """Fill unset hyperparameters from the table: ``{"lr", "momentum", "weight_decay"}``."""
    _check_name(name)
    spec = OPTIMIZERS[name]
    return {"lr": spec.lr if lr is None else float(lr),
            "momentum": spec.momentum if momentum is None else float(momentum),
            "weight_decay": spec.weight_decay if weight_decay is None else float(weight_decay)}


# Muon orthogonalises hidden matrices only; the output head and the non-matrices go to its auxiliary
# (NAdamW) optimizer at this lr.
MUON_AUX_LR = 3e-3

# The optimizers of the table that are Muon (or a subclass): they take --ns, --ns-method and DDP's group.
MUON_FAMILY = ("muon", "normuon", "muon-polar")
# --ns and --ns-method, named here without importing torch (tests/test_muon_routing.py ties them to
# nesterov.rules.muon.NS_COEFFICIENT_SETS and NS_METHODS)
NS_SETS = ("jordan", "polar_express")
NS_METHODS = ("standard", "gram", "auto")


def check_muon_flags(names, ns: str | None, ns_method: str | None) -> None:
    """Raise OptimizerError (``ns: ...`` / ``ns_method: ...``) unless ``ns`` and ``ns_method``, when set, are
    known and reach at least one optimizer of the Muon family among ``names``."""
    for key, value, valid in (("ns", ns, NS_SETS), ("ns_method", ns_method, NS_METHODS)):
        if value is None:
            continue
        if value not in valid:
            raise OptimizerError(f"{key}: unknown {value!r}; valid: {', '.join(valid)}")
        if not any(n in MUON_FAMILY for n in names):
            raise OptimizerError(f"{key}: applies to {', '.join(MUON_FAMILY)} only (Newton–Schulz); the optimizer(s) "
                                 f"here: {', '.join(names)}")


def muon_options(name: str, ns: str | None = None, ns_method: str | None = None, process_group=None) -> dict:
    """The constructor options a run gives optimizer ``name``: for the Muon family, the coefficient set, the
    Newton–Schulz method and DDP's process group (those that are set); nothing for the others (a race's
    ``--ns`` reaches its Muon-family optimizers only)."""
    if name not in MUON_FAMILY:
        return {}
    options = dict(ns_coefficients=ns, ns_method=ns_method, process_group=process_group)
    return {k: v for k, v in options.items() if v is not None}


def _param_groups(name: str, model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and norms; with Muon, embeddings, the head and vectors go to the aux rule."""
    if name in MUON_FAMILY:
        from ..optim.muon_routing import muon_param_groups

        return muon_param_groups(model, weight_decay=weight_decay, aux_lr=MUON_AUX_LR, aux_weight_decay=0.0)
    trainable = {id(p): p for p in model.parameters() if p.requires_grad}.values()  # tied ones once
    decay = [p for p in trainable if p.ndim >= 2]
    groups = [{"params": decay, "weight_decay": weight_decay}] if decay else []
    vectors = [p for p in trainable if p.ndim < 2]
    if vectors:
        groups.append({"params": vectors, "weight_decay": 0.0})
    return groups


def is_schedule_free(name: str) -> bool:
    """Whether ``name`` is a schedule-free optimizer (its own warmup, no lr schedule, evaluated at x)."""
    return name in OPTIMIZERS and OPTIMIZERS[name].schedule_free


def make_optimizer(name: str, model: nn.Module, lr=None, momentum=None, weight_decay=None, warmup_steps=0,
                   **options):
    """Build optimizer ``name`` for ``model``; returns ``(optimizer, resolved hyperparameters)``.

    ``warmup_steps``: the linear warmup of a schedule-free optimizer (the others warm up through their schedule).
    ``options`` go to the constructor as they are (e.g. :func:`muon_options`)."""
    cls = _check_name(name)
    spec = OPTIMIZERS[name]
    hp = resolve_hparams(name, lr, momentum, weight_decay)
    if not hp["lr"] > 0:
        raise OptimizerError(f"lr must be > 0, got {hp['lr']}")
    if not hp["weight_decay"] >= 0:
        raise OptimizerError(f"weight_decay must be >= 0, got {hp['weight_decay']}")
    kwargs = dict(spec.extra)
    kwargs["lr"] = hp["lr"]
    params = inspect.signature(cls.__init__).parameters
    if hp["momentum"] is not None:
        m = hp["momentum"]
        if not 0.0 <= m < 1.0:
            raise OptimizerError(f"momentum must be in [0, 1), got {m}")
        if "momentum" in params:
            kwargs["momentum"] = m
        elif "betas" in params:
            default = params["betas"].default
            betas = tuple(default) if isinstance(default, (tuple, list)) else (0.9, 0.999)
            kwargs["betas"] = (m,) + betas[1:]
        elif momentum is not None:
            raise OptimizerError(f"optimizer {name!r} takes no momentum; leave --momentum unset")
    if spec.schedule_free:
        kwargs["warmup_steps"] = int(warmup_steps)
    if spec.library and "nesterov" in params:  # e.g. LARS: the Nesterov variant is the point of this library
        kwargs.setdefault("nesterov", True)
    kwargs.update(options)
    groups = _param_groups(name, model, hp["weight_decay"])
    try:
        opt = cls(groups, **kwargs)
    except (TypeError, ValueError) as e:
        raise OptimizerError(f"cannot build optimizer {name!r} with {kwargs}: {e}") from None
    return opt, hp
