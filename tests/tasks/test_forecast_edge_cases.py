"""Edge cases of the forecast task: series without a MASE unit (constant, exactly periodic),
score tables of large numbers, times with a UTC offset and ISO weeks, backtests of series the
run never saw, values near float32's limit, sMAPE on data that touches zero, numeric times that
step unevenly, and numeric times given back as numbers."""

from __future__ import annotations

import datetime
import importlib.util
import json
import math
import warnings

import numpy as np
import pytest
import torch

from rnnlab.cli.main import main
from rnnlab.data.tables import SeriesFrame, parse_time
from rnnlab.errors import ConfigError, DataError, DataWarning
from rnnlab.tasks.forecast import (ForecastConfig, ForecastTask, Forecaster, calendar_features, calendar_offset,
                                   forecast_metrics, format_scores, future_time_values, future_times, mase_scale,
                                   warn_gaps)
from tests.conftest import fit_a_few_steps


def write(path, header: str, rows: list[str]) -> str:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return str(path)


def frame(times: list[str]) -> SeriesFrame:
    n = len(times)
    return SeriesFrame(np.arange(n, dtype=float)[:, None], np.zeros((n, 0)), ["y"], [], list(times),
                       np.array([parse_time(t, "x") for t in times]))


def after(times: list[str], h: int) -> list[str] | None:
    f = frame(times)
    return future_times(f, future_time_values(f, h))


def wide_with_a_constant(path, n: int) -> str:
    """Column a: a noisy sine; column b: the constant 5 (no MASE unit)."""
    rng = np.random.default_rng(0)
    return write(path, "t,a,b", [f"{k},{10 + np.sin(k / 2) + rng.normal(0, 0.1):.4f},5" for k in range(n)])


# ----------------------------------------------------------------------------- MASE without a unit


def test_mase_scale_is_undefined_for_constant_and_exactly_periodic_histories():
    assert np.isnan(mase_scale(np.full((10, 1), 5.0), 0)).all()
    periodic = np.tile([1.0, 2.0, 3.0], 5)[:, None]
    assert np.isnan(mase_scale(periodic, 3)).all()
    assert mase_scale(periodic, 0).tolist() == [pytest.approx(18 / 14)]  # lag 1: defined
    both = np.stack([np.full(10, 5.0), np.arange(10.0)], 1)
    assert np.isnan(mase_scale(both, 0)[0]) and mase_scale(both, 0)[1] == 1.0
    # windows (and targets) without a unit are left out of the mean; none left: NaN
    y, yhat = np.zeros((2, 2, 1)), np.full((2, 2, 1), 3.0)
    assert forecast_metrics(y, yhat, np.array([[np.nan], [2.0]]))["mase"] == pytest.approx(1.5)
    m = forecast_metrics(y, yhat, np.array([np.nan]))
    assert math.isnan(m["mase"]) and m["mae"] == 3.0


def test_a_constant_series_is_left_out_of_mase_counted_and_named(tmp_path):
    path = wide_with_a_constant(tmp_path / "w.csv", 60)
    with pytest.warns(DataWarning, match=r"w.csv: validation windows: 1 of 2 series left out of the MASE scores "
                                         r"\(mase_series_left_out\): the in-sample naive \(last value\) error of "
                                         r"their history is zero .* 'b'"):
        task = ForecastTask(ForecastConfig(data=path, time_col="t", wide=True, context=8, horizon=4, hidden_size=8))
    model = task.build_model().eval()
    with pytest.warns(DataWarning, match=r"w.csv: 1 of 2 series left out of the MASE scores"):
        m = task.evaluate_file(model, path)
    assert m["series"] == 2 and m["mase_series_left_out"] == 1 and type(m["mase_series_left_out"]) is int
    # the MASE of the model and of every baseline is that of series a alone
    a = task.load(path)[:1]
    org = np.arange(8, 60 - 4 + 1)
    alone = task.score(model, a, org)
    for k in ("mase", "naive_mase", "theta_mase"):
        assert m[k] == pytest.approx(alone[k]) and m[k] < 100
    assert alone["mase_series_left_out"] == 0
    # the validation scores the training core reads: a float MASE, an integer count
    v = task.evaluate(model)
    assert np.isfinite(v["mase"]) and v["mase_series_left_out"] == 1
    # backtest: the same
    longer = wide_with_a_constant(tmp_path / "longer.csv", 68)
    with pytest.warns(DataWarning, match=r"longer.csv: backtest: 1 of 2 series left out of the MASE scores"):
        bt = task.backtest_file(model, longer, 2)
    assert bt["mase_series_left_out"] == 1 and bt["mase"] < 100
    assert [math.isnan(p["mase"]) for p in bt["per_window"]] == [False, False, True, True]


def test_mase_is_null_when_no_series_has_a_unit(tmp_path):
    path = write(tmp_path / "flat.csv", "t,a,b", [f"{k},3,{-1 if k % 2 else 1}" for k in range(40)])
    with pytest.warns(DataWarning, match="2 of 2 series left out"):
        task = ForecastTask(ForecastConfig(data=path, time_col="t", wide=True, context=8, horizon=4, season=2,
                                           hidden_size=8))
    model = task.build_model().eval()
    with pytest.warns(DataWarning, match=r"2 of 2 series left out .* seasonal-naive \(m=2\) error .* repeating "
                                         r"exactly every 2 steps"):
        m = task.evaluate_file(model, path)
    assert math.isnan(m["mase"]) and math.isnan(m["naive_mase"]) and math.isnan(m["snaive_mase"])
    assert m["mase_series_left_out"] == 2 and np.isfinite(m["mae"])
    text = format_scores(m)
    assert text.splitlines()[2].split()[-1] == "-" and "MASE leaves out 2 of 2 series" in text
    assert np.isnan(task.evaluate(model)["mase"])


def test_score_table_columns_never_run_together():
    scores = {"mae": 0.3734, "rmse": 0.564, "smape": 9.079152, "mase": 52018.1848}
    m = {"windows": 10, "series": 2, **scores, **{f"naive_{k}": v / 2 for k, v in scores.items()}}
    assert format_scores(m).splitlines()[2].split() == ["model", "0.3734", "0.5640", "9.0792", "5.202e+04"]
    m["naive_mase"] = math.nan   # undefined
    assert format_scores(m).splitlines()[3].split() == ["naive", "0.1867", "0.2820", "4.5396", "-"]
    big = {**m, "mae": 1.5e300, "rmse": 123456789.0, "smape": 200.0}
    assert format_scores(big).splitlines()[2].split() == ["model", "1.5e+300", "1.235e+08", "200.0000", "5.202e+04"]


# ----------------------------------------------------------------------------- times


def days_at(start: datetime.date, n: int, clock: str = "T00:00:00", offset=lambda d: "+01:00") -> list[str]:
    dates = [start + datetime.timedelta(days=k) for k in range(n)]
    return [f"{d.isoformat()}{clock}{offset(d)}" for d in dates]


def test_times_with_a_utc_offset_are_written_in_that_offset():
    assert after(days_at(datetime.date(2021, 3, 1), 20), 2) == ["2021-03-21T00:00:00+01:00",
                                                                  "2021-03-22T00:00:00+01:00"]
    months = [f"2020-{m:02d}-01T00:00:00+01:00" for m in range(1, 13)]
    assert after(months, 2) == ["2021-01-01T00:00:00+01:00", "2021-02-01T00:00:00+01:00"]
    hours = [f"2021-03-01T{h:02d}:00Z" for h in range(6)]
    assert after(hours, 2) == ["2021-03-01T06:00Z", "2021-03-01T07:00Z"]
    west = [f"2021-03-01 {h:02d}:00:00-0500" for h in range(20, 24)]
    assert after(west, 2) == ["2021-03-02 00:00:00-0500", "2021-03-02 01:00:00-0500"]


def test_local_midnights_stay_midnights_across_a_change_of_offset():
    """Central European daily data at local midnight: +01:00, then +02:00 from 2021-03-28. The
    rows step by 23 hours there; the future rows are the next midnights, in the last offset."""
    summer = datetime.date(2021, 3, 28)
    cells = days_at(datetime.date(2021, 3, 1), 40, offset=lambda d: "+02:00" if d >= summer else "+01:00")
    if importlib.util.find_spec("pandas") is not None:   # with pandas: a daily calendar on the wall clock
        assert calendar_offset(frame(cells)) == "D"
    assert after(cells, 2) == ["2021-04-10T00:00:00+02:00", "2021-04-11T00:00:00+02:00"]


def test_iso_weeks_are_written_back_as_weeks():
    assert after([f"2021-W{w:02d}" for w in range(1, 30)], 2) == ["2021-W30", "2021-W31"]
    assert after(["2020-W51", "2020-W52", "2020-W53"], 2) == ["2021-W01", "2021-W02"]
    assert after([f"2021W{w:02d}" for w in range(1, 5)], 1) == ["2021W05"]
    assert after([f"2021-W{w:02d}-3" for w in range(1, 5)], 1) == ["2021-W05-3"]


def test_calendar_features_of_new_runs_read_the_wall_clock_and_old_runs_keep_utc(tmp_path):
    cells = [f"2021-03-{1 + h // 24:02d}T{h % 24:02d}:00+05:00" for h in range(24 * 6)]
    naive = [c[:-6] for c in cells]
    local = calendar_features(frame(cells), "hourly", 24, 2, local=True)
    np.testing.assert_allclose(local, calendar_features(frame(naive), "hourly", 24, 2), atol=1e-12)
    shifted = [f"2021-{d.month:02d}-{d.day:02d}T{d.hour:02d}:00" for d in
               (datetime.datetime(2021, 3, 1) + datetime.timedelta(hours=h - 5) for h in range(24 * 6))]
    np.testing.assert_allclose(calendar_features(frame(cells), "hourly", 24, 2),
                               calendar_features(frame(shifted), "hourly", 24, 2), atol=1e-12)   # UTC
    path = write(tmp_path / "h.csv", "time,y", [f"{c},{10 + np.sin(k / 4):.3f}" for k, c in enumerate(cells)])
    task = ForecastTask(ForecastConfig(data=path, time_col="time", targets=["y"], context=24, horizon=6,
                                       hidden_size=8))
    assert task.metadata()["local_calendar"] is True
    old = ForecastTask(task.config, {k: v for k, v in task.metadata().items() if k != "local_calendar"})
    s = task.series[0]
    np.testing.assert_allclose(task.prepare(s).inputs[24:, 1:-1], local, atol=1e-6)
    np.testing.assert_allclose(old.prepare(s).inputs[24:, 1:-1], calendar_features(frame(cells), "hourly", 24, 2),
                               atol=1e-6)
    rows = task.forecast_file(task.build_model().eval(), path, 2, None)
    assert [r["time"] for r in rows] == ["2021-03-07T00:00+05:00", "2021-03-07T01:00+05:00"]


def test_numeric_times_come_back_as_numbers_and_are_written_in_full(tmp_path):
    path = write(tmp_path / "n.csv", "t,y", [f"{1_000_000 + k / 2},{np.sin(k / 3):.3f}" for k in range(40)])
    task = ForecastTask(ForecastConfig(data=path, time_col="t", targets=["y"], context=8, horizon=2, hidden_size=8))
    rows = task.forecast_file(task.build_model().eval(), path, 2, str(tmp_path / "f.csv"))
    assert [r["t"] for r in rows] == [1_000_020, 1_000_020.5]
    assert [line.split(",")[1] for line in (tmp_path / "f.csv").read_text().splitlines()[1:]] == ["1000020",
                                                                                                  "1000020.5"]


def test_numeric_times_that_step_unevenly_are_named():
    gappy = frame([str(k if k < 50 else k + 7) for k in range(120)])
    with pytest.warns(DataWarning, match=r"g.csv: 1 of 119 steps of the time column differ from its median step 1, "
                                         r"the first from 49 to 57: rows are read as consecutive steps"):
        warn_gaps("g.csv", [gappy])
    a, b = gappy, frame([str(2 * k) for k in range(30)])
    a.name, b.name = "a", "b"
    with pytest.warns(DataWarning, match=r"long.csv: 1 of 2 series step unevenly in the time column; series 'a': "
                                         r"1 of 119 steps"):
        warn_gaps("long.csv", [b, a])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        warn_gaps("even.csv", [b, frame([f"{0.1 * k:.1f}" for k in range(50)])])


# ----------------------------------------------------------------------------- backtest


def long_table(path, lengths: dict[str, int], start: int = 0) -> str:
    rows = [f"{sid},{start + k},{5 + np.sin(k / 3) + 0.1 * (ord(sid) - 97):.4f}" for sid, n in lengths.items()
            for k in range(n)]
    return write(path, "id,t,v", rows)


def test_backtest_of_new_series_and_later_files_needs_a_full_context(tmp_path):
    train = long_table(tmp_path / "train.csv", {"a": 60, "b": 60})
    task = ForecastTask(ForecastConfig(data=train, id_col="id", time_col="t", targets=["v"], context=8, horizon=4,
                                       hidden_size=8))
    model = task.build_model().eval()
    # series the run never saw: from their first full context, not from their third row
    new = long_table(tmp_path / "new.csv", {"c": 30, "d": 10})
    with pytest.warns(DataWarning, match=r"new.csv: backtest: 1 of 2 series left out, without a full context \(8 "
                                         r"rows\) before a horizon of rows after the run's validation span: 'd'"):
        bt = task.backtest_file(model, new, 3)
    assert [(p["series"], p["origin_row"]) for p in bt["per_window"]] == [("c", 8), ("c", 12), ("c", 16)]
    assert bt["series_left_out"] == 1 and bt["series"] == 1
    assert "1 series left out" in format_scores(bt)
    # a training series in a file of only later rows: every row is out of sample, from a full context
    later = long_table(tmp_path / "later.csv", {"a": 20}, start=100)
    assert [p["origin_row"] for p in task.backtest_file(model, later, 5)["per_window"]] == [8, 12, 16]
    # nothing left: an error that says what a series needs
    short = long_table(tmp_path / "short.csv", {"d": 10})
    with pytest.raises(DataError, match=r"short.csv \(series 'd'\): backtest: expected at least context \+ horizon "
                                        r"= 8 \+ 4 rows \(a full context before the first window\), got 10"):
        task.backtest_file(model, short, 3)
    # the training file itself, every series long enough: what is missing is rows after validation
    with pytest.raises(DataError, match=r"train.csv \(series 'a'\): backtest: expected at least horizon = 4 rows after "
                                        r"the run's validation span"):
        task.backtest_file(model, train, 3)


# ----------------------------------------------------------------------------- values and losses


@pytest.mark.parametrize("scale", [1e20, 1e30])
def test_values_far_past_float32_squares_train_and_forecast(tmp_path, scale):
    path = write(tmp_path / "big.csv", "t,y", [f"{k},{scale * np.sin(k / 3):.6e}" for k in range(120)])
    task = ForecastTask(ForecastConfig(data=path, time_col="t", targets=["y"], context=16, horizon=4, hidden_size=8))
    model = fit_a_few_steps(task, 20)
    m = task.evaluate(model)
    assert np.isfinite(m["loss"]) and np.isfinite(m["mae"]) and m["mae"] < 3 * scale
    rows = task.forecast_file(model, path, 4, None)
    assert all(np.isfinite(r["y"]) and abs(r["y"]) < 3 * scale for r in rows)


def test_revin_statistics_scale_with_the_data_up_to_float32s_limit():
    net = Forecaster(input_dims=2, n_targets=1, horizon=4, n_quantiles=1, cell="gru", hidden_size=4, num_layers=1,
                     dropout=0.0, mode="direct", revin=True, context=16)
    x = torch.ones(16, 3, 2)
    x[..., 0] = torch.sin(torch.arange(16.0) / 3)[:, None] * torch.tensor([1.0, 2.0, 3.0]) + 0.5
    mean, std = net.stats(x)
    for scale in (1e20, 1e30, 5e37):   # the largest value: 3.5 x 5e37, float32 reaches 3.4e38
        big = x.clone()
        big[..., 0] *= scale
        m, s = net.stats(big)
        torch.testing.assert_close(m / scale, mean, rtol=1e-5, atol=0)
        torch.testing.assert_close(s / scale, std, rtol=1e-5, atol=0)
        assert torch.isfinite(net.normalise(big, m, s)).all() and torch.isfinite(net(big)).all()


def test_an_explicit_smape_loss_on_data_that_touches_zero_warns(tmp_path):
    crossing = write(tmp_path / "z.csv", "t,y", [f"{k},{np.sin(k / 3):.4f}" for k in range(80)])
    with pytest.warns(DataWarning, match=r"z.csv: --loss smape: its training part is not all > 0, and sMAPE is "
                                         r"undefined where a series crosses or touches zero"):
        ForecastTask(ForecastConfig(data=crossing, time_col="t", targets=["y"], context=8, horizon=4, loss="smape"))
    long = long_table(tmp_path / "long.csv", {"a": 40, "b": 40})
    with open(long, "a") as fh:
        fh.write("".join(f"c,{k},{k % 3}\n" for k in range(40)))   # touches zero
    with pytest.warns(DataWarning, match=r"the training part of 1 of 3 series \('c'\) is not all > 0"):
        ForecastTask(ForecastConfig(data=long, id_col="id", time_col="t", targets=["v"], context=8, horizon=4,
                                    loss="smape"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        ForecastTask(ForecastConfig(data=crossing, time_col="t", targets=["y"], context=8, horizon=4))  # auto: mae
        ForecastTask(ForecastConfig(data=crossing, time_col="t", targets=["y"], context=8, horizon=4, loss="smape",
                                    quantiles=[0.1, 0.9]))   # the pinball loss
        positive = write(tmp_path / "p.csv", "t,y", [f"{k},{2 + np.sin(k / 3):.4f}" for k in range(80)])
        ForecastTask(ForecastConfig(data=positive, time_col="t", targets=["y"], context=8, horizon=4, loss="smape"))


# ----------------------------------------------------------------------------- through the CLI


def test_cli_prints_what_it_leaves_out_and_numeric_times_as_numbers(tmp_path, capsys):
    path = wide_with_a_constant(tmp_path / "w.csv", 76)
    run = tmp_path / "run"
    assert main(["train", "forecast", "--csv", path, "--wide", "--time-col", "t", "--context", "8", "--horizon", "4",
                 "--hidden", "8", "--max-steps", "2", "--backtest-windows", "2", "--no-report", "--out",
                 str(run)]) == 0
    cap = capsys.readouterr()
    assert "rnnlab: warning:" in cap.err and "1 of 2 series left out of the MASE scores" in cap.err
    assert "MASE leaves out 1 of 2 series" in cap.out
    assert main(["backtest", str(run), "--csv", path, "--windows", "2", "--json"]) == 0
    cap = capsys.readouterr()
    bt = json.loads(cap.out)
    assert bt["mase_series_left_out"] == 1 and bt["series_left_out"] == 0 and not math.isnan(bt["mase"])
    assert "rnnlab: warning:" in cap.err and "backtest: 1 of 2 series left out of the MASE scores" in cap.err
    assert main(["forecast", str(run), "--csv", path, "--horizon", "2", "--json"]) == 0
    assert [r["t"] for r in json.loads(capsys.readouterr().out)["rows"]] == [76, 77, 76, 77]


@pytest.mark.parametrize("roles, says", [
    ({"targets": ["y", "y"]}, r"--target \(forecast targets\): expected a column given once, in one role, got 'y' twice"),
    ({"targets": ["y"], "id_col": "y"}, r"--id-col \(forecast id_col\): .*got 'y', the --target column"),
    ({"targets": ["y"], "time_col": "y"}, r"--time-col \(forecast time_col\): .*got 'y', the --target column"),
    ({"targets": ["y"], "covariates": ["y"]}, r"--covariates \(forecast covariates\): .*got 'y', the --target column"),
])
def test_a_column_in_two_roles_is_refused_for_a_new_run(roles, says, tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("t,y\n" + "\n".join(f"{k},{math.sin(k / 4):.3f}" for k in range(60)) + "\n")
    with pytest.raises(ConfigError, match=says):
        ForecastTask(ForecastConfig(data=str(data), horizon=2, context=8, **roles))


def test_a_numeric_time_column_may_also_be_a_covariate(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("t,y\n" + "\n".join(f"{k},{math.sin(k / 4):.3f}" for k in range(60)) + "\n")
    task = ForecastTask(ForecastConfig(data=str(data), targets=["y"], time_col="t", covariates=["t"], horizon=2,
                                       context=8, hidden_size=8))
    assert task.frame.covariate_names == ["t"]
