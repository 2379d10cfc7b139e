"""kill -9 a real `nesterov train` process mid-run, `--resume` it, and compare with an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

ARGS = ["--dataset", "digits", "--model", "mlp", "--steps", "1200", "--eval-every", "40", "--seed", "3",
        "--threads", "1", "--no-progress"]


@pytest.fixture(autouse=True, scope="module")
def _private_cache(tmp_path_factory):
    """Datasets are cached in a temporary directory, not the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NESTEROV_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def _train(*extra, **kw):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "nesterov", "train", *ARGS, *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    killed = tmp_path / "killed"
    proc = _train("--out", str(killed))
    deadline = time.monotonic() + 120
    # kill as soon as the first checkpoint is on disk: the run is then mid-way, between two checkpoints
    while not (killed / "last.pt").exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.002)
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "summary.json").exists()

    full = tmp_path / "full"
    runs = [_train("--out", str(full)), _train("--resume", str(killed))]
    logs = [p.communicate(timeout=300)[0] for p in runs]
    assert [p.returncode for p in runs] == [0, 0], logs
    assert "resuming" in logs[1]

    a = json.loads((full / "summary.json").read_text())
    b = json.loads((killed / "summary.json").read_text())
    for key in ("steps", "test_accuracy", "test_loss", "best_test_accuracy", "best_step", "train_loss",
                "steps_to_target"):
        assert a[key] == b[key], key
    assert a["steps"] == 1200
    metrics = [(d / "metrics.csv").read_text().splitlines() for d in (full, killed)]
    strip = [[",".join(v for i, v in enumerate(line.split(",")) if i != 2) for line in m] for m in metrics]
    assert strip[0] == strip[1]  # every row equal but the seconds column
