"""``nesterov bench``: argument errors, output format, progress, the load warning and the peers (tiny shapes)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from nesterov.bench import convex, step
from nesterov.bench.peers import PEERS, peers_for

TINY = ["--shapes", "mnist1d-cnn", "--warmup", "0", "--repeats", "2", "--auto-wait", "0"]


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nesterov.cli", *argv], capture_output=True, text=True, timeout=300)


# -- bad arguments: one line naming the argument, exit 2 -----------------------------------------
@pytest.mark.parametrize("argv, flag", [
    (["--repeats", "0"], "--repeats"),
    (["--repeats", "-3"], "--repeats"),
    (["--warmup", "-1"], "--warmup"),
    (["--threads", "0"], "--threads"),
    (["--optimizer", "sgd"], "--optimizer"),
    (["--device", "tpu:x"], "--device"),
])
def test_step_bad_argument_is_one_line_naming_it(argv, flag, capsys):
    assert step.step_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and flag in err and err.startswith("nesterov bench step: error:")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_step_device_cuda_without_cuda_is_one_line(capsys):
    assert step.step_main(["--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--device cuda" in err


def test_step_repeats_zero_through_the_cli_has_no_traceback():
    done = _cli("bench", "step", "--repeats", "0")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stderr.strip().count("\n") == 0 and "--repeats" in done.stderr


def test_step_only_naming_nothing_is_refused(capsys):
    assert step.step_main(TINY + ["--only", "no such row", "--quiet"]) == 2
    assert "--only" in capsys.readouterr().err


# -- a real run on tiny shapes ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def compiled_run():
    """One subprocess run with torch's compiled SGD (the row whose trace logged the profiler line)."""
    return _cli("bench", "step", *TINY, "--only", "torch SGD compiled,torch SGD fused")


def test_step_prints_no_profiler_warning(compiled_run):
    assert compiled_run.returncode == 0, compiled_run.stderr
    assert "Profiler record function" not in compiled_run.stderr + compiled_run.stdout


def test_step_reports_progress_per_contender_on_stderr(compiled_run):
    err = compiled_run.stderr
    for name in ("torch SGD compiled", "torch SGD fused"):
        assert re.search(rf"first step: {name} \.\.\. [\d.]+ (µs|ms|s)\n", err), err
    assert "done in" in err
    assert "first step:" not in compiled_run.stdout


def test_step_header_says_1_thread_not_1_threads(capsys):
    threads = torch.get_num_threads()
    try:
        assert step.step_main(TINY + ["--only", "torch SGD foreach", "--quiet", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "cpu, 1 thread · torch" in out and "1 threads" not in out


def test_step_quiet_prints_no_progress(capsys):
    assert step.step_main(TINY + ["--only", "torch SGD foreach", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_step_floor_on_small_shapes_is_not_zero(capsys):
    assert step.step_main(TINY + ["--only", "torch SGD foreach", "--quiet"]) == 0
    out = capsys.readouterr().out
    header = re.search(r"= ([\d.]+) (µs|ms|s) · medians", out)
    assert header and float(header.group(1)) > 0, out
    row = re.search(r"^bandwidth floor +([\d.e-]+)$", out, re.MULTILINE)
    assert row and float(row.group(1)) > 0, out


@pytest.mark.parametrize("seconds, text", [
    (3.84e-6, "3.84 µs"), (4.2e-5, "42 µs"), (8.0e-3, "8 ms"), (0.0123, "12.3 ms"), (48.2, "48.2 s"),
])
def test_format_duration(seconds, text):
    assert step.format_duration(seconds) == text


# -- the load warning: a pure function of the two probes -------------------------------------------
def test_load_warning_quiet_machine():
    assert step.load_warning(36.0, 35.0, 8.0e-3, 8.3e-3, "torch SGD fused") is None
    assert step.load_warning(36.0, 30.0, 8.0e-3, 9.6e-3, "torch SGD fused") is None  # exactly 20 % each


def test_load_warning_triad_moved():
    message = step.load_warning(36.0, 18.0, 8.0e-3, 8.1e-3, "torch SGD fused")
    assert message and "36.0 → 18.0 GB/s" in message and "8 ms → 8.1 ms" in message


def test_load_warning_reference_step_moved():
    message = step.load_warning(36.0, 36.5, 0.3e-3, 50e-3, "torch SGD fused")
    assert message and "torch SGD fused 300 µs → 50 ms" in message and "36.0 → 36.5 GB/s" in message
    assert step.load_warning(36.0, 36.0, 50e-3, 0.3e-3, "r")  # faster counts as moved too


def test_relative_change_is_symmetric():
    assert step.relative_change(10.0, 12.5) == pytest.approx(0.25)
    assert step.relative_change(12.5, 10.0) == pytest.approx(0.25)


# -- bench convex ----------------------------------------------------------------------------------
def test_convex_help_has_the_whole_description(capsys):
    with pytest.raises(SystemExit) as done:
        convex.main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "lasso on a synthetic sparse-recovery problem" in out and "--overhead instead measures" in out


@pytest.mark.parametrize("gap", ["2", "1", "0", "-1e-3", "nan"])
def test_convex_gap_outside_the_unit_interval_is_refused(gap, capsys):
    assert convex.main([f"--gap={gap}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--gap" in err


def test_convex_problems_with_an_l1_term_build():
    """Their prox comes from nesterov.solve.prox (``from . import prox`` once looked in nesterov.bench, and every
    convergence run died on the ImportError before its first problem)."""
    pytest.importorskip("sklearn")
    from nesterov.bench import convex_problems

    for make in (convex_problems.logistic_l1, convex_problems.lasso):
        problem = make()
        assert problem["prox"] is not None and bool(torch.isfinite(problem["prox"].value(problem["x0"])))


# -- peers ------------------------------------------------------------------------------------------
def test_missing_peer_library_gives_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "heavyball", None)  # import heavyball now raises ImportError
    usable, lines = peers_for("nadamw")
    assert usable == []
    assert any(line.startswith("heavyball not installed: skipping heavyball NAdam") for line in lines)
    assert any("pytorch-optimizer" in line and "torch.optim.NAdam" in line for line in lines)


def test_peer_that_writes_into_grads_gets_them_back(capsys):
    pytest.importorskip("pytorch_optimizer")
    args = step.step_parser().parse_args(
        TINY + ["--optimizer", "lars", "--peers", "--only", "torch SGD fused,pytorch-optimizer LARS", "--quiet"])
    rows = {r["name"]: r for r in step.run_step_bench(args)["rows"]}
    assert rows["pytorch-optimizer LARS"]["grads_restored"]  # its foreach step scales p.grad in place
    assert not rows["torch SGD fused"]["grads_restored"]
    assert rows["pytorch-optimizer LARS"]["peer"] and not rows["torch SGD fused"]["peer"]


def _steps(optimizer, params, grads, n=3):
    for g in grads[:n]:
        for p, gi in zip(params, g):
            p.grad = gi.clone()
        optimizer.step()


@pytest.mark.parametrize("rule, ours", [("adan", "Adan"), ("lars", "LARS")])
def test_pytorch_optimizer_peer_matches_our_rule_with_the_bench_hyperparameters(rule, ours):
    """The docs say these two peers compute our update: with the bench's mapping, they do (float64)."""
    pytest.importorskip("pytorch_optimizer")
    import nesterov

    hp = step.OPTIMIZERS[rule]().extra["hp"]
    gen = torch.Generator().manual_seed(0)
    shapes = [(6, 5), (4, 3, 2), (5,)]
    start = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    grads = [[torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes] for _ in range(3)]
    theirs = [torch.nn.Parameter(t.clone()) for t in start]
    mine = [torch.nn.Parameter(t.clone()) for t in start]
    (peer,) = PEERS[rule]
    _steps(peer.make(theirs, hp), theirs, grads)
    _steps(getattr(nesterov, ours)(mine, **hp, backend="eager"), mine, grads)
    for a, b in zip(theirs, mine):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=0)


def test_auto_note_names_the_compiled_kernel_once_it_took_over():
    """``auto`` compiles in the background after its first foreach steps (2 here instead of 200); the bench
    waits for it and says so (it used to stop waiting the moment the compile finished, and said foreach)."""
    import os

    env = {**os.environ, "NESTEROV_AUTO_COMPILE_AFTER_STEPS": "2"}
    done = subprocess.run([sys.executable, "-m", "nesterov.cli", "bench", "step", "--optimizer", "nadamw",
                           "--shapes", "mnist1d-cnn", "--numel", "300000", "--only", "nesterov auto", "--repeats",
                           "1", "--warmup", "0", "--quiet"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "auto: the compiled kernel" in done.stdout, done.stdout


# -- python -m nesterov.bench.muon: the Newton–Schulz tables (tiny shapes) ------------------------------
def test_muon_orthogonality_table_has_every_row_and_float64_gram_equals_standard(capsys):
    from nesterov.bench import muon as M

    assert M.orthogonality_main(["--shape", "8", "24", "--matrices", "2"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert len(rows) == 2 * 2 * 4  # coefficient sets × methods × dtypes
    distance = {(r[0], r[1], r[2]): float(r[-1]) for r in rows}
    for coefficients in ("jordan", "polar_express"):
        assert distance[(coefficients, "standard", "float64")] == 0.0
        assert distance[(coefficients, "gram", "float64")] <= 1e-9
        assert distance[(coefficients, "standard", "float32")] <= 1e-4
        assert 1e-4 < distance[(coefficients, "standard", "bfloat16")] < 0.5


def test_muon_ns_table_names_auto_as_gram_pays_decides(capsys):
    from nesterov.bench import muon as M
    from nesterov.rules import muon as R

    assert M.ns_main(["--rows", "8", "--ratios", "1", "2", "3", "--repeats", "1", "--threads", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines()[1:]]
    assert len(rows) == 2 * (1 + 2 + 2)  # dtypes × (square, wide and tall at 2 and 3)
    for line in rows:
        dtype = getattr(torch, line.split()[0])
        ratio = int(re.search(r"cols = (\d)·rows", line).group(1))
        assert line.endswith("auto: " + ("gram" if R.gram_pays(8, 8 * ratio, dtype) else "standard"))


def test_muon_speed_times_every_contender(capsys):
    from nesterov.bench import muon as M

    assert M.speed_main(["--blocks", "1", "--d", "16", "--repeats", "1", "--threads", "1", "--peers"]) == 0
    out = capsys.readouterr().out
    for name in ("torch.optim.Muon (bf16 NS)", "nesterov.Muon (default)", "nesterov.Muon (default NS dtype, standard)",
                 "nesterov.Muon (fp32 NS, gram)", "nesterov.NorMuon (default)", "pytorch-optimizer Muon (bf16 NS)"):
        assert re.search(re.escape(name) + r"\s+median\s+[\d.]+ ms", out), name
