"""Every code block of README.md and docs/*.md runs, or its command line is checked, so no example rots.

What each block gets, by its fence's language:

- ``python``: run as a script in a fresh process, in an empty temporary directory. A top-level expression
  (``res.success, res.nit``) must show its value in a comment on the same or the next line; the value's
  ``repr`` is compared with the comment's text up to the first double space (``...`` matches anything,
  as in doctest). A block whose first line reads ``# NAME.py: run with  COMMAND`` is saved as NAME.py and
  run with COMMAND (a torchrun script).
- ``bash``, ``sh``, ``console`` or no language: each line is a command (``$`` prompts mark a transcript: only
  those lines are commands). ``pip install`` must name extras that pyproject.toml declares, files that exist
  and pins that agree with constraints.txt. ``python -m pytest`` must name test files that exist. The cheap
  ``nesterov`` commands (``--help``, ``--version`` and those in :data:`CHEAP`) run for real and must exit 0;
  every other ``nesterov``, ``python -m``, ``python SCRIPT.py`` and ``torchrun`` command line is parsed by
  the program's own argparse parsers, reached through its real entry point: ``parse_args`` is wrapped to
  stop the program once its arguments are parsed, so a renamed flag, subcommand or module fails here while
  no benchmark or training run starts. (torchrun's own options go through torch's ``get_args_parser``.)
- any other language (``text``, ``toml``...): not code.

A block preceded by ``<!-- not run: REASON -->`` is skipped; there may be at most :data:`MAX_NOT_RUN`.
Identical blocks (the solver's example in README.md and docs/solver.md) run once. Besides: every relative
link names a file that exists, and README.md stays a tour of at most 250 lines.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"", "bash", "sh", "shell", "console"}
MAX_NOT_RUN = 3
TIMEOUT_S = 300

# ``nesterov`` commands cheap enough to run for real (seconds on a 2-core CPU); each must appear in the docs.
CHEAP = {
    "nesterov",  # the README's first command: the default run (MNIST-1D, ~10 s)
    "nesterov train --dataset digits --model mlp --optimizer nadamw --epochs 5",
    "nesterov bench memory",
}


@dataclass(frozen=True)
class Block:
    file: str  # relative to the repository root
    line: int  # of the opening fence
    lang: str
    code: str
    not_run: str | None  # the reason given in a ``<!-- not run: ... -->`` marker

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"


def blocks_of(path: Path) -> list[Block]:
    """The fenced code blocks of a markdown file (fences may be indented, as inside a list item)."""
    lines = path.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        m = re.match(r"^( *)(```+)\s*([\w+-]*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang, start = len(m.group(1)), m.group(2), m.group(3).lower(), i
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        assert j < len(lines), f"{path.name}:{start + 1}: unclosed code fence"
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        marker = re.match(r"^<!--\s*not run:\s*(.+?)\s*-->$", lines[k].strip()) if k >= 0 else None
        code = "\n".join(line[indent:] for line in lines[start + 1:j]) + "\n"
        found.append(Block(str(path.relative_to(ROOT)), start + 1, lang, code, marker.group(1) if marker else None))
        i = j + 1
    return found


def first_of_each(blocks: list[Block]) -> list[Block]:
    """One block per distinct code (the first place it appears)."""
    seen: dict[str, Block] = {}
    for b in blocks:
        seen.setdefault(b.code, b)
    return list(seen.values())


ALL = [b for path in DOCS for b in blocks_of(path)]
PYTHON = first_of_each([b for b in ALL if b.lang == "python" and not b.not_run])
SHELL_BLOCKS = [b for b in ALL if b.lang in SHELL and not b.not_run]


def commands_of(block: Block) -> list[list[str]]:
    """The commands of a shell block: continuation lines joined, comments and prompts dropped, ``&&`` split."""
    text = block.code.replace("\\\n", " ")
    lines = text.splitlines()
    if any(line.startswith("$ ") for line in lines):
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    out = []
    for line in lines:
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            out.append(words[:cut])
            words = words[cut + 1:]
    return out


ALL_COMMANDS = [(b, c) for b in SHELL_BLOCKS for c in commands_of(b)]


def test_the_docs_have_examples_and_few_unrun_blocks():
    assert DOCS[0].name == "README.md" and len(PYTHON) >= 3 and len(ALL_COMMANDS) >= 5
    not_run = [f"{b.id} ({b.not_run})" for b in ALL if b.not_run]
    assert len(not_run) <= MAX_NOT_RUN, f"too many blocks marked not run: {not_run}"
    documented = {" ".join(c) for _, c in ALL_COMMANDS}
    assert CHEAP <= documented, f"CHEAP names commands no doc shows: {CHEAP - documented}"


def test_links_point_to_files_that_exist():
    """Every relative link of the docs names a file of the repository (a moved or missing doc fails here)."""
    bad = []
    for path in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            if not (path.parent / target.split("#")[0]).exists():
                bad.append(f"{path.relative_to(ROOT)}: {target}")
    assert not bad, f"links to nothing: {bad}"


def test_the_readme_is_a_tour():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; the details belong in docs/"


# -- python blocks ----------------------------------------------------------------------------------

RUNNER = textwrap.dedent(r'''
    import ast, doctest, sys
    path = sys.argv[1]
    src = open(path).read()
    lines = src.splitlines()
    ns = {"__name__": "__main__", "__file__": path}
    checked = 0
    for node in ast.parse(src).body:
        shown = isinstance(node, ast.Expr) and not isinstance(node.value, (ast.Call, ast.Constant))
        if not shown:
            exec(compile(ast.Module([node], []), path, "exec"), ns)
            continue
        rest = lines[node.end_lineno - 1][node.end_col_offset:].strip()
        after = lines[node.end_lineno].strip() if node.end_lineno < len(lines) else ""
        comment = rest if rest.startswith("#") else after if after.startswith("#") else None
        if comment is None:
            sys.exit(f"line {node.lineno}: an expression whose value no comment shows")
        want = comment.lstrip("#").strip().split("  ")[0]
        got = repr(eval(compile(ast.Expression(node.value), path, "eval"), ns))
        if not doctest.OutputChecker().check_output(want + "\n", got + "\n", doctest.ELLIPSIS):
            sys.exit(f"line {node.lineno}: the comment shows {want}, the code gives {got}")
        checked += 1
    print(f"checked {checked} shown values")
''')


def environment() -> dict:
    """The examples' environment: this checkout's sources; OpenMP threads that sleep when idle (spinning
    threads that lose their core to another process made the README's 100-step loop take 15 s instead of
    0.1 s on a busy 2-core machine, as `nesterov train` notes where it sets the same)."""
    return {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT / "src")}


def run(cmd: list[str], cwd: Path, timeout: int = TIMEOUT_S) -> subprocess.CompletedProcess:
    env = environment()
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def explain(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"


@pytest.mark.parametrize("block", PYTHON, ids=lambda b: b.id)
def test_python_block_runs(block, tmp_path):
    first = block.code.splitlines()[0]
    script = re.match(r"^#\s*(\w+\.py):\s*run with\s+(.+)$", first)
    if script:
        (tmp_path / script.group(1)).write_text(block.code)
        cmd = shlex.split(script.group(2))
        assert cmd[-1] == script.group(1), f"{block.id}: the command must run {script.group(1)}"
        launcher = {"python": [sys.executable], "torchrun": [sys.executable, "-m", "torch.distributed.run"]}
        proc = run(launcher[cmd[0]] + cmd[1:], tmp_path)
    else:
        (tmp_path / "block.py").write_text(block.code)
        (tmp_path / "_runner.py").write_text(RUNNER)
        proc = run([sys.executable, "_runner.py", "block.py"], tmp_path)
    assert proc.returncode == 0, f"{block.id}:\n{block.code}\n{explain(proc)}"


def test_a_shown_value_that_differs_fails(tmp_path):
    """The check of shown values can fail: a wrong value in a comment is caught."""
    (tmp_path / "block.py").write_text("x = 6 * 7\nx, 'a'\n# (41, 'a')\nx  # 4...\n")
    (tmp_path / "_runner.py").write_text(RUNNER)
    proc = run([sys.executable, "_runner.py", "block.py"], tmp_path)
    assert proc.returncode != 0 and "the comment shows (41, 'a'), the code gives (42, 'a')" in proc.stderr
    (tmp_path / "block.py").write_text("x = 6 * 7\nx, 'a'\n# (4..., 'a')    a remark\nx  # 4...\n")
    assert run([sys.executable, "_runner.py", "block.py"], tmp_path).stdout == "checked 2 shown values\n"


# -- shell commands ---------------------------------------------------------------------------------

def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            out[name.strip().lower()] = version.strip()
    return out


def check_pip(argv: list[str]) -> None:
    assert argv[1] == "install", f"only `pip install` is known here: {argv}"
    project = pyproject()["project"]
    extras = project.get("optional-dependencies", {})
    args = iter(argv[2:])
    for arg in args:
        if arg in ("-c", "-r"):
            path = next(args)
            assert (ROOT / path).is_file(), f"{argv}: no file {path}"
        elif arg == "-e" or not arg.startswith("-"):
            spec = next(args) if arg == "-e" else arg
            m = re.match(r"^([\w./-]+?)(?:\[([\w,-]+)\])?(==[\w.]+)?$", spec)
            assert m, f"{argv}: cannot read {spec!r}"
            name, wanted, pin = m.groups()
            if name in (".", "./") or name == project["name"]:
                for extra in (wanted or "").split(","):
                    assert not extra or extra in extras, \
                        f"{argv}: pyproject.toml declares no extra [{extra}] (it has {sorted(extras)})"
            else:
                known = pins()
                if pin and name.lower() in known:
                    assert pin[2:] == known[name.lower()], f"{argv}: {spec} but constraints.txt pins {known[name.lower()]}"
        else:
            raise AssertionError(f"{argv}: option {arg} is not known to test_docs.py")


def check_pytest(argv: list[str]) -> None:
    for arg in argv[3:]:
        if not arg.startswith("-"):
            path = arg.split("::")[0]
            assert (ROOT / path).exists(), f"{argv}: no {path}"


# Runs in one process for every command line that is parsed and not run: each item is
# [kind, target, argv], kind "entry" (module:function of a console script), "module" (python -m) or
# "script" (python FILE). Prints one JSON line per item: {"ok": bool, "why": str}.
PARSER = textwrap.dedent(r'''
    import argparse, contextlib, importlib, io, json, runpy, signal, sys

    class Parsed(BaseException):
        pass

    class TooLong(BaseException):  # not an Exception: the program's own handlers cannot swallow it
        pass

    def too_long(*_):  # a program that never calls parse_args would run for real: stop it
        raise TooLong()

    signal.signal(signal.SIGALRM, too_long)

    original = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        self.allow_abbrev = False  # a doc must spell each flag in full: an abbreviation outlives a rename
        original(self, args, namespace)
        raise Parsed(self.prog)

    argparse.ArgumentParser.parse_args = parse_args
    for kind, target, argv in json.loads(sys.stdin.read()):
        err = io.StringIO()
        signal.alarm(60)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                if kind == "entry":
                    module, func = target.split(":")
                    sys.argv = [module.split(".")[0], *argv]
                    getattr(importlib.import_module(module), func)()
                elif kind == "module":
                    sys.argv = [target, *argv]
                    runpy.run_module(target, run_name="__main__", alter_sys=True)
                else:
                    sys.argv = [target, *argv]
                    runpy.run_path(target, run_name="__main__")
            result = {"ok": False, "why": "it returned without parsing its arguments with argparse"}
        except TooLong:
            result = {"ok": False, "why": "it ran 60 s without parsing its arguments with argparse"}
        except Parsed as done:
            result = {"ok": True, "why": f"parsed by {done.args[0]}"}
        except SystemExit as e:
            result = {"ok": e.code in (0, None), "why": f"exit {e.code}: {err.getvalue().strip()[-600:]}"}
        except Exception as e:
            result = {"ok": False, "why": f"{type(e).__name__}: {e}"}
        signal.alarm(0)
        print(json.dumps(result), flush=True)
''')


def entry_point(name: str) -> str:
    scripts = pyproject()["project"]["scripts"]
    assert name in scripts, f"pyproject.toml declares no console script {name!r} ({sorted(scripts)})"
    return scripts[name]


def classify(argv: list[str]) -> str:
    """What a documented command gets: "check" (pip, pytest), "run", "parse", or "unknown"."""
    head = argv[0]
    if head == "pip" or (head == "python" and argv[1:3] == ["-m", "pytest"]):
        return "check"
    if head == "nesterov" and (" ".join(argv) in CHEAP or {"--help", "-h", "--version"} & set(argv)):
        return "run"
    return "parse" if head in ("nesterov", "python", "torchrun") else "unknown"


def parse_item(argv: list[str]) -> list:
    """[kind, target, argv] for :data:`PARSER`."""
    head = argv[0]
    if head == "python" and argv[1] == "-m":
        return ["module", argv[2], argv[3:]]
    if head == "python":
        assert (ROOT / argv[1]).is_file(), f"{argv}: no {argv[1]}"
        return ["script", str(ROOT / argv[1]), argv[2:]]
    if head == "torchrun":
        from torch.distributed.run import get_args_parser

        ns = get_args_parser().parse_args(argv[1:])  # torchrun's own options (exits 2 on a bad one)
        target = ns.training_script if ns.module else str(ROOT / ns.training_script)
        return ["module" if ns.module else "script", target, ns.training_script_args]
    return ["entry", entry_point("nesterov"), argv[1:]]


def test_command_lines_parse(tmp_path):
    """Every documented command that is neither run nor a pip/pytest line is parsed by its program."""
    unknown = [f"{b.id}: {shlex.join(c)}" for b, c in ALL_COMMANDS if classify(c) == "unknown"]
    assert not unknown, f"commands test_docs.py does not know how to check: {unknown}"
    items, where = [], []
    for block, argv in ALL_COMMANDS:
        if classify(argv) == "parse":
            items.append(parse_item(argv))
            where.append(f"{block.id}: {shlex.join(argv)}")
    assert items
    proc = subprocess.run([sys.executable, "-c", PARSER], input=json.dumps(items), cwd=tmp_path, capture_output=True,
                          text=True, timeout=TIMEOUT_S,
                          env=environment())
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(items), explain(proc)
    bad = [f"{w}\n    {r['why']}" for w, r in zip(where, results) if not r["ok"]]
    assert not bad, "command lines the programs refuse:\n" + "\n".join(bad)


def test_a_renamed_flag_fails_the_parse_check(tmp_path):
    """The parse check can fail: a flag no parser knows, a subcommand that does not exist."""
    items = [["entry", entry_point("nesterov"), ["train", "--epoch", "5"]],  # an abbreviation
             ["entry", entry_point("nesterov"), ["train", "--epocs", "5"]],
             ["entry", entry_point("nesterov"), ["bench", "stepp"]],
             ["entry", entry_point("nesterov"), ["train", "--epochs", "5"]]]
    proc = subprocess.run([sys.executable, "-c", PARSER], input=json.dumps(items), cwd=tmp_path, capture_output=True,
                          text=True, timeout=TIMEOUT_S, env=environment())
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["ok"] for r in results] == [False, False, False, True], results


def test_install_and_pytest_lines_check():
    """pip lines name extras that pyproject.toml declares, files that exist and the pins of constraints.txt;
    pytest lines name test files that exist."""
    lines = [(b, c) for b, c in ALL_COMMANDS if classify(c) == "check"]
    assert any(c[0] == "pip" for _, c in lines)
    for block, argv in lines:
        try:
            check_pip(argv) if argv[0] == "pip" else check_pytest(argv)
        except AssertionError as e:
            raise AssertionError(f"{block.id}: {e}") from None


@pytest.mark.parametrize("line", ['pip install -e ".[trian]" -c constraints.txt', "pip install -e . -c constraint.txt",
                                  "pip install torch==2.12.0", "pip install --user -e .", "python -m pytest tests/test_nothing.py"])
def test_a_wrong_install_or_pytest_line_fails(line):
    argv = shlex.split(line)
    with pytest.raises(AssertionError):
        check_pip(argv) if argv[0] == "pip" else check_pytest(argv)


RUN = sorted({shlex.join(c) for _, c in ALL_COMMANDS if classify(c) == "run"})

# Figures the docs quote for a cheap command, checked against its run: (file, pattern whose group is the figure).
# The default run's test accuracy depends only on its seed (0) and thread count (1), both fixed by default.
QUOTED = {
    "nesterov": [("docs/training.md", r"\| `nesterov train --seed 0` \| ([\d.]+) % \|"),
                 ("docs/training.md", r"\$ nesterov train --seed 0\ntest accuracy ([\d.]+) %"),
                 ("docs/cli.md", r"\ntest accuracy ([\d.]+) % \(best")],
}


def check_quoted(command: str, stdout: str) -> None:
    """Each figure the docs quote for ``command`` equals its run's, to the digits the docs show."""
    measured = re.search(r"^test accuracy ([\d.]+) %", stdout, re.M)
    for rel, pattern in QUOTED.get(command, ()):
        quoted = re.search(pattern, (ROOT / rel).read_text())
        assert quoted, f"{rel} no longer quotes {command!r} ({pattern})"
        assert measured, f"{command!r} printed no test accuracy:\n{stdout}"
        digits = len(quoted.group(1).partition(".")[2])
        assert f"{float(measured.group(1)):.{digits}f}" == quoted.group(1), (
            f"{rel} quotes {quoted.group(1)} % for {command!r}; it prints {measured.group(1)} %")


@pytest.mark.parametrize("command", RUN)
def test_cheap_command_runs(command, tmp_path):
    """The cheap ``nesterov`` commands run for real, through the installed console script (or ``python -m
    nesterov`` where there is none), in an empty directory, and exit 0."""
    entry_point("nesterov")
    script = Path(sys.executable).parent / "nesterov"
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "nesterov"]
    proc = run(cmd + shlex.split(command)[1:], tmp_path)
    assert proc.returncode == 0, f"{command}\n{explain(proc)}"
    check_quoted(command, proc.stdout)


def test_a_quoted_figure_that_differs_fails():
    with pytest.raises(AssertionError, match="quotes 98.0"):
        check_quoted("nesterov", "test accuracy 97.40 % (best 97.40 % at step 155) after 155 steps\n")
