"""End to end through ``rnnlab``: train classify/forecast, evaluate --csv, predict, forecast, backtest."""

from __future__ import annotations

import csv
import dataclasses
import json
import types

import numpy as np

from rnnlab.cli.main import main


def test_classify_commands(tmp_path, capsys):
    data = tmp_path / "d.csv"
    rows = [("good film", "pos"), ("bad film", "neg"), ("great", "pos"), ("awful", "neg")] * 6
    data.write_text("text,label\n" + "\n".join(f"{t},{y}" for t, y in rows) + "\n")
    run = tmp_path / "run"
    assert main(["train", "classify", "--train", str(data), "--hidden", "8", "--embed", "8", "--max-epochs", "2",
                 "--out", str(run), "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "majority class: accuracy" in out and "confusion matrix" in out
    assert main(["evaluate", str(run), "--csv", str(data), "--json"]) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert m["n"] == 24 and m["majority_acc"] == 0.5 and 0 <= m["acc"] <= 1
    assert len(m["confusion[neg]"]) == 2 and all(type(v) is int for v in m["confusion[neg]"])
    assert main(["predict", str(run), "--csv", str(data), "--out", str(tmp_path / "p.csv")]) == 0
    with open(tmp_path / "p.csv") as fh:
        preds = list(csv.DictReader(fh))
    assert len(preds) == 24 and set(preds[0]) == {"line", "label", "pred", "p_neg", "p_pos"}

    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nok,maybe\n")
    assert main(["evaluate", str(run), "--csv", str(bad)]) == 1
    assert "unseen 'maybe'" in capsys.readouterr().err
    assert main(["train", "classify", "--train", str(data), "--text-col", "body"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rnnlab: error:") and "--text-col 'body' not found" in err
    # a folder or a missing file as --csv is named by the flag
    for command in ("predict", "evaluate"):
        for path, got in ((tmp_path, "expected a file, got a folder"), (tmp_path / "nope.csv",
                                                                       "expected an existing file, got no such file")):
            assert main([command, str(run), "--csv", str(path)]) == 1
            assert capsys.readouterr().err.strip() == f"rnnlab: error: --csv {path}: {got}"
    # a file for a trained run: the missing column is the run's (predict and evaluate take no --text-col)
    other = tmp_path / "other.csv"
    other.write_text("body,label\nok,pos\n")
    for command in (["predict", str(run), "--csv", str(other), "--out", "-"], ["evaluate", str(run), "--csv", str(other)]):
        assert main(command) == 1
        assert capsys.readouterr().err.strip() == (f"rnnlab: error: {other}: expected a column 'text' as the run's data "
                                                   "had (its --text-col when it was trained), got the columns "
                                                   "['body', 'label']")


def test_forecast_commands(tmp_path, capsys):
    data = tmp_path / "s.csv"
    rng = np.random.default_rng(0)
    y = 3 + np.sin(np.arange(120) * 2 * np.pi / 8) + rng.normal(0, 0.1, 120)
    data.write_text("t,y\n" + "\n".join(f"{i},{v:.4f}" for i, v in enumerate(y)) + "\n")
    run = tmp_path / "run"
    assert main(["train", "forecast", "--csv", str(data), "--target", "y", "--time-col", "t", "--context", "16",
                 "--horizon", "4", "--season", "8", "--quantiles", "0.1,0.9", "--hidden", "8", "--max-epochs", "1",
                 "--backtest-windows", "2", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "seasonal naive" in out and "coverage of the 0.1-0.9 interval" in out
    assert (run / "report.html").read_text().count("<img") >= 3  # curves + forecast + backtest at least
    assert main(["forecast", str(run), "--csv", str(data), "--horizon", "4", "--out", str(tmp_path / "f.csv")]) == 0
    with open(tmp_path / "f.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["t"] for r in rows] == ["120", "121", "122", "123"]
    assert all(float(r["y_q0.1"]) <= float(r["y"]) <= float(r["y_q0.9"]) for r in rows)
    # --backtest-windows 2 held out the last 2 x 4 rows after validation: backtests start there
    assert main(["backtest", str(run), "--csv", str(data), "--windows", "3"]) == 0
    out = capsys.readouterr().out
    assert "window 2 (origin row 116)" in out and "window 3" not in out and "Theta" in out
    assert main(["backtest", str(run), "--csv", str(data), "--windows", "3", "--json"]) == 0
    bt = json.loads(capsys.readouterr().out)
    assert [p["origin_row"] for p in bt["per_window"]] == [112, 116] and bt["windows"] == 2
    assert {"mase", "naive_mase", "snaive_mase", "theta_mase"} <= set(bt)
    assert main(["evaluate", str(run), "--csv", str(data), "--json"]) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert m["windows"] == 120 - 16 - 4 + 1 and "snaive_mase" in m
    assert main(["forecast", str(run), "--csv", str(data), "--horizon", "2", "--out", str(tmp_path / "g.csv"),
                 "--json"]) == 0
    assert [r["t"] for r in json.loads(capsys.readouterr().out)["rows"]] == [120, 121]
    for command in (["forecast", "--horizon", "2"], ["backtest"], ["evaluate"]):
        assert main([command[0], str(run), "--csv", str(tmp_path), *command[1:]]) == 1
        assert capsys.readouterr().err.strip() == f"rnnlab: error: --csv {tmp_path}: expected a file, got a folder"
    renamed = tmp_path / "renamed.csv"
    renamed.write_text(data.read_text().replace("t,y", "t,value", 1))
    for command in (["forecast", "--horizon", "2", "--out", "-"], ["backtest"], ["evaluate"]):
        assert main([command[0], str(run), "--csv", str(renamed), *command[1:]]) == 1
        assert capsys.readouterr().err.strip() == (f"rnnlab: error: {renamed}: expected a column 'y' as the run's "
                                                   "data had (its --target when it was trained), got the columns "
                                                   "['t', 'value']")
    # the training file ends where validation ended for a run without held-out windows: nothing to backtest
    run2 = tmp_path / "run2"
    assert main(["train", "forecast", "--csv", str(data), "--target", "y", "--context", "16", "--horizon", "4",
                 "--hidden", "8", "--max-epochs", "1", "--quiet", "--no-report", "--out", str(run2)]) == 0
    assert main(["backtest", str(run2), "--csv", str(data), "--windows", "5"]) == 1
    assert "rows after the run's validation span (its first 120 rows chose the checkpoint), got 0" in \
        capsys.readouterr().err


def test_forecast_cli_defaults_are_the_config_defaults():
    """`rnnlab train forecast` and ForecastConfig() train the same model by default."""
    import inspect

    from rnnlab.cli.forecast import CONFIG_KEYS
    from rnnlab.cli.main import train_app
    from rnnlab.tasks.forecast import ForecastConfig

    cmd = next(c for c in train_app.registered_commands if c.name == "forecast")
    # the fields' declared defaults (context=0 and ensemble=0 are resolved from the horizon and mode)
    defaults = types.SimpleNamespace(**{f.name: f.default for f in dataclasses.fields(ForecastConfig)})
    checked = 0
    for name, p in inspect.signature(cmd.callback).parameters.items():
        key = CONFIG_KEYS.get(name, name)
        default = getattr(p.default, "default", p.default)
        if default is None or name == "seed":  # the training core's own flags (the run seed), not the task's
            continue
        if hasattr(defaults, key) and key not in ("data", "targets", "covariates", "quantiles", "cell_options"):
            assert default == getattr(defaults, key), (name, default, getattr(defaults, key))
            checked += 1
    assert checked >= 20


def test_forecast_cli_wide_json_quiet_help_and_evaluate(tmp_path, capsys):
    """A wide table without --target plots its report; --json prints even with --quiet; evaluate
    --json counts in integers and names the series it leaves out; --help shows the extra."""
    import datetime

    rng = np.random.default_rng(0)
    days = [(datetime.date(2024, 1, 1) + datetime.timedelta(days=k)).isoformat() for k in range(60)]
    wide = tmp_path / "wide.csv"
    wide.write_text("date,a,b\n" + "\n".join(f"{d},{10 + rng.normal():.3f},{20 + rng.normal():.3f}"
                                             for d in days) + "\n")
    run = tmp_path / "wide_run"
    assert main(["train", "forecast", "--csv", str(wide), "--wide", "--time-col", "date", "--horizon", "4",
                 "--hidden", "8", "--max-steps", "4", "--missing", "drop", "--out", str(run)]) == 0
    assert (run / "report.html").read_text().count("<img") >= 2
    capsys.readouterr()
    assert main(["train", "forecast", "--csv", str(wide), "--wide", "--time-col", "date", "--horizon", "4",
                 "--hidden", "8", "--max-steps", "4", "--out", str(tmp_path / "q"), "--no-report", "--quiet",
                 "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["series"] == 2 and isinstance(m["windows"], int) and "naive_mase" in m
    assert main(["evaluate", str(run), "--json"]) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert type(m["windows"]) is int and type(m["series"]) is int and m["series"] == 2
    short = tmp_path / "short.csv"
    short.write_text("date,a,b,c\n" + "\n".join(f"{d},1,2,{'' if k < 50 else 3}" for k, d in enumerate(days)) + "\n")
    assert main(["evaluate", str(run), "--csv", str(short), "--json"]) == 0
    out = capsys.readouterr()
    m = json.loads(out.out.strip().splitlines()[-1])
    assert m["series"] == 2 and m["series_left_out"] == 1
    assert "rnnlab: warning:" in out.err and "1 of 3 series left out" in out.err and "'c'" in out.err
    assert main(["train", "forecast", "--help"]) == 0
    assert "pip install 'rnnlab[forecast]'" in " ".join(capsys.readouterr().out.replace("│", " ").split())


def test_out_dash_writes_standard_output_and_json_writes_no_default_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "s.csv"
    y = 3 + np.sin(np.arange(80) * 2 * np.pi / 8)
    data.write_text("t,y\n" + "\n".join(f"{i},{v:.4f}" for i, v in enumerate(y)) + "\n")
    run = tmp_path / "run"
    assert main(["train", "forecast", "--csv", str(data), "--target", "y", "--time-col", "t", "--context", "16",
                 "--horizon", "4", "--hidden", "8", "--max-epochs", "1", "--backtest-windows", "2", "--quiet",
                 "--no-report", "--out", str(run)]) == 0
    capsys.readouterr()
    # --json alone prints the rows and leaves no forecast.csv behind (a second call does not fail on it)
    for _ in range(2):
        assert main(["forecast", str(run), "--csv", str(data), "--horizon", "3", "--json"]) == 0
        got = json.loads(capsys.readouterr().out)
        assert got["out"] is None and [r["t"] for r in got["rows"]] == [80, 81, 82]
    assert not (tmp_path / "forecast.csv").exists()
    # --out -: the CSV is standard output, the status line goes to stderr
    assert main(["forecast", str(run), "--csv", str(data), "--horizon", "3", "--out", "-"]) == 0
    cap = capsys.readouterr()
    rows = list(csv.DictReader(cap.out.splitlines()))
    assert [r["t"] for r in rows] == ["80", "81", "82"] and "standard output" in cap.err
    assert not (tmp_path / "-").exists()
    assert main(["forecast", str(run), "--csv", str(data), "--horizon", "3", "--out", "-", "--json"]) == 2
    assert "both would be written to standard output" in capsys.readouterr().err
    assert main(["backtest", str(run), "--csv", str(data), "--windows", "2", "--out", "-"]) == 0
    cap = capsys.readouterr()
    assert [r["origin_row"] for r in csv.DictReader(cap.out.splitlines())] == ["72", "76"]
    assert "window 2 (origin row 76)" in cap.err
    # binary outputs refuse '-' rather than create a file of that name
    assert main(["export", str(run), "--onnx", "-"]) == 1
    assert "cannot go to standard output" in capsys.readouterr().err
    assert not (tmp_path / "-").exists()


def test_predict_out_dash(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "d.csv"
    data.write_text("text,label\n" + "\n".join(f"{t},{y}" for t, y in [("good", "pos"), ("bad", "neg")] * 5) + "\n")
    run = tmp_path / "run"
    assert main(["train", "classify", "--train", str(data), "--hidden", "8", "--embed", "8", "--max-epochs", "1",
                 "--quiet", "--no-report", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["predict", str(run), "--csv", str(data), "--out", "-"]) == 0
    cap = capsys.readouterr()
    preds = list(csv.DictReader(cap.out.splitlines()))
    assert len(preds) == 10 and {"pred", "p_pos", "p_neg"} <= set(preds[0])
    assert "10 rows -> standard output" in cap.err and not (tmp_path / "-").exists()
    # --json: the same rows as numbers, and no file unless --out names one
    assert main(["predict", str(run), "--csv", str(data), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["out"] is None and not (tmp_path / "preds.csv").exists()
    assert [r["pred"] for r in record["rows"]] == [r["pred"] for r in preds]
    assert [round(r["p_pos"], 6) for r in record["rows"]] == [float(r["p_pos"]) for r in preds]
    assert main(["predict", str(run), "--csv", str(data), "--json", "--out", "p.csv"]) == 0
    assert json.loads(capsys.readouterr().out)["out"] == "p.csv" and (tmp_path / "p.csv").exists()


def test_baselines_are_written_only_into_the_run_just_trained(tmp_path):
    """train classify computes its baselines after training released the folder: if another run
    took the folder over meanwhile, its table is not written into that run."""
    import pytest

    from rnnlab.cli.classify import write_baselines
    from rnnlab.errors import CheckpointError

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text('{"task": "classify", "train_config": {}, "seed": 1}')
    trained = (run / "config.json").read_bytes()
    write_baselines(run, {"rows": []}, trained)
    assert json.loads((run / "baselines.json").read_text()) == {"rows": []}
    (run / "baselines.json").unlink()
    (run / "config.json").write_text('{"task": "classify", "train_config": {}, "seed": 2}')   # another run now
    with pytest.raises(CheckpointError, match="another run started there meanwhile"):
        write_baselines(run, {"rows": []}, trained)
    assert not (run / "baselines.json").exists()


def test_a_training_out_of_dash_is_refused(tmp_path, capsys, monkeypatch):
    """'-' means standard output for the file outputs; a run folder cannot be one, so no folder named '-'."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "toy", "--hidden-size", "4", "--max-steps", "1", "--quiet", "--out", "-"]) == 1
    assert "--out -: expected a run folder path" in capsys.readouterr().err
    assert not (tmp_path / "-").exists()
