"""``rnnlab train toy|probe|seq2seq|speech|lm|forecast --json``: after training, stdout is one JSON
object (run folder, stop reason, steps, best step, validation metrics), with and without
``--quiet``; the status lines stay on stderr. (classify: tests/cli/test_reliability.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rnnlab.cli.main import main

TASKS = ("toy", "probe", "seq2seq", "speech", "lm", "forecast")
WORDS = ["abc", "bca", "cab", "aab", "bbc", "cca", "abca", "bcab", "acb", "bac", "cba", "aaa", "ccb", "bab", "cac",
         "abab", "baba", "caca", "acac", "bcbc"]


def run_cli(capfd, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return (0 if code is None else code), out, err


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("s2s-json") / "rev.tsv"
    data.write_text("source\ttarget\n" + "".join(f"{w}\t{w[::-1]}\n" for w in WORDS))
    return data


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> Path:
    pytest.importorskip("soundfile")
    pytest.importorskip("soxr")
    from tests.conftest import fsdd_subset

    return fsdd_subset(tmp_path_factory.mktemp("fsdd-json"), "05", ("theo", "nicolas"), (1, 8, 9, 10))


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("fc-json") / "s.csv"
    data.write_text("t,y\n" + "".join(f"{i},{(i % 7) / 7:.3f}\n" for i in range(80)))
    return data


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("lm-json") / "t.txt"
    data.write_text("the quick brown fox jumps over the lazy dog\n" * 30)
    return data


def argv_for(task: str, request) -> list:
    if task == "lm":
        return ["train", "lm", "--text", request.getfixturevalue("text"), "--hidden", "8", "--bptt", "8",
                "--batch-size", "4", "--max-steps", "2", "--eval-every", "1"]
    if task == "forecast":
        return ["train", "forecast", "--csv", request.getfixturevalue("series"), "--target", "y", "--context", "8",
                "--horizon", "2", "--hidden", "8", "--max-steps", "2"]
    if task == "toy":
        return ["train", "toy", "--hidden-size", "4", "--max-steps", "2"]
    if task == "probe":
        return ["train", "probe", "--probe", "adding", "--length", "8", "--hidden", "4", "--batch-size", "8",
                "--steps-per-epoch", "2", "--max-steps", "2"]
    if task == "seq2seq":
        return ["train", "seq2seq", "--train", request.getfixturevalue("pairs"), "--embed", "8", "--hidden", "16",
                "--batch-size", "8", "--max-steps", "2"]
    return ["train", "speech", "--audio-dir", request.getfixturevalue("recordings"), "--mode", "words", "--cell", "gru",
            "--hidden", "8", "--layers", "1", "--batch-size", "8", "--valid-frac", "0.25", "--max-steps", "2",
            "--unidirectional"]


@pytest.mark.parametrize("quiet", [False, True], ids=["loud", "quiet"])
@pytest.mark.parametrize("task", TASKS)
def test_train_json_prints_one_object(capfd, tmp_path, request, task, quiet):
    run = tmp_path / "run"
    code, out, err = run_cli(capfd, *argv_for(task, request), "--no-report", "--json", "--out", run,
                             *(["--quiet"] if quiet else []))
    assert code == 0, err
    res = json.loads(out)                      # the whole of stdout: one object, nothing else
    assert isinstance(res, dict) and out.strip().count("\n") == 0
    assert {"run", "stop_reason", "steps", "best_step", "valid"} <= set(res)
    assert res["run"] == str(run) and res["stop_reason"] == "max_steps"
    assert type(res["steps"]) is int and res["steps"] == 2
    assert res["best_step"] is None or type(res["best_step"]) is int
    assert res["valid"] and ("mae" if task == "forecast" else "loss") in res["valid"]
    assert all(v is None or isinstance(v, (int, float)) for v in res["valid"].values())
    if task == "seq2seq":
        assert type(res["valid"]["n"]) is int
    if task == "lm":
        assert type(res["valid"]["tokens"]) is int        # counts as ints in every --json (was 8930.0)
    if task == "speech":
        assert type(res["test"]["n"]) is int and "acc" in res["test"]
    # status lines on stderr unless --quiet
    assert ("rnnlab: stopped (max_steps) at step 2" in err) is not quiet


def test_lm_stopped_before_its_first_evaluation_still_reports_valid_scores(capfd, tmp_path, request):
    """--max-steps inside the first epoch and no --eval-every: no scheduled evaluation ran, so the
    last step is evaluated, is "best", and the summary scores it (the valid scores were missing
    once: "valid": {})."""
    argv = argv_for("lm", request)
    argv = argv[:argv.index("--eval-every")]
    code, out, err = run_cli(capfd, *argv, "--no-report", "--json", "--quiet", "--out", tmp_path / "run")
    assert code == 0, err
    res = json.loads(out)
    assert res["best_step"] == res["steps"] and res["valid"]["loss"] > 0 and type(res["valid"]["tokens"]) is int
    code, out, err = run_cli(capfd, "evaluate", tmp_path / "run", "--split", "valid", "--json")
    assert json.loads(out)["loss"] == pytest.approx(res["valid"]["loss"])


@pytest.mark.parametrize("task", ("toy", "probe"))
def test_train_without_json_prints_nothing_on_stdout(capfd, tmp_path, request, task):
    """toy and probe had no summary of their own: without --json their stdout stays empty."""
    code, out, err = run_cli(capfd, *argv_for(task, request), "--no-report", "--out", tmp_path / "run")
    assert code == 0, err
    assert out == "" and "rnnlab: stopped (max_steps)" in err


def test_seq2seq_without_json_keeps_its_summary(capfd, tmp_path, pairs):
    code, out, err = run_cli(capfd, "train", "seq2seq", "--train", pairs, "--embed", "8", "--hidden", "16",
                             "--batch-size", "8", "--max-steps", "2", "--no-report", "--out", tmp_path / "run")
    assert code == 0, err
    assert out.startswith(f"seq2seq: run {tmp_path / 'run'}, best checkpoint, validation split (")
    code, out, _ = run_cli(capfd, "train", "seq2seq", "--train", pairs, "--embed", "8", "--hidden", "16",
                           "--batch-size", "8", "--max-steps", "2", "--no-report", "--quiet", "--out", tmp_path / "q")
    assert code == 0 and out == ""


@pytest.mark.parametrize("task", ("toy", "probe", "seq2seq", "speech", "lm", "classify", "forecast"))
def test_every_train_command_lists_json(capfd, task):
    code, out, _ = run_cli(capfd, "train", task, "--help")
    assert code == 0 and "--json" in out


def test_json_number_counts_as_ints_nonfinite_as_null_everywhere():
    """The one converter every --json goes through: counts by name, NaN/inf as null (JSON has
    neither), inside nested dicts and lists (baseline tables, per-window rows) too."""
    from rnnlab.cli.train import json_number

    got = json_number({"n": 12.0, "tokens": 8930.0, "valid_tokens": 5.0, "loss": float("nan"), "acc": 1.0,
                       "rows": [{"name": "model", "acc": float("inf"), "n": 3.0}], "scores": [0.5, float("nan")]})
    assert got == {"n": 12, "tokens": 8930, "valid_tokens": 5, "loss": None, "acc": 1.0,
                   "rows": [{"name": "model", "acc": None, "n": 3}], "scores": [0.5, None]}
    assert type(got["n"]) is int and type(got["acc"]) is float
    json.dumps(got, allow_nan=False)
