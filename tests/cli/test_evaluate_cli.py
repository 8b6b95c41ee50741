"""``rnnlab evaluate RUN [flags]``: the flags are checked before anything of the run is read."""

from __future__ import annotations

import json

import pytest

from rnnlab.cli.main import main

TASKS = ["toy", "probe", "speech", "classify", "forecast", "lm", "seq2seq", "video"]


@pytest.mark.parametrize("task", TASKS)
def test_a_flag_the_evaluation_does_not_take_is_a_usage_error_before_the_data_is_checked(task, tmp_path, capfd):
    run = tmp_path / "run"
    run.mkdir()
    gone = tmp_path / "gone.csv"    # the run's recorded training data, since deleted
    (run / "config.json").write_text(json.dumps({
        "task": task, "task_config": {}, "train_config": {},
        "data_files": {"train": {"path": str(gone), "sha256": "0" * 64}}}))
    code = main(["evaluate", str(run), "--bogus", "1"])
    err = capfd.readouterr().err
    assert code == 2 and "No such option: --bogus" in err, err
    assert "gone.csv" not in err
    code = main(["evaluate", str(run)])          # without the flag, the missing data is what is said
    err = capfd.readouterr().err
    assert code == 1 and "gone.csv" in err and "no such file" in err, err
