"""`nesterov train --optimizer sf-sgd | sf-adamw`: a constant lr with the optimizer's own warmup, evaluation and
checkpoints at x with BatchNorm statistics recomputed there, and `--resume` bit for bit (from an evaluation's
checkpoint and from one written at Ctrl-C between two evaluations).

Tiny runs of the default model (cnn1d, which has BatchNorm) on MNIST-1D, generated offline.
"""

import os
import signal

import pytest
import torch

from nesterov.data import load_dataset
from nesterov.models import build_model
from nesterov.train import batches as B
from nesterov.train import loop
from nesterov.train.checkpoint import load_checkpoint
from nesterov.train.cli import train_main
from nesterov.train.config import Config
from nesterov.train.dist import Dist
from nesterov.train.evaluation import evaluate
from nesterov.train.optimizers import available, make_optimizer
from nesterov.train.schedule_free import BN_BATCHES, recompute_batchnorm

SF = [n for n in ("sf-sgd", "sf-adamw") if n in available()[0]]
pytestmark = pytest.mark.skipif(not SF, reason="nesterov.ScheduleFreeSGD / ScheduleFreeAdamW not importable")

TINY = dict(dataset="mnist1d", model="cnn1d", batch_size=32, steps=24, eval_every=8, threads=1, warmup=0.25)


@pytest.fixture(autouse=True, scope="module")
def _private_cache(tmp_path_factory):
    """Datasets are cached in a temporary directory, not the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NESTEROV_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def _state(path):
    return load_checkpoint(path)


def _tensors_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", SF)
def test_constant_lr_own_warmup_and_evaluation_at_x(name, tmp_path):
    """The run has no lr schedule (constant, recorded so in config.toml) and the optimizer warms up over
    --warmup x steps; the test loss of every evaluation is the loss of the model in the checkpoint written with
    it, which is x: the optimizer in it is in eval mode, and its BatchNorm statistics are the average over the
    last BN_BATCHES training batches at x."""
    res = loop.run(Config(optimizer=name, **TINY), tmp_path / "run", progress=False)
    assert res.summary["status"] == "completed"
    assert {r["lr"] for r in res.history} == {res.summary["lr"]}  # no schedule moves the group's lr
    assert 'schedule = "constant"' in (tmp_path / "run" / "config.toml").read_text()

    cpu = torch.device("cpu")
    data = load_dataset("mnist1d", cpu)
    batches = B.Batches(data, Config(optimizer=name, **TINY).resolved(len(data.y)), Dist(), cpu, torch.float32)
    model = build_model("cnn1d", data.input_shape, data.num_classes)
    opt, _ = make_optimizer(name, model)
    ck = _state(tmp_path / "run" / "last.pt")
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    assert {g["warmup_steps"] for g in opt.param_groups} == {int(0.25 * 24)}
    loss, acc = evaluate(model, data.x_test, data.y_test)
    assert (loss, acc) == (res.history[-1]["test_loss"], res.history[-1]["test_accuracy"])

    # the BatchNorm statistics in the checkpoint are those of the parameters in it, over the last batches
    recompute_batchnorm(model, [batches.step(s)[0] for s in range(24 - BN_BATCHES, 24)])
    assert _tensors_equal(model.state_dict(), ck["model"])

    # the optimizer was saved in eval mode: switching it to train mode moves the parameters to y
    x = [p.detach().clone() for p in model.parameters()]
    opt.train()
    assert any(not torch.equal(a, p) for a, p in zip(x, model.parameters()))


@pytest.mark.parametrize("name", SF)
def test_resume_from_an_evaluation_checkpoint_is_exact(name, tmp_path, monkeypatch):
    full = loop.run(Config(optimizer=name, **TINY), tmp_path / "full", progress=False).summary

    real_eval, calls = B.evaluate, []

    def interrupt_third_eval(*a, **k):  # steps 17..24 are done but never checkpointed
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_eval(*a, **k)

    monkeypatch.setattr(B, "evaluate", interrupt_third_eval)
    part = loop.run(Config(optimizer=name, **TINY), tmp_path / "part", progress=False)
    assert part.exit_code == 130
    monkeypatch.setattr(B, "evaluate", real_eval)
    resumed = loop.run(Config(optimizer=name, **TINY), tmp_path / "part", resume=True, progress=False)
    for key in ("steps", "test_accuracy", "test_loss", "best_test_accuracy", "best_step", "train_loss"):
        assert resumed.summary[key] == full[key], key
    a, b = (_state(tmp_path / d / "last.pt") for d in ("full", "part"))
    assert _tensors_equal(a["model"], b["model"])


@pytest.mark.parametrize("name", SF)
def test_ctrl_c_between_evaluations_checkpoints_x_and_resumes_exactly(name, tmp_path, monkeypatch):
    """A real SIGINT during step 13: the checkpoint at step 14 holds x (and the training model beside it), and the
    resumed run ends on exactly the uninterrupted run's weights and metrics."""
    full = loop.run(Config(optimizer=name, **TINY), tmp_path / "full", progress=False)

    real_step, sent = B.Batches.step, []

    def sigint_at_13(self, step):
        if step == 13 and not sent:
            sent.append(step)
            os.kill(os.getpid(), signal.SIGINT)  # the loop's handler: stop at the end of this step
        return real_step(self, step)

    monkeypatch.setattr(B.Batches, "step", sigint_at_13)
    part = loop.run(Config(optimizer=name, **TINY), tmp_path / "part", progress=False)
    assert part.exit_code == 130 and sent
    ck = _state(tmp_path / "part" / "last.pt")
    assert ck["state"]["step"] == 14 and "train_model" in ck
    assert not _tensors_equal(ck["model"], ck["train_model"])  # x beside y

    monkeypatch.setattr(B.Batches, "step", real_step)
    resumed = loop.run(Config(optimizer=name, **TINY), tmp_path / "part", resume=True, progress=False)
    for key in ("steps", "test_accuracy", "test_loss", "best_test_accuracy", "best_step", "train_loss"):
        assert resumed.summary[key] == full.summary[key], key
    assert [r["test_loss"] for r in resumed.history] == [r["test_loss"] for r in full.history]
    a, b = (_state(tmp_path / d / "last.pt") for d in ("full", "part"))
    assert _tensors_equal(a["model"], b["model"])


def test_a_schedule_is_refused_for_a_schedule_free_optimizer(capsys):
    assert train_main(["--optimizer", SF[0], "--schedule", "linear", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--schedule: " in err and "schedule-free" in err and "constant" in err


def test_a_run_twice_as_long_passes_exactly_through_the_shorter_one():
    """The schedule-free claim the race leans on: with the same warmup steps and evaluations, the first half of
    a run of 2N steps is the run of N steps, bit for bit (a scheduled lr would differ at once)."""
    short = loop.run(Config(optimizer=SF[0], **{**TINY, "steps": 16, "warmup": 0.25}), None, progress=False)
    long = loop.run(Config(optimizer=SF[0], **{**TINY, "steps": 32, "warmup": 0.125}), None, progress=False)
    assert [r["step"] for r in short.history] == [8, 16]
    untimed = [[{k: v for k, v in r.items() if k not in ("seconds", "test_bpb")} for r in h]
               for h in (short.history, long.history[:2])]
    assert untimed[0] == untimed[1]  # every column but the seconds ...
    nag = [loop.run(Config(optimizer="nag", **{**TINY, "steps": n}), None, progress=False).history for n in (16, 32)]
    assert nag[0][1]["test_loss"] != nag[1][1]["test_loss"]  # ... which a cosine schedule changes


def test_a_race_gives_the_schedule_to_the_others_only():
    from nesterov.train.compare import compare

    base = Config(dataset="digits", model="mlp", steps=20, eval_every=5, threads=1)
    result = compare([SF[0], "nag"], base, 1, log=lambda m: None)
    lrs = {name: [r["lr"] for r in h[0]] for name, h in result["curves"].items()}
    assert len(set(lrs[SF[0]])) == 1 and len(set(lrs["nag"])) == 4  # constant against warmup-cosine
