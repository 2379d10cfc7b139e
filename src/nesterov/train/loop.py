"""The training loop: whole-tensor batches on the device, periodic evaluation, atomic checkpoints, resume.

One run, start to end, is :func:`run`.  Determinism: the model is initialised from ``seed``; the order of
examples in epoch ``e`` is a pure function of ``(seed, e)``; checkpoints (written at every evaluation) hold
the model, optimizer, scheduler, RNG states and step.  A run resumed from ``last.pt`` therefore replays the
exact batches and ends with the same metrics as an uninterrupted one.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data import Dataset, epoch_permutation, load_dataset
from ..models import build_model
from .checkpoint import atomic_write_text, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import Config, dump_toml
from .optimizers import make_optimizer
from .schedules import Schedule

__all__ = ["Result", "TrainingDiverged", "evaluate", "resolve_device", "run", "METRIC_COLUMNS"]

METRIC_COLUMNS = ["step", "epoch", "seconds", "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy"]
EVAL_CHUNK = 4096  # examples per forward pass at evaluation
DEFAULT_CPU_THREADS = 1  # torch.set_num_threads on CPU unless --threads says otherwise


class TrainingDiverged(RuntimeError):
    """The training or test loss became NaN/inf; the last good checkpoint is kept."""


@dataclass
class Result:
    summary: dict
    history: list[dict] = field(default_factory=list)  # one metrics row per evaluation
    exit_code: int = 0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} asked for but CUDA is not available; use --device cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device: 'mps' asked for but MPS is not available; use --device cpu")
    return torch.device(name)


@torch.no_grad()
def evaluate(model, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` over ``(x, y)``; one host sync at the end."""
    was_training = model.training
    model.eval()
    loss = torch.zeros((), dtype=torch.float32 if x.device.type == "mps" else torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for i in range(0, len(y), EVAL_CHUNK):
        logits = model(x[i:i + EVAL_CHUNK]).float()
        yb = y[i:i + EVAL_CHUNK]
        loss += F.cross_entropy(logits, yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
    model.train(was_training)
    return loss.item() / len(y), correct.item() / len(y)


def _read_rows(path: Path, upto_step: int) -> list[dict]:
    rows = []
    if path.exists():
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                try:
                    row = {k: (int(v) if k == "step" else float(v)) for k, v in r.items()}
                except (TypeError, ValueError):
                    break  # a torn last line after kill -9
                if row["step"] <= upto_step:
                    rows.append(row)
    return rows


def _write_rows(path: Path, rows: list[dict]) -> None:
    lines = [",".join(METRIC_COLUMNS)] + [",".join(_fmt(r[k]) for k in METRIC_COLUMNS) for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _fmt(v) -> str:
    return repr(v)  # exact: metrics.csv and summary.json agree to the last bit


def run(cfg: Config, out: str | os.PathLike | None = None, *, resume: bool = False, progress: bool = True,
        data: Dataset | None = None, log=None) -> Result:
    """Train ``cfg``; write the run directory ``out`` (None: keep everything in memory, no files).

    ``resume``: continue from ``out/last.pt`` if present.  ``data``: a preloaded dataset (else loaded from
    ``cfg.dataset``).  ``log``: where messages go (default: stderr).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    cfg.check()
    if cfg.threads is None and resolve_device(cfg.device).type == "cpu":
        # These models are too small to gain from intra-op threads (2 threads: no faster on an idle 2-core
        # CPU, 2-3x slower when another process holds a core). One thread is also what config.toml
        # records, so a resumed run computes bit for bit what the interrupted one did.
        cfg = dataclasses.replace(cfg, threads=DEFAULT_CPU_THREADS)
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, out, resume, progress, data, log)
    finally:
        torch.set_num_threads(threads)  # a library call leaves the process as it found it


def _run(cfg: Config, out, resume: bool, progress: bool, data: Dataset | None, log) -> Result:
    device = resolve_device(cfg.device)
    if data is None:
        data = load_dataset(cfg.dataset, device)
    else:
        data = data.to(device)
    cfg = cfg.resolved(len(data.y))
    n, bs = len(data.y), cfg.batch_size
    spe = cfg.steps_per_epoch(n)
    bs = min(bs, n)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.num_classes).to(device)
    opt, _ = make_optimizer(cfg.optimizer, model, cfg.lr, cfg.momentum, cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, Schedule(cfg.schedule, cfg.steps, cfg.warmup))

    out = Path(out) if out is not None else None
    state = {"step": 0, "seconds": 0.0, "best_test_accuracy": -1.0, "best_step": None,
             "steps_to_target": None, "seconds_to_target": None}
    history: list[dict] = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        last = out / "last.pt"
        if resume and last.exists():
            ck = load_checkpoint(last, map_location=device)
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            set_rng_state(ck["rng"])
            state.update(ck["state"])
            log(f"resuming {out} from step {state['step']} of {cfg.steps}")
        elif resume:
            log(f"{out}: no last.pt yet; starting from step 0")
        history = _read_rows(out / "metrics.csv", state["step"])
        _write_rows(out / "metrics.csv", history)
        atomic_write_text(out / "config.toml", dump_toml(cfg.to_dict(), "nesterov train: resolved config"))

    n_params = sum(p.numel() for p in model.parameters())
    log(f"data   {data.describe()} (prepared in {data.seconds:.2f} s)")
    log(f"model  {cfg.model}, {n_params:,} parameters; optimizer {cfg.optimizer} lr={cfg.lr:g} "
        f"momentum={cfg.momentum} weight_decay={cfg.weight_decay:g}; {cfg.schedule} schedule; batch {bs}; "
        f"{cfg.steps} steps ({cfg.epochs:g} epochs); device {device}, {torch.get_num_threads()} threads")

    x, y = data.x, data.y
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=state["step"], unit="step", dynamic_ncols=True, leave=True,
                   file=sys.stderr)
    loss_sum = torch.zeros((), device=device)
    correct_sum = torch.zeros((), device=device)
    batches = seen = 0
    last_test_acc = history[-1]["test_accuracy"] if history else float("nan")
    perm, perm_epoch = None, -1
    step = state["step"]
    status, exit_code, message = "completed", 0, ""
    model.train()
    t0 = time.perf_counter() - state["seconds"]
    step0, el0 = step, state["seconds"]  # throughput counts this process's steps only
    try:
        while step < cfg.steps:
            epoch, i = divmod(step, spe)
            if epoch != perm_epoch:
                perm, perm_epoch = epoch_permutation(n, cfg.seed, epoch, device), epoch
            idx = perm[i * bs:(i + 1) * bs]
            xb, yb = x[idx], y[idx]
            logits = model(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            loss_sum += loss.detach()
            correct_sum += (logits.detach().argmax(1) == yb).sum()
            batches += 1
            seen += len(idx)
            if bar is not None:
                bar.update(1)
                if step % 10 == 0:  # the bar's one host sync; it also catches a NaN before the next evaluation
                    running = loss_sum.item() / batches
                    if not math.isfinite(running):
                        raise TrainingDiverged(f"non-finite training loss ({running}) between steps {state['step']} "
                                               f"and {step}: training stopped. Try a smaller --lr (now {cfg.lr:g}).")
                    el = time.perf_counter() - t0
                    test_str = "-" if math.isnan(last_test_acc) else f"{100 * last_test_acc:.1f}%"
                    rate = (step - step0) * bs / max(el - el0, 1e-9)
                    bar.set_postfix_str(f"loss {running:.4f}  train "
                                        f"{100 * correct_sum.item() / seen:.1f}%  test {test_str}  {rate:,.0f} ex/s",
                                        refresh=False)
            if step % cfg.eval_every and step != cfg.steps:
                continue
            # ---- evaluation point: check, evaluate, record, checkpoint
            train_loss = loss_sum.item() / batches
            train_acc = correct_sum.item() / seen
            loss_sum.zero_()
            correct_sum.zero_()
            batches = seen = 0
            test_loss, test_acc = evaluate(model, data.x_test, data.y_test)
            if not (math.isfinite(train_loss) and math.isfinite(test_loss)):
                raise TrainingDiverged(
                    f"non-finite loss (train {train_loss}, test {test_loss}) between steps "
                    f"{state['step']} and {step}: training stopped. Try a smaller --lr (now {cfg.lr:g}).")
            seconds = round(time.perf_counter() - t0, 4)
            last_test_acc = test_acc
            row = {"step": step, "epoch": round(step / spe, 4), "seconds": seconds, "lr": opt.param_groups[0]["lr"],
                   "train_loss": train_loss, "train_accuracy": train_acc, "test_loss": test_loss,
                   "test_accuracy": test_acc}
            history.append(row)
            improved = test_acc > state["best_test_accuracy"]
            if improved:
                state["best_test_accuracy"], state["best_step"] = test_acc, step
            if (state["steps_to_target"] is None and cfg.target_accuracy is not None
                    and test_acc >= cfg.target_accuracy):
                state["steps_to_target"], state["seconds_to_target"] = step, seconds
            state["step"], state["seconds"] = step, seconds
            if out is not None:
                with open(out / "metrics.csv", "a") as f:
                    f.write(",".join(_fmt(row[k]) for k in METRIC_COLUMNS) + "\n")
                ck = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                      "rng": rng_state(), "state": dict(state), "config": cfg.to_dict(), "metrics": row}
                if improved:
                    save_checkpoint(out / "best.pt", ck)
                save_checkpoint(out / "last.pt", ck)
    except TrainingDiverged as e:
        status, exit_code, message = "diverged", 1, str(e)
        if out is not None and (out / "last.pt").exists():
            message += f" The last good checkpoint (step {state['step']}) is kept in {out / 'last.pt'}."
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        where = f"; continue with: nesterov train --resume {out}" if out is not None else ""
        log(f"\ninterrupted at step {step}; last checkpoint at step {state['step']}{where}")
        return Result({"status": "interrupted", "steps": state["step"]}, history, 130)
    finally:
        if bar is not None:
            bar.close()

    final = history[-1] if history else {}
    summary = {
        "status": status,
        "dataset": cfg.dataset, "model": cfg.model, "optimizer": cfg.optimizer, "seed": cfg.seed,
        "lr": cfg.lr, "batch_size": cfg.batch_size, "schedule": cfg.schedule,
        "steps": state["step"], "epochs": round(state["step"] / spe, 4),
        "seconds": round(state["seconds"], 3), "data_seconds": round(data.seconds, 3),
        "examples_per_second": round(state["step"] * bs / state["seconds"], 1) if state["seconds"] else None,
        "test_accuracy": final.get("test_accuracy"), "test_loss": final.get("test_loss"),
        "train_loss": final.get("train_loss"),
        "best_test_accuracy": state["best_test_accuracy"] if state["best_step"] is not None else None,
        "best_step": state["best_step"],
        "target_accuracy": cfg.target_accuracy,
        "steps_to_target": state["steps_to_target"], "seconds_to_target": state["seconds_to_target"],
        "parameters": n_params, "device": str(device), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "data_notes": data.notes,
    }
    if message:
        summary["message"] = message
        log(message)
    if out is not None:
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
        if history:
            from .plots import plot_curves

            plot_curves(history, out / "curves.png", target=cfg.target_accuracy,
                        label_smoothing=cfg.label_smoothing,
                        title=f"{cfg.dataset} / {cfg.model} / {cfg.optimizer} (lr {cfg.lr:g}, seed {cfg.seed})")
    return Result(summary, history, exit_code)
