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


def test_evaluate_reads_a_new_file_with_the_policies_its_errors_name(tmp_path, capfd):
    """A forecaster's and a classifier's `evaluate --csv` take --missing (and the forecaster --encoding),
    which the readers' errors tell the user to pass; without --csv they are a usage error."""
    rows = "".join(f"{i},{i % 12 + 0.1 * (i % 5)}\n" for i in range(80))
    (tmp_path / "fc.csv").write_text("t,y\n" + rows)
    gap = ("t,y\n" + rows).splitlines()
    gap[40] = gap[40].split(",")[0] + ","
    (tmp_path / "gap.csv").write_text("\n".join(gap) + "\n")
    (tmp_path / "u16.csv").write_text("t,y\n" + rows, encoding="utf-16")
    run = tmp_path / "f"
    assert main(["train", "forecast", "--csv", str(tmp_path / "fc.csv"), "--time-col", "t", "--target", "y",
                 "--horizon", "4", "--max-steps", "2", "--threads", "1", "--quiet", "--no-report", "--out", str(run)]) == 0
    capfd.readouterr()
    assert main(["evaluate", str(run), "--csv", str(tmp_path / "gap.csv")]) == 1
    assert "pass --missing" in capfd.readouterr().err
    assert main(["evaluate", str(run), "--csv", str(tmp_path / "gap.csv"), "--missing", "ffill", "--json"]) == 0
    assert json.loads(capfd.readouterr().out)["windows"] > 0
    assert main(["evaluate", str(run), "--csv", str(tmp_path / "u16.csv")]) == 1
    assert "pass --encoding utf-16" in capfd.readouterr().err
    assert main(["evaluate", str(run), "--csv", str(tmp_path / "u16.csv"), "--encoding", "utf-16", "--json"]) == 0
    assert json.loads(capfd.readouterr().out)["windows"] > 0
    assert main(["evaluate", str(run), "--missing", "ffill"]) == 2
    assert "--missing: expected it with --csv FILE" in capfd.readouterr().err

    table = "label,v0,v1,v2\n" + "".join(f"{i % 2},{i % 2 + 0.1},{i % 2 + 0.2},{i % 2 + 0.3}\n" for i in range(20))
    (tmp_path / "num.csv").write_text(table)
    (tmp_path / "numgap.csv").write_text(table.replace("1,1.1,1.2,1.3\n", "1,1.1,,1.3\n", 1))
    run = tmp_path / "c"
    assert main(["train", "classify", "--train", str(tmp_path / "num.csv"), "--input", "numeric", "--max-steps", "2",
                 "--threads", "1", "--quiet", "--no-report", "--out", str(run)]) == 0
    capfd.readouterr()
    assert main(["evaluate", str(run), "--csv", str(tmp_path / "numgap.csv")]) == 1
    assert "pass --missing" in capfd.readouterr().err
    assert main(["evaluate", str(run), "--csv", str(tmp_path / "numgap.csv"), "--missing", "drop", "--json"]) == 0
    assert json.loads(capfd.readouterr().out)["n"] == 20      # drop: the missing step, not the series
