"""The forecast task: baselines and metrics by hand, learning, scaling, files, backtest, errors."""

from __future__ import annotations

import csv
import datetime

import numpy as np
import pytest
import torch

import rnnlab.tasks.forecast as forecast_module
from rnnlab.errors import ConfigError, DataError, DataWarning
from rnnlab.tasks.forecast import (
    ForecastConfig,
    ForecastTask,
    forecast_metrics,
    format_scores,
    mase_scale,
    naive_forecast,
    pinball,
)
from rnnlab.tasks.forecast_baselines import ets_forecast


def quick_fit(task, epochs: int, lr: float = 1e-2, seed: int = 0):
    """A minimal loop over the Task contract (the core's fit adds checkpoints, not learning)."""
    torch.manual_seed(seed)
    model = task.build_model()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for ep in range(epochs):
        model.train()
        for batch in task.train_batches(ep):
            loss = task.training_step(model, batch, None).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def seasonal_csv(path, n: int = 360, season: int = 12, noise: float = 0.3, seed: int = 0, dates: bool = True) -> str:
    """y_t = 5 + 2 sin(2 pi t / season) + N(0, noise^2), plus an unrelated covariate."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    y = 5 + 2 * np.sin(2 * np.pi * t / season) + rng.normal(0, noise, n)
    d0 = datetime.date(2024, 1, 1)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["date", "load", "temp"])
        for i in range(n):
            w.writerow([(d0 + datetime.timedelta(days=i)).isoformat() if dates else i, f"{y[i]:.5f}",
                        f"{rng.normal():.4f}"])
    return str(path)


# ----------------------------------------------------------------------------- baselines and metrics by hand


def test_naive_and_seasonal_naive():
    hist = np.arange(10, dtype=float)[None, :, None]  # (W=1, L=10, D=1): 0..9
    assert naive_forecast(hist, 3)[0, :, 0].tolist() == [9, 9, 9]
    # season 4: the last season is 6,7,8,9 and repeats
    assert naive_forecast(hist, 6, season=4)[0, :, 0].tolist() == [6, 7, 8, 9, 6, 7]


def test_metrics_by_hand():
    y = np.array([[[1.0], [2.0]]])        # (W=1, H=2, D=1)
    yhat = np.array([[[2.0], [2.0]]])
    m = forecast_metrics(y, yhat, np.array([0.5]))
    assert m["mae"] == pytest.approx(0.5)
    assert m["rmse"] == pytest.approx(np.sqrt(0.5))
    assert m["smape"] == pytest.approx(100 * (2 * 1 / 3 + 0) / 2)
    assert m["mase"] == pytest.approx(1.0)
    assert mase_scale(np.array([[0.0], [1.0], [3.0]]), 0).tolist() == [1.5]
    assert mase_scale(np.array([[0.0], [1.0], [3.0], [4.0]]), 2).tolist() == [3.0]


def test_pinball_loss_by_hand():
    pred = torch.tensor([[[[0.0, 1.0]]]])  # (B, H, D, Q) for q = 0.1, 0.9
    y = torch.tensor([[[2.0]]])
    # q=0.1: 0.1 * 2 = 0.2; q=0.9: 0.9 * 1 = 0.9
    assert float(pinball(pred, y, [0.1, 0.9])) == pytest.approx((0.2 + 0.9) / 2)


# ----------------------------------------------------------------------------- learning


def test_forecaster_beats_naive_on_noisy_seasonal_series(tmp_path):
    path = seasonal_csv(tmp_path / "s.csv")
    task = ForecastTask(ForecastConfig(data=path, time_col="date", targets=["load"], context=24, horizon=6,
                                       season=12, hidden_size=24, batch_size=32))
    model = quick_fit(task, epochs=12, lr=1e-2)
    m = task.evaluate(model, "valid")
    assert m["windows"] == len(task.origins("valid")) > 10
    assert m["mae"] < 0.8 * m["naive_mae"], m
    assert m["mase"] < m["naive_mase"]
    assert np.isfinite(list(m.values())).all()


def test_quantile_forecasts_are_ordered_and_cover(tmp_path):
    path = seasonal_csv(tmp_path / "s.csv", noise=0.5)
    task = ForecastTask(ForecastConfig(data=path, targets=["load"], covariates=["temp"], context=24, horizon=4,
                                       season=12, hidden_size=16, quantiles=[0.1, 0.9]))
    assert task.config.quantiles == [0.1, 0.5, 0.9]  # the median is added: it is the point forecast
    model = quick_fit(task, epochs=6)
    scores = task.score(model, task.frame, task.origins("valid"))
    pred = scores["_pred"]  # (W, H, D, Q)
    assert pred.shape[-1] == 3 and np.all(np.diff(pred, axis=-1) >= 0)
    assert 0.3 < scores["coverage"] <= 1.0  # nominal 0.8; a short run is not calibrated, but not empty


def test_autoregressive_mode_forecasts_any_horizon(tmp_path):
    path = seasonal_csv(tmp_path / "s.csv", n=200)
    task = ForecastTask(ForecastConfig(data=path, targets=["load"], context=24, horizon=4, mode="autoregressive",
                                       hidden_size=12))
    model = quick_fit(task, epochs=2)
    rows = task.forecast_file(model, path, 9, str(tmp_path / "f.csv"))
    assert len(rows) == 9 and all(np.isfinite(r["load"]) for r in rows)
    assert np.isfinite(list(task.evaluate(model).values())).all()


# ----------------------------------------------------------------------------- scaling, files, backtest


def test_scaler_is_fitted_on_the_training_part_only(tmp_path):
    rows = [("t", "y")] + [(i, float(i)) for i in range(100)]
    path = tmp_path / "trend.csv"
    path.write_text("\n".join(f"{a},{b}" for a, b in rows) + "\n")
    task = ForecastTask(ForecastConfig(data=str(path), time_col="t", targets=["y"], context=10, horizon=5,
                                       valid_frac=0.2))
    assert task.n_train == 80
    assert task.metadata()["scaler"]["mean"] == [pytest.approx(39.5)]  # mean of 0..79, not of 0..99
    again = ForecastTask(ForecastConfig.from_dict(task.config_dict()), task.metadata())
    assert again.scaler == task.scaler and again.n_train == 80


def test_forecast_file_extends_timestamps_and_refuses_long_horizon(tmp_path):
    path = seasonal_csv(tmp_path / "s.csv", n=120)
    task = ForecastTask(ForecastConfig(data=path, time_col="date", targets=["load"], context=12, horizon=3,
                                       hidden_size=8))
    model = quick_fit(task, epochs=1)
    rows = task.forecast_file(model, path, 3, str(tmp_path / "out" / "f.csv"))
    last = datetime.date(2024, 1, 1) + datetime.timedelta(days=119)
    assert [r["date"] for r in rows] == [(last + datetime.timedelta(days=k)).isoformat() for k in (1, 2, 3)]
    with open(tmp_path / "out" / "f.csv") as fh:
        assert next(csv.reader(fh)) == ["step", "date", "load"]
    with pytest.raises(ConfigError, match="--horizon: expected at most the trained horizon 3"):
        task.forecast_file(model, path, 4, str(tmp_path / "f.csv"))
    # a series shorter than the context is padded and masked (said: this one-series run never saw padding)
    short = tmp_path / "short.csv"
    short.write_text("date,load,temp\n2024-01-01,1,1\n")
    with pytest.warns(DataWarning, match=r"short.csv: only 1 of the context's 12 rows: the missing rows are "
                      "padded and masked"):
        rows = task.forecast_file(model, str(short), 3, str(tmp_path / "f.csv"))
    assert [r["date"] for r in rows] == ["2024-01-02", "2024-01-03", "2024-01-04"]  # the run's daily step
    assert all(np.isfinite(r["load"]) for r in rows)


def test_backtest_rolls_forward_after_the_validation_span_only(tmp_path):
    full = seasonal_csv(tmp_path / "full.csv", n=170, dates=False)
    with open(full) as fh:
        lines = fh.read().splitlines()
    (tmp_path / "s.csv").write_text("\n".join(lines[:151]) + "\n")  # the header and the first 150 rows
    path = str(tmp_path / "s.csv")
    task = ForecastTask(ForecastConfig(data=path, time_col="date", targets=["load"], context=20, horizon=5,
                                       season=12, hidden_size=8, valid_frac=0.2))
    assert task.splits[""] == (120, 150, 150)  # training rows, validation end, rows
    model = quick_fit(task, epochs=1)
    # the training file has nothing after the validation span: no window may overlap what chose the checkpoint
    with pytest.raises(DataError, match=r"s.csv: backtest: expected at least horizon = 5 rows after the run's "
                                        r"validation span \(its first 150 rows chose the checkpoint\), got 0"):
        task.backtest_file(model, path, 4)
    bt = task.backtest_file(model, full, 4, str(tmp_path / "bt.csv"))
    assert [p["origin_row"] for p in bt["per_window"]] == [150, 155, 160, 165]
    assert bt["mae"] == pytest.approx(np.mean([p["mae"] for p in bt["per_window"]]))
    assert {"naive_mae", "snaive_mae", "theta_mae"} <= set(bt)
    assert [p["origin_row"] for p in task.backtest_file(model, full, 27)["per_window"]][-1] == 165  # what fits
    # a window's forecast uses only rows before its origin: changing later rows does not change it
    frame = task.load(full)[0]
    first = task.backtest(model, frame, 4)["_pred"][0]
    frame.targets[155:] += 100.0
    np.testing.assert_allclose(task.backtest(model, frame, 4)["_pred"][0], first)


def test_ets_scores_are_each_windows_own_forecast(tmp_path, monkeypatch):
    """The ETS row (ets=True) scores, on every backtest window, ETS fitted to that window's
    history alone; asked for without statsforecast, it is a ConfigError before any data is read."""
    pytest.importorskip("statsforecast")
    full = seasonal_csv(tmp_path / "full.csv", n=170, dates=False)
    with open(full) as fh:
        (tmp_path / "s.csv").write_text("\n".join(fh.read().splitlines()[:151]) + "\n")  # the first 150 rows
    task = ForecastTask(ForecastConfig(data=str(tmp_path / "s.csv"), time_col="date", targets=["load"], context=20,
                                       horizon=5, season=12, hidden_size=8, valid_frac=0.2, ets=True))
    model = quick_fit(task, epochs=1)
    bt = task.backtest_file(model, full, 4)
    y = task.load(full)[0].targets[:, 0].astype(np.float64)
    errors = [np.abs(y[o : o + 5] - ets_forecast(y[:o], 5, 12)[0]) for o in (150, 155, 160, 165)]
    assert [p["origin_row"] for p in bt["per_window"]] == [150, 155, 160, 165]
    assert bt["ets_mae"] == pytest.approx(float(np.mean(errors)), rel=1e-5)
    assert "\nETS " in format_scores(bt) and bt["ets_naive_fallbacks"] == 0
    monkeypatch.setattr(forecast_module, "ETS_MAX_FITS", 3)
    bt = task.backtest_file(model, full, 4)
    assert "ets_mae" not in bt and "ETS left out: over 3 fits (windows x targets)." in format_scores(bt)
    monkeypatch.setattr(forecast_module, "ets_available", lambda: False)
    with pytest.raises(ConfigError, match=r"forecast ets: expected statsforecast installed for the ETS baseline "
                                          r"\(pip install 'rnnlab\[forecast\]'\), got it is not installed"):
        ForecastConfig(data="never-read.csv", targets=["load"], ets=True)


def test_report_sections(tmp_path):
    path = seasonal_csv(tmp_path / "s.csv", n=150)
    task = ForecastTask(ForecastConfig(data=path, targets=["load"], context=20, horizon=5, season=12,
                                       hidden_size=8, quantiles=[0.1, 0.9], backtest_windows=3))
    model = quick_fit(task, epochs=1)
    sections = task.report_sections(model, str(tmp_path))
    assert [s.title.split(":")[0] for s in sections] == ["Forecast", "History and forecast (last validation window)",
                                                        "Backtest"]
    assert "seasonal naive (m=12)" in sections[0].html and sections[1].html.count("<img") == 1
    assert sections[2].html.count("<img") == 1 and "coverage" in sections[2].html


# ----------------------------------------------------------------------------- errors


def test_series_too_short_names_both_numbers(tmp_path):
    path = seasonal_csv(tmp_path / "s.csv", n=40)
    with pytest.raises(DataError, match=r"training part \(first 90%\) of its 40 rows, the last horizon held out: "
                                        r"expected at least context \+ horizon = 30 \+ 6 = 36 rows, got 34"):
        ForecastTask(ForecastConfig(data=path, targets=["load"], context=30, horizon=6))
    # a horizon longer than the file: no negative count of rows
    with pytest.raises(DataError, match=r"of its 40 rows, the last horizon held out: expected at least context "
                                        r"\+ horizon = 30 \+ 60 = 90 rows, got 0"):
        ForecastTask(ForecastConfig(data=path, targets=["load"], context=30, horizon=60))


def test_missing_values_never_reach_the_model(tmp_path):
    path = tmp_path / "gaps.csv"
    y = [f"{np.sin(i / 3):.3f}" if i % 7 else "" for i in range(80)]
    path.write_text("y\n" + "\n".join(y) + "\n")
    with pytest.raises(DataError, match=r"gaps.csv, line 2, column 'y': expected a value, got a missing cell"):
        ForecastTask(ForecastConfig(data=str(path), targets=["y"], context=8, horizon=2))
    task = ForecastTask(ForecastConfig(data=str(path), targets=["y"], context=8, horizon=2, missing="interpolate"))
    for batch in task.train_batches(0):
        assert torch.isfinite(batch["x"]).all() and torch.isfinite(batch["y"]).all()


def test_config_errors():
    with pytest.raises(ConfigError, match=r"--covariates \(forecast covariates\): expected none in autoregressive mode"):
        ForecastConfig(data="x.csv", targets=["y"], covariates=["x"], mode="autoregressive")
    with pytest.raises(ConfigError, match=r"--season \(forecast season\): expected at most context = 10"):
        ForecastConfig(data="x.csv", targets=["y"], context=10, season=12)
    with pytest.raises(ConfigError, match="forecast config keys"):
        ForecastConfig.from_dict({"data": "x.csv", "horizn": 3})
    with pytest.raises(ConfigError, match="quantiles"):
        ForecastConfig(data="x.csv", targets=["y"], quantiles=[1.5])


def test_two_targets_with_a_covariate(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(120)
    a, b = np.sin(t / 3) + rng.normal(0, 0.1, 120), 10 + np.cos(t / 5)
    path = tmp_path / "two.csv"
    path.write_text("a,b,x\n" + "\n".join(f"{a[i]:.4f},{b[i]:.4f},{i % 7}" for i in range(120)) + "\n")
    task = ForecastTask(ForecastConfig(data=str(path), targets=["a", "b"], covariates=["x"], context=12, horizon=3,
                                       hidden_size=8, quantiles=[0.2, 0.8], valid_frac=0.2))
    model = quick_fit(task, epochs=1)
    x, _ = task.windows([task.prepare(task.frame)], np.array([0, 0]), np.array([12, 13]))
    assert model(x).shape == (2, 3, 2, 3)
    m = task.evaluate(model)
    assert m["windows"] == 120 - 96 - 3 + 1 and np.isfinite(list(m.values())).all()
    rows = task.forecast_file(model, str(path), 2, str(tmp_path / "f.csv"))
    assert list(rows[0]) == ["step", "a", "a_q0.2", "a_q0.5", "a_q0.8", "b", "b_q0.2", "b_q0.5", "b_q0.8"]
    assert 8 < rows[0]["b"] < 12  # in data units, not scaled ones
