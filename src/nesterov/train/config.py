"""The run configuration: defaults <- a TOML file <- command-line flags, then resolved against the dataset.

The resolved config (every default filled in) is what a run directory's ``config.toml`` holds and what
``--resume`` reads back.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from ..data import DATASETS
from ..models import MODELS
from .optimizers import OptimizerError, resolve_hparams
from .schedules import SCHEDULES

__all__ = ["Config", "ConfigError", "DATASET_DEFAULTS", "load_toml", "dump_toml"]


class ConfigError(ValueError):
    """A config value or file that cannot be used; the message names the key and the accepted values."""


# Per-dataset training length and target accuracy, used when --epochs/--steps/--target-accuracy are unset.
DATASET_DEFAULTS = {
    "mnist1d": {"epochs": 5, "target_accuracy": 0.94},  # 0.94: the MNIST-1D paper's CNN
    "digits": {"epochs": 30, "target_accuracy": 0.97},
}
FALLBACK_EPOCHS = 20
MIN_EVALS = 10  # default evaluation interval: once per epoch, or more often so that a run has >= 10 points


@dataclass
class Config:
    dataset: str = "mnist1d"
    model: str = "cnn1d"
    optimizer: str = "nag"
    lr: float | None = None  # None: the optimizer's default from the optimizer table
    momentum: float | None = None
    weight_decay: float | None = None
    batch_size: int = 128
    epochs: float | None = None  # None: the dataset's default
    steps: int | None = None  # total optimizer steps; overrides epochs
    schedule: str = "warmup-cosine"
    warmup: float = 0.1  # fraction of the run spent warming up (one-cycle: rising)
    label_smoothing: float = 0.1
    target_accuracy: float | None = None  # None: the dataset's default (if any)
    seed: int = 0
    device: str = "auto"
    eval_every: int | None = None  # steps between evaluations/checkpoints; None: per epoch, >= 10 per run
    threads: int | None = None  # torch.set_num_threads; None: 1 on CPU, torch's default elsewhere

    # ------------------------------------------------------------------ construction and checks
    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> "Config":
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(known)}")
        cfg = cls()
        for k, v in d.items():
            setattr(cfg, k, _coerce(k, v, known[k].type, where))
        return cfg

    def updated(self, **changes) -> "Config":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def check(self) -> "Config":
        """Validate every field; raise ConfigError naming the key and the accepted values."""
        if not (self.dataset in ("mnist1d", "digits") or self.dataset.startswith("npz:")):
            raise ConfigError(f"dataset: unknown {self.dataset!r}; valid: {', '.join(DATASETS)}")
        if self.model not in MODELS:
            raise ConfigError(f"model: unknown {self.model!r}; valid: {', '.join(MODELS)}")
        try:
            resolve_hparams(self.optimizer)
        except OptimizerError as e:
            raise ConfigError(f"optimizer: {e}") from None
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule: unknown {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
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
        if not 0 <= self.warmup < 1:
            raise ConfigError(f"warmup: must be a fraction in [0, 1), got {self.warmup}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing: must be in [0, 1), got {self.label_smoothing}")
        if self.target_accuracy is not None and not 0 < self.target_accuracy <= 1:
            raise ConfigError(f"target_accuracy: must be a fraction in (0, 1], got {self.target_accuracy} "
                              "(write 0.94 for 94 %)")
        if not (self.device in ("auto", "cpu", "mps") or self.device.startswith("cuda")):
            raise ConfigError(f"device: unknown {self.device!r}; valid: auto, cpu, cuda, cuda:N, mps")
        return self

    def resolved(self, n_train: int) -> "Config":
        """Fill every unset default; ``n_train`` is the training set size (for epochs <-> steps)."""
        self.check()
        d = DATASET_DEFAULTS.get(self.dataset, {})
        hp = resolve_hparams(self.optimizer, self.lr, self.momentum, self.weight_decay)
        spe = self.steps_per_epoch(n_train)
        steps = self.steps or max(1, round((self.epochs or d.get("epochs", FALLBACK_EPOCHS)) * spe))
        return dataclasses.replace(
            self, lr=hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"],
            steps=steps, epochs=round(steps / spe, 4),
            target_accuracy=self.target_accuracy if self.target_accuracy is not None else d.get("target_accuracy"),
            eval_every=min(self.eval_every or min(spe, math.ceil(steps / MIN_EVALS)), steps),
        )

    def steps_per_epoch(self, n_train: int) -> int:
        return max(1, n_train // self.batch_size)

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
        raise ConfigError(f"{where}: {key} has the wrong type ({value!r}); expected {typ}") from None
    return value


def load_toml(path) -> dict:
    """Read a config file: a flat TOML table of Config keys (dashes or underscores)."""
    p = Path(path)
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
