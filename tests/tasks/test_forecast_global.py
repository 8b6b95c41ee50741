"""Forecasting many series and trends: month/quarter times, wide and long tables, RevIN,
differencing, the global model, ensembles, and the Theta and ETS baselines."""

from __future__ import annotations

import dataclasses
import datetime

import numpy as np
import pytest
import torch

from rnnlab.data.tables import infer_frequency, load_forecast_series, parse_time
from rnnlab.errors import ConfigError, DataError
from rnnlab.tasks.forecast import ForecastConfig, ForecastTask, Forecaster, member_contexts
from rnnlab.tasks.forecast_baselines import (ETS_MIN_VALUES, ets_available, ets_forecast, fit_ses, seasonal_indices,
                                             ses_levels, theta_forecast)



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


def months(n: int, start: int = 1949) -> list[str]:
    return [f"{start + k // 12}-{k % 12 + 1:02d}" for k in range(n)]


# ----------------------------------------------------------------------------- times and tables


def test_year_month_and_quarter_times_parse_and_give_the_frequency():
    assert parse_time("1949-01", "x") == datetime.datetime(1949, 1, 1, tzinfo=datetime.timezone.utc).timestamp()
    assert parse_time("1949/12", "x") == datetime.datetime(1949, 12, 1, tzinfo=datetime.timezone.utc).timestamp()
    assert parse_time("1950-Q2", "x") == parse_time("1950-04", "x") == parse_time("1950Q2", "x")
    with pytest.raises(DataError, match=r"a month \(1949-01, 1949/01\) or a quarter \(1949-Q1\), got '1949-13'"):
        parse_time("1949-13", "x")
    ts = months(30)
    assert infer_frequency(ts, np.array([parse_time(t, "x") for t in ts])) == ("monthly", 12)
    qs = [f"{1990 + k // 4}-Q{k % 4 + 1}" for k in range(12)]
    assert infer_frequency(qs, np.array([parse_time(t, "x") for t in qs])) == ("quarterly", 4)
    assert infer_frequency(["1", "2"], np.array([1.0, 2.0])) == ("", 0)  # plain numbers are steps


def test_airpassengers_style_file_infers_the_season_and_adds_month_features(tmp_path):
    ts = months(96)
    y = [100 + 2 * k + 20 * np.sin(2 * np.pi * k / 12) for k in range(96)]
    path = tmp_path / "air.csv"
    path.write_text("Month,Passengers\n" + "\n".join(f"{t},{v:.2f}" for t, v in zip(ts, y)) + "\n")
    task = ForecastTask(ForecastConfig(data=str(path), time_col="Month", targets=["Passengers"], context=24,
                                       horizon=6, hidden_size=8))
    assert (task.freq, task.season) == ("monthly", 12)
    inputs = task.prepare(task.frame).inputs[task.config.context:]  # (N, target + 2 x 2 Fourier + mask)
    assert inputs.shape == (96, 1 + 4 + 1)
    # the month-of-year features repeat every 12 rows and tell January from July
    np.testing.assert_allclose(inputs[:-12, 1:5], inputs[12:, 1:5], atol=1e-6)
    assert not np.allclose(inputs[0, 1:5], inputs[6, 1:5])
    model = quick_fit(task, epochs=1)
    assert model.rnn.input_size == 6 and "snaive_mae" in task.evaluate(model)


def test_wide_table_is_one_series_per_column(tmp_path):
    path = tmp_path / "wide.csv"
    rows = ["t,a,b,c"] + [f"{i},{'' if i < 5 else i},{2 * i},{'' if i > 30 else 100 - i}" for i in range(40)]
    path.write_text("\n".join(rows) + "\n")
    series = load_forecast_series(str(path), [], time_col="t", wide=True)
    assert [(s.name, len(s)) for s in series] == [("a", 35), ("b", 40), ("c", 31)]  # ends trimmed, not filled
    assert series[0].targets[0, 0] == 5 and series[0].times[0] == "5"
    with pytest.raises(ConfigError, match="covariates with --wide: expected none"):
        load_forecast_series(str(path), ["a"], ["b"], wide=True)
    task = ForecastTask(ForecastConfig(data=str(path), time_col="t", wide=True, context=8, horizon=3, hidden_size=8))
    assert len(task.series) == 3 and set(task.splits) == {"a", "b", "c"}
    model = quick_fit(task, epochs=1)
    rows = task.forecast_file(model, str(path), 3, str(tmp_path / "f.csv"))
    assert [(r["series"], r["step"], r["t"]) for r in rows[:4]] == [("a", 1, 40), ("a", 2, 41), ("a", 3, 42),
                                                                    ("b", 1, 40)]  # numeric times: numbers
    assert [r["series"] for r in rows].count("c") == 3 and rows[-1]["t"] == 33


def test_long_table_groups_and_orders_each_series(tmp_path):
    path = tmp_path / "long.csv"
    lines = ["store,date,sales"]
    for store, n in (("x", 30), ("y", 20)):
        lines += [f"{store},{t},{10 + k}" for k, t in enumerate(months(n, 2000))]
    path.write_text("\n".join([lines[0]] + lines[1:][::-1]) + "\n")  # newest first: the time column orders
    series = load_forecast_series(str(path), ["sales"], time_col="date", id_col="store")
    assert [(s.name, len(s)) for s in series] == [("y", 20), ("x", 30)]
    assert series[1].targets[:3, 0].tolist() == [10, 11, 12] and series[1].times[0] == "2000-01"
    dup = tmp_path / "dup.csv"
    dup.write_text("store,date,sales\nx,2000-01,1\nx,2000-01,2\n")
    with pytest.raises(DataError, match="series 'x': expected strictly increasing timestamps"):
        load_forecast_series(str(dup), ["sales"], time_col="date", id_col="store")


# ----------------------------------------------------------------------------- RevIN, differencing, ensembles


def test_revin_round_trip_and_level_equivariance():
    torch.manual_seed(0)
    model = Forecaster(input_dims=2, n_targets=1, horizon=3, n_quantiles=1, cell="gru", hidden_size=8, num_layers=1,
                       dropout=0.0, mode="direct", revin=True, context=10).eval()
    x = torch.cat([torch.randn(10, 4, 1) * 5 + 50, torch.ones(10, 4, 1)], -1)
    x[:3, 0] = 0.0  # the first window has 3 rows of padding (mask 0)
    mean, std = model.stats(x)
    real = x[3:, 0, 0]
    assert float(mean[0, 0]) == pytest.approx(float(real.mean()), rel=1e-5)
    assert float(std[0, 0]) == pytest.approx(float(real.std(unbiased=False)), rel=1e-4)
    xn = model.normalise(x, mean, std)
    assert torch.all(xn[:3, 0, 0] == 0)  # padding stays 0
    torch.testing.assert_close(xn[..., :1] * std + mean * x[..., 1:], x[..., :1])  # normalise -> denormalise
    # a forecast of the series shifted by c and scaled by a > 0 is the forecast, shifted and scaled
    shifted = x.clone()
    shifted[..., :1] = (x[..., :1] * 3 + 1000) * x[..., 1:]
    torch.testing.assert_close(model(shifted), model(x) * 3 + 1000, rtol=1e-4, atol=1e-3)
    # DeepAR's mean scaling (norm="mean") divides by the mean magnitude: scale-, not shift-equivariant
    mean_model = Forecaster(input_dims=2, n_targets=1, horizon=3, n_quantiles=1, cell="gru", hidden_size=8,
                            num_layers=1, dropout=0.0, mode="direct", revin=True, scale_only=True, context=10).eval()
    level, scale = mean_model.stats(x)
    assert float(level.abs().max()) == 0 and float(scale[0, 0]) == pytest.approx(float(real.abs().mean()), rel=1e-5)
    scaled = x.clone()
    scaled[..., :1] *= 7
    torch.testing.assert_close(mean_model(scaled), mean_model(x) * 7, rtol=1e-4, atol=1e-3)


def test_differencing_is_inverted_exactly(tmp_path):
    rng = np.random.default_rng(1)
    y = np.cumsum(rng.normal(1, 1, 80)) + 10 * np.sin(np.arange(80) * 2 * np.pi / 6)
    path = tmp_path / "d.csv"
    path.write_text("y\n" + "\n".join(f"{v:.6f}" for v in y) + "\n")
    for diff, lag in (("first", 1), ("seasonal", 6)):
        task = ForecastTask(ForecastConfig(data=str(path), targets=["y"], context=12, horizon=4, season=6, diff=diff,
                                           norm="global"))
        assert task.lag == lag
        origins = np.array([20, 50, 76])
        z = task.prepare(task.frame).targets  # what the model forecasts: differences, scaled
        np.testing.assert_allclose(z[lag:, 0] * task.scaler.std[0] + task.scaler.mean[0], y[lag:] - y[:-lag],
                                   rtol=1e-5, atol=1e-5)
        d = np.stack([z[t : t + 4] for t in origins])[..., None]  # the true differences as a "forecast"
        back = task.to_data_units(d.astype(np.float64), [task.frame.targets[:t] for t in origins])
        np.testing.assert_allclose(back[..., 0, 0], np.stack([y[t : t + 4] for t in origins]), atol=1e-6)


def test_ensemble_members_have_their_own_contexts_and_the_median_is_the_forecast():
    assert member_contexts(48, 1) == [48] and member_contexts(48, 3) == [48, 40, 32]
    torch.manual_seed(0)
    model = Forecaster(input_dims=2, n_targets=1, horizon=2, n_quantiles=1, cell="lstm", hidden_size=4, num_layers=1,
                       dropout=0.0, mode="direct", revin=True, context=12, members=3).eval()
    x = torch.cat([torch.randn(12, 5, 1), torch.ones(12, 5, 1)], -1)
    members, mean, std = model.members_normalised(x)
    assert members.shape == (3, 5, 2, 1, 1) and not torch.allclose(members[0], members[1])
    torch.testing.assert_close(model(x), members.median(0).values * std[:, None, :, None] + mean[:, None, :, None])
    with pytest.raises(ConfigError, match=r"--ensemble \(forecast ensemble\): expected 1 in autoregressive mode"):
        ForecastConfig(data="x.csv", targets=["y"], mode="autoregressive", ensemble=2)


def test_global_model_learns_a_trend_beyond_the_training_range(tmp_path):
    """The weekly-CO2 failure: a trending series whose validation values exceed every training
    value. Per-window normalisation forecasts them; the naive forecast lags one step behind."""
    t = np.arange(200)
    rng = np.random.default_rng(0)
    lines = ["id,t,y"]
    for k in range(4):  # four series of the same shape at different levels and slopes
        y = 50 * k + (0.5 + 0.2 * k) * t + 3 * np.sin(2 * np.pi * t / 8) + rng.normal(0, 0.2, 200)
        lines += [f"s{k},{i},{v:.4f}" for i, v in enumerate(y)]
    path = tmp_path / "trend.csv"
    path.write_text("\n".join(lines) + "\n")
    task = ForecastTask(ForecastConfig(data=str(path), id_col="id", time_col="t", targets=["y"], context=16,
                                       horizon=4, season=8, hidden_size=16, batch_size=64, fourier=0,
                                       valid_frac=0.2, ensemble=1))
    model = quick_fit(task, epochs=8, lr=1e-2)
    m = task.evaluate(model)
    assert m["series"] == 4 and m["windows"] == 4 * (40 - 4 + 1)
    assert m["mase"] < 0.8 * m["naive_mase"] and m["mase"] < m["snaive_mase"], m
    # the old behaviour, one scaler fitted on the training rows, cannot reach the new levels
    old = ForecastTask(dataclasses.replace(task.config, norm="global"))
    assert m["mase"] < 0.6 * old.evaluate(quick_fit(old, epochs=8, lr=1e-2))["mase"]


# ----------------------------------------------------------------------------- Theta


def test_theta_closed_form_equals_the_two_theta_lines():
    """Assimakopoulos & Nikolopoulos: the average of the extrapolated regression line (theta = 0)
    and SES of the theta = 2 line 2 y - line, with the same alpha."""
    rng = np.random.default_rng(3)
    y = 20 + 0.7 * np.arange(40) + rng.normal(0, 2, 40)
    fc = theta_forecast(y, 5)
    alpha, _ = fit_ses(y)
    t = np.arange(1, 41)
    b, a = np.polyfit(t, y, 1)
    line = a + b * t
    level2, _ = ses_levels(2 * y - line, np.array([alpha]))
    h = np.arange(1, 6)
    np.testing.assert_allclose(fc, 0.5 * (a + b * (40 + h)) + 0.5 * level2[0], rtol=1e-10)


def test_theta_keeps_a_strong_multiplicative_season():
    pattern = np.array([0.8, 1.0, 1.3, 0.9])
    y = 100 * np.tile(pattern, 6)
    np.testing.assert_allclose(seasonal_indices(y, 4), pattern / pattern.mean(), rtol=1e-9)
    np.testing.assert_allclose(theta_forecast(y, 8, 4), np.tile(y[:4], 2), rtol=1e-6)
    # without the season it is a smoothed level, not the pattern
    assert np.ptp(theta_forecast(y, 4)) < 1


# ----------------------------------------------------------------------------- ETS

needs_statsforecast = pytest.mark.skipif(not ets_available(), reason="statsforecast (the forecast extra) missing")


@needs_statsforecast
def test_ets_continues_a_trend_and_a_season():
    line = 3.0 + 2.0 * np.arange(30)
    fc, fitted = ets_forecast(line, 4)
    assert fitted
    np.testing.assert_allclose(fc, 3.0 + 2.0 * np.arange(30, 34), rtol=1e-4)
    pattern = np.array([0.8, 1.0, 1.3, 0.9])
    fc, fitted = ets_forecast(100 * np.tile(pattern, 8), 8, 4)
    assert fitted
    np.testing.assert_allclose(fc, 100 * np.tile(pattern, 2), rtol=1e-3)


@needs_statsforecast
def test_ets_stands_in_naive_where_it_cannot_fit():
    fc, fitted = ets_forecast(np.array([4.0, 5.0, 7.0])[: ETS_MIN_VALUES - 1], 3)
    assert not fitted
    np.testing.assert_array_equal(fc, [7.0, 7.0, 7.0])


def test_smape_loss_is_the_symmetric_percentage_error_in_data_units(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("y\n" + "\n".join(f"{100 + 10 * np.sin(i / 2):.3f}" for i in range(60)) + "\n")
    task = ForecastTask(ForecastConfig(data=str(path), targets=["y"], context=8, horizon=3, loss="smape",
                                       ensemble=1))  # one member: the model's output is the forecast the loss scores
    torch.manual_seed(0)
    model = task.build_model()
    batch = next(task.train_batches(0))
    f = model(batch["x"])[..., 0].detach().numpy()  # (B, H, 1) in data units
    y = batch["y"].numpy()
    want = np.mean(2 * np.abs(f - y) / (np.abs(y) + np.abs(f)))
    assert float(task.training_step(model, batch, None).loss.detach()) == pytest.approx(want, rel=1e-5)
