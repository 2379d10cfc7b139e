"""``nesterov train`` and ``nesterov compare``: argv in, exit code out."""

from __future__ import annotations

import os

# Before torch loads OpenMP: idle worker threads sleep instead of spinning.  On a small shared CPU, spinning
# threads that lose their core to another process made a 5 s run take 100 s; sleeping costs ~nothing.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

# Light imports only (no torch): flags and config files are checked, and the first line printed, in ~0.1 s.
from .config import Config, ConfigError, load_toml  # noqa: E402
from .optimizers import is_schedule_free  # noqa: E402

__all__ = ["compare_main", "train_main"]

# flags that --resume accepts (they do not change what is computed)
_RESUME_OK = {"device", "threads"}
# what a run directory holds: --out refuses a directory with any of them unless --resume or --overwrite
RUN_FILES = ("config.toml", "metrics.csv", "last.pt", "best.pt", "summary.json", "curves.png")


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (argparse prints the whole usage first): ``PROG: error: MESSAGE``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def wants_help(argv) -> bool:
    return any(a in ("-h", "--help") for a in argv or ())


def version() -> str:
    """``nesterov X (torch Y, Python Z)``, read from the installed metadata (imports no torch)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as v

    from .. import __version__

    try:
        torch = v("torch")
    except PackageNotFoundError:
        torch = "not installed"
    return f"nesterov {__version__} (torch {torch}, Python {sys.version.split()[0]})"


def _add_run_flags(p: argparse.ArgumentParser, *, single: bool, describe: bool = False) -> None:
    """The flags of a run; ``describe``: list which optimizers import (imports torch; only for --help)."""
    from .names import DATASETS
    from .names import MODEL_NAMES as MODELS
    from .optimizers import OPTIMIZERS, available
    from .schedules import SCHEDULES

    if describe:
        ok, missing = available()
        opt_help = f"one of: {', '.join(ok)}" + (f" (not installed yet: {', '.join(missing)})" if missing else "")
    else:
        opt_help = f"one of: {', '.join(OPTIMIZERS)}"
    g = p.add_argument_group("run")
    g.add_argument("--config", metavar="FILE.toml", help="read options from a TOML file; flags override it")
    g.add_argument("--dataset", help=f"{', '.join(DATASETS)} (default mnist1d)")
    g.add_argument("--model", help=f"{', '.join(MODELS)} (default cnn1d)")
    if single:
        g.add_argument("--optimizer", help=f"default nag; {opt_help}")
        g.add_argument("--lr", type=float, help="learning rate (default: the optimizer's own)")
    g.add_argument("--momentum", type=float, help="SGD momentum / Adam beta1 (default: the optimizer's own)")
    g.add_argument("--weight-decay", type=float, help="on weights with ndim >= 2 (default: the optimizer's own)")
    g.add_argument("--batch-size", type=int, help="default 128")
    length = g.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=float, help="default: per dataset (mnist1d 5, digits 30, else 20)")
    length.add_argument("--steps", type=int, help="total optimizer steps (instead of --epochs)")
    g.add_argument("--schedule", help=f"lr schedule: {', '.join(SCHEDULES)} (default warmup-cosine; sf-sgd and "
                                      "sf-adamw take none)")
    g.add_argument("--warmup", type=float, help="warmup fraction of the run (default 0.1; sf-sgd, sf-adamw: their "
                                                "own warmup_steps)")
    g.add_argument("--label-smoothing", type=float, help="default 0.1")
    g.add_argument("--target-accuracy", type=float,
                   help="fraction, e.g. 0.94; time to reach it is reported (default: mnist1d 0.94, digits 0.97)")
    if single:
        g.add_argument("--seed", type=int, help="default 0")
    g.add_argument("--device", help="auto, cpu, cuda, cuda:N, mps (default auto)")
    g.add_argument("--eval-every", type=int, help="steps between evaluations and checkpoints (default: an epoch, or "
                                                  "less so that a run has at least 10)")
    g.add_argument("--threads", type=int, help="torch.set_num_threads (default on CPU: 1 for the small models, "
                                               "torch's choice for resnet18/airbench/gpt and on GPU)")
    m = p.add_argument_group("model, data and precision")
    m.add_argument("--width", type=int, help="resnet18/airbench base width (64), gpt width (128)")
    m.add_argument("--depth", type=int, help="gpt blocks (4)")
    m.add_argument("--heads", type=int, help="gpt attention heads (4)")
    m.add_argument("--context", type=int, help="gpt context in bytes (128)")
    m.add_argument("--augment", help="images: auto (cifar crop-flip, imagefolder crop), none, flip, crop, crop-flip")
    m.add_argument("--precision", help="fp32 (default), bf16, fp16 (autocast; fp16 with a GradScaler), fp64")
    m.add_argument("--compile", action="store_const", const=True, help="torch.compile the model")
    m.add_argument("--grad-accum", type=int, help="micro-batches per step (default 1)")
    m.add_argument("--clip-grad", type=float, help="clip the gradient norm to this value")
    m.add_argument("--target-loss", type=float, help="test/validation loss to reach (nats); time to it is reported")
    m.add_argument("--eval-bytes", type=int, help="text: validation bytes scored per evaluation (65536)")
    m.add_argument("--ns", help="muon, normuon, muon-polar: Newton–Schulz coefficients, jordan or polar_express "
                                "(default: the optimizer's own)")
    m.add_argument("--ns-method", help="muon, normuon, muon-polar: standard, gram (through the Gram matrix) or auto "
                                       "(default standard)")
    m.add_argument("--fsdp", action="store_const", const=True,
                   help="under torchrun: shard the model with FSDP2 (checkpoints through torch.distributed.checkpoint)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar" + ("" if single else "s (one per run)"))


def _config_from(args, single: bool) -> tuple[Config, dict]:
    """defaults <- --config file <- flags; returns (config, the flags that were given)."""
    base = {}
    if args.config:
        try:
            base = load_toml(args.config)
        except ConfigError as e:
            raise ConfigError(f"--config {e}") from None
    names = ["dataset", "model", "momentum", "weight_decay", "batch_size", "epochs", "steps", "schedule", "warmup",
             "label_smoothing", "target_accuracy", "device", "eval_every", "threads", "width", "depth", "heads",
             "context", "augment", "precision", "compile", "grad_accum", "clip_grad", "target_loss", "eval_bytes",
             "fsdp", "ns", "ns_method"]
    if single:
        names += ["optimizer", "lr", "seed"]
    given = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    if base.get("epochs") is not None and base.get("steps") is not None:
        raise ConfigError(f"{args.config}: sets both epochs and steps; keep one (as with --epochs / --steps)")
    merged = dict(base)
    if "epochs" in given:
        merged.pop("steps", None)
    if "steps" in given:
        merged.pop("epochs", None)
    merged.update(given)
    return Config.from_dict(merged, where=args.config or "flags"), given


def named(message: str, given: dict, config_file) -> str:
    """An error ``key: problem`` about a config key, said of the flag (``--seed: ...``) or of the file and key
    (``c.toml: seed: ...``) that set the value."""
    key, sep, rest = message.partition(": ")
    if sep and key in given:
        return f"--{key.replace('_', '-')}: {rest}"
    if sep and config_file and key in Config.__dataclass_fields__:
        return f"{config_file}: {key}: {rest}"
    return message


def checked(cfg: Config, given: dict, config_file) -> Config:
    """``cfg.check(imports=False)``, its error naming the flag or the file and key that set the value."""
    try:
        return cfg.check(imports=False)
    except ConfigError as e:
        raise ConfigError(named(str(e), given, config_file)) from None


def checked_muon_flags(names, cfg: Config, given: dict, config_file) -> None:
    """:func:`~nesterov.train.optimizers.check_muon_flags` for a run's or a race's optimizers, its error
    naming the flag (``--ns``) or the file and key that set the value."""
    from .optimizers import OptimizerError, check_muon_flags

    try:
        check_muon_flags(names, cfg.ns, cfg.ns_method)
    except OptimizerError as e:
        raise ConfigError(named(str(e), given, config_file)) from None


def missing_extras(cfg: Config, progress: bool) -> list[str]:
    """Modules of the [train] extra this run needs and cannot import (checked without importing them)."""
    need = ["numpy", "matplotlib"] + (["tqdm"] if progress else [])
    need += {"mnist1d": ["mnist1d"], "digits": ["sklearn"]}.get(cfg.dataset, [])
    need += ["PIL"] if cfg.dataset.startswith("imagefolder:") else []
    def absent(module):
        try:
            return importlib.util.find_spec(module) is None
        except (ImportError, ValueError):  # a broken or blocked package
            return True

    return [m for m in need if absent(m)]


def extras_error(prog: str, missing: list[str]) -> str:
    return (f"{prog}: error: the training extra is not installed (cannot import {', '.join(missing)}); "
            "pip install 'nesterov[train]'")


def _default_out(cfg: Config) -> Path:
    ds = cfg.dataset.split(":")[0]
    stem = f"runs/{time.strftime('%Y%m%d-%H%M%S')}-{ds}-{cfg.model}-{cfg.optimizer}-s{cfg.seed}"
    out, k = Path(stem), 1
    while out.exists():
        k += 1
        out = Path(f"{stem}-{k}")
    return out


def _pct(v):
    return "n/a" if v is None else f"{100 * v:.2f} %"


def _existing_run(out: Path) -> list[str]:
    return [f for f in RUN_FILES if (out / f).exists()] if out.is_dir() else []


def train_main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = Parser(
        prog="nesterov train",
        description="Train a model and write a run directory (config.toml, metrics.csv, summary.json, curves.png, "
                    "last.pt, best.pt). With no options: MNIST-1D, a 1-D CNN, Nesterov momentum (NAG). Ctrl-C "
                    "writes a checkpoint at the current step; --resume continues from it.")
    p.add_argument("--version", action="version", version=version())
    _add_run_flags(p, single=True, describe=wants_help(argv))
    g = p.add_argument_group("output")
    g.add_argument("--out", metavar="DIR", help="run directory (default runs/<time>-<dataset>-<model>-<opt>-s<seed>); "
                                                "an existing run there is refused unless --overwrite")
    g.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    g.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    args = p.parse_args(argv)
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 alone prints

    try:
        plan = _plan(args)  # flags, config files and the run directory, checked before torch loads
    except ConfigError as e:
        if main_rank:
            print(f"nesterov train: error: {e}", file=sys.stderr)
        return 2
    if plan is None:  # --resume of a finished run
        return 0
    cfg, out, given = plan
    missing = missing_extras(cfg, not args.no_progress)
    if missing:
        print(extras_error("nesterov train", missing), file=sys.stderr)
        return 2
    if main_rank:
        what = "resume" if args.resume else "start "
        print(f"{what} {cfg.dataset} / {cfg.model} / {cfg.optimizer}, seed {cfg.seed} -> {out} (importing torch)",
              file=sys.stderr, flush=True)

    from . import dist as D
    from .loop import run

    try:
        dist = D.init(args.device or "auto")
    except Exception as e:  # noqa: BLE001 - a rendezvous that fails or times out
        print(f"nesterov train: error: cannot join the torchrun process group ({type(e).__name__}: {e})",
              file=sys.stderr)
        return 2
    try:
        return _train(args, dist, run, cfg, out, given)
    finally:
        if dist.world > 1:
            D.finish()


def _plan(args):
    """(config, run directory, flags given), checked without torch; None when --resume finds the run complete."""
    if args.resume:
        out = Path(args.resume)
        if not (out / "config.toml").is_file():
            raise ConfigError(f"--resume {out}: no config.toml there (not a run directory?)")
        if args.overwrite:
            raise ConfigError("--overwrite: not with --resume (which continues the run in place)")
        _, given = _config_from(args, single=True)
        cfg = Config.from_dict(load_toml(out / "config.toml"), where=str(out / "config.toml"))
        # repeating the run's own flags is fine; changing what it computes is not
        bad = sorted(k for k, v in given.items() if k not in _RESUME_OK and getattr(cfg, k) != v)
        bad += (["config"] if args.config else []) + (["out"] if args.out else [])
        if bad:
            raise ConfigError(f"--resume continues the run exactly as in {out / 'config.toml'}; drop "
                              + ", ".join("--" + b.replace("_", "-") for b in bad))
        cfg = checked(cfg.updated(**{k: given[k] for k in given}), given, None)
        summary = out / "summary.json"
        if summary.is_file() and (out / "last.pt").is_file():
            import json

            s = json.loads(summary.read_text())
            if s.get("status") == "completed" and s.get("steps") == cfg.steps:
                if os.environ.get("RANK", "0") == "0":
                    print(f"{out} is already complete: test accuracy {_pct(s.get('test_accuracy'))} "
                          f"after {s.get('steps')} steps")
                return None
        return cfg, out, given
    cfg, given = _config_from(args, single=True)
    checked(cfg, given, args.config)
    checked_muon_flags([cfg.optimizer], cfg, given, args.config)
    if is_schedule_free(cfg.optimizer) and given.get("schedule", "constant") != "constant":
        raise ConfigError(f"--schedule: {cfg.optimizer} is schedule-free: it takes no lr schedule (its linear warmup "
                          f"is --warmup, a fraction of the run); leave --schedule unset or give constant")
    out = Path(args.out) if args.out else _default_out(cfg)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    found = _existing_run(out)
    if found and not args.overwrite:
        raise ConfigError(f"--out {out}: already holds a run ({', '.join(found)}); continue it with --resume {out} "
                          "or replace it with --overwrite")
    if os.environ.get("RANK", "0") == "0":  # (other ranks write under the name rank 0 picks)
        _writable_dir(out)
    return cfg, out, given


def _writable_dir(out: Path) -> None:
    """Create ``out`` now, before torch loads, so an unwritable place fails in a line naming --out."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".nesterov-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot write there ({e.strerror or e})") from None


def _train(args, dist, run, cfg, out, given) -> int:
    quiet = not dist.main
    try:
        if dist.world > 1 and not args.resume:  # every rank writes under the name rank 0 chose
            import torch.distributed

            box = [str(out)]
            torch.distributed.broadcast_object_list(box, src=0)
            out = Path(box[0])
        result = run(cfg, out, resume=bool(args.resume), progress=not args.no_progress)
    except (ConfigError, ValueError, OSError) as e:
        if not quiet:
            print(f"nesterov train: error: {named(str(e), given, args.config)}", file=sys.stderr)
        return 2
    s = result.summary
    if result.exit_code == 130:
        return 130
    if quiet:
        return result.exit_code
    if s["status"] == "completed" and s.get("test_bpb") is not None:
        print(f"validation loss {s['test_loss']:.4f} ({s['test_bpb']:.4f} bits per byte; best loss "
              f"{s['best_test_loss']:.4f}), next-byte accuracy {_pct(s['test_accuracy'])} after {s['steps']} steps "
              f"in {s['seconds']:.2f} s of training (+ {s['data_seconds']:.2f} s data preparation)")
    elif s["status"] == "completed":
        line = (f"test accuracy {_pct(s['test_accuracy'])} (best {_pct(s['best_test_accuracy'])} at step "
                f"{s['best_step']}) after {s['steps']} steps in {s['seconds']:.2f} s of training "
                f"(+ {s['data_seconds']:.2f} s data preparation)")
        print(line)
    if s["status"] == "completed" and (s["target_accuracy"] is not None or s.get("target_loss") is not None):
        what = " and ".join(x for x in (
            f"accuracy {_pct(s['target_accuracy'])}" if s["target_accuracy"] is not None else "",
            f"loss {s['target_loss']:g}" if s.get("target_loss") is not None else "") if x)
        if s["seconds_to_target"] is not None:
            print(f"target {what} reached at step {s['steps_to_target']}, {s['seconds_to_target']:.2f} s")
        else:
            print(f"target {what} not reached")
    print(f"run directory: {out}")
    return result.exit_code


def compare_main(argv: list[str] | None = None) -> int:
    from .compare import compare_cli

    return compare_cli(argv, _add_run_flags, _config_from)
