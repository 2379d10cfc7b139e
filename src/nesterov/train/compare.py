"""``nesterov compare``: race optimizers on one dataset and model over several seeds.

Each optimizer trains with its own lr: the optimizer table's default, one given with ``--lr name=value``, or
(``--sweep``) the best of a small sweep around the default, chosen by accuracy on a validation split carved
from the training set (the test set is never looked at to choose).  Runs go seed by seed, each seed running
every optimizer in turn, so a slow spell on a shared machine hits all optimizers alike.

Writes ``compare.csv`` (the table), ``runs.csv`` (one row per run), ``history.csv`` (every evaluation of every
run), ``sweep.csv`` (with ``--sweep``), ``compare.png`` (test accuracy vs seconds and vs steps) and ``config.toml``:
what every run of the race shared, in the format ``--config`` reads (``nesterov compare --config`` repeats the
race, ``nesterov train --config ... --optimizer NAME --lr LR`` one run of it).
"""

from __future__ import annotations

import csv
import dataclasses
import statistics
import sys
import time
from pathlib import Path

from ..data import Dataset, carve_split, is_text, load_dataset
from .config import Config, ConfigError, dump_toml
from .batches import n_train as _n_train
from .device import resolve_device
from .loop import run
from .optimizers import OPTIMIZERS, OptimizerError, available, is_schedule_free, resolve_hparams

__all__ = ["DEFAULT_OPTIMIZERS", "SWEEP_FACTORS", "VALIDATION_FRACTION", "compare", "compare_cli"]

DEFAULT_OPTIMIZERS = ("nag", "nadamw", "adan", "muon", "torch-sgd", "torch-adamw")
SWEEP_FACTORS = (1 / 3, 1.0, 3.0)  # x the default lr
VALIDATION_FRACTION = 0.2  # of the training set, held out for --sweep


def _mean_sd(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _text(data) -> bool:
    return getattr(data, "kind", "classify") == "text"


def validation_split(data: Dataset) -> Dataset:
    """Train on 80 % of the training set, evaluate on the other 20 % (reported as 'test' by the loop).

    Text: the last 20 % of the training bytes."""
    if _text(data):
        cut = int(len(data.train) * (1 - VALIDATION_FRACTION))
        return dataclasses.replace(data, train=data.train[:cut], val=data.train[cut:],
                                   notes=[f"validation split: the last {len(data.train) - cut} training bytes"])
    if getattr(data, "streamed", False):
        raise ConfigError("--sweep: not available for a streamed image folder (too large to hold in memory); "
                          "give the lrs with --lr name=value")
    x, y, xv, yv = carve_split(data.x, data.y, VALIDATION_FRACTION)
    return dataclasses.replace(data, x=x, y=y, x_test=xv, y_test=yv,
                               notes=[f"validation split: {len(yv)} of {len(yv) + len(y)} training examples"])


def sweep_lrs(names, base: Config, data: Dataset, log) -> tuple[dict, list[dict]]:
    """Best lr per optimizer by final validation accuracy (ties: lower validation loss), seed ``base.seed``."""
    val = validation_split(data)
    best, rows = {}, []
    for name in names:
        default = resolve_hparams(name)["lr"]
        for f in SWEEP_FACTORS:
            lr = float(f"{default * f:.3g}")
            res = run(dataclasses.replace(base, optimizer=name, lr=lr), None, progress=False, data=val,
                      log=lambda m: None)
            if res.exit_code == 130:  # Ctrl-C stops the race, not just this run
                raise KeyboardInterrupt
            s = res.summary
            acc = s["test_accuracy"] if s["status"] == "completed" else None
            rows.append({"optimizer": name, "lr": lr, "val_accuracy": acc, "val_loss": s.get("test_loss"),
                         "status": s["status"]})
            log(f"  sweep {name:12s} lr {lr:<8g} validation "
                + ((f"loss {s['test_loss']:.4f}" if _text(data) else f"accuracy {100 * acc:.2f} %")
                   if acc is not None else s["status"]))
        ok = [r for r in rows if r["optimizer"] == name and r["val_accuracy"] is not None]
        if not ok:
            raise RuntimeError(f"sweep: every lr diverged for {name!r}")
        if _text(data):  # language models: by validation loss
            best[name] = min(ok, key=lambda r: r["val_loss"])["lr"]
        else:
            best[name] = max(ok, key=lambda r: (r["val_accuracy"], -r["val_loss"]))["lr"]
        log(f"  sweep {name:12s} -> lr {best[name]:g}")
    return best, rows


def compare(names, base: Config, seeds: int, *, sweep: bool = False, lrs: dict | None = None, out=None,
            log=None, progress: bool = False) -> dict:
    """Train every optimizer in ``names`` for seeds ``base.seed .. base.seed + seeds - 1``; ``progress``: each
    run's progress bar, as ``nesterov train`` shows it.

    Returns ``{"table": [...], "runs": [...], "curves": {name: [history per seed]}, "sweep": [...], "files":
    [the paths written under out]}``.
    """
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    lrs = dict(lrs or {})
    device = resolve_device(base.device)
    data = load_dataset(base.dataset, device)
    resolved = base.resolved(_n_train(data, base))
    text = _text(data)
    log(f"data   {data.describe()} (prepared in {data.seconds:.2f} s)")
    sweep_rows = []
    if sweep:
        todo = [n for n in names if n not in lrs]
        log(f"lr sweep (x{', x'.join(f'{f:.3g}' for f in SWEEP_FACTORS)} the default) on a "
            f"{VALIDATION_FRACTION:.0%} validation split of the training set, seed {base.seed}:")
        found, sweep_rows = sweep_lrs(todo, base, data, log)
        lrs.update(found)
    for name in names:
        lrs.setdefault(name, resolve_hparams(name)["lr"])

    runs, curves = [], {name: [] for name in names}
    for seed in range(base.seed, base.seed + seeds):
        for name in names:
            cfg = dataclasses.replace(base, optimizer=name, lr=lrs[name], seed=seed)
            res = run(cfg, None, progress=progress, data=data, log=lambda m: None)
            if res.exit_code == 130:
                raise KeyboardInterrupt
            s = res.summary
            runs.append({k: s.get(k) for k in ("optimizer", "lr", "seed", "status", "steps", "seconds",
                                                "test_accuracy", "best_test_accuracy", "test_loss",
                                                "best_test_loss", "steps_to_target", "seconds_to_target")})
            curves[name].append(res.history)
            done = s["status"] == "completed"
            log(f"  seed {seed} {name:12s} lr {lrs[name]:<8g} "
                + (f"validation loss {s['test_loss']:.4f} (best {s['best_test_loss']:.4f})  {s['seconds']:.1f} s"
                   if done and text else
                   f"best {100 * s['best_test_accuracy']:.2f} %  final {100 * s['test_accuracy']:.2f} %  "
                   f"{s['seconds']:.1f} s" if done else s["status"])
                + (f"  target at {s['seconds_to_target']:.1f} s" if s.get("seconds_to_target") is not None else ""))

    table = []
    for name in names:
        rs = [r for r in runs if r["optimizer"] == name]
        best_m, best_sd = _mean_sd([r["best_test_accuracy"] for r in rs])
        fin_m, fin_sd = _mean_sd([r["test_accuracy"] for r in rs])
        reached = [r for r in rs if r["seconds_to_target"] is not None]
        st_m, _ = _mean_sd([r["steps_to_target"] for r in reached])
        sec_m, sec_sd = _mean_sd([r["seconds_to_target"] for r in reached])
        tot_m, _ = _mean_sd([r["seconds"] for r in rs])
        loss_m, loss_sd = _mean_sd([r["test_loss"] for r in rs])
        table.append({"optimizer": name, "lr": lrs[name], "seeds": len(rs),
                      "final_loss_mean": loss_m, "final_loss_sd": loss_sd, "target_loss": resolved.target_loss,
                      "best_accuracy_mean": best_m, "best_accuracy_sd": best_sd,
                      "final_accuracy_mean": fin_m, "final_accuracy_sd": fin_sd,
                      "target_accuracy": resolved.target_accuracy, "reached": len(reached),
                      "steps_to_target_mean": st_m, "seconds_to_target_mean": sec_m,
                      "seconds_to_target_sd": sec_sd, "seconds_mean": tot_m,
                      "diverged": sum(r["status"] != "completed" for r in rs)})
    result = {"table": table, "runs": runs, "curves": curves, "sweep": sweep_rows, "config": resolved, "base": base,
              "files": []}
    if out is not None:
        result["files"] = _write(Path(out), result, resolved)
    return result


def _csv(path: Path, rows: list[dict]) -> list[Path]:
    """Write ``rows`` (nothing for none); the files written."""
    if not rows:
        return []
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else ("" if v is None else v)) for k, v in r.items()})
    return [path]


def _write(out: Path, result: dict, cfg: Config) -> list[Path]:
    """The race's files under ``out``; returns the paths written."""
    from .plots import plot_compare

    out.mkdir(parents=True, exist_ok=True)
    written = _csv(out / "compare.csv", result["table"])
    written += _csv(out / "runs.csv", result["runs"])
    written += _csv(out / "sweep.csv", result["sweep"])
    hist = [{"optimizer": name, "seed": cfg.seed + i, **row}
            for name, seeds in result["curves"].items() for i, h in enumerate(seeds) for row in h]
    written += _csv(out / "history.csv", hist)
    curves = {f"{name} (lr {t['lr']:g})": [h for h in result["curves"][name] if h]
              for name, t in zip(result["curves"], result["table"]) if any(result["curves"][name])}
    if curves:
        text = is_text(cfg.dataset)
        plot_compare(curves, out / "compare.png", target=cfg.target_loss if text else cfg.target_accuracy,
                     title=f"{cfg.dataset} / {cfg.model}, {cfg.steps} steps of batch {cfg.batch_size}",
                     key="test_loss" if text else "test_accuracy")
        written.append(out / "compare.png")
    (out / "config.toml").write_text(race_toml(result["base"], cfg, result["table"]))
    return written + [out / "config.toml"]


# keys that differ from run to run of a race (or are chosen per optimizer): not in its config.toml
_PER_RUN = ("optimizer", "lr", "seed", "momentum", "weight_decay")


def race_toml(base: Config, resolved: Config, table: list[dict]) -> str:
    """What every run of the race shared (the resolved length, batch and schedule; momentum and weight decay
    only where the user set them, else each optimizer's own), as a TOML file ``--config`` reads back."""
    d = {k: v for k, v in resolved.to_dict().items() if k not in _PER_RUN and k != "epochs"}
    d.update({k: getattr(base, k) for k in ("momentum", "weight_decay") if getattr(base, k) is not None})
    seeds = sorted({r["seeds"] for r in table}) if table else []
    header = ("nesterov compare: what every run of this race shared; pass it back with --config\n"
              + "".join(f"{t['optimizer']}: lr {t['lr']:g}\n" for t in table)
              + (f"seeds: {seeds[0]} from {resolved.seed}" if seeds else ""))
    return dump_toml(d, header.rstrip("\n"))


def format_table(table: list[dict]) -> str:
    def pct(m, sd):
        return "-" if m is None else f"{100 * m:.2f} ± {100 * sd:.2f}"

    target = table[0]["target_accuracy"] if table else None
    target_loss = table[0].get("target_loss") if table else None
    tgt = " and ".join(t for t in (f"{100 * target:g} %" if target is not None else "",
                                   f"loss {target_loss:g}" if target_loss is not None else "") if t) or "target"
    losses = any(t.get("final_loss_mean") is not None for t in table)
    head = ["optimizer", "lr", "best test acc. (%)", "final test acc. (%)"] + (["final test loss"] if losses else [])
    head += [f"reached {tgt}", "steps to target", "seconds to target", "seconds (all)"]
    lines = []
    for t in table:
        name = t["optimizer"] + (f" ({t['diverged']} diverged)" if t["diverged"] else "")
        row = [name, f"{t['lr']:g}", pct(t["best_accuracy_mean"], t["best_accuracy_sd"]),
               pct(t["final_accuracy_mean"], t["final_accuracy_sd"])]
        if losses:
            row.append("-" if t.get("final_loss_mean") is None else
                       f"{t['final_loss_mean']:.4f} ± {t['final_loss_sd']:.4f}")
        row += [f"{t['reached']}/{t['seeds']}",
                "-" if t["steps_to_target_mean"] is None else f"{t['steps_to_target_mean']:.0f}",
                "-" if t["seconds_to_target_mean"] is None else
                f"{t['seconds_to_target_mean']:.2f} ± {t['seconds_to_target_sd']:.2f}",
                "-" if t["seconds_mean"] is None else f"{t['seconds_mean']:.2f}"]
        lines.append(row)
    widths = [max(len(str(r[i])) for r in [head] + lines) for i in range(len(head))]
    fmt = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [fmt(r) for r in lines])


def _parse_lrs(text: str) -> dict:
    lrs = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError
            lrs[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--lr: expected name=value pairs such as nag=0.1,torch-adamw=0.003; got {part!r}")
    return lrs


def compare_cli(argv, add_run_flags, config_from) -> int:
    from .cli import Parser, checked, checked_muon_flags, extras_error, missing_extras, version, wants_help

    argv = list(sys.argv[1:] if argv is None else argv)
    p = Parser(prog="nesterov compare",
               description="Race optimizers on one dataset and model over several seeds; print a table and write "
                           "compare.csv (the table), runs.csv (each run), history.csv (each evaluation), sweep.csv "
                           "(with --sweep), compare.png and config.toml (what the runs shared; --config reads it).")
    p.add_argument("--version", action="version", version=version())
    g = p.add_argument_group("race")
    g.add_argument("--optimizers", help=f"comma-separated (default: those of {','.join(DEFAULT_OPTIMIZERS)} "
                                        "that are installed)")
    g.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    g.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    g.add_argument("--lr", help="per-optimizer lrs, e.g. nag=0.1,torch-adamw=0.003 (default: each one's own)")
    g.add_argument("--sweep", action="store_true",
                   help=f"pick each lr from {{{', '.join(f'{f:.3g}' for f in SWEEP_FACTORS)}}} x its default by "
                        f"accuracy on a validation split carved from the training set")
    g.add_argument("--out", metavar="DIR", help="output directory (default runs/compare-<time>); an existing race "
                                                "there is refused unless --overwrite")
    g.add_argument("--overwrite", action="store_true", help="replace the race already in --out")
    add_run_flags(p, single=False, describe=wants_help(argv))
    args = p.parse_args(argv)
    try:
        # everything that needs no torch first: a bad flag fails at once, before the first line
        names = None
        if args.optimizers is not None:  # an empty list is a mistake, not a request for the default race
            names = [n.strip() for n in args.optimizers.split(",") if n.strip()]
            if not names:
                raise ConfigError(f"--optimizers: empty; give a comma-separated list of: {', '.join(OPTIMIZERS)}")
            unknown = [n for n in names if n not in OPTIMIZERS]
            if unknown:
                raise ConfigError(f"--optimizers: unknown {', '.join(unknown)}; valid: {', '.join(OPTIMIZERS)}")
            if len(set(names)) != len(names):
                raise ConfigError("--optimizers: a name is repeated")
        if args.seeds < 1:
            raise ConfigError(f"--seeds: must be >= 1, got {args.seeds}")
        lrs = _parse_lrs(args.lr) if args.lr else {}
        for name, lr in lrs.items():
            if not lr > 0:
                raise ConfigError(f"--lr: {name}={lr} must be > 0")
        if names is not None and set(lrs) - set(names):
            raise ConfigError(f"--lr: {', '.join(sorted(set(lrs) - set(names)))} not among --optimizers "
                              f"({', '.join(names)})")
        base, given = config_from(args, single=False)
        base = checked(dataclasses.replace(base, seed=args.seed), {**given, "seed": args.seed}, args.config)
        out = Path(args.out) if args.out else Path(f"runs/compare-{time.strftime('%Y%m%d-%H%M%S')}")
        found = [f for f in ("compare.csv", "config.toml") if (out / f).exists()]
        if found and not args.overwrite:
            raise ConfigError(f"--out {out}: already holds a race ({', '.join(found)}); replace it with --overwrite")
        absent_modules = missing_extras(base, False)
        if absent_modules:
            print(extras_error("nesterov compare", absent_modules), file=sys.stderr)
            return 2
        print(f"start  {base.dataset} / {base.model}, seeds {args.seed}..{args.seed + args.seeds - 1} -> {out} "
              "(importing torch)", file=sys.stderr, flush=True)

        ok, missing = available()
        if names is not None:
            absent = [n for n in names if n in missing]
            if absent:
                raise ConfigError(f"--optimizers: not available in this installation: {', '.join(absent)} "
                                  f"({'; '.join(f'{n}: {missing[n]}' for n in absent)}); available: {', '.join(ok)}")
        else:
            names = [n for n in DEFAULT_OPTIMIZERS if n in ok]
            skipped = [n for n in DEFAULT_OPTIMIZERS if n in missing]
            if skipped:
                print(f"note: not installed yet, skipped: {', '.join(skipped)}", file=sys.stderr)
        checked_muon_flags(names, base, given, args.config)
        extra = sorted(set(lrs) - set(names))
        if extra:
            raise ConfigError(f"--lr: {', '.join(extra)} not among --optimizers ({', '.join(names)})")
        base.check()
        result = compare(names, base, args.seeds, sweep=args.sweep, lrs=lrs, out=out, progress=not args.no_progress)
    except (ConfigError, OptimizerError, ValueError, OSError) as e:
        print(f"nesterov compare: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nnesterov compare: interrupted; nothing written", file=sys.stderr)
        return 130
    cfg = result["config"]
    free = [n for n in names if is_schedule_free(n)]  # they take no schedule (loop.py)
    schedule = cfg.schedule + (f" ({', '.join(free)}: a constant lr after {int(cfg.warmup * cfg.steps)} warmup "
                               "steps)" if free else "")
    print(f"{cfg.dataset} / {cfg.model}: {cfg.steps} steps of batch {cfg.batch_size}, {schedule}, "
          f"{args.seeds} seed(s){', lrs from a validation sweep' if args.sweep else ''}")
    print(format_table(result["table"]))
    print(f"wrote {', '.join(map(str, result['files']))}")
    return 0
