"""The run configuration: defaults <- a TOML file <- command-line flags, then resolved against the dataset.

The resolved config (every default filled in) is what a run directory's ``config.toml`` holds and what
``--resume`` reads back.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
from dataclasses import dataclass, fields
from pathlib import Path

# Nothing here imports torch: the command line checks a config before it loads torch or data.
from .names import AUGMENTS, DATASETS, OPTIONS, TEXT_MODELS, is_text, valid_spec
from .names import MODEL_NAMES as MODELS
from .optimizers import OptimizerError, check_known, is_schedule_free, resolve_hparams
from .schedules import SCHEDULES

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, from PyPI (the [train] extra requires it on 3.10)
    import tomli as tomllib

__all__ = ["Config", "ConfigError", "DATASET_DEFAULTS", "load_toml", "dump_toml", "run_toml"]


class ConfigError(ValueError):
    """A config value or file that cannot be used; the message names the key and the accepted values."""


# Per-dataset training length and target accuracy, used when --epochs/--steps/--target-accuracy are unset.
DATASET_DEFAULTS = {
    "mnist1d": {"epochs": 5, "target_accuracy": 0.94},  # 0.94: the MNIST-1D paper's CNN
    "digits": {"epochs": 30, "target_accuracy": 0.97},
    "cifar10": {"epochs": 10, "target_accuracy": 0.94},  # airbench94's target
    "text": {"steps": 400, "batch_size": 32, "label_smoothing": 0.0},  # text:PATH and pysrc
}
PRECISIONS = ("fp32", "bf16", "fp16", "fp64")
DEFAULT_BATCH = 128
DEFAULT_LABEL_SMOOTHING = 0.1
FALLBACK_EPOCHS = 20
MIN_EVALS = 10  # default evaluation interval: once per epoch, or more often so that a run has >= 10 points


# names other tools use for a key (the unknown-key error suggests ours)
_ALIASES = {"learning_rate": "lr", "wd": "weight_decay", "bs": "batch_size", "batch": "batch_size",
            "opt": "optimizer", "optim": "optimizer", "data": "dataset", "lr_schedule": "schedule",
            "scheduler": "schedule", "max_steps": "steps", "num_epochs": "epochs"}


@dataclass
class Config:
    dataset: str = "mnist1d"
    model: str = "cnn1d"
    optimizer: str = "nag"
    lr: float | None = None  # None: the optimizer's default from the optimizer table
    momentum: float | None = None
    weight_decay: float | None = None
    batch_size: int | None = None  # None: 128, or 32 windows for text
    epochs: float | None = None  # None: the dataset's default
    steps: int | None = None  # total optimizer steps; overrides epochs
    schedule: str = "warmup-cosine"
    warmup: float = 0.1  # fraction of the run spent warming up (one-cycle: rising)
    label_smoothing: float | None = None  # None: 0.1 for classification, 0 for text
    target_accuracy: float | None = None  # None: the dataset's default (if any)
    target_loss: float | None = None  # test/validation loss (nats) to reach; time to it is reported
    width: int | None = None  # model options (None: the model's default), see nesterov.models.OPTIONS
    depth: int | None = None
    heads: int | None = None
    context: int | None = None
    augment: str = "auto"  # images: auto (per dataset), none, flip, crop, crop-flip
    precision: str = "fp32"  # fp32, bf16 / fp16 (autocast; fp16 with a GradScaler), fp64 (model in float64)
    compile: bool = False  # torch.compile the model
    grad_accum: int = 1  # micro-batches per optimizer step (the batch is split, the result is the same)
    clip_grad: float | None = None  # clip the global gradient norm to this value
    fsdp: bool = False  # shard the model with FSDP2 (under torchrun)
    eval_bytes: int = 65536  # text: validation bytes scored at each evaluation (the first ones of the split)
    seed: int = 0
    device: str = "auto"
    eval_every: int | None = None  # steps between evaluations/checkpoints; None: per epoch, >= 10 per run
    threads: int | None = None  # torch.set_num_threads; None: 1 on CPU, torch's default elsewhere
    ns: str | None = None  # Muon family: Newton–Schulz coefficient set (None: the optimizer's own)
    ns_method: str | None = None  # Muon family: standard, gram or auto (None: the optimizer's own)

    # ------------------------------------------------------------------ construction and checks
    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> "Config":
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            import difflib

            def hint(k):
                m = [_ALIASES[k]] if k in _ALIASES else difflib.get_close_matches(k, known, 1)
                return f"{k} (did you mean {m[0]}?)" if m else k

            hints = [hint(k) for k in unknown]
            raise ConfigError(f"{where}: unknown key(s) {', '.join(hints)}; valid keys: {', '.join(known)}")
        cfg = cls()
        for k, v in d.items():
            setattr(cfg, k, _coerce(k, v, known[k].type, where))
        return cfg

    def updated(self, **changes) -> "Config":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def check(self, imports: bool = True) -> "Config":
        """Validate every field; raise ConfigError naming the key and the accepted values.

        ``imports=False`` checks the optimizer's name against the table without importing it (so without torch).
        """
        if not valid_spec(self.dataset):
            raise ConfigError(f"dataset: unknown {self.dataset!r}; valid: {', '.join(DATASETS)}")
        if self.model not in MODELS:
            raise ConfigError(f"model: unknown {self.model!r}; valid: {', '.join(MODELS)}")
        if is_text(self.dataset) != (self.model in TEXT_MODELS):
            need = ", ".join(TEXT_MODELS) if is_text(self.dataset) else ", ".join(m for m in MODELS
                                                                                 if m not in TEXT_MODELS)
            raise ConfigError(f"model: {self.model!r} does not fit dataset {self.dataset!r}; use one of: {need}")
        for k in ("width", "depth", "heads", "context"):
            v = getattr(self, k)
            if v is not None:
                _positive(k, v)
                if k not in OPTIONS.get(self.model, ()):
                    ok = ", ".join(f"--{o}" for o in OPTIONS.get(self.model, ())) or "none"
                    raise ConfigError(f"{k}: model {self.model!r} takes no --{k} (its options: {ok})")
        if self.augment not in AUGMENTS:
            raise ConfigError(f"augment: unknown {self.augment!r}; valid: {', '.join(AUGMENTS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision: unknown {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        if not isinstance(self.compile, bool) or not isinstance(self.fsdp, bool):
            raise ConfigError("compile, fsdp: must be true or false")
        _positive("grad_accum", self.grad_accum)
        _positive("eval_bytes", self.eval_bytes)
        if self.clip_grad is not None and not (math.isfinite(self.clip_grad) and self.clip_grad > 0):
            raise ConfigError(f"clip_grad: must be a finite number > 0, got {self.clip_grad}")
        if self.target_loss is not None and not (math.isfinite(self.target_loss) and self.target_loss > 0):
            raise ConfigError(f"target_loss: must be a finite number > 0, got {self.target_loss}")
        try:
            check_known(self.optimizer) if not imports else resolve_hparams(self.optimizer)
        except OptimizerError as e:
            raise ConfigError(f"optimizer: {e}") from None
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule: unknown {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        if self.batch_size is not None:
            _positive("batch_size", self.batch_size)
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr: must be a finite number > 0, got {self.lr}")
        if self.momentum is not None and not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum: must be in [0, 1), got {self.momentum}")
        if self.weight_decay is not None and not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay: must be >= 0, got {self.weight_decay}")
        if self.epochs is not None and not (math.isfinite(self.epochs) and self.epochs > 0):
            raise ConfigError(f"epochs: must be > 0, got {self.epochs}")
        if self.steps is not None:
            _positive("steps", self.steps)
        if self.eval_every is not None:
            _positive("eval_every", self.eval_every)
        if self.threads is not None:
            _positive("threads", self.threads)
            cpus = usable_cpus()
            if self.threads > cpus:
                raise ConfigError(f"threads: {self.threads} is more than the {cpus} CPUs this process may run on "
                                  f"(more threads than cores only wait for each other); use 1 .. {cpus}")
        if not 0 <= self.warmup < 1:
            raise ConfigError(f"warmup: must be a fraction in [0, 1), got {self.warmup}")
        if self.label_smoothing is not None and not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing: must be in [0, 1), got {self.label_smoothing}")
        if self.target_accuracy is not None and not 0 < self.target_accuracy <= 1:
            raise ConfigError(f"target_accuracy: must be a fraction in (0, 1], got {self.target_accuracy} "
                              "(write 0.94 for 94 %)")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**64:
            raise ConfigError(f"seed: must be an integer in 0 .. 2**64 - 1, got {self.seed!r}")
        if not (self.device in ("auto", "cpu", "mps") or re.fullmatch(r"cuda(:\d+)?", self.device)):
            raise ConfigError(f"device: unknown {self.device!r}; valid: auto, cpu, cuda, cuda:N, mps")
        return self

    def defaults(self) -> dict:
        key = "text" if is_text(self.dataset) else self.dataset.split(":")[0]
        return DATASET_DEFAULTS.get(key, {})

    def resolved(self, n_train: int) -> "Config":
        """Fill every unset default; ``n_train`` is the training set size (for epochs <-> steps; for text,
        the number of context windows in the training bytes)."""
        self.check()
        d = self.defaults()
        hp = resolve_hparams(self.optimizer, self.lr, self.momentum, self.weight_decay)
        cfg = dataclasses.replace(self, batch_size=self.batch_size or d.get("batch_size", DEFAULT_BATCH))
        spe = cfg.steps_per_epoch(n_train)
        steps = self.steps or (max(1, round(self.epochs * spe)) if self.epochs else d.get("steps")) or max(
            1, round(d.get("epochs", FALLBACK_EPOCHS) * spe))
        return dataclasses.replace(
            cfg, lr=hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"],
            steps=steps, epochs=round(steps / spe, 4),
            # schedule-free: a constant lr; --warmup becomes the optimizer's own warmup_steps (loop.py)
            schedule="constant" if is_schedule_free(self.optimizer) else self.schedule,
            label_smoothing=(self.label_smoothing if self.label_smoothing is not None
                             else d.get("label_smoothing", DEFAULT_LABEL_SMOOTHING)),
            target_accuracy=self.target_accuracy if self.target_accuracy is not None else d.get("target_accuracy"),
            eval_every=min(self.eval_every or min(spe, math.ceil(steps / MIN_EVALS)), steps),
        )

    def steps_per_epoch(self, n_train: int) -> int:
        return max(1, n_train // (self.batch_size or DEFAULT_BATCH))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _positive(key, v):
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ConfigError(f"{key}: must be a positive integer, got {v!r}")


def _coerce(key, value, typ, where):
    typ = str(typ)
    try:
        if value is None:
            return None
        if typ == "bool":
            if not isinstance(value, bool):
                raise TypeError
            return value
        if "int" in typ and "float" not in typ:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if "float" in typ:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if "str" in typ:
            if not isinstance(value, str):
                raise TypeError
            return value
    except (TypeError, ValueError):
        kind = ("true or false" if typ == "bool" else "an integer" if "int" in typ and "float" not in typ
                else "a number" if "float" in typ else "a string")
        raise ConfigError(f"{where}: {key} must be {kind}, got {value!r}") from None
    return value


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def load_toml(path) -> dict:
    """Read a config file: a flat TOML table of Config keys (dashes or underscores)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file (give a .toml file)")
    if not p.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        with open(p, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    if "train" in raw and isinstance(raw["train"], dict) and len(raw) == 1:
        raw = raw["train"]  # a [train] table is accepted too
    return {k.replace("-", "_"): v for k, v in raw.items()}


def dump_toml(d: dict, header: str = "") -> str:
    """A flat dict as TOML; ``None`` values are written as comments (TOML has no null)."""
    lines = [f"# {line}" for line in header.splitlines()] if header else []
    for k, v in d.items():
        if v is None:
            lines.append(f"# {k} = (unset)")
        elif isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, (int, float)):
            lines.append(f"{k} = {v!r}")
        else:
            s = str(v).replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'{k} = "{s}"')
    return "\n".join(lines) + "\n"


def run_toml(cfg: Config, header: str) -> str:
    """A resolved config as a run directory's ``config.toml``: ``steps`` decides the length, so ``epochs`` is
    written as a comment (a file that sets both is refused by ``--config``, as the flags are)."""
    d = cfg.to_dict()
    if d.get("steps") is not None and d.get("epochs") is not None:
        header += f"\nepochs: {d['epochs']:g} (steps / steps per epoch)"
        d["epochs"] = None
    return dump_toml(d, header)
