"""The `nesterov` command as a new user meets it: real subprocesses, real files, real signals."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("cli_bad_inputs", ROOT / "scripts" / "cli_bad_inputs.py")
BAD = sys.modules.setdefault("cli_bad_inputs", importlib.util.module_from_spec(_spec))  # dataclasses look it up
_spec.loader.exec_module(BAD)

TINY = ["--dataset", "digits", "--model", "mlp", "--threads", "1", "--no-progress"]
HEAVY = {"matplotlib", "sklearn", "mnist1d", "tqdm", "rich", "scipy"}


@pytest.fixture(autouse=True, scope="module")
def _private_cache(tmp_path_factory):
    """Datasets are cached in a temporary directory (inherited by the subprocesses), not the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NESTEROV_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.setenv("PYTHONUNBUFFERED", "1")
        yield


def nesterov(*argv, timeout=300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nesterov", *argv], capture_output=True, text=True,
                          timeout=timeout, **kw)


def default_sigint() -> None:
    """``preexec_fn`` of a run a test will Ctrl-C: SIGINT handled as a terminal's foreground job has it. A shell
    starts background jobs (``pytest &``, ``nohup``) with SIGINT ignored, children inherit that, and Python
    installs no KeyboardInterrupt handler where it starts ignored: such a run would never see the signal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def popen(*argv, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nesterov", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint, **kw)


# ------------------------------------------------------------------------------------------------ install
def _core_install(tmp_path) -> dict:
    """The environment of `pip install nesterov` alone, built from this one: a directory of links to the
    distributions nesterov's own requirements pull in (recursively; extras left out) and this checkout's src/,
    run with ``python -S`` so nothing else in site-packages is visible. (Here the [test] extra has installed
    tqdm, which `import torch` itself imports when present, through torch.hub.)"""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement

    try:
        tomllib = __import__("tomllib")
    except ImportError:  # Python 3.10
        tomllib = __import__("tomli")
    site = tmp_path / "site"
    site.mkdir()
    todo = list(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    seen = set()
    while todo:
        req = Requirement(todo.pop())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        if req.name.lower() in seen:
            continue
        seen.add(req.name.lower())
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            continue  # e.g. setuptools on a Python where pip did not install it: not needed to import torch
        todo += dist.requires or []
        for top in {f.parts[0] for f in dist.files or () if f.parts and f.parts[0] not in ("..", "__pycache__")}:
            src = Path(dist.locate_file(top))
            if src.exists() and not (site / top).exists():
                (site / top).symlink_to(src)
    assert {"torch", "numpy"} <= seen
    return dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{ROOT / 'src'}", PYTHONNOUSERSITE="1")


def test_import_nesterov_loads_no_training_stack(tmp_path):
    env = _core_install(tmp_path)
    code = ("import nesterov, sys; nesterov.NAG; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'matplotlib','sklearn','mnist1d','tqdm','rich','scipy'}))")
    p = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0 and p.stdout == "[]\n", p.stderr
    # in this fuller environment too, nesterov adds none of them to what `import torch` loads by itself
    torch_alone = subprocess.run([sys.executable, "-c", code.replace("import nesterov, sys; nesterov.NAG",
                                                                    "import torch, sys")],
                                 capture_output=True, text=True, timeout=120)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == torch_alone.returncode == 0 and p.stdout == torch_alone.stdout, p.stderr


def test_an_optimizer_step_loads_no_training_stack(tmp_path):
    code = ("import sys, torch, nesterov\n"
            "m = torch.nn.Linear(4, 3)\n"
            "for cls in (nesterov.NAG, nesterov.NAdamW, nesterov.Adan, nesterov.LARS, nesterov.LAMB):\n"
            "    opt = cls(m.parameters(), lr=1e-3)\n"
            "    m(torch.randn(8, 4)).sum().backward()\n"
            "    opt.step()\n"
            "res = nesterov.minimize(lambda x: ((x - 1) ** 2).sum(), torch.zeros(3))\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n")
    p = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=300,
                       env=_core_install(tmp_path))
    assert p.returncode == 0 and p.stdout == "[]\n", p.stderr


# ------------------------------------------------------------------------------------------------ help, version
def test_version():
    for argv in (["--version"], ["-V"], ["train", "--version"], ["compare", "--version"]):
        p = nesterov(*argv)
        assert p.returncode == 0, (argv, p.stderr)
        assert p.stdout.startswith("nesterov 0.1.0 (torch ") and p.stdout.count("\n") == 1, (argv, p.stdout)


@pytest.mark.parametrize("argv, lists", [
    (["--help"], ["train", "compare", "bench", "--version"]),
    (["-h"], ["train", "compare", "bench"]),
    (["train", "--help"], ["--out", "--resume", "--overwrite", "--config", "nag, nadamw"]),
    (["compare", "--help"], ["--optimizers", "--seeds", "--overwrite"]),
    (["bench", "--help"], ["step", "cold", "memory", "convex"]),
    (["bench", "step", "--help"], []),
    (["bench", "cold", "--help"], []),
    (["bench", "memory", "--help"], []),
    (["bench", "convex", "--help"], []),
])
def test_every_help_exits_0_and_lists_its_subcommands(argv, lists):
    p = nesterov(*argv)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("usage: ") and "Traceback" not in p.stderr
    for word in lists:
        assert word in p.stdout, word
    assert "``" not in p.stdout and ":mod:" not in p.stdout, "help shows reStructuredText markup"
    if argv[0] == "bench" and len(argv) == 3:  # a benchmark's help describes that benchmark, not another
        others = {"step", "cold", "memory", "convex"} - {argv[1]}
        assert not any(f"bench {o}" in p.stdout for o in others), p.stdout


@pytest.mark.parametrize("argv", [["-h"], ["train", "-h"], ["--version"]])
def test_output_into_a_closed_pipe_ends_quietly(argv):
    """`nesterov -h | head -2`: the reader is gone before the output is written."""
    p = popen(*argv)
    p.stdout.close()  # before the child writes: its write meets a closed pipe
    err = p.stderr.read()
    p.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    # ours ends as a command killed by SIGPIPE would; argparse's own --help ignores a failed write and exits 0
    assert p.returncode == (0 if argv[0] == "train" else 128 + signal.SIGPIPE)


# ------------------------------------------------------------------------------------------------ start-up
def test_the_first_line_needs_no_torch():
    """The first line says what the run is doing before torch loads (~0.1 s): with torch made unimportable,
    it still appears, and only then does the import fail."""
    code = "import sys; sys.modules['torch'] = None; from nesterov.cli import main; main(sys.argv[1:])"
    p = subprocess.run([sys.executable, "-c", code, "--out", "run"], capture_output=True, text=True, timeout=60,
                       cwd=Path(os.environ["NESTEROV_CACHE"]))
    first = p.stderr.splitlines()[0]
    assert first == "start  mnist1d / cnn1d / nag, seed 0 -> run (importing torch)", p.stderr


def test_generating_the_data_says_so(tmp_path):
    p = nesterov(*TINY, "--steps", "2", "--out", str(tmp_path / "run"), env=dict(
        os.environ, NESTEROV_CACHE=str(tmp_path / "empty-cache")))
    assert p.returncode == 0, p.stderr
    lines = p.stderr.splitlines()
    assert lines[0].startswith("start  digits / mlp / nag, seed 0 -> ")
    assert lines[1].startswith("data   generating digits with the scikit-learn package (once: cached in ")


def _read_until(stream, prefix: str, deadline: float) -> list[str]:
    seen = []
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith(prefix):
            return seen
    raise AssertionError(f"no line starting with {prefix!r} in {seen}")


@pytest.mark.parametrize("inherited", ["handled", "ignored"])
def test_ctrl_c_during_start_up_exits_130_without_a_traceback(tmp_path, inherited):
    """``ignored``: as under ``python -m pytest &`` from a shell, which starts pytest with SIGINT ignored (and
    an ignored signal stays ignored through exec): the runs these tests signal get it back (:func:`default_sigint`)."""
    out = tmp_path / "run"
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN if inherited == "ignored" else signal.default_int_handler)
    try:
        p = popen(*TINY, "--steps", "50", "--out", str(out))
    finally:
        signal.signal(signal.SIGINT, previous)
    _read_until(p.stderr, "start ", time.monotonic() + 60)  # now importing torch
    p.send_signal(signal.SIGINT)
    stdout, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "nesterov: interrupted", err
    assert not (out / "last.pt").exists()


def _wait_for_step(p: subprocess.Popen, lo: int, hi: int, deadline: float, seen: bytes = b"") -> tuple[bytes, int]:
    """Read ``p``'s stderr until its progress bar shows a step in [lo, hi]; return (all of stderr read so far,
    ``seen`` included; that step). Fails if the run ends first, the bar skips the range or ``deadline`` (a
    ``time.monotonic()``) passes."""
    import re
    import select

    while True:
        left = deadline - time.monotonic()
        assert left > 0 and select.select([p.stderr], [], [], left)[0], f"no progress in {lo}..{hi}: {seen[-400:]!r}"
        chunk = os.read(p.stderr.fileno(), 65536)
        assert chunk, seen.decode(errors="replace")
        seen += chunk
        shown = [int(n) for n in re.findall(rb"(\d+)/3000 ", seen[-400:])]
        if shown and lo <= shown[-1] <= hi:
            return seen, shown[-1]
        assert not shown or shown[-1] < hi, f"the bar jumped past {hi}: {shown}"


def _signal_between_evaluations(p: subprocess.Popen, lo: int, hi: int, deadline: float, *,
                                group: bool = False) -> str:
    """Send SIGINT once the progress bar shows a step in [lo, hi]; return the stderr read so far. ``group``: to
    the whole process group ``p`` leads, as a terminal's Ctrl-C does."""
    seen, _ = _wait_for_step(p, lo, hi, deadline)
    if group:
        os.killpg(p.pid, signal.SIGINT)
    else:
        p.send_signal(signal.SIGINT)
    return seen.decode(errors="replace")


def test_ctrl_c_in_training_checkpoints_the_current_step_and_resume_is_exact(tmp_path):
    args = [*TINY, "--steps", "3000", "--eval-every", "1000", "--seed", "5"]
    part = tmp_path / "part"
    p = subprocess.Popen([sys.executable, "-m", "nesterov", *[a for a in args if a != "--no-progress"],
                          "--out", str(part)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=default_sigint)
    # the bar (~10 updates a second) says where the run is: signal it well before the evaluation at step 1000
    before = _signal_between_evaluations(p, 50, 600, time.monotonic() + 120)
    _, rest = p.communicate(timeout=120)
    err = before + rest.decode(errors="replace")
    assert p.returncode == 130, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted at step "), err
    step = int(last.split()[3].rstrip(";"))
    assert 0 < step < 3000 and step % 1000, f"the signal landed at step {step}, not between two evaluations"
    assert last == f"interrupted at step {step}; checkpoint at step {step}; continue with: nesterov train " \
                   f"--resume {part}"
    ck = torch.load(part / "last.pt", weights_only=False)
    assert ck["state"]["step"] == step  # the current step, not the last evaluation's
    assert not (part / "summary.json").exists()

    full = tmp_path / "full"
    runs = [popen(*args, "--out", str(full)), popen("--resume", str(part))]
    logs = [r.communicate(timeout=600) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], logs
    assert f"resuming {part} from step {step} of 3000" in logs[1][1]
    a, b = (json.loads((d / "summary.json").read_text()) for d in (full, part))
    for key in ("steps", "test_accuracy", "test_loss", "best_test_accuracy", "best_step", "train_loss"):
        assert a[key] == b[key], key
    rows = [list(csv.reader(open(d / "metrics.csv"))) for d in (full, part)]
    drop_seconds = [[r[:2] + r[3:] for r in rr] for rr in rows]
    assert drop_seconds[0] == drop_seconds[1] and len(rows[0]) == 4  # header + steps 1000, 2000, 3000


def _process_group(pgid: int) -> dict[int, int]:
    """{pid: parent pid} of the live processes in process group ``pgid`` (from /proc)."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:  # it ended while we looked
                continue
            fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, pgrp, ...
            if fields[0] != "Z" and int(fields[2]) == pgid:
                found[int(entry)] = int(fields[1])
    return found


def _data_workers(pid: int) -> list[int]:
    """The DataLoader workers of run ``pid``: its children, or (``forkserver``) the fork server's children.
    multiprocessing's own helpers, the fork server and the resource tracker, are children of the run but not
    workers."""
    group = _process_group(pid)

    def helper(q: int) -> bool:
        try:
            cmdline = Path(f"/proc/{q}/cmdline").read_bytes()
        except OSError:
            return False
        return b"multiprocessing.forkserver" in cmdline or b"multiprocessing.resource_tracker" in cmdline

    helpers = {q for q, ppid in group.items() if ppid == pid and helper(q)}
    return [q for q, ppid in group.items() if (ppid == pid and q not in helpers) or ppid in helpers]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads process groups from /proc")
@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
def test_ctrl_c_with_dataloader_workers_checkpoints_and_leaves_no_worker_behind(tmp_path, start_method):
    """An image folder too large to cache is decoded per batch by DataLoader worker processes. Ctrl-C reaches
    them too (the terminal signals the whole process group): the run still stops at a step boundary with exit
    130 and a checkpoint of that step, and no worker outlives it. The workers ignore SIGINT, whatever starts
    them: forked ones would inherit the run's handler anyway, but those of ``forkserver`` (Python 3.14's
    default on Linux) start with Python's own and would die of it, which a group Ctrl-C shows only when the run
    still needs a batch they owed (1 run in 3); so the workers get a SIGINT of their own first."""
    pytest.importorskip("PIL")
    from _workloads import write_digits_pngs

    pngs = write_digits_pngs(tmp_path / "digits")
    part = tmp_path / "part"
    env = dict(os.environ, NESTEROV_IMAGE_CACHE_BYTES="1000", NESTEROV_DATA_WORKERS="2",  # stream, 2 workers
               NESTEROV_DATA_START_METHOD=start_method)
    p = subprocess.Popen([sys.executable, "-m", "nesterov", "--dataset", f"imagefolder:{pngs}", "--model", "mlp",
                          "--threads", "1", "--steps", "3000", "--eval-every", "1000", "--out", str(part)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True,
                         preexec_fn=default_sigint)
    workers = []
    try:
        # The workers' part of a Ctrl-C first, alone: they must ignore it, and the run go on drawing batches from
        # them well past what they had in flight (2 workers x 4 prefetched). A worker that dies of it fails the
        # run, sooner or later: this half is what makes a dead worker certain to show.
        deadline = time.monotonic() + 120
        seen, at = _wait_for_step(p, 50, 400, deadline)
        workers.extend(_data_workers(p.pid))
        assert len(workers) == 2, f"expected the run's 2 DataLoader workers, found {workers}"
        for pid in workers:
            os.kill(pid, signal.SIGINT)
        seen, _ = _wait_for_step(p, at + 100, 900, deadline, seen)
        assert sorted(_data_workers(p.pid)) == sorted(workers), "a DataLoader worker did not survive SIGINT"
        # Then Ctrl-C as a terminal sends it, to the whole process group, before the evaluation at step 1000.
        os.killpg(p.pid, signal.SIGINT)
        before = seen.decode(errors="replace")
        p.wait(timeout=120)  # (what it writes after the signal fits in the pipe)
        # The run joins its workers before it exits, so none should be left by then; one that is, even if it
        # later notices its parent's death by itself (torch's worker watchdog, or a broken pipe), is an orphan.
        deadline = time.monotonic() + 1
        while _process_group(p.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = _process_group(p.pid)
        _, rest = p.communicate(timeout=60)  # EOF once every holder of the pipes, workers included, has gone
        err = before + rest.decode(errors="replace")
        assert p.returncode == 130, err
        assert "Traceback" not in err and "exited unexpectedly" not in err, err
        last = err.strip().splitlines()[-1]
        step = int(last.split()[3].rstrip(";"))
        assert 0 < step < 1000, f"the signal landed at step {step}, not before the first evaluation"
        assert last == f"interrupted at step {step}; checkpoint at step {step}; continue with: nesterov train " \
                       f"--resume {part}"
        assert torch.load(part / "last.pt", weights_only=False)["state"]["step"] == step
        assert not left, f"left behind after the run exited: {left} (its workers were {workers})"
    finally:
        if _process_group(p.pid):  # a failed run: take down what it left, not the next test's business
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
        if p.poll() is None:
            p.kill()
            p.wait(timeout=30)


# ------------------------------------------------------------------------------------------------ run directories
def test_out_refuses_an_existing_run_and_overwrite_replaces_it(tmp_path):
    out = tmp_path / "run"
    assert nesterov(*TINY, "--steps", "20", "--eval-every", "10", "--out", str(out)).returncode == 0
    before = {f.name: f.read_bytes() for f in out.iterdir()}

    p = nesterov(*TINY, "--steps", "5", "--out", str(out))
    assert p.returncode == 2 and p.stderr == (
        f"nesterov train: error: --out {out}: already holds a run (config.toml, metrics.csv, last.pt, best.pt, "
        f"summary.json, curves.png); continue it with --resume {out} or replace it with --overwrite\n")
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before  # nothing touched

    p = nesterov(*TINY, "--steps", "5", "--eval-every", "5", "--seed", "1", "--out", str(out), "--overwrite")
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["step"] for r in rows] == ["5"]  # the old run's rows are gone
    s = json.loads((out / "summary.json").read_text())
    assert (s["steps"], s["seed"]) == (5, 1)
    assert torch.load(out / "best.pt", weights_only=False)["state"]["step"] == 5


def test_a_run_config_toml_is_accepted_back_by_config(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert nesterov(*TINY, "--steps", "30", "--eval-every", "10", "--out", str(a)).returncode == 0
    p = nesterov("--config", str(a / "config.toml"), "--no-progress", "--out", str(b))
    assert p.returncode == 0, p.stderr
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert sa["test_loss"] == sb["test_loss"] and sa["steps"] == sb["steps"] == 30


def test_compare_writes_a_config_toml_that_compare_and_train_read_back(tmp_path):
    race = tmp_path / "race"
    common = ["--dataset", "digits", "--model", "mlp", "--steps", "30", "--threads", "1"]
    p = nesterov("compare", "--optimizers", "nag,torch-sgd", "--seeds", "1", *common, "--out", str(race),
                 "--no-progress")  # (as train takes it)
    assert p.returncode == 0, p.stderr
    assert "step/s" not in p.stderr, "a progress bar despite --no-progress"
    assert (race / "config.toml").is_file() and not (race / "config.json").exists()

    again = nesterov("compare", "--config", str(race / "config.toml"), "--optimizers", "nag,torch-sgd", "--seeds",
                     "1", "--out", str(tmp_path / "race2"))
    assert again.returncode == 0, again.stderr
    runs = [list(csv.DictReader(open(d / "runs.csv"))) for d in (race, tmp_path / "race2")]
    key = [(r["optimizer"], r["steps"], r["test_accuracy"], r["test_loss"]) for r in runs[0]]
    assert key == [(r["optimizer"], r["steps"], r["test_accuracy"], r["test_loss"]) for r in runs[1]]

    one = tmp_path / "one"
    p = nesterov("train", "--config", str(race / "config.toml"), "--optimizer", "nag", "--no-progress",
                 "--out", str(one))
    assert p.returncode == 0, p.stderr
    s = json.loads((one / "summary.json").read_text())
    nag = next(r for r in runs[0] if r["optimizer"] == "nag")
    assert f"{s['test_loss']:.6g}" == nag["test_loss"] and str(s["steps"]) == nag["steps"]

    p = nesterov("compare", "--optimizers", "nag", "--seeds", "1", *common, "--out", str(race))
    assert p.returncode == 2 and "--overwrite" in p.stderr


# ------------------------------------------------------------------------------------------------ wording
def test_the_model_line_says_1_thread_and_epochs_to_one_decimal(tmp_path):
    p = nesterov(*TINY, "--steps", "100", "--out", str(tmp_path / "run"))
    assert p.returncode == 0, p.stderr
    model = next(line for line in p.stderr.splitlines() if line.startswith("model  "))
    assert "; 100 steps (9.1 epochs); device cpu, 1 thread" in model and "1 threads" not in model, model


def test_epochs_text():
    from nesterov.train.loop import epochs_text

    assert [epochs_text(e) for e in (5.0, 1.0, 9.0909, 0.2727, 54.5455)] == [
        "5 epochs", "1 epoch", "9.1 epochs", "0.27 epochs", "54.5 epochs"]


# ------------------------------------------------------------------------------------------------ bad inputs
def _doc_rows() -> set[str]:
    return {line for line in (ROOT / "docs" / "cli.md").read_text().splitlines() if line.startswith("| `nesterov")}


@pytest.mark.parametrize("case", BAD.CASES, ids=lambda c: c.command)
def test_bad_input_is_one_line_naming_the_argument(case):
    """Each bad input of docs/cli.md exits 2 with one error line naming the argument, and the table shows that
    very line (scripts/cli_bad_inputs.py --write regenerates it)."""
    if case.cpu_only and torch.cuda.is_available():
        pytest.skip("a valid input on this machine")
    rc, out, err = BAD.run_case(case)
    assert rc == 2 and out == "" and "Traceback" not in err, err
    *status, line = err.strip().splitlines()
    assert all(s.startswith(BAD.STATUS) for s in status), err  # what it was doing, then the error
    assert line.startswith("nesterov") and ": error: " in line and case.names in line, line
    if case.cpus is None or case.cpus == len(os.sched_getaffinity(0)):
        assert BAD.table_rows([(case, line)])[0] in _doc_rows(), "docs/cli.md is stale: scripts/cli_bad_inputs.py --write"
