"""Every way a user can call ``rnnlab`` wrongly ends in one clear message, never a traceback.

Each row runs ``python -m rnnlab ARGS`` in a fresh process against the installed typer:
usage errors print typer's usage block (or, for a flag without its value, typer's one error
line) and exit 2; rnnlab's own errors print one line
``rnnlab: error: ...`` and exit 1; an unexpected exception prints one line naming it and the log
file that holds its traceback, exit 1; Ctrl-C exits 130.

Rows that fail while parsing cost a fraction of a second (no torch is imported before a command
runs); the rows that reach the library import torch, so there are few of them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import rnnlab

SRC = str(Path(rnnlab.__file__).resolve().parents[1])


def run_cli(args: list[str], cwd: Path, code: str | None = None) -> subprocess.CompletedProcess:
    """``rnnlab ARGS`` in a fresh interpreter (or ``python -c code ARGS``), logs under cwd/logs."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
           "RNNLAB_LOG_DIR": str(cwd / "logs"), "COLUMNS": "100"}
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "rnnlab", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@dataclasses.dataclass
class Bad:
    args: list[str]
    code: int            # 2: usage error; 1: rnnlab error
    says: str            # a piece of the error line


# Usage errors: typer rejects them before any command runs.
USAGE = [
    Bad(["--bogus"], 2, "No such option"),
    Bad(["nosuch"], 2, "No such command 'nosuch'"),
    Bad(["train", "nosuch"], 2, "No such command 'nosuch'"),
    Bad(["train", "lm", "--bogus"], 2, "No such option"),
    Bad(["train", "lm", "--hidden-size", "abc"], 2, "Invalid value for '--hidden-size'"),
    Bad(["train", "lm", "--hidden", "abc"], 2, "Invalid value for '--hidden-size' / '--hidden'"),   # the older name
    Bad(["train", "lm", "--lr", "fast"], 2, "Invalid value for '--lr'"),
    Bad(["train", "lm", "--max-steps"], 2, "--max-steps"),
    Bad(["train", "classify"], 2, "Missing option '--train'"),
    Bad(["evaluate", "--bogus"], 2, "No such option: --bogus"),   # not taken as the run folder
    Bad(["evaluate", "--csv", "x.csv", "run"], 2, "--csv: expected it after the run folder"),
    Bad(["train", "classify", "--train", "x.csv", "--dropout", "high"], 2, "Invalid value for '--dropout'"),
    Bad(["train", "forecast", "--csv", "x.csv"], 2, "Missing option '--target'"),
    Bad(["train", "forecast", "--csv", "x.csv", "--target", "y", "--horizon", "1.5"], 2,
        "Invalid value for '--horizon'"),
    Bad(["train", "speech", "--hidden-size", "abc"], 2, "Invalid value for '--hidden-size'"),
    Bad(["transcribe", "run"], 2, "Missing argument"),
    Bad(["train", "seq2seq", "--hidden-size", "abc"], 2, "Invalid value for '--hidden-size'"),
    Bad(["translate"], 2, "Missing argument 'RUN'"),
    Bad(["translate", "run", "hello", "--out", "a.png"], 2, "--out writes the alignment: expected it with --show-attention"),
    Bad(["train", "probe", "--length", "ten"], 2, "Invalid value for '--length'"),
    Bad(["train", "toy", "--hidden-size", "many"], 2, "Invalid value for '--hidden-size'"),
    Bad(["train", "toy", "--compile-backend"], 2, "--compile-backend"),
    Bad(["train", "toy", "--compile=yes"], 2, "--compile"),
    Bad(["evaluate"], 2, "Missing argument"),
    Bad(["generate"], 2, "Missing argument"),
    Bad(["generate", "run", "--length", "x"], 2, "Invalid value for '--length'"),
    Bad(["generate", "run", "--temperature"], 2, "--temperature"),
    Bad(["predict", "run"], 2, "Missing option '--csv'"),
    Bad(["forecast", "run", "--csv", "f.csv"], 2, "Missing option '--horizon'"),
    Bad(["backtest", "run", "--csv", "f.csv", "--windows", "five"], 2, "Invalid value for '--windows'"),
    Bad(["export", "run"], 2, "expected --onnx PATH or --pt2 PATH"),
    Bad(["export", "run", "--pt2", "model.pt2", "--int8"], 2, "--int8: expected it with --onnx"),
    Bad(["bench", "--threads", "two"], 2, "Invalid value for '--threads'"),
    Bad(["bench", "--repeats", "1.5"], 2, "Invalid value for '--repeats'"),
    Bad(["demo", "--seed", "zero"], 2, "Invalid value for '--seed'"),
    Bad(["demo", "--jobs"], 2, "--jobs"),
    Bad(["probe"], 2, "Missing argument"),
    Bad(["probe", "adding", "--memory-bias", "high"], 2, "Invalid value for '--memory-bias'"),
    Bad(["info", "--verbose"], 2, "No such option"),
    Bad(["info", "extra"], 2, "unexpected extra argument"),
    Bad(["--debug", "train", "lm", "--bogus"], 2, "No such option"),
]

# rnnlab's own errors: raised by the library once the command runs. "RUN" is a folder holding a
# run of another task, "EMPTY" an empty folder, "TEXT" a small text file.
LIBRARY = [
    Bad(["probe", "nope"], 1, "expected one of"),
    Bad(["demo", "--quick", "--full"], 1, "at most one of --quick/--full"),
    Bad(["bench", "--engine", "bogus"], 1, "engine: expected one of"),
    Bad(["probe", "adding", "--cell-option", "colour=red"], 1, "--cell-option key: expected one of"),
    Bad(["info", "--plan", "gru", "--cell-option", "peephole=true"], 1, "peephole: expected False for GRU"),
    Bad(["info", "--plan", "lstm", "--input-size", "0"], 1, "--input-size: expected an integer >= 1"),
    Bad(["train", "lm", "--text", "missing.txt", "--out", "r1"], 1, "expected an existing file"),
    Bad(["train", "lm", "--text", "missing.txt", "--adaptive-softmax", "2k", "--out", "r1"], 1, "--adaptive-softmax: expected"),
    Bad(["train", "lm", "--text", "missing.txt", "--weight-drop", "1.5", "--out", "r1"], 1, "--weight-drop: expected"),
    Bad(["train", "lm", "--text", "missing.txt", "--max-tokens", "1", "--out", "r1"], 1, "--max-tokens: expected"),
    Bad(["train", "classify", "--train", "missing.csv", "--out", "r2"], 1, "expected an existing file"),
    Bad(["train", "classify", "--train", "x.ts", "--arch", "resnet", "--out", "r4"], 1, "--arch (classify arch): expected one of"),
    Bad(["train", "classify", "--dataset", "ucr:NoSuchSet", "--data-dir", ".", "--out", "r5"], 1,
        "NoSuchSet_TRAIN.ts: expected a file in one of"),
    Bad(["evaluate", "EMPTY"], 1, "expected a run folder's config.json"),
    Bad(["report", "EMPTY"], 1, "expected a run folder's config.json"),
    Bad(["generate", "RUN"], 1, "expected a language model"),
    Bad(["predict", "RUN", "--csv", "TEXT"], 1, "expected a classifier"),
    Bad(["train", "speech", "--mode", "phones", "--out", "r3"], 1, "--mode (speech mode): expected one of"),
    Bad(["train", "speech", "--mode", "words", "--blank-bias", "2", "--out", "r3"], 1, "expected 0 in words mode"),
    Bad(["transcribe", "RUN", "TEXT"], 1, "expected a speech run"),
    Bad(["translate", "RUN", "hello"], 1, "expected a sequence-to-sequence run"),
    Bad(["export", "run", "--pt2", "model.zip"], 1, "ending in .pt2"),
    Bad(["train", "forecast", "--csv", "TEXT", "--target", "y", "--diff", "twice", "--out", "r4"], 1,
        "--diff (forecast diff): expected one of ('none', 'first', 'seasonal')"),
    Bad(["train", "forecast", "--csv", "TEXT", "--wide", "--id-col", "id", "--out", "r5"], 1,
        "forecast table layout: expected a long table (id_col) or a wide one, not both"),
    Bad(["backtest", "RUN", "--csv", "TEXT", "--json"], 1, "expected a forecaster"),
    Bad(["train", "toy", "--compile", "--compile-backend", "bogus", "--out", "r6"], 1,
        "--compile-backend (train config compile_backend): expected a torch.compile backend"),
]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "RUN").mkdir()
    (tmp_path / "RUN" / "config.json").write_text(json.dumps({"task": "toy", "task_config": {}, "train_config": {}}))
    (tmp_path / "TEXT").write_text("some text\n" * 20)
    return tmp_path


def assert_no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr


def test_the_table_has_at_least_30_rows_across_all_commands():
    from rnnlab.cli.main import app, train_app

    rows = USAGE + LIBRARY
    assert len(rows) >= 30
    covered = {r.args[r.args[0] == "--debug"] for r in rows} | {r.args[1] for r in rows if r.args[0] == "train"}
    commands = {c.name for c in app.registered_commands} | {c.name for c in train_app.registered_commands}
    assert commands <= covered, commands - covered


@pytest.mark.parametrize("bad", USAGE, ids=[" ".join(b.args) for b in USAGE])
def test_usage_error_prints_typers_usage_block_and_exits_2(bad: Bad, workdir: Path):
    proc = run_cli(bad.args, workdir)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert_no_traceback(proc)
    assert proc.stdout == ""
    if not proc.stderr.startswith("Error: Option"):   # "requires an argument" comes without the usage
        assert proc.stderr.startswith("Usage: rnnlab"), proc.stderr
        assert "Try 'rnnlab" in proc.stderr and "--help' for help." in proc.stderr, proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and bad.says in error_lines[0], proc.stderr


@pytest.mark.parametrize("bad", LIBRARY, ids=[" ".join(b.args) for b in LIBRARY])
def test_rnnlab_error_is_one_line_and_exits_1(bad: Bad, workdir: Path):
    proc = run_cli(bad.args, workdir)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert_no_traceback(proc)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnnlab: error: ") and bad.says in lines[0], proc.stderr
    assert not (workdir / "logs").exists()   # an rnnlab error is the user's to fix: no log


# A command whose library call fails in a way rnnlab did not foresee (patched in before main runs).
PATCHED = """
import sys
import rnnlab.cli.info as info
def collect(build=True):
    {body}
info.collect = collect
from rnnlab.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_unexpected_error_is_one_line_naming_the_log_that_holds_the_traceback(workdir: Path):
    code = PATCHED.format(body="raise RuntimeError('kernel exploded\\nsecond line of detail')")
    proc = run_cli(["info"], workdir, code)
    assert proc.returncode == 1, proc.stderr
    assert_no_traceback(proc)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    m = re.fullmatch(r"rnnlab: unexpected error: RuntimeError: kernel exploded \.\.\. \(traceback in (.+)\)", lines[0])
    assert m, lines[0]
    log = Path(m.group(1))
    assert log.parent == workdir / "logs"
    text = log.read_text()
    assert text.startswith("rnnlab info\n")
    assert "Traceback" in text and "second line of detail" in text and "in collect" in text


def test_out_of_memory_is_one_line_naming_the_flags_that_shrink_it(workdir: Path):
    """A model too large to allocate (torch's CPU allocator message) is an error with advice, not
    an "unexpected error"; the real allocation runs (a probe with 10^8 hidden units)."""
    proc = run_cli(["probe", "adding", "--hidden", "100000000", "--max-steps", "1"], workdir)
    assert proc.returncode == 1, proc.stderr
    assert_no_traceback(proc)
    assert re.fullmatch(r"rnnlab: error: out of memory: you tried to allocate \d+ bytes; a smaller model, batch or "
                        r"sequence length needs less \(--debug shows where\)", proc.stderr.strip()), \
        proc.stderr
    proc = run_cli(["info"], workdir, PATCHED.format(body="raise MemoryError()"))
    assert proc.returncode == 1 and proc.stderr.startswith("rnnlab: error: out of memory: MemoryError;"), proc.stderr


def test_debug_shows_the_traceback_instead(workdir: Path):
    code = PATCHED.format(body="raise RuntimeError('kernel exploded')")
    proc = run_cli(["--debug", "info"], workdir, code)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "RuntimeError: kernel exploded" in proc.stderr
    assert not (workdir / "logs").exists()


def test_debug_shows_the_traceback_of_an_rnnlab_error(workdir: Path):
    code = PATCHED.format(body="from rnnlab.errors import ConfigError; raise ConfigError('x: expected 1, got 2')")
    proc = run_cli(["--debug", "info"], workdir, code)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "ConfigError: x: expected 1, got 2" in proc.stderr


def test_ctrl_c_exits_130_with_one_line(workdir: Path):
    proc = run_cli(["info"], workdir, PATCHED.format(body="raise KeyboardInterrupt"))
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.splitlines() == ["rnnlab: interrupted"]


def test_help_exits_0_on_stdout(workdir: Path):
    proc = run_cli(["train", "lm", "--help"], workdir)
    assert proc.returncode == 0 and proc.stderr == ""
    assert "Usage: rnnlab train lm" in proc.stdout and "--hidden" in proc.stdout


def test_help_paragraphs_are_reflowed_and_lists_keep_their_lines(capsys, monkeypatch):
    """Typer prints a later paragraph of a docstring with the source's line breaks: they are
    joined, except after a list item of a later paragraph (a line ending in ":" or ";")."""
    from rnnlab.cli.main import _help_text, main

    doc = """First paragraph (the summary);
        one line.

        A paragraph wrapped
        in the source.

        Options by task:
        classify: --csv;
        lm: --text."""
    assert _help_text(doc) == ("First paragraph (the summary); one line.\n\nA paragraph wrapped in the source.\n\n"
                               "Options by task:\nclassify: --csv;\nlm: --text.")
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setenv("TERMINAL_WIDTH", "400")
    assert main(["translate", "--help"]) == 0
    assert "natural-log probability given the source" in capsys.readouterr().out


def test_the_command_line_imports_no_heavy_library_before_a_command_runs(workdir: Path):
    """``rnnlab --help`` (and every usage error) stays fast because neither the package nor the
    command modules import torch, Lightning, matplotlib or numpy at import."""
    code = ("import sys; import rnnlab.cli.main; "
            "print(sorted({'torch', 'lightning', 'matplotlib', 'numpy', 'pandas'} & set(sys.modules)))")
    proc = run_cli([], workdir, code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_cell_option_help_names_every_cell_option():
    from rnnlab.cli.train import CELL_OPTION_HELP
    from rnnlab.tasks.cell_options import KEYS

    assert [k for k in KEYS if f"{k}=" not in CELL_OPTION_HELP] == []


def test_a_bare_json_on_bench_means_standard_output():
    from rnnlab.cli.main import _bare_json_means_stdout as bare

    assert bare(["bench", "--json"]) == ["bench", "--json", "-"]
    assert bare(["--debug", "bench", "--json", "--quick"]) == ["--debug", "bench", "--json", "-", "--quick"]
    for given in (["bench", "--json", "out.json"], ["bench", "--json", "-", "--quick"], ["bench", "--json=x.json"],
                  ["evaluate", "run", "--json"], ["train", "lm", "--json", "--quiet"]):
        assert bare(given) == given
