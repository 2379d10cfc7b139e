"""Training front end: ``nesterov train`` / ``nesterov compare`` and the loop behind them.

``run(Config(...), out_dir)`` trains one model and writes a run directory; see :mod:`nesterov.train.loop`.
Names are imported lazily so that ``nesterov.train.cli`` can configure OpenMP before torch loads.
"""

from importlib import import_module

_EXPORTS = {
    "Config": "config", "ConfigError": "config",
    "Result": "loop", "TrainingDiverged": "loop", "evaluate": "evaluation", "run": "loop",
    "OPTIMIZERS": "optimizers", "OptimizerError": "optimizers", "available": "optimizers",
    "make_optimizer": "optimizers",
    "compare": "compare",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nesterov.train' has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
