"""nesterov: Nesterov-accelerated drop-in optimizers on a multi-tensor engine, a training CLI, and an
accelerated convex solver, for PyTorch.

Public names are imported lazily so that ``import nesterov`` stays cheap (no torch.compile machinery).
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "NAG": "nesterov.optim.nag",
    "NAdamW": "nesterov.optim.nadamw",
    "Adan": "nesterov.optim.adan",
    "Muon": "nesterov.optim.muon",
    "muon_param_groups": "nesterov.optim.muon_routing",
    "muon_routes": "nesterov.optim.muon_routing",
    "NorMuon": "nesterov.optim.normuon",
    "LARS": "nesterov.optim.lars",
    "LAMB": "nesterov.optim.lamb",
    "ScheduleFreeSGD": "nesterov.optim.schedulefree",
    "ScheduleFreeAdamW": "nesterov.optim.schedulefree",
    "minimize": "nesterov.solve",
    "OptimizeResult": "nesterov.solve",
    "prox": "nesterov.solve.prox",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nesterov' has no attribute {name!r}")
    if name == "prox":
        return import_module(module)
    return getattr(import_module(module), name)


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
