"""The training loop, config, optimizer table and schedules, on tiny runs (digits + mlp, tens of steps)."""

import csv
import json
import math

import pytest
import torch

from nesterov.train import batches, loop
from nesterov.train.checkpoint import load_checkpoint
from nesterov.train.cli import train_main
from nesterov.train.config import Config, ConfigError, dump_toml, load_toml
from nesterov.train.optimizers import OPTIMIZERS, OptimizerError, available, make_optimizer
from nesterov.train.schedules import Schedule

TINY = dict(dataset="digits", model="mlp", steps=40, eval_every=10, threads=1)


@pytest.fixture(autouse=True, scope="module")
def _private_cache(tmp_path_factory):
    """Datasets are cached in a temporary directory, not the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NESTEROV_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


# ----------------------------------------------------------------------------------------------- schedules
def test_schedules():
    s = Schedule("warmup-cosine", 100, 0.1)
    assert s(0) == pytest.approx(0.1) and s(9) == pytest.approx(1.0) and s(10) == pytest.approx(1.0)
    assert s(55) == pytest.approx(0.5) and 0 < s(99) < 0.01
    lin = Schedule("linear", 100, 0.0)
    assert lin(0) == 1.0 and lin(50) == pytest.approx(0.5)
    assert Schedule("constant", 10)(7) == 1.0
    oc = Schedule("one-cycle", 100, 0.3)
    assert oc(0) == pytest.approx(1 / 25) and oc(30) == pytest.approx(1.0) and oc(99) < 1e-4
    assert max(oc(t) for t in range(100)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="valid: warmup-cosine, constant, linear, one-cycle"):
        Schedule("step", 10)


# ----------------------------------------------------------------------------------------------- optimizers
@pytest.mark.parametrize("name", available()[0])
def test_every_available_optimizer_builds_and_steps(name):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.ReLU(),
                                torch.nn.Linear(8, 3))
    opt, hp = make_optimizer(name, model)
    assert hp["lr"] == OPTIMIZERS[name].lr
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(5, 4)).square().sum().backward()
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_nag_is_the_library_optimizer_and_decay_skips_vectors():
    import nesterov

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt, _ = make_optimizer("nag", model, lr=0.5, momentum=0.8, weight_decay=0.1)
    assert isinstance(opt, nesterov.NAG)
    wd = {tuple(p.shape): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert wd[(3, 4)] == 0.1 and wd[(3,)] == 0.0
    assert opt.param_groups[0]["lr"] == 0.5 and opt.param_groups[0]["momentum"] == 0.8


def test_momentum_maps_to_beta1_and_errors():
    model = torch.nn.Linear(4, 3)
    opt, _ = make_optimizer("torch-adamw", model, momentum=0.8)
    assert opt.param_groups[0]["betas"] == (0.8, 0.999)
    with pytest.raises(OptimizerError, match="unknown optimizer 'adam'; valid: nag"):
        make_optimizer("adam", model)
    with pytest.raises(OptimizerError, match="lr must be > 0"):
        make_optimizer("nag", model, lr=-1)


def test_missing_library_optimizer_is_named(monkeypatch):
    import nesterov.train.optimizers as O

    real = O._load
    monkeypatch.setattr(O, "_load", lambda n: (_ for _ in ()).throw(ImportError("not built")) if n == "adan"
                        else real(n))
    ok, missing = O.available()
    assert "adan" in missing and "adan" not in ok and "torch-sgd" in ok
    with pytest.raises(OptimizerError, match=r"'adan' \(nesterov.Adan\) is not available.*not built"):
        O.make_optimizer("adan", torch.nn.Linear(2, 2))


# ----------------------------------------------------------------------------------------------- config
def test_config_toml_round_trip_and_errors(tmp_path):
    cfg = Config(dataset="digits", lr=0.05, steps=30, target_accuracy=None).resolved(1438)
    path = tmp_path / "c.toml"
    path.write_text(dump_toml(cfg.to_dict()))
    assert Config.from_dict(load_toml(path)) == cfg
    assert cfg.target_accuracy == 0.97 and cfg.momentum == 0.9 and cfg.eval_every == 3
    path.write_text('lr = 0.1\nbogus = 3\n')
    with pytest.raises(ConfigError, match=r"unknown key\(s\) bogus; valid keys: dataset, model"):
        Config.from_dict(load_toml(path), where=str(path))
    path.write_text('learning_rate = 0.1\n')
    with pytest.raises(ConfigError, match=r"unknown key\(s\) learning_rate \(did you mean lr\?\)"):
        Config.from_dict(load_toml(path), where=str(path))
    path.write_text('lr = "fast"\n')
    with pytest.raises(ConfigError, match="lr must be a number, got 'fast'"):
        Config.from_dict(load_toml(path))
    with pytest.raises(ConfigError, match="model: unknown 'vgg'; valid: cnn1d, mlp, linear"):
        Config(model="vgg").check()
    with pytest.raises(ConfigError, match="target_accuracy: must be a fraction"):
        Config(target_accuracy=94).check()


def test_flags_override_config_file(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text('dataset = "digits"\nmodel = "linear"\nsteps = 999\nlr = 0.01\n')
    out = tmp_path / "run"
    rc = train_main(["--config", str(path), "--model", "mlp", "--steps", "12", "--eval-every", "6",
                     "--out", str(out)])  # with the progress bar
    assert rc == 0
    cfg = load_toml(out / "config.toml")
    assert (cfg["model"], cfg["steps"], cfg["lr"], cfg["dataset"]) == ("mlp", 12, 0.01, "digits")
    captured = capsys.readouterr()
    assert "test accuracy" in captured.out and "12/12" in captured.err


# ----------------------------------------------------------------------------------------------- the loop
def test_run_directory_contents(tmp_path):
    out = tmp_path / "run"
    res = loop.run(Config(**TINY), out, progress=False)
    assert res.exit_code == 0
    for name in ("config.toml", "metrics.csv", "summary.json", "curves.png", "last.pt", "best.pt"):
        assert (out / name).is_file(), name
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [10, 20, 30, 40]
    for col in ("step", "epoch", "seconds", "lr", "train_loss", "test_loss", "test_accuracy"):
        assert col in rows[0]
    s = json.loads((out / "summary.json").read_text())
    for key in ("dataset", "model", "optimizer", "seed", "steps", "seconds", "test_accuracy", "best_test_accuracy",
                "target_accuracy", "seconds_to_target", "data_seconds"):
        assert key in s, key
    assert s["steps"] == 40 and s["test_accuracy"] == float(rows[-1]["test_accuracy"])
    assert s["best_test_accuracy"] == max(float(r["test_accuracy"]) for r in rows)
    ck = load_checkpoint(out / "last.pt")
    assert ck["state"]["step"] == 40 and {"model", "optimizer", "scheduler", "rng"} <= set(ck)
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temp files


def test_resume_after_interrupt_matches_uninterrupted(tmp_path, monkeypatch):
    full = loop.run(Config(**TINY), tmp_path / "full", progress=False).summary

    real_eval, calls = batches.evaluate, []

    def interrupt_third_eval(*a, **k):  # steps 21..30 are done but never checkpointed
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_eval(*a, **k)

    monkeypatch.setattr(batches, "evaluate", interrupt_third_eval)
    part = loop.run(Config(**TINY), tmp_path / "part", progress=False)
    assert part.exit_code == 130 and not (tmp_path / "part" / "summary.json").exists()
    monkeypatch.setattr(batches, "evaluate", real_eval)
    resumed = loop.run(Config(**TINY), tmp_path / "part", resume=True, progress=False)
    for key in ("steps", "test_accuracy", "test_loss", "best_test_accuracy", "best_step", "train_loss"):
        assert resumed.summary[key] == full[key], key
    assert [r["step"] for r in resumed.history] == [10, 20, 30, 40]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real_ce, calls = torch.nn.functional.cross_entropy, []

    def poisoned(*a, **k):
        calls.append(1)
        loss = real_ce(*a, **k)
        return loss * float("nan") if len(calls) == 25 else loss

    monkeypatch.setattr(loop.F, "cross_entropy", poisoned)
    for progress in (False, True):  # caught at the evaluation (step 30) or by the bar's check (step 30 too)
        calls.clear()
        out = tmp_path / f"run{progress}"
        res = loop.run(Config(**TINY), out, progress=progress, log=lambda m: None)
        assert res.exit_code == 1 and res.summary["status"] == "diverged"
        assert "non-finite" in res.summary["message"] and "step 20" in res.summary["message"]
        ck = load_checkpoint(out / "last.pt")
        assert ck["state"]["step"] == 20 and res.summary["steps"] == 20
        assert all(torch.isfinite(v).all() for v in ck["model"].values())


def test_npz_dataset_and_linear_model(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    res = loop.run(Config(dataset=f"npz:{tmp_path / 'd.npz'}", model="linear", batch_size=32, epochs=20,
                          threads=1), None, progress=False)
    assert res.summary["test_accuracy"] > 0.9 and res.summary["target_accuracy"] is None
    assert "no x_test / y_test: 40 of 200 examples" in res.summary["data_notes"][0]


def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert train_main(["--model", "resnet", "--no-progress"]) == 2
    assert "valid: cnn1d, mlp, linear" in capsys.readouterr().err
    assert train_main(["--optimizer", "adam", "--no-progress"]) == 2
    assert "unknown optimizer 'adam'" in capsys.readouterr().err
    assert train_main(["--dataset", f"npz:{tmp_path / 'nope.npz'}", "--no-progress", "--out", str(tmp_path / "r")]) == 2
    assert "nope.npz: no such file" in capsys.readouterr().err
    assert train_main(["--resume", str(tmp_path)]) == 2
    assert "no config.toml" in capsys.readouterr().err
    out = tmp_path / "run"
    tiny = ["--dataset", "digits", "--model", "mlp", "--steps", "5", "--out", str(out), "--no-progress"]
    assert train_main(tiny) == 0
    assert train_main(["--resume", str(out), "--lr", "0.3"]) == 2
    assert "drop --lr" in capsys.readouterr().err
    assert train_main(["--resume", str(out)]) == 0
    assert "already complete" in capsys.readouterr().out


def test_evaluate_matches_a_direct_computation():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 4)
    x, y = torch.randn(10, 3), torch.randint(0, 4, (10,))
    loss, acc = loop.evaluate(model, x, y)
    with torch.no_grad():
        logits = model(x)
    assert math.isclose(loss, torch.nn.functional.cross_entropy(logits, y).item(), rel_tol=1e-6)
    assert acc == (logits.argmax(1) == y).sum().item() / 10


def test_defaults_are_the_readme_recipe(tmp_path):
    cfg = Config().resolved(4000)
    assert (cfg.dataset, cfg.model, cfg.optimizer, cfg.schedule) == ("mnist1d", "cnn1d", "nag", "warmup-cosine")
    assert (cfg.steps, cfg.eval_every, cfg.batch_size, cfg.target_accuracy) == (155, 16, 128, 0.94)
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.label_smoothing) == (0.1, 0.9, 5e-4, 0.1)
    path = tmp_path / "c.toml"
    path.write_text('[train]\nbatch-size = 64\nschedule = "one-cycle"\n')
    assert Config.from_dict(load_toml(path)).resolved(4000).steps == 5 * 62


@pytest.mark.parametrize("schedule", ["constant", "warmup-cosine", "linear", "one-cycle"])
def test_schedules_drive_the_optimizer_lr(schedule):
    cfg = Config(dataset="digits", model="linear", steps=20, eval_every=2, schedule=schedule, lr=0.2, threads=1)
    lrs = [row["lr"] for row in loop.run(cfg, None, progress=False, log=lambda m: None).history]
    expect = [0.2 * Schedule(schedule, 20, 0.1)(step) for step in range(2, 21, 2)]  # lr for the next step
    assert lrs == pytest.approx(expect)


def test_curves_legends_cover_no_plot(tmp_path):
    """A legend inside a panel covered the start of the loss curve: every legend sits outside every panel."""
    from nesterov.train.plots import curves_figure

    res = loop.run(Config(**TINY), None, progress=False, log=lambda m: None)
    fig = curves_figure(res.history, "digits / mlp / nag", target=0.97, label_smoothing=0.1)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == 2  # one per column: the loss curves and the accuracy curves
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), (legend.get_texts()[0].get_text(), ax)
