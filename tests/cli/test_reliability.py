"""Nothing a user runs destroys their data: each bad invocation ends in one line and a non-zero
exit, leaves every input file byte-identical and the run folder usable; the cases that need
real processes (two writers at once, a run killed with SIGKILL) run as subprocesses.

Most cases go through ``rnnlab.cli.main.main`` in this process (the command-line parser, the
command bodies and the error handling are the same; only the interpreter start-up is saved, a
few seconds per case). rnnlab errors exit 1 or 2 (the exit code of rnnlab errors is being
changed from 2 to 1), so both are accepted; what each case pins is that the failure is an
rnnlab error of one line, without a traceback.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnlab.cli.main import main
from rnnlab.errors import CheckpointError

ERROR = (1, 2)   # an rnnlab error (see the module docstring)
SRC = str(Path(__file__).resolve().parents[2] / "src")


def snapshot(*roots: Path) -> dict[str, str]:
    """SHA-256 of every file under ``roots`` (the lock file's PID line aside)."""
    out = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            if p.name not in (".lock", ".rnnlab.lock"):
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run_cli(capfd, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return (0 if code is None else code), out, err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("rnnlab: resume")]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("rnnlab: error: "), err
    return lines[0]


def usable(run: Path) -> None:
    """The run still loads (config, best checkpoint, weights) and evaluates."""
    from rnnlab.train import evaluate_run, load_run

    load_run(run)
    if json.loads((run / "config.json").read_text())["task"] in ("toy", "lm"):
        assert math.isfinite(evaluate_run(run)["loss"])


# ----------------------------------------------------------------------------- data and runs


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Small data files and four trained runs (classify, forecast, lm, toy), trained once."""
    d = tmp_path_factory.mktemp("lab")
    rows = [("good nice film", "pos"), ("bad awful film", "neg"), ("great fun", "pos"), ("dull boring", "neg")] * 6
    (d / "cls.csv").write_text("text,label\n" + "\n".join(f"{t},{y}" for t, y in rows) + "\n")
    y = 3 + np.sin(np.arange(90) * 2 * np.pi / 8)
    (d / "ser.csv").write_text("t,y\n" + "\n".join(f"{i},{v:.4f}" for i, v in enumerate(y)) + "\n")
    (d / "text.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 30)
    (d / "other.txt").write_text("a completely different text for another model\n" * 30)
    runs = {
        "classify": ["train", "classify", "--train", d / "cls.csv", "--hidden", "8", "--embed", "8",
                     "--max-epochs", "1", "--quiet", "--no-report"],
        "forecast": ["train", "forecast", "--csv", d / "ser.csv", "--target", "y", "--time-col", "t", "--context", "8",
                     "--horizon", "3", "--hidden", "8", "--max-epochs", "1", "--quiet", "--no-report"],
        "lm": ["train", "lm", "--text", d / "text.txt", "--hidden", "16", "--bptt", "8", "--batch-size", "4",
               "--max-steps", "2", "--quiet", "--no-report"],
        "toy": ["train", "toy", "--hidden-size", "4", "--max-steps", "3", "--checkpoint-every", "1",
                "--quiet", "--no-report", "--threads", "1"],
    }
    for name, argv in runs.items():
        assert main([str(a) for a in argv] + ["--out", str(d / f"run-{name}")]) in (0, None), name
    return d


@pytest.fixture
def copy_of(lab, tmp_path):
    """A private copy of one of the lab's runs (cases that write into a run must not share it)."""
    def make(name: str) -> Path:
        dst = tmp_path / f"run-{name}"
        shutil.copytree(lab / f"run-{name}", dst)
        return dst
    return make


# ----------------------------------------------------------------------------- outputs


def test_outputs_never_overwrite_inputs_or_run_files(lab, capfd, tmp_path):
    clsrun, fcrun = lab / "run-classify", lab / "run-forecast"
    (tmp_path / "folder").mkdir()
    (tmp_path / "unrelated.csv").write_text("keep me\n")
    before = snapshot(lab)
    cases = [
        (["predict", clsrun, "--csv", lab / "cls.csv", "--out", lab / "cls.csv"], "the input file itself"),
        (["forecast", fcrun, "--csv", lab / "ser.csv", "--horizon", "3", "--out", lab / "ser.csv"], "the input file itself"),
        (["backtest", fcrun, "--csv", lab / "ser.csv", "--windows", "2", "--out", fcrun / "config.json"], "outside the run folder"),
        (["predict", clsrun, "--csv", lab / "cls.csv", "--out", clsrun / "preds.csv"], "outside the run folder"),
        (["export", clsrun, "--onnx", clsrun / "model.onnx"], "outside the run folder"),
        (["predict", clsrun, "--csv", lab / "cls.csv", "--out", tmp_path / "folder"], "got a folder"),
        (["forecast", fcrun, "--csv", lab / "ser.csv", "--horizon", "3", "--out", tmp_path / "folder"], "got a folder"),
        (["export", clsrun, "--onnx", tmp_path / "folder"], "got a folder"),
        (["predict", clsrun, "--csv", lab / "cls.csv", "--out", tmp_path / "unrelated.csv"], "pass --force"),
        (["predict", clsrun, "--csv", lab / "cls.csv", "--out", "/proc/rnnlab-preds.csv"], "expected a writable folder"),
        (["export", clsrun, "--onnx", "/proc/rnnlab.onnx"], "expected a writable folder"),
    ]
    for argv, want in cases:
        code, _, err = run_cli(capfd, *argv)
        assert code in ERROR, (argv, err)
        assert want in one_error_line(err), (argv, err)
    assert snapshot(lab) == before
    assert (tmp_path / "unrelated.csv").read_text() == "keep me\n"
    usable(clsrun)
    usable(fcrun)
    # --force replaces an unrelated file, atomically (no temporary file left beside it)
    code, _, err = run_cli(capfd, "predict", clsrun, "--csv", lab / "cls.csv", "--out", tmp_path / "unrelated.csv", "--force")
    assert code == 0, err
    assert (tmp_path / "unrelated.csv").read_text().startswith("line,label,pred")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    from rnnlab.errors import OutputError
    from rnnlab.outputs import atomic_open

    target = tmp_path / "preds.csv"
    target.write_text("old\n")
    with pytest.raises(OutputError, match="previous file there is unchanged"):
        with atomic_open(target) as fh:
            fh.write("new, half written")
            raise OSError(28, "No space left on device")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["preds.csv"]


def test_metrics_on_a_full_disk_is_one_error(tmp_path):
    from rnnlab.train.metrics import MetricsLog

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    log = MetricsLog(tmp_path)
    (tmp_path / "metrics.jsonl").unlink()
    (tmp_path / "metrics.jsonl").symlink_to("/dev/full")
    with pytest.raises(CheckpointError, match="No space left on device.*--resume"):
        log.log({"kind": "train", "step": 1, "loss": 1.0})


# ----------------------------------------------------------------------------- export


@pytest.mark.parametrize("bidirectional,pool", [(True, "last"), (False, "mean")])
def test_export_classifier_matches_onnxruntime_without_the_data(tmp_path, capfd, bidirectional, pool):
    """A classifier exports with its lengths input, from the run folder alone (training data
    deleted), and ONNX Runtime gives the model's logits on another batch size and lengths."""
    ort = pytest.importorskip("onnxruntime")
    from rnnlab.train import load_run

    data = tmp_path / "d.csv"
    rows = [("good film", "pos"), ("bad film", "neg"), ("a great fun film", "pos"), ("so dull", "neg")] * 4
    data.write_text("text,label\n" + "\n".join(f"{t},{y}" for t, y in rows) + "\n")
    run = tmp_path / "run"
    argv = ["train", "classify", "--train", data, "--hidden", "6", "--embed", "5", "--max-epochs", "1", "--pool", pool,
            "--quiet", "--no-report", "--out", run] + (["--bidirectional"] if bidirectional else [])
    assert run_cli(capfd, *argv)[0] == 0
    data.unlink()
    code, _, err = run_cli(capfd, "export", run, "--onnx", tmp_path / "m.onnx")
    assert code == 0, err
    _, model, _ = load_run(run)
    x = torch.randint(0, model.embed.num_embeddings, (7, 4))
    lengths = torch.tensor([3, 7, 1, 5])
    with torch.no_grad():
        want = model(x, lengths)
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy(), "lengths": lengths.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-5, rtol=1e-5)


def test_export_every_task_from_another_directory(lab, capfd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("classify", "forecast", "lm", "toy"):
        code, out, err = run_cli(capfd, "export", lab / f"run-{name}", "--onnx", f"{name}.onnx")
        assert code == 0 and (tmp_path / f"{name}.onnx").stat().st_size > 0, (name, err)


# ----------------------------------------------------------------------------- relocatable runs


def test_a_run_moved_with_its_data_still_works_and_changed_data_is_refused(lab, capfd, tmp_path, monkeypatch):
    moved = tmp_path / "project"
    moved.mkdir()
    shutil.copy(lab / "text.txt", moved / "text.txt")
    # a run trained from inside the project folder with a relative path
    monkeypatch.chdir(moved)
    argv = ["train", "lm", "--text", "text.txt", "--hidden", "8", "--bptt", "8", "--batch-size", "4",
            "--max-steps", "2", "--quiet", "--no-report", "--out", "run"]
    assert run_cli(capfd, *argv)[0] == 0
    shutil.move(str(moved), str(tmp_path / "renamed"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run = tmp_path / "renamed" / "run"
    code, out, err = run_cli(capfd, "evaluate", run, "--json")
    assert code == 0, err
    assert run_cli(capfd, "train", "lm", "--resume", run, "--max-steps", "3", "--quiet")[0] == 0
    # the data changed: resuming (or scoring the run's own split) is refused in one line
    (tmp_path / "renamed" / "text.txt").write_text("the quick brown fox jumps over the lazy cat\n" * 30)
    before = snapshot(run)
    for argv in (["train", "lm", "--resume", run, "--max-steps", "4"], ["evaluate", run]):
        code, _, err = run_cli(capfd, *argv)
        assert code in ERROR and "expected the data the run was trained on" in one_error_line(err)
    assert snapshot(run) == before
    # the data gone: the message says where it was expected
    (tmp_path / "renamed" / "text.txt").unlink()
    code, _, err = run_cli(capfd, "train", "lm", "--resume", run, "--max-steps", "4")
    assert code in ERROR and "moved or deleted since training" in one_error_line(err)


def test_resume_accepts_moved_data_with_the_same_content(lab, copy_of, capfd, tmp_path):
    run = copy_of("lm")
    shutil.copy(lab / "text.txt", tmp_path / "moved.txt")
    code, _, err = run_cli(capfd, "train", "lm", "--resume", run, "--text", tmp_path / "moved.txt", "--max-steps", "3",
                           "--quiet")
    assert code == 0, err
    assert "(same content)" in err and "max_steps 2 -> 3" in err
    assert json.loads((run / "config.json").read_text())["data_files"]["text"]["path"] == str(tmp_path / "moved.txt")


# ----------------------------------------------------------------------------- resume rules


def test_resume_refuses_contradicting_flags_in_one_line(lab, copy_of, capfd):
    lm, toy = copy_of("lm"), copy_of("toy")
    before = snapshot(lab / "cls.csv", lm, toy)
    cases = [
        (["train", "classify", "--resume", lm, "--train", lab / "cls.csv"], "expected a run of task 'classify', got a 'lm' run"),
        (["train", "lm", "--resume", lm, "--hidden", "999", "--text", lab / "other.txt"],
         "--hidden-size 999 (the run has 16)"),
        (["train", "lm", "--resume", lm, "--lr", "0.5", "--cell", "gru"], "--cell 'gru' (the run has 'lstm'); --lr 0.5"),
        (["train", "toy", "--resume", toy, "--overwrite"], "expected it without --resume"),
        (["train", "toy", "--resume", toy, "--out", lab / "elsewhere"], "expected nothing or the --resume folder"),
    ]
    for argv, want in cases:
        code, _, err = run_cli(capfd, *argv)
        assert code in ERROR and want in one_error_line(err), (argv, err)
    assert snapshot(lab / "cls.csv", lm, toy) == before
    # --text other.txt: a different file (by content) is named as the contradiction too
    code, _, err = run_cli(capfd, "train", "lm", "--resume", lm, "--text", lab / "other.txt")
    line = one_error_line(err)
    assert code in ERROR and "expected the data the run was trained on" in line and "got a different file" in line
    # the flags that may change are applied and said so
    code, _, err = run_cli(capfd, "train", "toy", "--resume", toy, "--max-steps", "5", "--keep-last", "1", "--quiet")
    assert code == 0 and "applying keep_last 3 -> 1, max_steps 3 -> 5" in err, err
    usable(toy)
    # at its budget, nothing is trained, and that is said (the run's first --quiet is not this command's)
    # (with --quiet too, and with the budget it has given again)
    for extra in ([], ["--quiet"], ["--max-steps", "5", "--quiet"]):
        code, _, err = run_cli(capfd, "train", "toy", "--resume", toy, "--no-report", *extra)
        assert code == 0 and ("rnnlab: nothing to train: the run had already stopped (max_steps) at step 5; give a "
                              "larger --max-steps to continue it") in err and "applying" not in err, (extra, err)


def test_an_existing_run_names_both_ways_forward(lab, copy_of, capfd, tmp_path):
    toy = copy_of("toy")
    argv = ["train", "toy", "--hidden-size", "4", "--max-steps", "2", "--quiet", "--no-report", "--out", toy]
    before = snapshot(toy)
    code, _, err = run_cli(capfd, *argv)
    line = one_error_line(err)
    assert code in ERROR and f"--resume {toy}" in line and "--overwrite" in line
    assert snapshot(toy) == before
    # --overwrite refuses a folder that holds anything but a run's files, and deletes nothing
    (toy / "notes.txt").write_text("mine")
    before = snapshot(toy)
    code, _, err = run_cli(capfd, *argv, "--overwrite")
    assert code in ERROR and "notes.txt" in one_error_line(err) and snapshot(toy) == before
    (toy / "notes.txt").unlink()
    code, _, err = run_cli(capfd, *argv, "--overwrite")
    assert code == 0, err
    usable(toy)
    records = [json.loads(ln) for ln in (toy / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2]   # a fresh run, not the old one continued


def test_no_run_inside_another_runs_folder(copy_of, capfd):
    """A new run inside another run's folder is refused (that run's files belong to it), and
    --overwrite of a folder that holds a run below it deletes nothing."""
    toy = copy_of("toy")
    before = snapshot(toy)
    argv = ["train", "toy", "--hidden-size", "4", "--max-steps", "2", "--quiet", "--no-report", "--out"]
    for inner in (toy / "plots" / "new", toy / "checkpoints" / "new"):
        code, _, err = run_cli(capfd, *argv, inner)
        assert code in ERROR and f"inside the run folder {toy}" in one_error_line(err), err
        code, _, err = run_cli(capfd, *argv, inner, "--overwrite")
        assert code in ERROR and f"inside the run folder {toy}" in one_error_line(err), err
    assert snapshot(toy) == before
    # a run that sits below another folder's files (made before this rule): --overwrite keeps it
    outer = toy.parent / "outer"
    (outer / "plots").mkdir(parents=True)
    toy.rename(outer / "plots" / "inner")
    before = snapshot(outer)
    code, _, err = run_cli(capfd, *argv, outer, "--overwrite")
    assert code in ERROR and "nothing was deleted" in one_error_line(err) and snapshot(outer) == before


def test_overwrite_deletes_only_what_a_run_wrote(copy_of, capfd, tmp_path):
    """--overwrite clears a folder only if rnnlab wrote it (its config.json) and it holds nothing
    else, in the run's subfolders too; a symlinked subfolder is unlinked, its target kept; a
    user's own ``.lock`` is neither truncated nor counted as the run's lock."""
    argv = ["train", "toy", "--hidden-size", "4", "--max-steps", "2", "--quiet", "--no-report", "--out"]
    user = tmp_path / "user"
    (user / "plots" / "2023").mkdir(parents=True)
    (user / "plots" / "2023" / "a.png").write_text("fig")
    (user / "config.json").write_text('{"mine": 1}')
    (user / ".lock").write_text("info\n")
    before = snapshot(user)
    for extra in ([], ["--overwrite"]):
        code, _, err = run_cli(capfd, *argv, user, *extra)
        line = one_error_line(err)
        assert code in ERROR and "--resume" not in line and snapshot(user) == before, err
    assert "a config.json written by rnnlab" in line and "nothing was deleted" in line
    assert (user / ".lock").read_text() == "info\n" and not (user / ".rnnlab.lock").exists()
    toy = copy_of("toy")
    for mine, named in ((toy / "checkpoints" / "NOTES.txt", "checkpoints/NOTES.txt"),
                        (toy / "plots" / "mine" / "keep.png", "plots/mine")):
        mine.parent.mkdir(parents=True, exist_ok=True)
        mine.write_text("mine")
        before = snapshot(toy)
        code, _, err = run_cli(capfd, *argv, toy, "--overwrite")
        assert code in ERROR and named in one_error_line(err) and snapshot(toy) == before, err
        shutil.rmtree(mine.parent) if mine.parent.name == "mine" else mine.unlink()
    # a run of an earlier release holds the old lock name; rnnlab's own leftovers go with the run
    (toy / ".lock").write_text("4242\n")
    (toy / ".trash-checkpoints-1234abcd").mkdir()
    (toy / ".trash-checkpoints-1234abcd" / "model.safetensors").write_bytes(b"0" * 1000)
    figs = tmp_path / "figs"
    figs.mkdir()
    (figs / "f.png").write_text("keep")
    shutil.rmtree(toy / "plots", ignore_errors=True)
    (toy / "plots").symlink_to(figs, target_is_directory=True)
    code, _, err = run_cli(capfd, *argv, toy, "--overwrite")
    assert code == 0, err
    assert (figs / "f.png").read_text() == "keep" and not (toy / "plots").is_symlink()
    assert not [p for p in toy.iterdir() if p.name.startswith(".trash-")]
    usable(toy)
    code, _, err = run_cli(capfd, *argv, toy, "--overwrite")     # and again: the old lock file is no obstacle
    assert code == 0, err


def test_outputs_refuse_links_into_a_run_and_the_runs_training_data(lab, copy_of, capfd, tmp_path):
    clsrun = copy_of("classify")
    (tmp_path / "ck").symlink_to(next((clsrun / "checkpoints").iterdir()), target_is_directory=True)
    (tmp_path / "new.csv").write_text("text,label\ngood,pos\n")
    before = snapshot(clsrun, lab / "cls.csv")
    cases = [
        (["export", clsrun, "--onnx", tmp_path / "ck" / "model.safetensors", "--force"], "outside the run folder"),
        (["evaluate", clsrun, "--confusion", lab / "cls.csv", "--force"], "the run's training data"),
        (["predict", clsrun, "--csv", tmp_path / "new.csv", "--out", lab / "cls.csv", "--force"],
         "the run's training data"),
        (["export", clsrun, "--onnx", lab / "cls.csv", "--force"], "the run's training data"),
    ]
    for argv, want in cases:
        code, _, err = run_cli(capfd, *argv)
        assert code in ERROR and want in one_error_line(err), (argv, err)
    assert snapshot(clsrun, lab / "cls.csv") == before
    usable(clsrun)


def test_a_single_process_locks_its_run_whatever_the_launcher_variables(copy_of):
    """RANK/SLURM_PROCID say which rank of a DDP job a process is; a one-device training is the
    only writer whatever they say, so it takes the lock (a second writer under srun is refused)."""
    run = copy_of("toy")
    argv = ["train", "toy", "--resume", run, "--max-steps", 12, "--checkpoint-every", "1", "--quiet"]
    slow = {"RNNLAB_TEST_CHECKPOINT_PAUSE": "0.5"}
    # started together (the pauses keep the winner writing when the other reaches the lock)
    first = _cli(*argv, env=slow)
    second = _cli(*argv, env={**slow, "SLURM_PROCID": "1", "RANK": "1"})
    results = [(p, *p.communicate(timeout=300)) for p in (first, second)]
    assert sorted(p.returncode for p, _, _ in results)[0] == 0
    refused = [(p, e) for p, _, e in results if p.returncode in ERROR]
    assert len(refused) == 1 and "holding its lock" in refused[0][1], [(p.returncode, e) for p, _, e in results]
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"]
    assert steps == sorted(set(steps))


@pytest.mark.parametrize("task", ["classify", "lm"])
def test_train_json_stdout_is_one_json_object(lab, capfd, tmp_path, task):
    """Without --quiet, `train ... --json` keeps its status lines on stderr: stdout parses as JSON."""
    argv = {"classify": ["train", "classify", "--train", lab / "cls.csv", "--hidden", "8", "--embed", "8",
                         "--max-steps", "2"],
            "lm": ["train", "lm", "--text", lab / "text.txt", "--hidden", "16", "--bptt", "8", "--batch-size", "4",
                   "--max-steps", "2"]}[task]
    code, out, err = run_cli(capfd, *argv, "--no-report", "--json", "--out", tmp_path / "run")
    assert code == 0, err
    res = json.loads(out)
    assert isinstance(res, dict) and "rnnlab: stopped (max_steps) at step 2" in err
    # the keys every train command's --json has
    assert res["run"] == str(tmp_path / "run") and res["steps"] == 2 and type(res["steps"]) is int
    assert res["stop_reason"] == "max_steps" and "best_step" in res


def test_checkpoint_of_another_run_is_refused(copy_of, capfd):
    """--checkpoint names one of RUN's own checkpoints (a path or a step folder's name): another
    run's would rebuild that run's task and model under RUN's name."""
    toy, lm = copy_of("toy"), copy_of("lm")
    theirs = sorted((lm / "checkpoints").iterdir())[-1]
    code, _, err = run_cli(capfd, "evaluate", toy, "--checkpoint", theirs, "--json")
    assert code in ERROR and f"expected a checkpoint folder of {toy}" in one_error_line(err), err
    code, _, err = run_cli(capfd, "evaluate", toy, "--checkpoint", "step-99999999")
    assert code in ERROR and "got no such folder" in one_error_line(err), err
    mine = sorted((toy / "checkpoints").iterdir())[0]
    for which in (mine, mine.name):                     # its own: by path, or by name under RUN/checkpoints
        code, out, err = run_cli(capfd, "evaluate", toy, "--checkpoint", which, "--json")
        assert code == 0 and isinstance(json.loads(out), dict), err


def test_out_dot_names_a_free_folder(tmp_path, capfd, monkeypatch):
    """--out . in a folder with files: one error line whose suggestion is a sibling of the folder."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    code, _, err = run_cli(capfd, "train", "toy", "--hidden-size", "4", "--max-steps", "2", "--quiet", "--out", ".")
    assert code in ERROR and f"free: {tmp_path / 'work-2'}" in one_error_line(err), err
    assert sorted(p.name for p in work.iterdir()) == ["notes.txt"]


# ----------------------------------------------------------------------------- edited files


@pytest.mark.parametrize("edit,where", [
    (("meta", "best_step", "abc"), "best_step: expected an integer"),
    (("meta", "task_config", None), "task_config: expected a JSON object"),
    (("meta", "step", "ten"), "step: expected an integer >= 0"),
    (("config", "task_config.hidden", "abc"), "config.json: cannot rebuild the 'lm' task"),
    (("config", "task", 3), "task: expected a JSON string"),
])
def test_edited_run_files_are_named(copy_of, capfd, edit, where):
    run = copy_of("lm")
    kind, key, value = edit
    if kind == "meta":
        files = sorted((run / "checkpoints").glob("step-*/meta.json"))
    else:
        files = [run / "config.json"]
    for f in files:
        data = json.loads(f.read_text())
        *path, last = key.split(".")
        target = data
        for k in path:
            target = target[k]
        target[last] = value
        f.write_text(json.dumps(data))
    for argv in (["train", "lm", "--resume", run, "--max-steps", "3"], ["generate", run, "--length", "3"],
                 ["export", run, "--onnx", run.parent / "m.onnx"]):
        code, _, err = run_cli(capfd, *argv)
        if kind == "config" and argv[0] == "export":
            assert code == 0, err  # export needs only the checkpoint's own meta.json
            continue
        line = one_error_line(err)
        assert code in ERROR and where in line, (argv, err)
        assert "--hidden" not in line.split("cannot rebuild")[0]


# ----------------------------------------------------------------------------- numbers and messages


def test_huge_values_are_reported_not_a_json_crash(tmp_path, capfd):
    wide = tmp_path / "wide.csv"
    wide.write_text("label,a,b,c\n" + "\n".join(f"{i % 2},1e39,{i},2" for i in range(12)) + "\n")
    code, _, err = run_cli(capfd, "train", "classify", "--train", wide, "--input", "numeric", "--max-epochs", "1",
                           "--quiet", "--no-report", "--out", tmp_path / "r1")
    assert code in ERROR and "float32's range" in one_error_line(err)
    series = tmp_path / "big.csv"
    series.write_text("y\n" + "\n".join(f"{(1 + (i % 5)) * 1e300:.6g}" for i in range(60)) + "\n")
    code, _, err = run_cli(capfd, "train", "forecast", "--csv", series, "--target", "y", "--context", "8", "--horizon", "2",
                           "--hidden", "4", "--max-epochs", "1", "--quiet", "--no-report", "--out", tmp_path / "r2")
    assert code == 0 or "expected" in one_error_line(err), err
    assert "Traceback" not in err and "JSON compliant" not in err


def test_nonfinite_json_is_named():
    from rnnlab.errors import NonFiniteError
    from rnnlab.train.checkpoint import dumps_json

    with pytest.raises(NonFiniteError, match=r"task_metadata.scaler.std\[1\]=inf"):
        dumps_json({"task_metadata": {"scaler": {"std": [1.0, float("inf")]}}}, "meta.json")


def test_messages_name_columns_flags_and_encodings(lab, capfd, tmp_path):
    gap = tmp_path / "gap.csv"
    gap.write_text("t,y\n" + "\n".join(f"{i},{'' if i == 40 else i % 7}" for i in range(60)) + "\n")
    code, _, err = run_cli(capfd, "train", "forecast", "--csv", gap, "--target", "y", "--context", "8", "--horizon", "2",
                           "--max-epochs", "1", "--quiet", "--out", tmp_path / "r")
    line = one_error_line(err)
    assert code in ERROR and "column 'y'" in line and "--missing" in line
    # forecast/backtest/predict take --missing too, so the advice can be followed there
    fcrun = lab / "run-forecast"
    gap2 = tmp_path / "gap2.csv"
    gap2.write_text("t,y\n" + "\n".join(f"{i},{'' if i == 20 else i % 7}" for i in range(30)) + "\n")
    code, _, err = run_cli(capfd, "forecast", fcrun, "--csv", gap2, "--horizon", "3", "--out", tmp_path / "f.csv")
    assert code in ERROR and "--missing" in one_error_line(err)
    code, _, err = run_cli(capfd, "forecast", fcrun, "--csv", gap2, "--horizon", "3", "--missing", "interpolate",
                           "--out", tmp_path / "f.csv")
    assert code == 0, err
    # UTF-16: the byte-order mark is recognised and the advice names the encoding
    u16 = tmp_path / "u16.csv"
    u16.write_bytes(codecs.BOM_UTF16_LE + (lab / "cls.csv").read_text().encode("utf-16-le"))
    base = ["train", "classify", "--train", u16, "--hidden", "4", "--embed", "4", "--max-epochs", "1", "--quiet",
            "--no-report"]
    code, _, err = run_cli(capfd, *base, "--out", tmp_path / "u1")
    assert code in ERROR and "--encoding utf-16" in one_error_line(err)
    code, _, err = run_cli(capfd, *base, "--encoding", "utf-16", "--out", tmp_path / "u2")
    assert code == 0, err
    t16 = tmp_path / "t16.txt"
    t16.write_bytes((lab / "text.txt").read_text().encode("utf-16"))
    code, _, err = run_cli(capfd, "train", "lm", "--text", t16, "--max-steps", "1", "--out", tmp_path / "u3")
    assert code in ERROR and "--encoding utf-16" in one_error_line(err)


def test_confusions_are_summarised_and_match_the_dense_matrix(tmp_path):
    from rnnlab.tasks.classify import classification_metrics, flat_metrics, format_metrics, write_confusion

    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 6, 200), rng.integers(0, 6, 200)
    m = classification_metrics(y, p, 6)
    dense = np.zeros((6, 6), dtype=int)
    np.add.at(dense, (y, p), 1)
    assert m["confusion"] == dense.tolist()
    assert sorted((t, q, c) for t, q, c in m["cells"]) == [(t, q, dense[t, q]) for t in range(6) for q in range(6) if dense[t, q]]
    # 10,000 classes: no dense matrix, a few printed lines, the whole matrix on request
    n = 10_000
    y, p = rng.integers(0, n, 3000), rng.integers(0, n, 3000)
    big = classification_metrics(y, p, n)
    names = [f"c{i}" for i in range(n)]
    assert "confusion" not in big and sum(c for _, _, c in big["cells"]) == 3000
    big.update(loss=1.0, majority_acc=0.0, majority_macro_f1=0.0, n=3000, names=names)
    assert len(format_metrics(big, names).splitlines()) < 80
    flat = flat_metrics(big)
    assert not any(k.startswith("confusion[") for k in flat) and "top_confusion[1]" in flat
    rows = write_confusion(big, names, str(tmp_path / "cm.csv"))
    assert rows == len(big["cells"]) and len((tmp_path / "cm.csv").read_text().splitlines()) == rows + 1


# ----------------------------------------------------------------------------- real processes


def _cli(*argv, env=None, cwd=None) -> subprocess.Popen:
    e = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    return subprocess.Popen([sys.executable, "-c", "import sys; from rnnlab.cli.main import main; sys.exit(main())",
                             *map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e,
                            cwd=cwd)


def resume_pair(run: Path, max_steps: int, pause: float = 0.5) -> tuple[subprocess.Popen, subprocess.Popen]:
    """Two identical `--resume` of ``run`` started together; checkpoints paused so that the
    winner still writes when the loser reaches the lock."""
    argv = ["train", "toy", "--resume", run, "--max-steps", max_steps, "--checkpoint-every", "1", "--keep-last", "2",
            "--quiet"]
    slow = {"RNNLAB_TEST_CHECKPOINT_PAUSE": str(pause)}
    return _cli(*argv, env=slow), _cli(*argv, env=slow)


def test_two_writers_one_refusal_and_the_run_survives(copy_of):
    """Of two `--resume` of one run started together, one is refused at once, naming the other's
    PID; the run then resumes cleanly, its metrics in step order with none lost."""
    run = copy_of("toy")
    procs = resume_pair(run, 12)
    results = [(p, *p.communicate(timeout=300)) for p in procs]
    codes = sorted(p.returncode for p, _, _ in results)
    assert codes[0] == 0 and codes[1] in ERROR, [(p.returncode, e) for p, _, e in results]
    (winner, _, _), (loser, _, err) = sorted(results, key=lambda r: r[0].returncode)
    assert one_error_line(err).endswith("wait for it to finish or stop it, then run the command again")
    assert f"PID {winner.pid}" in err
    code = main(["train", "toy", "--resume", str(run), "--max-steps", "14", "--quiet"])
    assert code in (0, None)
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"]
    assert steps == list(range(1, 15))
    usable(run)


def test_runs_started_together_without_out_take_one_folder_each(tmp_path):
    """A sweep launched in parallel without --out: every run trains, each in its own runs/toy[-N]
    (the ones that find their folder taken move on to the next name)."""
    argv = ["train", "toy", "--hidden-size", "4", "--max-steps", "3", "--checkpoint-every", "1", "--quiet", "--no-report"]
    procs = [_cli(*argv, env={"RNNLAB_TEST_CHECKPOINT_PAUSE": "0.3"}, cwd=tmp_path) for _ in range(3)]
    results = [(p.returncode, err) for p in procs for _, err in [p.communicate(timeout=300)]]
    assert [code for code, _ in results] == [0, 0, 0], results
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["toy", "toy-2", "toy-3"]
    for run in (tmp_path / "runs").iterdir():
        steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                 if r["kind"] == "train"]
        assert steps == [1, 2, 3], run
        usable(run)


def test_a_default_folder_taken_meanwhile_moves_the_run_to_the_next_name(tmp_path, monkeypatch):
    """The race itself, made certain: another process creates runs/toy between this one picking the
    name and locking it; the run goes on in runs/toy-2 and the other's folder is left alone."""
    import rnnlab.train as train_api
    from rnnlab.errors import RunFolderTakenError

    monkeypatch.chdir(tmp_path)
    real_fit, tried = train_api.fit, []

    def fit_after_another_process(task, config, out, **kw):
        tried.append(Path(out))
        if len(tried) == 1:
            (Path(out) / "config.json").parent.mkdir(parents=True)
            (Path(out) / "notes.txt").write_text("the other run's\n")
            raise RunFolderTakenError(f"run folder {out}: taken")
        return real_fit(task, config, out, **kw)

    monkeypatch.setattr(train_api, "fit", fit_after_another_process)
    assert main(["train", "toy", "--hidden-size", "4", "--max-steps", "2", "--quiet", "--no-report"]) in (0, None)
    assert tried == [Path("runs/toy"), Path("runs/toy-2")]
    assert (tmp_path / "runs/toy/notes.txt").read_text() == "the other run's\n"
    usable(tmp_path / "runs/toy-2")


def test_new_run_dir_skips_names_just_taken(tmp_path):
    from rnnlab.train import new_run_dir

    (tmp_path / "toy-2").mkdir()
    (tmp_path / "toy-2" / "notes.txt").write_text("mine\n")
    assert new_run_dir(tmp_path / "toy") == tmp_path / "toy"
    assert new_run_dir(tmp_path / "toy", skip=[tmp_path / "toy"]) == tmp_path / "toy-3"


def _toy_until_first_checkpoint(run: Path, max_steps: int, pause: float) -> tuple[list, subprocess.Popen]:
    """A toy run in a process of its own, returned once its first checkpoint is on disk (the
    checkpoints paused ``pause`` s each so that it is still training then), with its argv."""
    argv = ["train", "toy", "--hidden-size", "4", "--max-steps", max_steps, "--checkpoint-every", "1", "--quiet",
            "--no-report", "--out", run]
    proc = _cli(*argv, env={"RNNLAB_TEST_CHECKPOINT_PAUSE": str(pause)})
    t0 = time.monotonic()
    while not list((run / "checkpoints").glob("step-*/meta.json")):
        assert proc.poll() is None and time.monotonic() - t0 < 120, proc.communicate()
        time.sleep(0.05)
    return argv, proc


def test_a_killed_run_says_how_to_go_on(tmp_path):
    """SIGKILL in the middle of a run; the same command again names --resume and --overwrite;
    --resume then continues it (the lock of the dead process does not block)."""
    run = tmp_path / "run"
    argv, proc = _toy_until_first_checkpoint(run, 50, pause=0.2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    again = _cli(*argv)
    _, err = again.communicate(timeout=300)
    line = one_error_line(err)
    assert again.returncode in ERROR and f"--resume {run}" in line and "--overwrite" in line
    assert main(["train", "toy", "--resume", str(run), "--max-steps", "4", "--quiet"]) in (0, None)
    usable(run)


@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_run_stopped_by_a_signal_exits_with_its_status(tmp_path, sig, status):
    """Ctrl-C or SIGTERM: the run checkpoints and stops, and the command exits 130 or 143 (not 0,
    which a script would read as a finished run), saying how to go on."""
    run = tmp_path / "run"
    _, proc = _toy_until_first_checkpoint(run, 100000, pause=0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"rnnlab: interrupted: {sig.name} at step") and f"--resume {run}" in lines[0], err
    usable(run)


def test_the_same_refusals_from_the_installed_entry_point(lab, tmp_path):
    """Three of the cases above through a fresh interpreter each (the real entry point, its
    stderr and exit status), run side by side."""
    clsrun, fcrun = lab / "run-classify", lab / "run-forecast"
    before = snapshot(lab)
    cases = [
        (["predict", clsrun, "--csv", lab / "cls.csv", "--out", lab / "cls.csv"], "the input file itself"),
        (["backtest", fcrun, "--csv", lab / "ser.csv", "--windows", "2", "--out", fcrun / "config.json"], "outside the run folder"),
        (["train", "classify", "--resume", lab / "run-lm", "--train", lab / "cls.csv"], "expected a run of task 'classify'"),
    ]
    procs = [(_cli(*argv), want) for argv, want in cases]
    for proc, want in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode in ERROR and want in one_error_line(err), err
    assert snapshot(lab) == before


def test_export_refuses_the_same_path_for_onnx_and_pt2(copy_of, capfd, tmp_path):
    run = copy_of("toy")
    code, _, err = run_cli(capfd, "export", run, "--onnx", tmp_path / "m.pt2", "--pt2", tmp_path / "m.pt2")
    assert code in ERROR and "expected a path other than --onnx" in err, err
    assert not (tmp_path / "m.pt2").exists()


def test_overwrite_keeps_a_users_dot_files_that_only_look_temporary(copy_of, capfd, tmp_path):
    """rnnlab's own leftovers carry a random tag (.tmp-NAME-1a2b3c4d); a user's .tmp-thesis/ or
    .trash-keep.txt are the user's: a folder holding them is neither free nor cleared."""
    user = tmp_path / "u"
    (user / ".tmp-thesis").mkdir(parents=True)
    (user / ".tmp-thesis" / "ch1.tex").write_text("chapter 1")
    (user / ".trash-keep.txt").write_text("draft")
    argv = ["train", "toy", "--hidden-size", "4", "--max-steps", "1", "--quiet", "--no-report", "--out", user]
    before = snapshot(user)
    for extra in ([], ["--overwrite"]):
        code, _, err = run_cli(capfd, *argv, *extra)
        assert code in ERROR and snapshot(user) == before, err
    run = copy_of("toy")   # rnnlab's own leftover still goes with an --overwrite of its run
    (run / ".tmp-config.json-0a1b2c3d").write_text("{")
    code, _, err = run_cli(capfd, "train", "toy", "--hidden-size", "4", "--max-steps", "1", "--quiet", "--no-report",
                           "--out", run, "--overwrite")
    assert code == 0 and not (run / ".tmp-config.json-0a1b2c3d").exists(), err


def test_overwrite_refuses_a_folder_the_new_run_reads(lab, copy_of, capfd):
    """--overwrite OUT where OUT is the --init-from run of this very command would delete it."""
    lm = copy_of("lm")
    before = snapshot(lm)
    code, _, err = run_cli(capfd, "train", "classify", "--train", lab / "cls.csv", "--init-from", lm,
                           "--max-steps", "1", "--quiet", "--no-report", "--out", lm, "--overwrite")
    assert code in ERROR and "not an input of this run" in one_error_line(err) and "init_from" in err, err
    assert snapshot(lm) == before
    # a language model's text inside the run folder it would overwrite (the lm task's config is its .cfg)
    (lm / "notes.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 30)
    before = snapshot(lm)
    code, _, err = run_cli(capfd, "train", "lm", "--text", lm / "notes.txt", "--hidden", "8", "--bptt", "8",
                           "--batch-size", "4", "--max-steps", "1", "--quiet", "--no-report", "--out", lm, "--overwrite")
    assert code in ERROR and "not an input of this run" in one_error_line(err) and "text" in err, err
    assert snapshot(lm) == before


def test_usage_mistakes_name_the_flag(copy_of, capfd, tmp_path):
    run = copy_of("toy")
    code, _, err = run_cli(capfd, "evaluate", run, "--split", "nope")
    assert code in ERROR and one_error_line(err).startswith("rnnlab: error: --split: expected valid, test or train"), err
    code, _, err = run_cli(capfd, "train", "toy", "--engine", "checkpoint", "--max-steps", "1", "--out", tmp_path / "e")
    assert code in ERROR and "--engine: expected one of auto, fast, reference" in one_error_line(err), err
    code, _, err = run_cli(capfd, "generate", tmp_path / "nowhere")
    assert code in ERROR and one_error_line(err).endswith("nowhere: expected a language-model run, got no such folder"), err


def test_cuda_on_a_machine_without_one_is_a_usage_error_before_any_folder(capfd, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    out = tmp_path / "e3"
    code, _, err = run_cli(capfd, "train", "toy", "--accelerator", "cuda", "--max-steps", "1", "--out", out)
    assert code in ERROR and "a CUDA GPU that torch sees" in one_error_line(err) and "Traceback" not in err, err
    assert not out.exists()


def test_resume_names_the_missing_file_that_was_given(lab, copy_of, capfd, tmp_path):
    run = copy_of("lm")
    code, _, err = run_cli(capfd, "train", "lm", "--resume", run, "--text", tmp_path / "nonexist.txt", "--max-steps", "3")
    assert code in ERROR and "nonexist.txt" in one_error_line(err), err


def test_resume_accepts_the_same_folder_as_an_absolute_out(copy_of, capfd, monkeypatch, tmp_path):
    run = copy_of("toy")
    monkeypatch.chdir(run.parent)
    code, _, err = run_cli(capfd, "train", "toy", "--resume", run.name, "--out", run.resolve(), "--max-steps", "4",
                           "--quiet", "--no-report")
    assert code == 0, err
