"""A run's report drawn again from its folder (``rnnlab report RUN``) is the report training writes."""

from __future__ import annotations

import fcntl
import json
import os

import pytest

from rnnlab.cli.main import main
from rnnlab.errors import CheckpointError, OutputError
from rnnlab.train import fit
from rnnlab.train.lock import RunLockedError, lock_path
from rnnlab.train.report import report_run
from rnnlab.train.rundir import resolve_checkpoint
from train_workers import toy_task, train_config


def _train(out, report: bool):
    fit(toy_task(), train_config(max_steps=12, eval_every=4, keep_last=10, report=report), out=str(out))


def _page(path, name):
    """report.html with the run's folder name in its title made neutral."""
    return path.read_text().replace(f"rnnlab run: {name}<", "rnnlab run: RUN<")


def test_a_report_drawn_from_the_folder_is_the_one_training_writes(tmp_path):
    _train(tmp_path / "a", report=True)
    _train(tmp_path / "b", report=False)
    assert not (tmp_path / "b" / "report.html").exists()
    (tmp_path / "b" / "plots").mkdir()
    (tmp_path / "b" / "plots" / "old.png").write_bytes(b"not drawn by this report")
    written = report_run(tmp_path / "b")
    assert written.report == tmp_path / "b" / "report.html"
    assert [p.name for p in written.plots] == ["loss.png", "rmse.png"]      # not old.png
    assert written.checkpoint == resolve_checkpoint(tmp_path / "b", "latest")
    # the same run trained twice: the pages differ only in the folder name of their title and in
    # the recorded report flag (curves and the task's figures alike)
    page_b = _page(written.report, "b").replace("&quot;report&quot;: false", "&quot;report&quot;: true")
    assert "Toy: valid stream 0" in page_b and _page(tmp_path / "a" / "report.html", "a") == page_b
    for name in ("loss.png", "rmse.png"):
        assert (tmp_path / "a" / "plots" / name).read_bytes() == (tmp_path / "b" / "plots" / name).read_bytes()


def test_another_checkpoint_draws_its_own_weights_and_a_killed_runs_lost_records_are_left_out(tmp_path):
    out = tmp_path / "run"
    _train(out, report=False)
    latest = _page(report_run(out).report, "run")
    early = report_run(out, "step-00000004")
    assert early.checkpoint == out / "checkpoints" / "step-00000004"
    assert _page(early.report, "run") != latest                 # the task's figures of other weights
    # records after the latest checkpoint (a run killed before it saved again) are not drawn
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"kind": "train", "step": 13, "loss": 99.0}) + "\n")
    assert _page(report_run(out).report, "run") == latest


def test_refusals_leave_the_folder_and_links_alone(tmp_path):
    out = tmp_path / "run"
    _train(out, report=False)
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    (out / "report.html").symlink_to(target)
    report_run(out)
    assert target.read_text() == "mine" and not (out / "report.html").is_symlink()   # the link replaced

    fd = os.open(lock_path(out), os.O_RDWR | os.O_CREAT)   # another writer holds the run
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RunLockedError, match="holding its lock"):
            report_run(out)
    finally:
        os.close(fd)

    (out / "report.html").unlink()
    (out / "report.html").mkdir()
    with pytest.raises(OutputError, match="report.html: cannot write"):
        report_run(out)
    (out / "report.html").rmdir()
    (out / "metrics.jsonl").unlink()
    with pytest.raises(CheckpointError, match="expected metrics.jsonl"):
        report_run(out)


def test_cli_prints_what_it_wrote(tmp_path, capsys):
    out = tmp_path / "run"
    _train(out, report=False)
    assert main(["report", str(out), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["report"] == str(out / "report.html") and len(record["plots"]) == 2
    assert main(["report", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out / 'report.html'} (2 plots, checkpoint step-")
