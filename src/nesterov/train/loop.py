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
import csv
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data import Dataset, epoch_permutation, load_dataset
from ..models import build_model
from . import dist as D
from .checkpoint import atomic_write_text, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import Config, run_toml
from .optimizers import make_optimizer
from .schedules import Schedule

__all__ = ["Result", "TrainingDiverged", "evaluate", "resolve_device", "run", "METRIC_COLUMNS"]

METRIC_COLUMNS = ["step", "epoch", "seconds", "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
                  "test_bpb"]
TEXT_EVAL_CHUNK = 64  # windows per forward pass at evaluation
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
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise ValueError(f"device: {name!r} asked for but this machine has {torch.cuda.device_count()} CUDA "
                         f"device(s): cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device: 'mps' asked for but MPS is not available; use --device cpu")
    return torch.device(name)


@torch.no_grad()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, inputs=None, autocast=None,
             dist: D.Dist | None = None) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` over ``(x, y)``; one host sync at the end.

    ``inputs``: maps a chunk of ``x`` to what the model takes (images: normalisation); ``dist``: each rank
    scores its share and the sums are added across ranks.  Logits of text models ``(B, T, V)`` are scored per
    token (``y`` is then ``(B, T)``).
    """
    dist = dist or D.Dist()
    lo, hi = dist.share(len(y))
    was_training = model.training
    model.eval()
    acc_dtype = torch.float32 if x.device.type == "mps" else torch.float64
    sums = torch.zeros(3, dtype=acc_dtype, device=x.device)  # loss, correct, count
    for i in range(lo, hi, EVAL_CHUNK if y.ndim == 1 else TEXT_EVAL_CHUNK):
        j = min(hi, i + (EVAL_CHUNK if y.ndim == 1 else TEXT_EVAL_CHUNK))
        xb = x[i:j] if inputs is None else inputs(x[i:j])
        with autocast or contextlib.nullcontext():
            logits = model(xb)
        logits = (logits if logits.dtype == torch.float64 else logits.float()).reshape(-1, logits.shape[-1])
        yb = y[i:j].reshape(-1)
        sums[0] += F.cross_entropy(logits, yb, reduction="sum")
        sums[1] += (logits.argmax(1) == yb).sum()
        sums[2] += len(yb)
    model.train(was_training)
    dist.all_sum(sums)
    loss, correct, count = sums.tolist()
    return loss / count, correct / count


def n_train(data, cfg: Config) -> int:
    """Training examples: images/rows, or context windows in the training bytes of a text dataset."""
    if getattr(data, "kind", "classify") == "text":
        return max(1, (len(data.train) - 1) // (cfg.context or 128))
    return len(data.y)


def _big(cfg: Config) -> bool:
    """Models that gain from intra-op threads (the default stays torch's there)."""
    return cfg.model in ("resnet18", "airbench", "gpt")


def _read_rows(path: Path, upto_step: int) -> list[dict]:
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


def _write_rows(path: Path, rows: list[dict]) -> None:
    lines = [",".join(METRIC_COLUMNS)] + [",".join(_fmt(r.get(k, float("nan"))) for k in METRIC_COLUMNS)
                                          for r in rows]
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


def _gen(seed: int, step: int, salt: int) -> torch.Generator:
    """A CPU generator that is a pure function of ``(seed, step, salt)``."""
    state = np.random.SeedSequence([int(seed), int(step), salt]).generate_state(2, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


class _Batches:
    """The global batch of every step, and this rank's share of it, as the model takes it."""

    def __init__(self, data, cfg: Config, dist: D.Dist, device, dtype):
        self.data, self.cfg, self.dist, self.device, self.dtype = data, cfg, dist, device, dtype
        self.text = getattr(data, "kind", "classify") == "text"
        if self.text:
            self.context = cfg.context or 128
            self.n = max(1, (len(data.train) - 1) // self.context)  # windows per "epoch"
            ends = min(len(data.val), cfg.eval_bytes + 1)
            if ends < self.context + 1:
                raise ValueError(f"{data.name}: the validation split ({len(data.val)} bytes) is shorter than one "
                                 f"context window ({self.context + 1} bytes); use a smaller --context")
            starts = torch.arange(0, ends - self.context, self.context)
            self.val_x, self.val_y = data.windows(starts, self.context, "val")
        else:
            self.n = len(data.y)
        self.bs = min(cfg.batch_size, self.n) if not self.text else cfg.batch_size
        self.spe = cfg.steps_per_epoch(self.n)
        self._perm, self._perm_epoch = None, -1
        self.streamed = getattr(data, "streamed", False)
        self._stream, self._stream_step = None, None

    def _indices(self, step: int) -> torch.Tensor:
        """The global batch of ``step``: indices into the training set (on the CPU)."""
        epoch, i = divmod(step, self.spe)
        if epoch != self._perm_epoch:
            self._perm, self._perm_epoch = epoch_permutation(self.n, self.cfg.seed, epoch), epoch
        return self._perm[i * self.bs:(i + 1) * self.bs]

    def _streamed_step(self, step: int):
        """This rank's share of ``step``, decoded by the DataLoader workers (which run ahead)."""
        if self._stream is None or self._stream_step != step:
            lo, hi = self.dist.share(self.bs)
            order = _StepIndices(self, step, lo, hi)
            self._stream = iter(self.data.loader(order))
        self._stream_step = step + 1
        try:
            xb, yb = next(self._stream)
        except Exception as e:  # noqa: BLE001 - a file that no longer decodes: one line naming it
            from ..data.images import worker_error

            raise worker_error(e) from None
        return xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)

    def inputs(self, xb, gen=None, train=False):
        if self.text:
            return xb
        x = self.data.inputs(xb, self.cfg.augment if train else "none", gen)
        return x.to(self.dtype) if x.is_floating_point() else x

    def step(self, step: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(inputs, targets, global count of scored targets) of this rank's share of step ``step``."""
        lo, hi = self.dist.share(self.bs)
        if self.text:
            g = _gen(self.cfg.seed, step, 0x74657874)
            starts = torch.randint(0, len(self.data.train) - self.context - 1 + 1, (self.bs,), generator=g)
            xb, yb = self.data.windows(starts[lo:hi], self.context)
            return xb, yb, self.bs * self.context
        if self.streamed:
            xb, yb = self._streamed_step(step)
            gen = _gen(self.cfg.seed, step, 0x61756780) if self.cfg.augment != "none" else None
            x = self.data.inputs(xb, self.cfg.augment, gen, share=(lo, hi, self.bs))
            return x.to(self.dtype), yb, self.bs
        idx = self._indices(step).to(self.device)
        xb = self.data.x[idx]
        if self.data.image and self.cfg.augment != "none":  # draw for the whole global batch, then take a share
            xb = self.inputs(xb, _gen(self.cfg.seed, step, 0x61756780), train=True)[lo:hi]
        else:
            xb = self.inputs(xb[lo:hi])
        return xb, self.data.y[idx[lo:hi]], self.bs

    def evaluate(self, model, autocast):
        if self.streamed:
            return self._evaluate_streamed(model, autocast)
        if self.text:
            loss, acc = evaluate(model, self.val_x, self.val_y, autocast=autocast, dist=self.dist)
        else:
            inputs = self.inputs if (self.data.image or self.dtype != torch.float32) else None
            loss, acc = evaluate(model, self.data.x_test, self.data.y_test, inputs=inputs, autocast=autocast,
                                 dist=self.dist)
        return loss, acc

    @torch.no_grad()
    def _evaluate_streamed(self, model, autocast):
        lo, hi = self.dist.share(len(self.data.y_test))
        chunks = [list(range(i, min(hi, i + EVAL_CHUNK // 16))) for i in range(lo, hi, EVAL_CHUNK // 16)]
        was_training = model.training
        model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        it = iter(self.data.loader(chunks, test=True))
        while True:
            try:
                xb, yb = next(it)
            except StopIteration:
                break
            except Exception as e:  # noqa: BLE001
                from ..data.images import worker_error

                raise worker_error(e) from None
            xb, yb = xb.to(self.device), yb.to(self.device)
            with autocast or contextlib.nullcontext():
                logits = model(self.data.inputs(xb).to(self.dtype))
            logits = logits if logits.dtype == torch.float64 else logits.float()
            sums[0] += F.cross_entropy(logits, yb, reduction="sum")
            sums[1] += (logits.argmax(1) == yb).sum()
            sums[2] += len(yb)
        model.train(was_training)
        self.dist.all_sum(sums)
        loss, correct, count = sums.tolist()
        return loss / count, correct / count

    def describe(self) -> str:
        return self.data.describe() + (f"; context {self.context}, {len(self.val_y)} validation windows"
                                       if self.text else "")


class _StepIndices:
    """Index lists of this rank's share of each step from ``start`` on: a DataLoader batch_sampler."""

    def __init__(self, batches: "_Batches", start: int, lo: int, hi: int):
        self.b, self.start, self.lo, self.hi = batches, start, lo, hi
        self._perm, self._epoch = None, -1

    def __iter__(self):
        b = self.b
        for step in range(self.start, b.cfg.steps):
            epoch, i = divmod(step, b.spe)
            if epoch != self._epoch:
                self._perm, self._epoch = epoch_permutation(b.n, b.cfg.seed, epoch), epoch
            yield self._perm[i * b.bs:(i + 1) * b.bs][self.lo:self.hi].tolist()

    def __len__(self):
        return max(0, self.b.cfg.steps - self.start)


def _autocast(device, precision: str):
    if precision in ("bf16", "fp16"):
        return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return contextlib.nullcontext()


def _wrap(model, cfg: Config, dist: D.Dist, device):
    """(the module to call in training, the module whose parameters the optimizer takes)."""
    if cfg.fsdp:
        from torch.distributed.fsdp import fully_shard

        if not D.current().on:
            D.init_single()  # FSDP2 on one process (e.g. resuming a run saved by several)
        units = getattr(model, "blocks", None) or getattr(model, "layers", None)
        for m in (units if units is not None else []):
            fully_shard(m)
        fully_shard(model)
        wrapped = model
    elif dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        wrapped = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        wrapped = model
    if cfg.compile:
        wrapped = torch.compile(wrapped)
    return wrapped


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
    cfg = cfg.resolved(n_train(data, cfg))
    if cfg.batch_size < dist.world * cfg.grad_accum:
        raise ValueError(f"batch_size: {cfg.batch_size} is smaller than processes x grad_accum "
                         f"({dist.world} x {cfg.grad_accum}); every micro-batch needs at least one example")
    dtype = torch.float64 if cfg.precision == "fp64" else torch.float32
    batches = _Batches(data, cfg, dist, device, dtype)
    spe, bs = batches.spe, batches.bs

    torch.manual_seed(cfg.seed)
    in_shape = None if text else data.input_shape
    model = build_model(cfg.model, in_shape, data.num_classes, width=cfg.width, depth=cfg.depth,
                        heads=cfg.heads, context=cfg.context).to(device=device, dtype=dtype)
    if device.type == "cuda" and len(in_shape or ()) == 3:
        model = model.to(memory_format=torch.channels_last)
    net = _wrap(model, cfg, dist, device)
    opt, _ = make_optimizer(cfg.optimizer, model, cfg.lr, cfg.momentum, cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, Schedule(cfg.schedule, cfg.steps, cfg.warmup))
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
    autocast = _autocast(device, cfg.precision)

    out = Path(out) if out is not None else None
    state = {"step": 0, "seconds": 0.0, "best_test_accuracy": -1.0, "best_step": None,
             "steps_to_target": None, "seconds_to_target": None, "best_test_loss": None}
    history: list[dict] = []
    if out is not None:
        if dist.main:
            out.mkdir(parents=True, exist_ok=True)
            if not resume:
                _clear_run(out)
        last = out / "last.pt"
        if resume and last.exists():
            ck = load_checkpoint(last, map_location=device)
            if "dcp" in ck:
                _load_dcp(model, opt, out / ck["dcp"])
            else:
                if cfg.fsdp:
                    raise ValueError(f"--fsdp: {last} was saved without --fsdp; resume it without --fsdp")
                model.load_state_dict(ck["model"])
                opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            if scaler is not None and ck.get("scaler"):
                scaler.load_state_dict(ck["scaler"])
            set_rng_state(ck["rng"])
            state.update(ck["state"])
            log(f"resuming {out} from step {state['step']} of {cfg.steps}")
        elif resume:
            log(f"{out}: no last.pt yet; starting from step 0")
        history = _read_rows(out / "metrics.csv", state["step"])
        if dist.main:
            _write_rows(out / "metrics.csv", history)
            atomic_write_text(out / "config.toml", run_toml(cfg, "nesterov train: resolved config"))
            if text:
                atomic_write_text(out / "data.json", json.dumps(
                    {"dataset": cfg.dataset, "sha256": data.sha256, "files": data.files,
                     "train_bytes": len(data.train), "val_bytes": len(data.val)}, indent=2) + "\n")

    n_params = sum(p.numel() for p in model.parameters())
    log(f"data   {batches.describe()} (prepared in {data.seconds:.2f} s)")
    extras = [f"precision {cfg.precision}"] if cfg.precision != "fp32" else []
    extras += ["compiled"] if cfg.compile else []
    extras += [f"grad-accum {cfg.grad_accum}"] if cfg.grad_accum > 1 else []
    extras += [f"clip-grad {cfg.clip_grad:g}"] if cfg.clip_grad is not None else []
    extras += [f"{dist.world} processes" + (" (FSDP2)" if cfg.fsdp else " (DDP)")] if dist.on else []
    extras = "".join(f"; {e}" for e in extras)
    threads = torch.get_num_threads()
    log(f"model  {cfg.model}, {n_params:,} parameters; optimizer {cfg.optimizer} lr={cfg.lr:g} "
        f"momentum={cfg.momentum} weight_decay={cfg.weight_decay:g}; {cfg.schedule} schedule; batch {bs}; "
        f"{cfg.steps} steps ({epochs_text(cfg.epochs)}); device {device}, {threads} thread{'s' * (threads != 1)}"
        f"{extras}")
    if cfg.compile:
        log("model  torch.compile: the first steps compile the model (tens of seconds on a CPU; cached on disk for "
            "the next run)")

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
    t0 = time.perf_counter() - state["seconds"]
    step0, el0 = step, state["seconds"]  # throughput counts this process's steps only
    ddp = dist.world > 1 and not cfg.fsdp
    # Ctrl-C sets a flag that the loop reads between two steps (a checkpoint there is exact); a second Ctrl-C
    # stops at once. Many processes stop at the last evaluation's checkpoint (ranks may see the signal at
    # different steps, and a checkpoint is a collective).
    stop = _Interrupt(out is not None and not dist.on)
    boundary = False
    try:
        stop.install()
        while step < cfg.steps:
            xb, yb, count = batches.step(step)
            micro = list(zip(xb.tensor_split(cfg.grad_accum), yb.tensor_split(cfg.grad_accum)))
            opt.zero_grad(set_to_none=True)
            for k, (xm, ym) in enumerate(micro):
                sync = not ddp or k == len(micro) - 1
                with (contextlib.nullcontext() if sync else _no_sync(net)), autocast:
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
            if step % cfg.eval_every and step != cfg.steps:
                if stop.requested:
                    boundary = True
                    raise KeyboardInterrupt
                continue
            # ---- evaluation point: check, evaluate, record, checkpoint
            dist.all_sum(sums)
            train_loss, train_acc = (sums[0] / sums[2]).item(), (sums[1] / sums[2]).item()
            sums.zero_()
            test_loss, test_acc = batches.evaluate(net, autocast)
            if not (math.isfinite(train_loss) and math.isfinite(test_loss)):
                raise TrainingDiverged(
                    f"non-finite loss (train {train_loss}, test {test_loss}) between steps "
                    f"{state['step']} and {step}: training stopped. Try a smaller --lr (now {cfg.lr:g}).")
            seconds = round(time.perf_counter() - t0, 4)
            last_test_acc = test_acc
            row = {"step": step, "epoch": round(step / spe, 4), "seconds": seconds, "lr": opt.param_groups[0]["lr"],
                   "train_loss": train_loss, "train_accuracy": train_acc, "test_loss": test_loss,
                   "test_accuracy": test_acc, "test_bpb": test_loss / math.log(2) if text else float("nan")}
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
                _checkpoint(out, dist, cfg, model, opt, sched, scaler, state, row, improved)
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
            _checkpoint(out, dist, cfg, model, opt, sched, scaler, state, None, False)
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
        "best_step": state["best_step"], "best_test_loss": state["best_test_loss"],
        "target_accuracy": cfg.target_accuracy, "target_loss": cfg.target_loss,
        "steps_to_target": state["steps_to_target"], "seconds_to_target": state["seconds_to_target"],
        "parameters": n_params, "device": str(device), "threads": torch.get_num_threads(),
        "processes": dist.world, "precision": cfg.precision, "compile": cfg.compile,
        "torch": torch.__version__, "data_notes": data.notes,
    }
    if text:
        summary["test_bpb"] = final.get("test_bpb")
        summary["data_sha256"] = data.sha256
    if message:
        summary["message"] = message
        log(message)
    if out is not None and dist.main:
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
        if history:
            from .plots import plot_curves

            plot_curves(history, out / "curves.png", target=cfg.target_accuracy,
                        label_smoothing=cfg.label_smoothing,
                        title=f"{cfg.dataset} / {cfg.model} / {cfg.optimizer} (lr {cfg.lr:g}, seed {cfg.seed})")
    return Result(summary, history, exit_code)


def _no_sync(net):
    inner = getattr(net, "_orig_mod", net)
    return inner.no_sync() if hasattr(inner, "no_sync") else contextlib.nullcontext()


def _checkpoint(out: Path, dist: D.Dist, cfg: Config, model, opt, sched, scaler, state, row, improved) -> None:
    """Append the metrics row (``row=None``: none, a checkpoint between evaluations) and write ``last.pt`` (and
    ``best.pt``) atomically; rank 0 writes files."""
    common = {"scheduler": sched.state_dict(), "rng": rng_state(), "state": dict(state), "config": cfg.to_dict(),
              "metrics": row, "scaler": scaler.state_dict() if scaler is not None else None}
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


class _Interrupt:
    """SIGINT as a request to stop at the next step boundary (``requested``); a second SIGINT raises at once.

    Installed only where it can be (the main thread, torch's default handler in place) and useful (a run that
    writes checkpoints); elsewhere Ctrl-C raises KeyboardInterrupt as usual.
    """

    def __init__(self, wanted: bool):
        self.wanted, self.requested, self._previous = wanted, False, None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def install(self) -> None:
        if (self.wanted and threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _clear_run(out: Path) -> None:
    """Remove what an earlier run left in ``out`` (a fresh run there must not resume or report it)."""
    for name in ("config.toml", "metrics.csv", "last.pt", "best.pt", "summary.json", "curves.png", "data.json"):
        (out / name).unlink(missing_ok=True)
    for old in out.glob("dcp-*"):
        shutil.rmtree(old, ignore_errors=True)


def epochs_text(epochs: float) -> str:
    """``5 epochs``, ``1 epoch``, ``9.1 epochs``, ``0.27 epochs``: what a reader needs, not 9.0909."""
    if epochs == round(epochs):
        n = int(round(epochs))
        return f"{n} epoch{'s' * (n != 1)}"
    return f"{epochs:.2g} epochs" if epochs < 1 else f"{epochs:.1f} epochs"
