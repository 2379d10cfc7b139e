"""The ``nesterov`` command: ``train`` (the default), ``compare`` and ``bench``."""

from __future__ import annotations

import sys
from importlib import import_module

# subcommand -> (module, function taking argv); bench has its own sub-subcommands.
_COMMANDS = {
    "train": ("nesterov.train.cli", "train_main"),
    "compare": ("nesterov.train.cli", "compare_main"),
}
_BENCHES = {
    "step": ("nesterov.bench.step", "step_main"),
    "cold": ("nesterov.bench.cold", "main"),
    "memory": ("nesterov.bench.step", "memory_main"),
    "convex": ("nesterov.bench.convex", "main"),
}

_USAGE = """usage: nesterov [train|compare|bench] [options]

  nesterov                 train the default model (same as `nesterov train`)
  nesterov train ...       train a model; `nesterov train --help` for options
  nesterov compare ...     race optimizers on one dataset and model
  nesterov bench step      one optimizer step, ours vs torch.optim vs the bandwidth floor
  nesterov bench cold      the first steps of a fresh process (empty compile cache), ours vs torch
  nesterov bench memory    bytes of optimizer state per parameter, per rule and state dtype
  nesterov bench convex    nesterov.minimize vs gradient descent vs scipy L-BFGS-B
"""


def _call(target, argv):
    module, func = target
    return getattr(import_module(module), func)(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(_USAGE)
        return 0
    if not argv or argv[0].startswith("-"):
        return _call(_COMMANDS["train"], argv) or 0
    command, rest = argv[0], argv[1:]
    if command in _COMMANDS:
        return _call(_COMMANDS[command], rest) or 0
    if command == "bench":
        if not rest or rest[0] not in _BENCHES:
            print(f"nesterov bench: choose one of {', '.join(_BENCHES)}", file=sys.stderr)
            return 2
        return _call(_BENCHES[rest[0]], rest[1:]) or 0
    print(f"nesterov: unknown command {command!r}\n\n{_USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
