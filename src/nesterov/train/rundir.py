"""The run directory: what a run writes there and how a resumed run reads it back.

``config.toml`` (the resolved config), ``metrics.csv`` (one row per evaluation), ``last.pt`` and ``best.pt``
(checkpoints: model, optimizer, scheduler, scaler, RNG states and the run's counters; with FSDP2 the model and
optimizer are sharded into ``dcp-<step>/`` and ``last.pt`` points at it), ``summary.json`` and ``curves.png`` at
the end, ``data.json`` for text datasets.  Every file is written atomically; rank 0 alone writes files.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from . import dist as D
from .checkpoint import atomic_write_text, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import Config, run_toml

__all__ = ["METRIC_COLUMNS", "checkpoint", "clear", "finish", "read_rows", "restore", "start", "write_rows"]

METRIC_COLUMNS = ["step", "epoch", "seconds", "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
                  "test_bpb"]


def clear(out: Path) -> None:
    """Remove what an earlier run left in ``out`` (a fresh run there must not resume or report it)."""
    for name in ("config.toml", "metrics.csv", "last.pt", "best.pt", "summary.json", "curves.png", "data.json"):
        (out / name).unlink(missing_ok=True)
    for old in out.glob("dcp-*"):
        shutil.rmtree(old, ignore_errors=True)


def read_rows(path: Path, upto_step: int) -> list[dict]:
    rows = []
    if path.exists():
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                try:
                    row = {k: (int(v) if k == "step" else float(v if v not in (None, "") else "nan"))
                           for k, v in r.items()}
                    row.setdefault("test_bpb", float("nan"))
                except (TypeError, ValueError):
                    break  # a torn last line after kill -9
                if row["step"] <= upto_step:
                    rows.append(row)
    return rows


def write_rows(path: Path, rows: list[dict]) -> None:
    lines = [",".join(METRIC_COLUMNS)] + [",".join(_fmt(r.get(k, float("nan"))) for k in METRIC_COLUMNS)
                                          for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _fmt(v) -> str:
    return repr(v)  # exact: metrics.csv and summary.json agree to the last bit


def restore(out: Path, cfg: Config, device, model, opt, sched, scaler) -> dict | None:
    """Load ``out/last.pt`` into the model, optimizer, scheduler, scaler and RNGs; return the run's counters
    saved with it (None: no checkpoint yet)."""
    last = out / "last.pt"
    if not last.exists():
        return None
    ck = load_checkpoint(last, map_location=device)
    if "dcp" in ck:
        _load_dcp(model, opt, out / ck["dcp"])
    else:
        if cfg.fsdp:
            raise ValueError(f"--fsdp: {last} was saved without --fsdp; resume it without --fsdp")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if "train_model" in ck:  # schedule-free, written between evaluations: back to y and its BatchNorm buffers
            opt.train()
            model.load_state_dict(ck["train_model"])
    sched.load_state_dict(ck["scheduler"])
    if scaler is not None and ck.get("scaler"):
        scaler.load_state_dict(ck["scaler"])
    set_rng_state(ck["rng"])
    return ck["state"]


def start(out: Path, cfg: Config, history: list[dict], data, text: bool) -> None:
    """Write the metrics rows kept from an earlier run, the resolved config and (text) the data's identity."""
    write_rows(out / "metrics.csv", history)
    atomic_write_text(out / "config.toml", run_toml(cfg, "nesterov train: resolved config"))
    if text:
        atomic_write_text(out / "data.json", json.dumps(
            {"dataset": cfg.dataset, "sha256": data.sha256, "files": data.files,
             "train_bytes": len(data.train), "val_bytes": len(data.val)}, indent=2) + "\n")


def checkpoint(out: Path, dist: D.Dist, cfg: Config, model, opt, sched, scaler, state, row, improved,
               extra: dict | None = None) -> None:
    """Append the metrics row (``row=None``: none, a checkpoint between evaluations) and write ``last.pt`` (and
    ``best.pt``) atomically; rank 0 writes files.  ``extra``: more entries for the checkpoint."""
    common = {"scheduler": sched.state_dict(), "rng": rng_state(), "state": dict(state), "config": cfg.to_dict(),
              "metrics": row, "scaler": scaler.state_dict() if scaler is not None else None, **(extra or {})}
    if cfg.fsdp:
        name = f"dcp-{state['step']}"
        _save_dcp(model, opt, out / name)  # collective: every rank writes its shards
        ck = {**common, "dcp": name}
    else:
        ck = {**common, "model": model.state_dict(), "optimizer": opt.state_dict()} if dist.main else None
    if dist.main and row is not None:
        with open(out / "metrics.csv", "a") as f:
            f.write(",".join(_fmt(row.get(k, float("nan"))) for k in METRIC_COLUMNS) + "\n")
    if dist.main:
        if improved and not cfg.fsdp:
            save_checkpoint(out / "best.pt", ck)
        save_checkpoint(out / "last.pt", ck)
        if cfg.fsdp:  # older sharded checkpoints are no longer pointed at
            for old in out.glob("dcp-*"):
                if old.name != ck["dcp"]:
                    shutil.rmtree(old, ignore_errors=True)


def finish(out: Path, cfg: Config, summary: dict, history: list[dict]) -> None:
    """``summary.json``, and ``curves.png`` when there is a curve to draw."""
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    if history:
        from .plots import plot_curves

        plot_curves(history, out / "curves.png", target=cfg.target_accuracy,
                    label_smoothing=cfg.label_smoothing,
                    title=f"{cfg.dataset} / {cfg.model} / {cfg.optimizer} (lr {cfg.lr:g}, seed {cfg.seed})")


def _load_dcp(model, opt, path: Path):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    msd, osd = get_state_dict(model, opt)
    state = {"model": msd, "optim": osd}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])


def _save_dcp(model, opt, path: Path):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(model, opt)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(path))
