"""Bad inputs to `nesterov train` / `nesterov compare` and the one line each produces.

    python scripts/cli_bad_inputs.py            # print the table
    python scripts/cli_bad_inputs.py --write    # rewrite the table in docs/cli.md

Each case runs `python -m nesterov ...` for real, in a temporary directory holding the files it names (so paths
in the messages are the relative ones shown).  tests/test_cli.py runs the same list and checks that each exits
2 with one error line naming the argument, and that docs/cli.md shows exactly that line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "cli.md"
BEGIN, END = "<!-- bad inputs: begin (scripts/cli_bad_inputs.py --write) -->", "<!-- bad inputs: end -->"
# lines a run may print before it fails (it says what it is doing)
STATUS = ("start ", "resume ", "data ")

_RUN = 'dataset = "digits"\nmodel = "mlp"\noptimizer = "nag"\nlr = 0.1\nsteps = 40\nseed = 0\n'


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]  # after `nesterov`
    names: str  # what the message must name (a flag, a key or a file)
    files: dict = field(default_factory=dict)  # relative path -> str (text) or dict of numpy arrays (.npz)
    cpu_only: bool = False  # the input is bad only on a machine without CUDA
    cpus: int | None = None  # the line names the CPU count: docs/cli.md shows it for a machine with this many

    @property
    def command(self) -> str:
        return "nesterov " + " ".join(a if a and " " not in a and '"' not in a else repr(a) for a in self.argv)


def _npz(**arrays):
    return arrays


CASES = [
    # flags
    Case(("--seed", "-1"), "--seed"),
    Case(("--seed", "abc"), "--seed"),
    Case(("--lr", "0"), "--lr"),
    Case(("--lr", "nan"), "--lr"),
    Case(("--momentum", "1"), "--momentum"),
    Case(("--weight-decay", "-1"), "--weight-decay"),
    Case(("--batch-size", "0"), "--batch-size"),
    Case(("--epochs", "0"), "--epochs"),
    Case(("--epochs", "3", "--steps", "10"), "--steps"),
    Case(("--steps", "-5"), "--steps"),
    Case(("--warmup", "1"), "--warmup"),
    Case(("--label-smoothing", "1"), "--label-smoothing"),
    Case(("--target-accuracy", "94"), "--target-accuracy"),
    Case(("--dataset", "mnist"), "--dataset"),
    Case(("--model", "resnet"), "--model"),
    Case(("--model", "gpt"), "--model"),
    Case(("--width", "8"), "--width"),
    Case(("--optimizer", "adam"), "--optimizer"),
    Case(("--schedule", "cosine"), "--schedule"),
    Case(("--optimizer", "sf-sgd", "--schedule", "linear"), "--schedule"),
    Case(("--precision", "fp8"), "--precision"),
    Case(("--augment", "rotate"), "--augment"),
    Case(("--eval-every", "0"), "--eval-every"),
    Case(("--threads", "0"), "--threads"),
    Case(("--threads", "100000"), "--threads", cpus=2),
    Case(("--batch-size", "100000"), "--batch-size"),
    Case(("--grad-accum", "0"), "--grad-accum"),
    Case(("--clip-grad", "-1"), "--clip-grad"),
    Case(("--learning-rate", "0.1"), "--learning-rate"),
    Case(("--optimizer", "muon", "--ns", "newton"), "--ns"),
    Case(("--ns", "polar_express"), "--ns"),
    Case(("--optimizer", "normuon", "--ns-method", "fast"), "--ns-method"),
    # devices
    Case(("--device", "tpu"), "--device"),
    Case(("--device", "cuda"), "--device", cpu_only=True),
    # run directories
    Case(("--out", "run"), "--out", {"run/config.toml": _RUN}),
    Case(("--out", "notes.txt"), "--out", {"notes.txt": "not a directory\n"}),
    Case(("--out", "/proc/nope"), "--out"),
    Case(("--resume", "nowhere"), "--resume"),
    Case(("--resume", "run", "--lr", "0.5"), "--lr", {"run/config.toml": _RUN}),
    Case(("--resume", "run", "--overwrite"), "--overwrite", {"run/config.toml": _RUN}),
    Case(("--resume", "run"), "run/last.pt", {"run/config.toml": _RUN, "run/last.pt": "garbage\n"}),
    # TOML files (--config)
    Case(("--config", "missing.toml"), "--config missing.toml"),
    Case(("--config", "."), "--config ."),
    Case(("--config", "broken.toml"), "broken.toml", {"broken.toml": "steps = \n"}),
    Case(("--config", "typo.toml"), "learning_rate", {"typo.toml": "learning_rate = 0.1\n"}),
    Case(("--config", "both.toml"), "both.toml", {"both.toml": "epochs = 3\nsteps = 100\n"}),
    Case(("--config", "type.toml"), "steps", {"type.toml": 'steps = "ten"\n'}),
    Case(("--config", "seed.toml"), "seed.toml: seed", {"seed.toml": "seed = -3\n"}),
    Case(("--config", "model.toml"), "model.toml: model", {"model.toml": 'model = "vgg"\n'}),
    # data files
    Case(("--dataset", "npz:missing.npz"), "missing.npz"),
    Case(("--dataset", "npz:junk.npz"), "junk.npz", {"junk.npz": "not a zip file\n"}),
    Case(("--dataset", "npz:objects.npz"), "objects.npz", {"objects.npz": _npz(x="objects", y=[0, 1])}),
    Case(("--dataset", "npz:labels.npz"), "labels.npz", {"labels.npz": _npz(x=[[0.0], [1.0]], y=[0.5, 1.0])}),
    Case(("--dataset", "npz:nokeys.npz"), "nokeys.npz", {"nokeys.npz": _npz(features=[[0.0], [1.0]])}),
    Case(("--dataset", "text:missing.txt", "--model", "gpt"), "missing.txt"),
    Case(("--dataset", "imagefolder:missing"), "missing"),
    # nesterov compare
    Case(("compare", "--optimizers", ""), "--optimizers"),
    Case(("compare", "--optimizers", "nag,adam"), "--optimizers"),
    Case(("compare", "--optimizers", "nag,nag"), "--optimizers"),
    Case(("compare", "--seeds", "0"), "--seeds"),
    Case(("compare", "--seed", "-1"), "--seed"),
    Case(("compare", "--lr", "nag"), "--lr"),
    Case(("compare", "--optimizers", "nag", "--lr", "sgd=0.1"), "--lr"),
    Case(("compare", "--optimizers", "nag,nadamw", "--ns", "polar_express"), "--ns"),
    # commands
    Case(("frobnicate",), "frobnicate"),
    Case(("bench",), "bench"),
    Case(("bench", "speed"), "speed"),
]


def _write_files(case: Case, where: Path) -> None:
    import numpy as np

    for rel, content in case.files.items():
        path = where / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, dict):
            arrays = {}
            for k, v in content.items():
                if v == "objects":  # ragged rows: numpy keeps them as Python objects
                    arr = np.empty(2, dtype=object)
                    arr[0], arr[1] = [0.0, 1.0], [2.0]
                    arrays[k] = arr
                else:
                    arrays[k] = np.asarray(v)
            np.savez(path, **arrays)
        else:
            path.write_text(content)


def run_case(case: Case, timeout: float = 120) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the case, run in a fresh temporary directory."""
    with tempfile.TemporaryDirectory() as tmp:
        _write_files(case, Path(tmp))
        env = dict(os.environ, NESTEROV_CACHE=str(Path(tmp) / ".cache"), PYTHONUNBUFFERED="1")
        p = subprocess.run([sys.executable, "-m", "nesterov", *case.argv], cwd=tmp, env=env, capture_output=True,
                           text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr


def error_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1] if stderr.strip() else ""


def _files_text(case: Case) -> str:
    parts = []
    for rel, content in case.files.items():
        if isinstance(content, dict):
            arrays = ", ".join(f"{k}: ragged rows (dtype=object)" if v == "objects" else f"{k}={v}"
                               for k, v in content.items())
            parts.append(f"`{rel}`: {arrays}")
        else:
            parts.append(f"`{rel}`: `{'; '.join(content.strip().splitlines())}`")
    return "<br>".join(parts)


def table_rows(results: list[tuple[Case, str]]) -> list[str]:
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    return [f"| `{esc(c.command)}` | {esc(_files_text(c))} | {esc(line)} |" for c, line in results]


def table(results: list[tuple[Case, str]]) -> str:
    return "\n".join(["| command | files it names | the one line it prints (exit status 2) |", "|---|---|---|",
                      *table_rows(results)])


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help=f"rewrite the table between the markers in {DOC}")
    args = p.parse_args(argv)
    import torch

    results = []
    for case in CASES:
        if case.cpu_only and torch.cuda.is_available():
            continue
        rc, _, err = run_case(case)
        results.append((case, error_line(err)))
        print(f"{rc}  {case.command}  ->  {error_line(err)}", file=sys.stderr)
    text = table(results)
    if not args.write:
        print(text)
        return 0
    doc = DOC.read_text()
    i, j = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    DOC.write_text(doc[:i] + "\n" + text + "\n" + doc[j:])
    print(f"wrote {len(results)} rows to {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
