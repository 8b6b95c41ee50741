"""A run's report drawn again from its folder (``rnnlab report RUN``) is the report training writes."""

from __future__ import annotations

import json

import pytest

from rnnlab.cli.main import main
from rnnlab.errors import CheckpointError
from rnnlab.train import fit
from rnnlab.train.report import report_run
from rnnlab.train.rundir import resolve_checkpoint
from train_workers import toy_task, train_config


def _train(out, report: bool):
    fit(toy_task(), train_config(max_steps=12, eval_every=4, report=report), out=str(out))


def test_a_report_drawn_from_the_folder_is_the_one_training_writes(tmp_path):
    _train(tmp_path / "a", report=True)
    _train(tmp_path / "b", report=False)
    assert not (tmp_path / "b" / "report.html").exists()
    written = report_run(tmp_path / "b")
    assert written.report == tmp_path / "b" / "report.html"
    assert [p.name for p in written.plots] == ["loss.png", "rmse.png"]
    assert written.checkpoint == resolve_checkpoint(tmp_path / "b", "latest")
    # the same run trained twice: the pages differ only in the folder name of their title and in
    # the recorded report flag (curves and the task's figures alike)
    page_a = (tmp_path / "a" / "report.html").read_text().replace("rnnlab run: a<", "rnnlab run: RUN<")
    page_b = (written.report.read_text().replace("rnnlab run: b<", "rnnlab run: RUN<")
              .replace("&quot;report&quot;: false", "&quot;report&quot;: true"))
    assert "Toy: valid stream 0" in page_b and page_a == page_b


def test_best_and_the_missing_record(tmp_path):
    out = tmp_path / "run"
    _train(out, report=False)
    assert report_run(out, "best").checkpoint == resolve_checkpoint(out, "best")
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
