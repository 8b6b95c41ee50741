"""Timestamps past the end of a series: on the calendar (months, quarters, years, business days,
...) rather than a fixed number of seconds, written in the input's own form, with the calendar
features of real dates; and the files ``forecast`` and ``evaluate`` read that are shorter than
the run's context."""

from __future__ import annotations

import datetime
import sys
import warnings

import numpy as np
import pytest

from rnnlab.data.tables import SeriesFrame, infer_frequency, parse_time
from rnnlab.errors import ConfigError, DataError, DataWarning
from rnnlab.tasks.forecast import (ForecastConfig, ForecastTask, calendar_features, calendar_offset, extended,
                                   future_time_values, future_times, warn_gaps)


def frame(times: list[str]) -> SeriesFrame:
    n = len(times)
    return SeriesFrame(np.arange(n, dtype=float)[:, None], np.zeros((n, 0)), ["y"], [], list(times),
                       np.array([parse_time(t, "x") for t in times]))


def months(n: int, start: int = 1949) -> list[str]:
    return [f"{start + k // 12}-{k % 12 + 1:02d}" for k in range(n)]


def days(start: datetime.date, n: int, step: int = 1) -> list[str]:
    return [(start + datetime.timedelta(days=step * k)).isoformat() for k in range(n)]


def month_ends(year: int, n: int) -> list[str]:
    firsts = [datetime.date(year + (k + 1) // 12, (k + 1) % 12 + 1, 1) for k in range(n)]
    return [(d - datetime.timedelta(days=1)).isoformat() for d in firsts]


def after(times: list[str], h: int) -> list[str] | None:
    f = frame(times)
    return future_times(f, future_time_values(f, h))


CASES = {
    "month starts (YYYY-MM)": (months(72), ["1955-01", "1955-02", "1955-03", "1955-04", "1955-05", "1955-06"]),
    "month starts (YYYY/MM)": ([m.replace("-", "/") for m in months(24)], ["1951/01", "1951/02"]),
    "month ends": (month_ends(2023, 12), ["2024-01-31", "2024-02-29", "2024-03-31", "2024-04-30"]),
    "month-start dates": ([m + "-01" for m in months(24)], ["1951-01-01", "1951-02-01", "1951-03-01"]),
    "quarters (2019-Q4)": ([f"{2000 + k // 4}-Q{k % 4 + 1}" for k in range(80)], ["2020-Q1", "2020-Q2", "2020-Q3"]),
    "quarters (2019Q4)": ([f"{2000 + k // 4}Q{k % 4 + 1}" for k in range(80)], ["2020Q1", "2020Q2"]),
    "years": ([f"{y}-01-01" for y in range(2000, 2020)], ["2020-01-01", "2021-01-01", "2022-01-01"]),
    "days": (days(datetime.date(2024, 2, 1), 28), ["2024-02-29", "2024-03-01", "2024-03-02"]),
    "hours": ([f"2024-01-01T{h:02d}:00" for h in range(22)], ["2024-01-01T22:00", "2024-01-01T23:00",
                                                              "2024-01-02T00:00"]),
    "numbers": ([str(k) for k in range(10, 30)], ["30", "31", "32"]),
    "irregular numbers": (["0", "1", "2", "4", "5", "6", "9"], ["10", "11"]),  # the median interval, not the last
}


@pytest.mark.parametrize("name", list(CASES))
def test_future_times_land_on_the_calendar_in_the_inputs_form(name):
    times, want = CASES[name]
    assert after(times, len(want)) == want


@pytest.mark.parametrize("name", ["month starts (YYYY-MM)", "month ends", "quarters (2019-Q4)", "years", "days",
                                  "hours"])
def test_without_pandas_months_quarters_and_years_still_step_by_the_calendar(name, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # pandas is an optional dependency
    times, want = CASES[name]
    assert calendar_offset(frame(times)) == ""
    assert after(times, len(want)) == want


def test_business_days_skip_the_weekend():
    pytest.importorskip("pandas")
    weekdays = [d for d in days(datetime.date(2024, 1, 1), 40) if datetime.date.fromisoformat(d).weekday() < 5]
    assert weekdays[-1] == "2024-02-09"  # a Friday
    assert calendar_offset(frame(weekdays)) == "B"
    assert after(weekdays, 3) == ["2024-02-12", "2024-02-13", "2024-02-14"]


def test_weeks_and_gappy_dates_step_by_the_median_interval():
    assert after(days(datetime.date(2024, 1, 7), 10, step=7), 2) == ["2024-03-17", "2024-03-24"]
    gappy = days(datetime.date(2024, 1, 1), 10)
    gappy = gappy[:3] + gappy[5:]  # two days missing: no calendar frequency, the median interval
    assert calendar_offset(frame(gappy)) == "" and after(gappy, 2) == ["2024-01-11", "2024-01-12"]


@pytest.mark.parametrize("name", ["month starts (YYYY-MM)", "month ends", "quarters (2019-Q4)", "days", "hours"])
def test_future_rows_get_the_calendar_features_of_their_real_dates(name):
    times, want = CASES[name]
    f = frame(times)
    freq, season = infer_frequency(f.times, f.time_values)
    ext = extended(f, len(want))
    real = frame(want)
    np.testing.assert_allclose(calendar_features(ext, freq, season, 2)[len(f):],
                               calendar_features(real, freq, season, 2), atol=1e-9)


# ----------------------------------------------------------------------------- runs and files


def monthly_csv(path, n: int = 72, start: int = 1949, target: str = "passengers") -> str:
    ts = months(n, start)
    y = [100 + k + 10 * np.sin(2 * np.pi * k / 12) for k in range(n)]
    path.write_text(f"month,{target}\n" + "\n".join(f"{t},{v:.3f}" for t, v in zip(ts, y)) + "\n")
    return str(path)


def monthly_task(tmp_path, **kw) -> ForecastTask:
    cfg = dict(data=monthly_csv(tmp_path / "m.csv"), time_col="month", targets=["passengers"], horizon=6,
               context=24, hidden_size=8)
    return ForecastTask(ForecastConfig(**{**cfg, **kw}))


def test_forecast_file_writes_the_next_months_and_keeps_the_runs_offset(tmp_path):
    pytest.importorskip("pandas")
    task = monthly_task(tmp_path)
    assert task.metadata()["offset"] == "MS" and task.metadata()["time_step"] > 0
    model = task.build_model().eval()
    rows = task.forecast_file(model, task.config.data, 6, str(tmp_path / "f.csv"))
    want = ["1955-01", "1955-02", "1955-03", "1955-04", "1955-05", "1955-06"]
    assert [r["month"] for r in rows] == want
    assert (tmp_path / "f.csv").read_text().splitlines()[1].startswith("1,1955-01,")
    # one row cannot tell its step: the run's offset steps it (padded and masked: a warning)
    one = tmp_path / "one.csv"
    one.write_text("month,passengers\n1960-11,5\n")
    with pytest.warns(DataWarning, match="padded and masked"):
        rows = task.forecast_file(model, str(one), 3, str(tmp_path / "g.csv"))
    assert [r["month"] for r in rows] == ["1960-12", "1961-01", "1961-02"]
    # a run from before the offset was kept: the file's own calendar steps it
    meta = {k: v for k, v in task.metadata().items() if k not in ("offset", "time_step")}
    old = ForecastTask(task.config, meta)
    assert [r["month"] for r in old.forecast_file(model, task.config.data, 6, str(tmp_path / "h.csv"))] == want


def test_forecast_file_refuses_another_frequency_than_the_runs(tmp_path):
    task = monthly_task(tmp_path)
    daily = tmp_path / "d.csv"
    daily.write_text("month,passengers\n" + "\n".join(f"{d},1" for d in days(datetime.date(2024, 1, 1), 40)) + "\n")
    with pytest.raises(DataError, match=r"d.csv: expected monthly timestamps \(the run's training data\), got daily"):
        task.forecast_file(task.build_model(), str(daily), 3, str(tmp_path / "f.csv"))
    # steps where the run had dates: their calendar inputs would be those of 1970
    steps = tmp_path / "steps.csv"
    steps.write_text("month,passengers\n" + "\n".join(f"{k},{100 + k}" for k in range(40)) + "\n")
    with pytest.raises(DataError, match=r"steps.csv: expected monthly timestamps \(the run's training data\), "
                                        r"got plain numbers"):
        task.forecast_file(task.build_model(), str(steps), 3, str(tmp_path / "f.csv"))
    scattered = tmp_path / "scattered.csv"       # dates 1 to 60 days apart: no calendar frequency
    start, gaps = datetime.date(2020, 1, 1), np.random.default_rng(0).integers(1, 60, size=40).cumsum()
    scattered.write_text("month,passengers\n" + "\n".join(
        f"{start + datetime.timedelta(days=int(g))},{100 + k}" for k, g in enumerate(gaps)) + "\n")
    with pytest.warns(DataWarning, match=r"scattered.csv: the time column's dates have no calendar frequency"):
        task.forecast_file(task.build_model(), str(scattered), 3, str(tmp_path / "f.csv"))   # their own calendar
    one = tmp_path / "one.csv"         # a single row of a plain number is a step too
    one.write_text("month,passengers\n5,100\n")
    for other in (steps, one):
        for use in (lambda f: task.evaluate_file(task.build_model(), f),
                    lambda f: task.backtest_file(task.build_model(), f, 1)):
            with pytest.raises(DataError, match=r"expected monthly timestamps \(the run's training data\), got plain"):
                use(str(other))


def test_dates_with_no_calendar_frequency_are_named_when_training(tmp_path):
    start, gaps = datetime.date(2020, 1, 1), np.random.default_rng(3).integers(1, 5, size=60).cumsum()
    data = tmp_path / "irregular.csv"
    data.write_text("t,y\n" + "\n".join(f"{start + datetime.timedelta(days=int(g))},{np.sin(k / 5):.3f}"
                                        for k, g in enumerate(gaps)) + "\n")
    with pytest.warns(DataWarning, match=r"irregular.csv: the time column's dates have no calendar frequency "
                                         r"\(hourly to yearly; median step \d+(\.\d+)? days\): rows are read as "
                                         r"consecutive steps"):
        ForecastTask(ForecastConfig(data=str(data), time_col="t", targets=["y"], horizon=3, context=8, hidden_size=8))


def test_a_single_series_shorter_than_the_context_is_padded_and_masked(tmp_path):
    task = monthly_task(tmp_path)
    model = task.build_model().eval()
    short = tmp_path / "short.csv"
    monthly_csv(short, n=19, start=1953)
    with pytest.warns(DataWarning, match=r"short.csv: only 19 of the context's 24 rows: the missing rows are "
                      r"padded and masked"):
        rows = task.forecast_file(model, str(short), 6, str(tmp_path / "f.csv"))
    assert len(rows) == 6 and all(np.isfinite(r["passengers"]) for r in rows)
    assert rows[0]["month"] == "1954-08"
    # differencing needs its lag and one row more
    diffed = monthly_task(tmp_path, diff="seasonal", season=12)
    with pytest.raises(DataError, match=r"short.csv: --diff seasonal: expected at least 13 rows \(the lag 12 and "
                       r"one more\), got 12"):
        monthly_csv(short, n=12, start=1953)
        diffed.forecast_file(diffed.build_model(), str(short), 6, str(tmp_path / "g.csv"))


def test_evaluate_file_names_and_counts_the_series_it_leaves_out(tmp_path):
    rows = ["id,t,v"] + [f"{sid},{k},{5 + np.sin(k / 3):.3f}" for sid, n in (("a", 40), ("b", 40), ("c", 8))
                         for k in range(n)]
    path = tmp_path / "long.csv"
    path.write_text("\n".join(rows) + "\n")
    task = ForecastTask(ForecastConfig(data=str(path), id_col="id", time_col="t", targets=["v"], context=8,
                                       horizon=4, hidden_size=8))
    model = task.build_model().eval()
    with pytest.warns(DataWarning, match=r"long.csv: 1 of 3 series left out of the scores, shorter than context "
                      r"\+ horizon = 8 \+ 4 rows: 'c'"):
        m = task.evaluate_file(model, str(path))
    assert m["series"] == 2 and m["series_left_out"] == 1 and m["windows"] == 2 * (40 - 8 - 4 + 1)
    # the run's own validation windows: the counts are integers too
    m = task.evaluate(model)
    assert type(m["windows"]) is int and type(m["series"]) is int and isinstance(m["mae"], float)


def test_one_row_of_numeric_times_steps_by_the_runs_interval(tmp_path):
    path = tmp_path / "n.csv"
    path.write_text("t,y\n" + "\n".join(f"{2 * k},{np.sin(k / 3):.3f}" for k in range(60)) + "\n")
    task = ForecastTask(ForecastConfig(data=str(path), time_col="t", targets=["y"], horizon=3, context=8,
                                       hidden_size=8))
    model = task.build_model().eval()
    one = tmp_path / "one.csv"
    one.write_text("t,y\n200,0.5\n")
    with pytest.warns(DataWarning, match="padded and masked"):
        rows = task.forecast_file(model, str(one), 3, str(tmp_path / "f.csv"))
    assert [r["t"] for r in rows] == [202, 204, 206]   # numbers (JSON), written as the file writes them
    assert (tmp_path / "f.csv").read_text().splitlines()[1].startswith("1,202,")
    old = ForecastTask(task.config, {k: v for k, v in task.metadata().items() if k != "time_step"})
    with pytest.warns(DataWarning), pytest.raises(DataError, match=r"one.csv: expected at least 2 rows to tell the "
                                                                   r"time step, got 1"):
        old.forecast_file(model, str(one), 3, str(tmp_path / "g.csv"))


def test_a_missing_month_is_named_and_regular_calendars_are_not():
    """A series that skips a month warns once, naming where; regular months and business days
    (weekends skipped, which pandas reads as regular) do not."""
    gappy = [t for t in months(36) if t != "1950-09"]
    with pytest.warns(DataWarning, match=r"gappy\.csv: 1 step\(s\) longer than monthly .* from 1950-08 to 1950-10"):
        warn_gaps("gappy.csv", [frame(gappy)])
    bdays = [d for d in days(datetime.date(2024, 1, 1), 60) if datetime.date.fromisoformat(d).weekday() < 5]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        warn_gaps("regular.csv", [frame(months(36)), frame(days(datetime.date(2024, 1, 1), 60))])
        if calendar_offset(frame(bdays)):          # with pandas: business days are a calendar
            warn_gaps("bdays.csv", [frame(bdays)])


def test_a_series_on_a_fixed_day_keeps_it_past_a_short_month(monkeypatch):
    """Only a series of month ends steps to month ends: one on the 30th ending on April 30th goes
    to May 30th, and one ending on February 28th goes to March 30th (with or without pandas)."""
    on_30th = ["2021-01-30", "2021-02-28", "2021-03-30", "2021-04-30"]
    end_feb = ["2020-11-30", "2020-12-30", "2021-01-30", "2021-02-28"]
    month_ends = ["2021-01-31", "2021-02-28", "2021-03-31", "2021-04-30"]
    for without_pandas in (False, True):
        if without_pandas:
            monkeypatch.setitem(sys.modules, "pandas", None)
        assert after(on_30th, 2) == ["2021-05-30", "2021-06-30"]
        assert after(end_feb, 2) == ["2021-03-30", "2021-04-30"]
        assert after(month_ends, 2) == ["2021-05-31", "2021-06-30"]


def test_seasonal_differencing_without_a_season_is_refused(tmp_path):
    steps = tmp_path / "steps.csv"
    steps.write_text("t,y\n" + "\n".join(f"{k},{np.sin(k / 5):.3f}" for k in range(80)) + "\n")
    base = dict(data=str(steps), time_col="t", targets=["y"], horizon=3, context=8, hidden_size=8, diff="seasonal")
    with pytest.raises(ConfigError, match=r"--diff seasonal: expected a season of 2 or more steps .*, got a season "
                                          r"of 0 \(the time column holds no calendar dates to infer it from\)"):
        ForecastTask(ForecastConfig(**base))
    with pytest.raises(ConfigError, match=r"got a season of 0 \(the monthly season of 12 steps is longer than the "
                                          r"context of 8 rows\)"):
        monthly_task(tmp_path, diff="seasonal", context=8)
    assert ForecastTask(ForecastConfig(**base, season=5)).lag == 5
