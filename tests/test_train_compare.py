"""`nesterov compare` on a tiny race: table, files, and an lr sweep that never looks at the test set."""

import csv

import pytest

from nesterov.train import compare as C
from nesterov.train.cli import compare_main

RACE = ["--dataset", "digits", "--model", "mlp", "--steps", "22", "--eval-every", "11", "--threads", "1"]


@pytest.fixture(autouse=True, scope="module")
def _private_cache(tmp_path_factory):
    """Datasets are cached in a temporary directory, not the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NESTEROV_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def test_compare_with_sweep_writes_table_and_plot(tmp_path, capsys, monkeypatch):
    seen = []
    real_run = C.run

    def spy(cfg, out, **kw):
        seen.append((cfg.optimizer, cfg.lr, cfg.seed, len(kw["data"].y), len(kw["data"].y_test)))
        return real_run(cfg, out, **kw)

    monkeypatch.setattr(C, "run", spy)
    out = tmp_path / "race"
    rc = compare_main(["--optimizers", "nag,torch-adamw", "--seeds", "2", "--sweep", "--out", str(out), *RACE])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| optimizer" in printed and "± " in printed and "nag" in printed and "torch-adamw" in printed
    for name in ("compare.csv", "compare.png", "runs.csv", "history.csv", "sweep.csv"):
        assert (out / name).is_file(), name
    wrote = next(line for line in printed.splitlines() if line.startswith("wrote "))
    assert sorted(wrote[len("wrote "):].split(", ")) == sorted(str(f) for f in out.iterdir()), "the files it names"

    sweep, races = seen[:6], seen[6:]
    # the sweep trains on 80 % of the training set and scores on the other 20 %, never on the test set
    assert all((n_tr, n_te) == (1150, 288) for *_, n_tr, n_te in sweep)
    assert {lr for name, lr, *_ in sweep if name == "nag"} == {0.0333, 0.1, 0.3}
    assert all((n_tr, n_te) == (1438, 359) for *_, n_tr, n_te in races)
    assert sorted((name, seed) for name, _, seed, *_ in races) == [("nag", 0), ("nag", 1), ("torch-adamw", 0),
                                                                  ("torch-adamw", 1)]
    with open(out / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    best_nag = max((r for r in rows if r["optimizer"] == "nag"), key=lambda r: float(r["val_accuracy"]))
    with open(out / "compare.csv") as f:
        table = {r["optimizer"]: r for r in csv.DictReader(f)}
    assert float(table["nag"]["lr"]) == float(best_nag["lr"])
    assert table["nag"]["seeds"] == "2" and 0 < float(table["nag"]["best_accuracy_mean"]) <= 1


def test_compare_errors(capsys):
    assert compare_main(["--optimizers", "nag,adam"]) == 2
    assert "unknown adam" in capsys.readouterr().err
    assert compare_main(["--optimizers", "nag", "--lr", "sgd=0.1"]) == 2
    assert "not among --optimizers" in capsys.readouterr().err
    assert compare_main(["--optimizers", "nag", "--lr", "nag"]) == 2
    assert "name=value" in capsys.readouterr().err


def test_compare_names_missing_library_optimizers(monkeypatch, capsys):
    import nesterov.train.optimizers as O

    monkeypatch.setattr(C, "available", lambda: (["nag", "torch-sgd"], {"adan": "ImportError: not built"}))
    assert compare_main(["--optimizers", "nag,adan"]) == 2
    err = capsys.readouterr().err
    assert "not available in this installation: adan" in err and "not built" in err
    assert O.OPTIMIZERS["adan"].target == "nesterov:Adan"


@pytest.mark.parametrize("values, text", [([0.9, 0.92], "91.00 ± 1.41")])
def test_format_table(values, text):
    table = [{"optimizer": "nag", "lr": 0.1, "seeds": 2, "best_accuracy_mean": sum(values) / 2,
              "best_accuracy_sd": 0.01414213, "final_accuracy_mean": 0.9, "final_accuracy_sd": 0.0,
              "target_accuracy": 0.94, "reached": 0, "steps_to_target_mean": None, "seconds_to_target_mean": None,
              "seconds_to_target_sd": None, "seconds_mean": 1.0, "diverged": 0}]
    s = C.format_table(table)
    assert text in s and "0/2" in s and "reached 94 %" in s


def test_ctrl_c_stops_the_whole_race(tmp_path, monkeypatch, capsys):
    from nesterov.train import batches

    monkeypatch.setattr(batches, "evaluate", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    out = tmp_path / "race"
    assert compare_main(["--optimizers", "nag,torch-sgd", "--seeds", "2", "--out", str(out), *RACE]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "  seed 0 " not in err and not out.exists()
