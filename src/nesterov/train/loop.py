"""The training loop: whole-tensor batches on the device, periodic evaluation, atomic checkpoints, resume.

One run, start to end, is :func:`run`.  Determinism: the model is initialised from ``seed``; the order of
examples in epoch ``e`` is a pure function of ``(seed, e)``, and so are the augmentation draws and the text
windows of step ``s`` (functions of ``(seed, s)``); checkpoints (written at every evaluation) hold the model,
optimizer, scheduler, RNG states and step.  A run resumed from ``last.pt`` therefore replays the exact batches
and ends with the same metrics as an uninterrupted one.

Many processes (``torchrun``; :mod:`nesterov.train.dist`): every rank computes the same global batch and takes its
share of it (:meth:`Dist.share`); each share's loss is a sum divided by the global batch size, so the averaged
gradient is the global batch's whatever the number of processes.  Rank 0 alone prints and writes files.  With
DDP the model and optimizer state are replicated and rank 0 saves them to ``last.pt`` (any number of processes
resumes it); with ``--fsdp`` (FSDP2) they are saved sharded by ``torch.distributed.checkpoint`` into
``dcp-<step>/`` and ``last.pt`` points at it (it reshards on load, so N processes resume on M).
BatchNorm statistics are per process (as in any DDP run), so only models without BatchNorm give the same
numbers for every N.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data import Dataset, load_dataset
from ..models import build_model
from . import dist as D
from . import report, rundir
from .batches import Batches, n_train
from .config import Config
from .device import autocast_for, no_sync, resolve_device, wrap
from .evaluation import evaluate
from .interrupt import Interrupt
from .optimizers import is_schedule_free, make_optimizer, muon_options
from .report import epochs_text
from .rundir import METRIC_COLUMNS
from .schedule_free import BN_BATCHES, to_x
from .schedules import Schedule

# evaluate, resolve_device, METRIC_COLUMNS and epochs_text live elsewhere; they stay importable from here
__all__ = ["Result", "TrainingDiverged", "evaluate", "resolve_device", "run", "METRIC_COLUMNS", "epochs_text"]

DEFAULT_CPU_THREADS = 1  # torch.set_num_threads on CPU unless --threads says otherwise


class TrainingDiverged(RuntimeError):
    """The training or test loss became NaN/inf; the last good checkpoint is kept."""


@dataclass
class Result:
    summary: dict
    history: list[dict] = field(default_factory=list)  # one metrics row per evaluation
    exit_code: int = 0


def _big(cfg: Config) -> bool:
    """Models that gain from intra-op threads (the default stays torch's there)."""
    return cfg.model in ("resnet18", "airbench", "gpt")


def run(cfg: Config, out: str | os.PathLike | None = None, *, resume: bool = False, progress: bool = True,
        data: Dataset | None = None, log=None) -> Result:
    """Train ``cfg``; write the run directory ``out`` (None: keep everything in memory, no files).

    ``resume``: continue from ``out/last.pt`` if present.  ``data``: a preloaded dataset (else loaded from
    ``cfg.dataset``).  ``log``: where messages go (default: stderr).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    cfg.check()
    if cfg.threads is None and resolve_device(cfg.device).type == "cpu" and not _big(cfg):
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


def _run(cfg: Config, out, resume: bool, progress: bool, data, log) -> Result:
    dist = D.current()
    device = resolve_device(cfg.device)
    if device.type == "cuda" and dist.on:
        device = torch.device("cuda", dist.local_rank)
    if not dist.main:
        progress, log = False, (lambda msg: None)
    if data is None:
        data = load_dataset(cfg.dataset, device, log=log)
    else:
        data = data.to(device)
    text = getattr(data, "kind", "classify") == "text"
    n = n_train(data, cfg)
    if not text and cfg.batch_size is not None and cfg.batch_size > n:  # (the default is capped at the set's size)
        raise ValueError(f"batch_size: {cfg.batch_size} is more than the {n} training examples of {cfg.dataset}; "
                         f"use at most {n}")
    cfg = cfg.resolved(n)
    if cfg.batch_size < dist.world * cfg.grad_accum:
        raise ValueError(f"batch_size: {cfg.batch_size} is smaller than processes x grad_accum "
                         f"({dist.world} x {cfg.grad_accum}); every micro-batch needs at least one example")
    dtype = torch.float64 if cfg.precision == "fp64" else torch.float32
    batches = Batches(data, cfg, dist, device, dtype)
    spe, bs = batches.spe, batches.bs

    torch.manual_seed(cfg.seed)
    in_shape = None if text else data.input_shape
    model = build_model(cfg.model, in_shape, data.num_classes, width=cfg.width, depth=cfg.depth,
                        heads=cfg.heads, context=cfg.context).to(device=device, dtype=dtype)
    if device.type == "cuda" and len(in_shape or ()) == 3:
        model = model.to(memory_format=torch.channels_last)
    net = wrap(model, cfg, dist, device)
    schedule_free = is_schedule_free(cfg.optimizer)  # its own warmup; evaluated and checkpointed at x
    replicas = dist.replica_group(cfg.fsdp)  # DDP: Muon splits its Newton–Schulz work among the ranks
    opt, _ = make_optimizer(cfg.optimizer, model, cfg.lr, cfg.momentum, cfg.weight_decay,
                            warmup_steps=int(cfg.warmup * cfg.steps),  # the warmup Schedule's length
                            **muon_options(cfg.optimizer, cfg.ns, cfg.ns_method, replicas))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, Schedule(cfg.schedule, cfg.steps, cfg.warmup))
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
    autocast = autocast_for(device, cfg.precision)

    out = Path(out) if out is not None else None
    state = {"step": 0, "seconds": 0.0, "best_test_accuracy": -1.0, "best_step": None,
             "steps_to_target": None, "seconds_to_target": None, "best_test_loss": None}
    history: list[dict] = []
    if out is not None:
        if dist.main:
            out.mkdir(parents=True, exist_ok=True)
            if not resume:
                rundir.clear(out)
        restored = rundir.restore(out, cfg, device, model, opt, sched, scaler) if resume else None
        if restored is not None:
            state.update(restored)
            log(f"resuming {out} from step {state['step']} of {cfg.steps}")
        elif resume:
            log(f"{out}: no last.pt yet; starting from step 0")
        history = rundir.read_rows(out / "metrics.csv", state["step"])
        if dist.main:
            rundir.start(out, cfg, history, data, text)

    n_params = sum(p.numel() for p in model.parameters())
    log(f"data   {batches.describe()} (prepared in {data.seconds:.2f} s)")
    log(report.model_line(cfg, n_params, bs, device, dist))
    if cfg.compile:
        log("model  torch.compile: the first steps compile the model (tens of seconds on a CPU; cached on disk for "
            "the next run)")

    def bn_inputs(step):  # the last BN_BATCHES training batches, to recompute BatchNorm statistics at x
        return (batches.step(s)[0] for s in range(max(0, step - BN_BATCHES), step))

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=state["step"], unit="step", dynamic_ncols=True, leave=True,
                   file=sys.stderr)
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, correct, count since the last evaluation
    partial = state.pop("partial", None)  # a checkpoint written at Ctrl-C between two evaluations
    if partial is not None:
        sums = torch.tensor(partial, dtype=torch.float64, device=device)
    last_test_acc = history[-1]["test_accuracy"] if history else float("nan")
    step = state["step"]
    status, exit_code, message = "completed", 0, ""
    net.train()
    if schedule_free:
        opt.train()  # a checkpoint holds x (eval mode): back to y, as the uninterrupted run did after writing it
    t0 = time.perf_counter() - state["seconds"]
    step0, el0 = step, state["seconds"]  # throughput counts this process's steps only
    ddp = dist.world > 1 and not cfg.fsdp
    stop = Interrupt(out is not None and not dist.on)  # several processes stop at the last evaluation's checkpoint
    boundary = False
    try:
        stop.install()
        while step < cfg.steps:
            xb, yb, count = batches.step(step)
            micro = list(zip(xb.tensor_split(cfg.grad_accum), yb.tensor_split(cfg.grad_accum)))
            opt.zero_grad(set_to_none=True)
            for k, (xm, ym) in enumerate(micro):
                sync = not ddp or k == len(micro) - 1
                with (contextlib.nullcontext() if sync else no_sync(net)), autocast:
                    logits = net(xm)
                    logits = logits.to(dtype).reshape(-1, logits.shape[-1])
                    yflat = ym.reshape(-1)
                    loss = F.cross_entropy(logits, yflat, label_smoothing=cfg.label_smoothing, reduction="sum")
                    scaled = loss * (dist.world / count)
                    (scaler.scale(scaled) if scaler is not None else scaled).backward()
                sums[0] += loss.detach()
                sums[1] += (logits.detach().argmax(1) == yflat).sum()
                sums[2] += len(yflat)
            if scaler is not None:
                if cfg.clip_grad is not None:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                scaler.step(opt)
                scaler.update()
            else:
                if cfg.clip_grad is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                opt.step()
            sched.step()
            step += 1
            if bar is not None:
                bar.update(1)
                if step % 10 == 0:  # the bar's one host sync; it also catches a NaN before the next evaluation
                    running = sums[0].item() / max(sums[2].item(), 1)
                    if not math.isfinite(running) and not dist.on:
                        raise TrainingDiverged(f"non-finite training loss ({running}) between steps {state['step']} "
                                               f"and {step}: training stopped. Try a smaller --lr (now {cfg.lr:g}).")
                    el = time.perf_counter() - t0
                    test_str = "-" if math.isnan(last_test_acc) else f"{100 * last_test_acc:.1f}%"
                    rate = (step - step0) * bs / max(el - el0, 1e-9)
                    bar.set_postfix_str(f"loss {running:.4f}  train "
                                        f"{100 * sums[1].item() / max(sums[2].item(), 1):.1f}%  test {test_str}  "
                                        f"{rate:,.0f} {'seq' if text else 'ex'}/s", refresh=False)
            if step % cfg.eval_every == 0 or step == cfg.steps:  # evaluate, record, checkpoint
                dist.all_sum(sums)
                train_loss, train_acc = (sums[0] / sums[2]).item(), (sums[1] / sums[2]).item()
                sums.zero_()
                if schedule_free:
                    to_x(opt, model, bn_inputs(step), autocast)
                test_loss, test_acc = batches.evaluate(net, autocast)
                if not (math.isfinite(train_loss) and math.isfinite(test_loss)):
                    raise TrainingDiverged(
                        f"non-finite loss (train {train_loss}, test {test_loss}) between steps "
                        f"{state['step']} and {step}: training stopped. Try a smaller --lr (now {cfg.lr:g}).")
                seconds = round(time.perf_counter() - t0, 4)
                last_test_acc = test_acc
                row = {"step": step, "epoch": round(step / spe, 4), "seconds": seconds,
                       "lr": opt.param_groups[0]["lr"], "train_loss": train_loss, "train_accuracy": train_acc,
                       "test_loss": test_loss, "test_accuracy": test_acc,
                       "test_bpb": test_loss / math.log(2) if text else float("nan")}
                history.append(row)
                improved = test_acc > state["best_test_accuracy"]
                if improved:
                    state["best_test_accuracy"], state["best_step"] = test_acc, step
                if state["best_test_loss"] is None or test_loss < state["best_test_loss"]:
                    state["best_test_loss"] = test_loss
                hit = ((cfg.target_accuracy is not None or cfg.target_loss is not None)
                       and (cfg.target_accuracy is None or test_acc >= cfg.target_accuracy)
                       and (cfg.target_loss is None or test_loss <= cfg.target_loss))
                if state["steps_to_target"] is None and hit:
                    state["steps_to_target"], state["seconds_to_target"] = step, seconds
                state["step"], state["seconds"] = step, seconds
                if out is not None:
                    rundir.checkpoint(out, dist, cfg, model, opt, sched, scaler, state, row, improved)
                if schedule_free:
                    opt.train()
            # Ctrl-C is acted on here, between two whole steps, where a checkpoint is exact (Interrupt).
            if stop.requested and step < cfg.steps:
                boundary = True
                raise KeyboardInterrupt
    except TrainingDiverged as e:
        status, exit_code, message = "diverged", 1, str(e)
        if out is not None and (out / "last.pt").exists():
            message += f" The last good checkpoint (step {state['step']}) is kept in {out / 'last.pt'}."
    except KeyboardInterrupt:
        stop.uninstall()
        if bar is not None:
            bar.close()
        if boundary and out is not None and step > state["step"]:  # a whole step: checkpoint exactly here
            state.update(step=step, seconds=round(time.perf_counter() - t0, 4), partial=sums.tolist())
            extra = None
            if schedule_free:  # the checkpoint holds x; the resumed run goes on from y exactly (schedule_free.py)
                extra = {"train_model": {k: v.clone() for k, v in model.state_dict().items()}}
                to_x(opt, model, bn_inputs(step), autocast)
            rundir.checkpoint(out, dist, cfg, model, opt, sched, scaler, state, None, False, extra=extra)
            state.pop("partial")
        if out is None:
            where = ""
        elif (out / "last.pt").exists():
            where = f"; checkpoint at step {state['step']}; continue with: nesterov train --resume {out}"
        else:
            where = f", before the first checkpoint; start again with: nesterov train --resume {out}"
        log(f"\ninterrupted at step {step}{where}")
        return Result({"status": "interrupted", "steps": state["step"]}, history, 130)
    finally:
        stop.uninstall()
        if bar is not None:
            bar.close()

    summary = report.summary(cfg, status, state, history, data, spe, bs, n_params, device, dist, text)
    if message:
        summary["message"] = message
        log(message)
    if out is not None and dist.main:
        rundir.finish(out, cfg, summary, history)
    return Result(summary, history, exit_code)
