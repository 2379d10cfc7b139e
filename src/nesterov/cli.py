"""The ``nesterov`` command: ``train`` (the default), ``compare`` and ``bench``.

Nothing here imports torch: ``--version`` and ``--help`` answer at once, and a run prints its first line before
torch loads.  Ctrl-C anywhere exits 130 with one line (a training run first writes a checkpoint, see
:mod:`nesterov.train.loop`); a closed stdout (``nesterov -h | head -2``) ends quietly.
"""

from __future__ import annotations

import os
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
    "memory": ("nesterov.bench.memory", "memory_main"),
    "convex": ("nesterov.bench.convex", "main"),
    "muon-dist": ("nesterov.bench.muon_dist", "main"),
}

_USAGE = """usage: nesterov [train|compare|bench] [options]
       nesterov --version

  nesterov                 train the default model (same as `nesterov train`)
  nesterov train ...       train a model; `nesterov train --help` for options
  nesterov compare ...     race optimizers on one dataset and model
  nesterov bench ...       benchmarks; `nesterov bench --help` lists them
"""

_BENCH_USAGE = """usage: nesterov bench {step,cold,memory,convex,muon-dist} [options]

  nesterov bench step      one optimizer step, ours vs torch.optim vs the bandwidth floor
  nesterov bench cold      the first steps of a fresh process (empty compile cache), ours vs torch
  nesterov bench memory    bytes of optimizer state per parameter, per rule and state dtype
  nesterov bench convex    nesterov.minimize vs gradient descent vs scipy L-BFGS-B
  nesterov bench muon-dist a Muon step split across DDP ranks (gloo, localhost) vs one process

`nesterov bench SUBCOMMAND --help` for its options.
"""


def _call(target, argv):
    module, func = target
    return getattr(import_module(module), func)(argv)


def _main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(_USAGE)
        return 0
    if argv and argv[0] in ("-V", "--version"):
        from nesterov.train.cli import version

        print(version())
        return 0
    if not argv or argv[0].startswith("-"):
        return _call(_COMMANDS["train"], argv) or 0
    command, rest = argv[0], argv[1:]
    if command in _COMMANDS:
        return _call(_COMMANDS[command], rest) or 0
    if command == "bench":
        if rest and rest[0] in ("-h", "--help"):
            print(_BENCH_USAGE)
            return 0
        if not rest or rest[0] not in _BENCHES:
            got = f"unknown benchmark {rest[0]!r}" if rest else "no benchmark given"
            print(f"nesterov bench: error: {got}; choose one of: {', '.join(_BENCHES)} (see nesterov bench --help)",
                  file=sys.stderr)
            return 2
        return _call(_BENCHES[rest[0]], rest[1:]) or 0
    print(f"nesterov: error: unknown command {command!r}; choose one of: train, compare, bench "
          "(see nesterov --help)", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        code = _main(argv)
        sys.stdout.flush()  # a closed pipe shows up here, inside the handler below
        return code
    except KeyboardInterrupt:
        print("\nnesterov: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`nesterov -h | head -2`): stop quietly, as a command killed by SIGPIPE would.
        # stdout is pointed at /dev/null so the interpreter's own flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13


if __name__ == "__main__":
    sys.exit(main())
