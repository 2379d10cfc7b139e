"""What a run tells its user: the line that opens it and the summary that closes it (``summary.json``)."""

from __future__ import annotations

import torch

from . import dist as D
from .config import Config

__all__ = ["epochs_text", "model_line", "summary"]


def epochs_text(epochs: float) -> str:
    """``5 epochs``, ``1 epoch``, ``9.1 epochs``, ``0.27 epochs``: what a reader needs, not 9.0909."""
    if epochs == round(epochs):
        n = int(round(epochs))
        return f"{n} epoch{'s' * (n != 1)}"
    return f"{epochs:.2g} epochs" if epochs < 1 else f"{epochs:.1f} epochs"


def model_line(cfg: Config, n_params: int, bs: int, device, dist: D.Dist) -> str:
    """The ``model`` line: the model, the optimizer and its hyperparameters, the schedule, the batch, the
    length of the run, where it runs, and whatever departs from the defaults."""
    extras = [f"precision {cfg.precision}"] if cfg.precision != "fp32" else []
    extras += ["compiled"] if cfg.compile else []
    extras += [f"grad-accum {cfg.grad_accum}"] if cfg.grad_accum > 1 else []
    extras += [f"clip-grad {cfg.clip_grad:g}"] if cfg.clip_grad is not None else []
    extras += [f"{dist.world} processes" + (" (FSDP2)" if cfg.fsdp else " (DDP)")] if dist.on else []
    extras = "".join(f"; {e}" for e in extras)
    threads = torch.get_num_threads()
    return (f"model  {cfg.model}, {n_params:,} parameters; optimizer {cfg.optimizer} lr={cfg.lr:g} "
            f"momentum={cfg.momentum} weight_decay={cfg.weight_decay:g}; {cfg.schedule} schedule; batch {bs}; "
            f"{cfg.steps} steps ({epochs_text(cfg.epochs)}); device {device}, {threads} thread{'s' * (threads != 1)}"
            f"{extras}")


def summary(cfg: Config, status: str, state: dict, history: list[dict], data, spe: int, bs: int, n_params: int,
            device, dist: D.Dist, text: bool) -> dict:
    """The run's ``summary.json``: its config, where it ended, its best and final metrics, the target."""
    final = history[-1] if history else {}
    s = {
        "status": status,
        "dataset": cfg.dataset, "model": cfg.model, "optimizer": cfg.optimizer, "seed": cfg.seed,
        "lr": cfg.lr, "batch_size": cfg.batch_size, "schedule": cfg.schedule,
        "steps": state["step"], "epochs": round(state["step"] / spe, 4),
        "seconds": round(state["seconds"], 3), "data_seconds": round(data.seconds, 3),
        "examples_per_second": round(state["step"] * bs / state["seconds"], 1) if state["seconds"] else None,
        "test_accuracy": final.get("test_accuracy"), "test_loss": final.get("test_loss"),
        "train_loss": final.get("train_loss"),
        "best_test_accuracy": state["best_test_accuracy"] if state["best_step"] is not None else None,
        "best_step": state["best_step"], "best_test_loss": state["best_test_loss"],
        "target_accuracy": cfg.target_accuracy, "target_loss": cfg.target_loss,
        "steps_to_target": state["steps_to_target"], "seconds_to_target": state["seconds_to_target"],
        "parameters": n_params, "device": str(device), "threads": torch.get_num_threads(),
        "processes": dist.world, "precision": cfg.precision, "compile": cfg.compile,
        "torch": torch.__version__, "data_notes": data.notes,
    }
    if text:
        s["test_bpb"] = final.get("test_bpb")
        s["data_sha256"] = data.sha256
    return s
