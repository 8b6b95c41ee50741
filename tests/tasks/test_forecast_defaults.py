"""The forecaster's data-dependent defaults: the context from the horizon, the loss from the
sign of the data, the training budget from the number of windows, and training on the most
recent windows only (``recent``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rnnlab.errors import ConfigError
from rnnlab.tasks import forecast as F
from rnnlab.tasks.forecast import ForecastConfig, ForecastTask, auto_context, budget
from rnnlab.train import TrainConfig


def long_table(tmp_path, n_series: int, length: int, offset: float = 100.0):
    rng = np.random.default_rng(0)
    lines = ["id,t,y"]
    for k in range(n_series):
        y = offset + 10 * np.sin(np.arange(length) / 3 + k) + rng.normal(0, 1, length)
        lines += [f"s{k},{i},{v:.4f}" for i, v in enumerate(y)]
    path = tmp_path / "many.csv"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_context_zero_reads_four_horizons_at_least_two_seasons_and_16_steps():
    assert ForecastConfig().context == auto_context(12) == 48  # the old fixed default, for H = 12
    assert ForecastConfig(horizon=6).context == 24
    assert ForecastConfig(horizon=18, season=12).context == 72
    assert ForecastConfig(horizon=1, season=12).context == 24  # two seasons
    assert ForecastConfig(horizon=2).context == 16
    assert ForecastConfig(horizon=6, context=10).context == 10  # given: kept
    with pytest.raises(ConfigError, match=r"--context \(forecast context\): expected an integer >= 0"):
        ForecastConfig(context=-1)
    # the resolved value is what the run folder records: rebuilding from it gives the same model
    c = ForecastConfig(horizon=5)
    assert ForecastConfig.from_dict(c.to_dict()) == c


def test_loss_auto_is_smape_on_positive_data_and_mae_otherwise(tmp_path):
    pos = ForecastTask(ForecastConfig(data=long_table(tmp_path, 3, 60), id_col="id", targets=["y"], horizon=4,
                                      ensemble=1))
    assert pos.loss == "smape" and pos.metadata()["loss"] == "smape"
    # a series that reaches 0 (sMAPE is undefined near zero): MAE on the RevIN-scaled values
    zero = ForecastTask(ForecastConfig(data=long_table(tmp_path, 3, 60, offset=10.0), id_col="id", targets=["y"],
                                       horizon=4))
    assert zero.loss == "mae"
    given = ForecastTask(ForecastConfig(data=long_table(tmp_path, 3, 60), id_col="id", targets=["y"], horizon=4,
                                        loss="mse"))
    assert given.loss == "mse"
    # a task rebuilt from a run folder's metadata trains and scores with the loss the run chose
    rebuilt = ForecastTask(pos.config, pos.metadata())
    assert rebuilt.loss == "smape" and rebuilt.train_defaults == pos.train_defaults
    torch.manual_seed(0)
    model = pos.build_model()
    batch = next(pos.train_batches(0))
    f = model(batch["x"])[..., 0].detach().numpy()
    y = batch["y"].numpy()
    want = np.mean(2 * np.abs(f - y) / (np.abs(y) + np.abs(f)))
    assert float(rebuilt.training_step(model, batch, None).loss.detach()) == pytest.approx(want, rel=1e-5)


def test_training_budget_follows_the_number_of_windows():
    small, large = budget(100, 32), budget(10_000_000, 32)
    assert small["max_steps"] == math.ceil(F.MIN_SAMPLES / 32)  # few windows: many passes over them
    assert large["max_steps"] == math.ceil(F.MAX_SAMPLES / 32)  # many: capped
    mid = 2000
    assert budget(mid, 32)["max_steps"] == math.ceil(F.BUDGET_EPOCHS * mid / 32)
    for b in (small, large):
        cfg = TrainConfig(**b)  # a valid training config: cosine decay over the budget, with warm-up
        assert cfg.schedule == "cosine" and 0 < cfg.warmup_steps < cfg.max_steps and cfg.eval_every < cfg.max_steps


def test_the_task_budget_counts_its_training_windows(tmp_path):
    task = ForecastTask(ForecastConfig(data=long_table(tmp_path, 3, 60), id_col="id", targets=["y"], horizon=4,
                                       batch_size=16))
    windows = len(task.pairs("train")[1])
    assert task.train_defaults == budget(windows, 16)
    assert TrainConfig.for_task(task).max_steps == task.train_defaults["max_steps"]


def test_recent_keeps_only_the_windows_that_end_in_the_last_horizons(tmp_path):
    path = long_table(tmp_path, 3, 60)
    everything = ForecastTask(ForecastConfig(data=path, id_col="id", targets=["y"], horizon=4, valid_frac=0.1))
    recent = ForecastTask(ForecastConfig(data=path, id_col="id", targets=["y"], horizon=4, valid_frac=0.1, recent=2))
    sid_a, org_a = everything.pairs("train")
    sid, org = recent.pairs("train")
    for i, s in enumerate(recent.series):
        n_train = recent.splits[s.name][0]
        mine = org[sid == i]
        # origins t in [n_train - 2 H, n_train - H]: the last target row t + H - 1 lies in the last 2 H rows
        assert mine.min() == n_train - 2 * 4 and mine.max() == n_train - 4
        assert set(mine) == set(org_a[sid_a == i][org_a[sid_a == i] >= n_train - 8])
    # validation windows do not change
    np.testing.assert_array_equal(recent.pairs("valid")[1], everything.pairs("valid")[1])
