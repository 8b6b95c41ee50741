"""Time-series forecasting: the last L values -> the next H values, for one series or many.

The model::

    context window (L, B, D)   targets, covariates, calendar features and a "real row" mask
    RevIN                      targets minus the window's mean, divided by its spread
    --RNN/LSTM/GRU encoder-->  state after the last context step (B, hidden)
    direct:          --Linear-->  (B, H, D_y, Q)   all H steps at once (Q quantiles, or 1 point)
    autoregressive:  --Linear-->  the next step (B, D_y); fed back as input H times
    RevIN inverse              times the window's spread, plus its mean

Per-window normalisation (``norm="revin"``, the default; Kim et al. 2022) lets the model
forecast levels it never saw in training, such as a trending series past its training range,
and lets one **global model** learn from many series of different scales at once: a file
with an id column (a long table) or one column per series (a wide table) gives many series,
each split chronologically on its own. Differencing (``diff="first"`` or ``"seasonal"``)
is optional and inverted at the output. With a date column, the frequency is inferred and
Fourier terms of the calendar (month of year, day of week, hour of day, ...) are inputs; an
ensemble (``ensemble=K``) trains K members with their own initialisation and context length
(L, then shorter) and forecasts their median.

Direct multi-step is the default: it is trained on the error that is scored, and errors do
not compound. The autoregressive option is trained one step ahead with teacher forcing and
rolled out at forecast time; it forecasts any horizon, takes no covariates and gives point
forecasts only. Quantile forecasts (``quantiles=[0.1, 0.5, 0.9]``) use the pinball loss.

Honest scores: metrics (MAE, RMSE, sMAPE, MASE) are in the data's own units on windows whose
targets lie after the training part, with the naive, seasonal-naive, Theta and (``ets=True``,
with statsforecast installed) ETS forecasts (:mod:`rnnlab.tasks.forecast_baselines`) scored on
the very same windows. Each series is split chronologically: its first ``1 - valid_frac`` (at
least ``horizon`` rows are left over) trains, the windows that forecast the rest validate and
choose the checkpoint. Backtests walk forward over data *after* that validation span, never
over rows that chose the checkpoint.
"""

from __future__ import annotations

import calendar
import csv
import dataclasses
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from rnnlab.data.tables import (FREQUENCIES, Scaler, SeriesFrame, as_float32, check_length, columns_of_a_run,
                                infer_frequency, is_number, load_forecast_series, plain_numbers)
from rnnlab.errors import (CheckpointError, ConfigError, DataError, DataWarning, expected, field_name, flag_of,
                           is_int_at_least, listed)
from rnnlab.outputs import atomic_open
from rnnlab.report.html import figure_to_img, pyplot, score_cell, table
from rnnlab.tasks.cell_options import check_cell_options
from rnnlab.tasks.forecast_baselines import ets_available, ets_forecast, theta_forecast
from rnnlab.tasks.recurrent import CELLS, recurrent_layer
from rnnlab.train.rundir import check_run_output, load_run, read_run_config
from rnnlab.train.task import ReportSection, StepOutput, register_task

MODES = ("direct", "autoregressive")
NORMS = ("revin", "mean", "global")
DIFFS = ("none", "first", "seasonal")
LOSSES = ("auto", "mae", "mse", "smape")
# context=0: L = CONTEXT_HORIZONS horizons (N-BEATS reads 2 to 7), at least two seasons and MIN_CONTEXT steps
CONTEXT_HORIZONS = 4
MIN_CONTEXT = 16
# RevIN's window statistics of values larger than this are taken in units of the window's largest
# value: squared, values from about 1e19 pass float32's limit (3.4e38), and summed over a context sooner
REVIN_UNIT = 1e15
SHORTEST_CONTEXT = 0.5  # the ensemble's members read from L down towards this fraction of L
ENSEMBLE_REDUCE = "median"  # how more than two members combine: "median" or "mean" (two: always the mean)
# The training budget from the number of training windows (see ``budget``).
BUDGET_EPOCHS = 20
MIN_SAMPLES, MAX_SAMPLES = 20_000, 192_000
EVALS_PER_RUN = 10
# Theta is fitted once per scored window; beyond this many windows it is left out (the score
# tables say so: baselines_left_out).
THETA_MAX_WINDOWS = 5000
# ETS (``ets=True``) fits every error/trend/season form per window and target, milliseconds to
# a tenth of a second each on long monthly histories, which is why it is asked for rather than
# on by default; beyond this many fits it is left out (the score tables say so).
ETS_MAX_FITS = 1000


# The flags of `rnnlab train forecast` that are spelled otherwise than their config field ("": none),
# for error messages (rnnlab.errors.field_name).
FORECAST_FLAGS = {"data": "--csv", "targets": "--target", "seed": "--data-seed",
                  "cell_options": "--cell-option"}


def check_column_roles(c: "ForecastConfig") -> None:
    """ConfigError for a column given twice or in two roles (``y,y`` trained two copies of one
    series). A numeric time column may also be a covariate (a trend input). Checked when a run is
    trained, not when one is loaded: a saved run keeps loading as it was trained."""
    seen: dict[str, str] = {}
    roles = [("targets", list(c.targets)), ("covariates", list(c.covariates)),
             ("id_col", [c.id_col] if c.id_col else []), ("time_col", [c.time_col] if c.time_col else [])]
    for role, names in roles:
        for name in names:
            first = seen.get(name)
            if first is not None and not (role == "time_col" and first == "covariates"):
                got = (f"{name!r} twice" if first == role
                       else f"{name!r}, the {flag_of(first, FORECAST_FLAGS)} column")
                raise ConfigError(expected(field_name("forecast", role, c, FORECAST_FLAGS),
                                           "a column given once, in one role", got))
            seen[name] = role


@dataclass
class ForecastConfig:
    data: str = ""                     # CSV/TSV/JSONL: one row per time step (and series, with id_col)
    format: str = "auto"
    time_col: str = ""                 # optional; must increase strictly (checked); dates give calendar features
    targets: list[str] = field(default_factory=list)      # columns to forecast ([] with wide: every column)
    covariates: list[str] = field(default_factory=list)   # extra input columns (past values only)
    id_col: str = ""                   # a long table: the column that tells the series apart
    wide: bool = False                 # a wide table: every target column is a series of its own
    missing: str = "error"             # error | drop | ffill | interpolate
    encoding: str = "utf-8"            # of the data files (utf-16, cp1252, latin-1, ...)
    context: int = 0                   # L: steps the model reads (shorter series are padded, masked); 0 = from horizon
    horizon: int = 12                  # H: steps it forecasts
    season: int = 0                    # m: seasonal naive, MASE's lag, Theta; 0 = from the dates' frequency, else none
    valid_frac: float = 0.1            # the last fraction of each series (at least horizon rows): validation targets
    backtest_windows: int = 0          # K: walk-forward windows held out after validation for the run's report
    norm: str = "revin"                # revin: window mean and spread | mean: window mean |x| only | global: one scaler
    diff: str = "none"                 # none | first | seasonal: the model forecasts differences, inverted at the output
    fourier: int = 2                   # Fourier terms per calendar cycle when the time column holds dates; 0 = none
    loss: str = "auto"                 # auto | mae | mse | smape (point forecasts; quantiles use the pinball loss)
    recent: int = 0                    # train only on windows whose targets end in the last K horizons of each series; 0 = all
    ensemble: int = 1                  # members (own initialisation and context length); the forecast is their median
    ets: bool = False                  # also score statsforecast's automatic ETS (forecast extra; one fit per window)
    mode: str = "direct"               # direct | autoregressive
    quantiles: list[float] = field(default_factory=list)  # e.g. [0.1, 0.5, 0.9]; [] = point forecast
    cell: str = "lstm"
    hidden_size: int = 64
    num_layers: int = 1
    dropout: float = 0.0
    batch_size: int = 32
    stride: int = 1                    # step between training windows
    seed: int = 0                      # batch order
    cell_options: dict[str, Any] = field(default_factory=dict)  # rnnlab.nn.options.CellOptions fields; {} = torch.nn

    def __post_init__(self) -> None:
        def check(ok: bool, what: str, want: str, got: object) -> None:
            if not ok:
                raise ConfigError(expected(field_name("forecast", what, self, FORECAST_FLAGS), want, repr(got)))

        check(is_int_at_least(self.seed, 0), "seed", "an integer >= 0", self.seed)

        check(isinstance(self.context, int) and not isinstance(self.context, bool) and self.context >= 0, "context",
              "an integer >= 0 (0 = from the horizon)", self.context)
        if self.context == 0 and isinstance(self.horizon, int) and isinstance(self.season, int):
            self.context = auto_context(self.horizon, self.season)
        for name in ("context", "horizon", "hidden_size", "num_layers", "batch_size", "stride", "ensemble"):
            v = getattr(self, name)
            check(isinstance(v, int) and not isinstance(v, bool) and v >= 1, name, "an integer >= 1", v)
        for name in ("season", "backtest_windows", "fourier", "recent"):
            v = getattr(self, name)
            check(isinstance(v, int) and not isinstance(v, bool) and v >= 0, name, "an integer >= 0", v)
        check(self.season <= self.context, "season", f"at most context = {self.context} (the seasonal-naive "
              "forecast repeats the last season of the context)", self.season)
        check(self.mode in MODES, "mode", f"one of {MODES}", self.mode)
        if self.ets and not ets_available():
            raise ConfigError(expected("forecast ets", "statsforecast installed for the ETS baseline (pip install "
                                       "'rnnlab[forecast]')", "it is not installed"))
        check(self.norm in NORMS, "norm", f"one of {NORMS}", self.norm)
        check(self.diff in DIFFS, "diff", f"one of {DIFFS}", self.diff)
        check(self.loss in LOSSES, "loss", f"one of {LOSSES}", self.loss)
        check(self.cell in CELLS, "cell", f"one of {CELLS}", self.cell)
        check(0 <= self.dropout < 1, "dropout", "a number in [0, 1)", self.dropout)
        self.cell_options = check_cell_options(self.cell_options, self.cell)
        check(0 < self.valid_frac < 1, "valid_frac", "a number in (0, 1)", self.valid_frac)
        check(all(isinstance(q, (int, float)) and 0 < q < 1 for q in self.quantiles), "quantiles",
              "numbers in (0, 1)", self.quantiles)
        check(len(set(self.quantiles)) == len(self.quantiles), "quantiles", "distinct values", self.quantiles)
        check(not (self.id_col and self.wide), "table layout", "a long table (id_col) or a wide one, not both",
              "both")
        check(not (self.wide and self.covariates), "covariates", "none with a wide table (every column is a series)",
              self.covariates)
        if self.mode == "autoregressive":
            check(not self.covariates, "covariates", "none in autoregressive mode (it feeds back only "
                  "its own target forecasts)", self.covariates)
            check(not self.quantiles, "quantiles", "none in autoregressive mode (point forecasts only)",
                  self.quantiles)
            check(self.ensemble == 1, "ensemble", "1 in autoregressive mode", self.ensemble)
        if self.quantiles and 0.5 not in self.quantiles:
            self.quantiles = sorted(list(self.quantiles) + [0.5])  # the median is the point forecast
        self.quantiles = sorted(float(q) for q in self.quantiles)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ForecastConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(expected("forecast config keys", f"a subset of {sorted(known)}", unknown))
        return cls(**data)


def auto_context(horizon: int, season: int = 0) -> int:
    """The context length read when none is given: a few horizons, at least two seasons."""
    return max(CONTEXT_HORIZONS * horizon, 2 * season, MIN_CONTEXT)


# ----------------------------------------------------------------------------- model


def member_contexts(context: int, members: int) -> list[int]:
    """Context lengths of the ensemble's members: the full L, then evenly shorter towards
    SHORTEST_CONTEXT x L."""
    return [max(1, round(context * (1 - k * (1 - SHORTEST_CONTEXT) / members))) for k in range(members)]


def standardised(v: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(v - mean) / std`` with the difference taken in halves: it stays finite for values near
    float32's limit, and is exactly the same number for every other value above float32's
    smallest normal one (halving is exact there)."""
    return (v / 2 - mean / 2) / (std / 2)


class Forecaster(nn.Module):
    """Inputs (L, B, D) whose first ``n_targets`` channels are targets and whose last channel is 1
    on real rows and 0 on padding; outputs in the same units as the target channels."""

    def __init__(self, *, input_dims: int, n_targets: int, horizon: int, n_quantiles: int, cell: str,
                 hidden_size: int, num_layers: int, dropout: float, mode: str,
                 cell_options: dict[str, Any] | None = None, revin: bool = False, context: int = 0,
                 members: int = 1, scale_only: bool = False) -> None:
        super().__init__()
        self.mode, self.horizon, self.n_targets, self.n_quantiles = mode, horizon, n_targets, n_quantiles
        self.revin, self.context, self.scale_only = revin, context, scale_only
        self.contexts = member_contexts(context, members) if context else [0] * members
        self.rnns = nn.ModuleList(recurrent_layer(cell, input_dims, hidden_size, num_layers, cell_options,
                                                  dropout=dropout) for _ in range(members))
        self.drop = nn.Dropout(dropout)
        width = horizon * n_targets * n_quantiles if mode == "direct" else n_targets
        self.heads = nn.ModuleList(nn.Linear(hidden_size, width) for _ in range(members))

    @property
    def rnn(self) -> nn.Module:
        return self.rnns[0]

    def stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RevIN's statistics of the target channels over the real rows of the context:
        mean and spread (B, D_y); without RevIN, 0 and 1."""
        tgt = x[..., : self.n_targets]
        if not self.revin:
            zero = tgt.new_zeros(tgt.shape[1:])
            return zero, zero + 1
        mask = x[..., -1:]
        count = mask.sum(0).clamp_min(1.0)
        # sums and squares of values near float32's limit overflow: a window whose magnitude passes
        # REVIN_UNIT is taken in units of its largest value (every other window in units of 1, exactly)
        peak = (tgt.abs() * mask).amax(0)
        unit = torch.where(peak > REVIN_UNIT, peak, torch.ones_like(peak))
        tgt = tgt / unit
        if self.scale_only:  # DeepAR's mean scaling: divided by the mean magnitude, not centred
            level = (tgt.abs() * mask).sum(0) / count * unit
            return torch.zeros_like(level), level + 1e-6 * (level == 0)
        mean = (tgt * mask).sum(0) / count
        var = (((tgt - mean) * mask) ** 2).sum(0) / count
        # a flat window keeps a spread: 0.1 % of its level (or 1e-6), never a division by zero
        floor = 1e-3 * (tgt.abs() * mask).sum(0) / count * unit + 1e-6
        return mean * unit, torch.maximum(var.sqrt() * unit, floor)

    def normalise(self, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        if not self.revin:
            return x
        d = self.n_targets
        tgt = standardised(x[..., :d], mean, std) * x[..., -1:]  # padding rows stay 0
        return torch.cat([tgt, x[..., d:]], -1)

    def members_normalised(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """direct: x (L, B, D) -> per-member forecasts in RevIN units (K, B, H, D_y, Q), mean, std."""
        mean, std = self.stats(x)
        xn = self.normalise(x, mean, std)
        outs = []
        b, d = x.shape[1], self.n_targets
        for rnn, head, c in zip(self.rnns, self.heads, self.contexts):
            out, _ = rnn(xn[-c:] if c else xn)
            outs.append(head(self.drop(out[-1])).view(b, self.horizon, d, self.n_quantiles))
        return torch.stack(outs), mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """direct: x (L, B, D) -> (B, H, D_y, Q), the members' median. autoregressive: x (T, B, D)
        -> next-step predictions at every position (T, B, D_y), RevIN statistics from the first
        ``context`` steps."""
        if self.mode == "direct":
            p, mean, std = self.members_normalised(x)
            med = p.median(0).values if p.shape[0] > 2 and ENSEMBLE_REDUCE == "median" else p.mean(0)
            return med * std[:, None, :, None] + mean[:, None, :, None]
        mean, std = self.stats(x[: self.context] if self.context else x)
        out, _ = self.rnn(self.normalise(x, mean, std))
        return self.heads[0](self.drop(out)) * std + mean

    @torch.no_grad()
    def rollout(self, context: torch.Tensor, steps: int) -> torch.Tensor:
        """Autoregressive forecast: context (L, B, D_y + 1) -> (B, steps, D_y, 1)."""
        mean, std = self.stats(context)
        out, state = self.rnn(self.normalise(context, mean, std))
        y = self.heads[0](out[-1])  # (B, D_y), normalised
        preds = [y]
        one = context.new_ones(context.shape[1], 1)
        for _ in range(steps - 1):
            out, state = self.rnn(torch.cat([y, one], -1)[None], state)
            y = self.heads[0](out[-1])
            preds.append(y)
        return (torch.stack(preds, 1) * std[:, None] + mean[:, None])[..., None]


def pinball(pred: torch.Tensor, y: torch.Tensor, quantiles: list[float]) -> torch.Tensor:
    """Mean pinball loss. pred (..., B, H, D, Q), y (B, H, D)."""
    q = torch.tensor(quantiles, dtype=pred.dtype, device=pred.device)
    diff = y[..., None] - pred
    return torch.maximum(q * diff, (q - 1) * diff).mean()


# ----------------------------------------------------------------------------- metrics


def forecast_metrics(y: np.ndarray, yhat: np.ndarray, mase_scale: np.ndarray) -> dict[str, float]:
    """y, yhat (W, H, D) in data units; mase_scale (D,) or (W, D) = in-sample MAE of the (seasonal)
    naive forecast, NaN where it is undefined (see :func:`mase_scale`): those windows and targets
    are left out of MASE, which is NaN (null in ``--json``) when none is left. sMAPE in percent, with 0/0 counted as 0."""
    err = yhat - y
    # halves first: |y| + |yhat| and the errors of data near float64's limit (1e300) stay finite
    denom = np.abs(y) / 2 + np.abs(yhat) / 2
    smape = np.divide(np.abs(err), denom, out=np.zeros_like(err), where=denom > 0)
    scale = np.asarray(mase_scale, dtype=np.float64)
    if scale.ndim == 1:
        scale = np.broadcast_to(scale, (y.shape[0], y.shape[-1]))
    defined = ~np.isnan(scale)  # each window in its own series' unit, where it has one
    mase = (np.abs(err).mean(1)[defined] / scale[defined]).mean() if defined.any() else math.nan
    peak = float(np.abs(err).max()) if err.size else 0.0
    peak = peak if 0 < peak < np.inf else 1.0  # RMSE on errors divided by the largest: no overflow when squared
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(peak * np.sqrt(((err / peak) ** 2).mean())),
        "smape": float(100 * smape.mean()),
        "mase": float(mase),
    }


def naive_forecast(history: np.ndarray, horizon: int, season: int = 0) -> np.ndarray:
    """history (W, L, D) -> (W, H, D): the last value, or with ``season=m`` the value one
    season before each target step (``y[t+h-m*ceil((h+1)/m)]``)."""
    if season <= 1:
        return np.repeat(history[:, -1:, :], horizon, axis=1)
    idx = [history.shape[1] - season + (h % season) for h in range(horizon)]
    return history[:, idx, :]


def mase_scale(train_targets: np.ndarray, season: int) -> np.ndarray:
    """Per target, the in-sample MAE of the (seasonal) naive one-step forecast: MASE's unit.
    A history no longer than the season falls back to lag 1. NaN where that error is zero (up to
    rounding): a constant history, or one that repeats exactly at the seasonal lag, has no unit,
    and MASE is undefined for it."""
    m = max(1, season)
    if len(train_targets) <= m:
        m = 1
    if len(train_targets) <= m:
        raise DataError(expected("history for MASE", f"more than {m} rows", len(train_targets)))
    s = np.abs(train_targets[m:] - train_targets[:-m]).mean(0)
    return np.where(s <= 8 * np.finfo(np.float64).eps * np.abs(train_targets).max(0), np.nan, s)


def warn_mase_left_out(where: str, names: list[str], total: int, season: int) -> None:
    """A DataWarning naming the series left out of MASE (:func:`mase_scale`: their history has no
    unit); nothing when there are none."""
    if not names:
        return
    naive = f"seasonal-naive (m={season})" if season > 1 else "naive (last value)"
    why = (f"the in-sample {naive} error of {{}} history is zero (constant"
           f"{f', or repeating exactly every {season} steps' if season > 1 else ''}), so MASE is undefined")
    if total == 1 and names == [""]:
        msg = f"MASE left out (null): {why.format('its')}"
    else:
        msg = (f"{len(names)} of {total} series left out of the MASE scores (mase_series_left_out): "
               f"{why.format('their')} for them: {listed(names)}")
    warnings.warn(f"{where}: {msg}", DataWarning, stacklevel=3)


def calendar_features(frame: SeriesFrame, freq: str, season: int, terms: int, local: bool = False) -> np.ndarray:
    """Fourier terms sin/cos(2 pi k phase), k = 1..terms, of the calendar cycles that fit the
    frequency (month of year for monthly data, day of week and of year for daily, ...) from the
    time column's dates; with numeric times, of the position in the season. (N, F). Dates with a
    UTC offset (+01:00) are read on their own wall clock with ``local`` (runs since it was kept,
    see ``ForecastTask``), else in UTC (older runs keep their features)."""
    n = len(frame)
    if terms == 0 or frame.time_values is None:
        return np.zeros((n, 0))
    phases: list[np.ndarray] = []
    if freq:
        values = wall_values(frame) if local else frame.time_values
        dts = [datetime.fromtimestamp(t, tz=timezone.utc) for t in values]
        year = np.array([(d.timetuple().tm_yday - 1) / 365.25 for d in dts])
        if freq == "monthly":
            phases.append(np.array([(d.month - 1) / 12 for d in dts]))
        elif freq == "quarterly":
            phases.append(np.array([((d.month - 1) // 3) / 4 for d in dts]))
        elif freq == "weekly":
            phases.append(year)
        elif freq == "daily":
            phases += [np.array([d.weekday() / 7 for d in dts]), year]
        elif freq == "hourly":
            phases += [np.array([d.hour / 24 for d in dts]), np.array([d.weekday() / 7 for d in dts])]
    elif season > 1:
        phases.append((frame.time_values % season) / season)
    cols = [f(2 * np.pi * k * ph) for ph in phases for k in range(1, terms + 1) for f in (np.sin, np.cos)]
    return np.stack(cols, 1) if cols else np.zeros((n, 0))


@dataclass
class Prepared:
    """One series ready for windows: ``inputs`` has ``pad`` rows of padding in front (mask 0)."""

    frame: SeriesFrame
    inputs: np.ndarray    # (pad + N, D) float32: targets (differenced), covariates, features, mask
    targets: np.ndarray   # (N, D_y) float32: what the model forecasts (differenced; scaled if norm=global)
    pad: int


def budget(windows: int, batch_size: int) -> dict[str, Any]:
    """TrainConfig fields for ``windows`` training windows: about BUDGET_EPOCHS passes, but at
    least MIN_SAMPLES and at most MAX_SAMPLES windows seen, Adam with a cosine decay after a 5 %
    warm-up and EVALS_PER_RUN evaluations (the best one is kept)."""
    samples = min(max(BUDGET_EPOCHS * windows, MIN_SAMPLES), MAX_SAMPLES)
    steps = max(1, math.ceil(samples / batch_size))
    return {"max_steps": steps, "max_epochs": 0, "optimizer": "adam", "lr": 3e-3, "schedule": "cosine",
            "warmup_steps": max(1, steps // 20), "min_lr": 1e-5, "eval_every": max(1, steps // EVALS_PER_RUN)}


# ----------------------------------------------------------------------------- the task


class ForecastTask:
    name = "forecast"
    train_defaults = {"max_steps": 0, "max_epochs": 10, "optimizer": "adam", "lr": 3e-3}   # as classify's
    items_name = "samples"

    @property
    def compile_methods(self) -> dict[str, bool]:
        """TrainConfig.compile: what ``_loss`` calls on the model, each in one graph."""
        return {"forward": True} if self.config.mode == "autoregressive" else {"members_normalised": True}
    metric_name = "mase"
    data_keys = ("data",)   # recorded with a checksum in the run folder

    def __init__(self, config: ForecastConfig, metadata: dict[str, Any] | None = None) -> None:
        self.config = c = config
        self._series: list[SeriesFrame] | None = None
        if metadata is not None:
            if "splits" not in metadata:
                raise CheckpointError("forecast run: expected a run of this rnnlab's forecaster (per-series splits "
                                      "in its metadata), got one from an older version; train it again")
            self._meta = dict(metadata)
            self.scaler = Scaler.from_dict(metadata["scaler"])
            self.freq, self.season = metadata.get("freq", ""), int(metadata.get("season", c.season))
            # runs from before these keys: every file's own offset and interval step its future rows
            self.offset, self.time_step = metadata.get("offset", ""), float(metadata.get("time_step", 0.0))
            # runs from before this key: calendar features of dates with a UTC offset in UTC
            self.local_calendar = bool(metadata.get("local_calendar", False))
            self.splits = {k: tuple(v) for k, v in metadata["splits"].items()}
            self.loss = metadata.get("loss", "mae" if c.loss == "auto" else c.loss)
            self.train_defaults = metadata.get("train_defaults", ForecastTask.train_defaults)
            return
        if not c.data:
            raise ConfigError(expected("forecast data", "a CSV file", "none"))
        if not c.targets and not c.wide:
            raise ConfigError(expected("forecast targets", "at least one --target column", "none"))
        check_column_roles(c)
        series = self.load(c.data)
        self.freq, inferred = infer_frequency(series[0].times, series[0].time_values)
        self.season = c.season or (inferred if inferred <= c.context else 0)
        if c.diff == "seasonal" and self.season < 2:
            why = (f"--season {c.season}" if c.season
                   else f"the {self.freq} season of {inferred} steps is longer than the context of {c.context} rows"
                   if inferred > c.context else f"{self.freq} dates have a season of 1" if self.freq
                   else "no --time-col to infer it from" if not c.time_col
                   else "the time column holds no calendar dates to infer it from")
            raise ConfigError(expected("--diff seasonal", "a season of 2 or more steps (--season N, or dates "
                                       "with a calendar frequency)", f"a season of {self.season} ({why}); "
                                       "--diff first differences by one step"))
        # how `forecast` steps past a file's end where the file cannot tell (see future_time_values)
        self.offset, self.time_step = calendar_offset(series[0]), median_step(series[0])
        self.local_calendar = True   # calendar features on the dates' own wall clock (calendar_features)
        hold = c.backtest_windows * c.horizon
        self.splits: dict[str, tuple[int, int, int]] = {}   # name -> (n_train, n_valid_end, n_rows)
        for s in series:
            n = len(s) - hold
            n_train = min(int(n * (1 - c.valid_frac)), n - c.horizon)
            what = f"{c.data}{self._label(s)}: training part (first {1 - c.valid_frac:.0%})"
            if len(series) == 1:
                if n_train < c.context + c.horizon:   # a horizon longer than the file leaves n_train < 0
                    held = f"the last horizon{' and the backtest windows' if hold else ''} held out"
                    what = f"{what} of its {len(s)} rows, {held}"
                check_length(max(n_train, 0), c.context, c.horizon, what)
            elif n_train < self.lag + 2:
                raise DataError(f"{what}: expected at least {self.lag + 2} rows before the last horizon = "
                                f"{c.horizon} rows, got {max(n_train, 0)}")
            if s.name in self.splits:
                raise DataError(f"{c.data}: series {s.name!r}: expected unique series, got it twice")
            self.splits[s.name] = (n_train, n, len(s))
        not_positive = [s.name for s in series if not np.all(s.targets[: self.splits[s.name][0]] > 0)]
        self.loss = c.loss if c.loss != "auto" else "mae" if not_positive else "smape"
        self.warn_smape(not_positive, len(series))
        self.scaler = Scaler.fit(self._scaler_rows(series), f"{c.data}: training part",
                                 self.target_names() + list(c.covariates))
        self._series = series
        self._meta = {
            "scaler": self.scaler.to_dict(),
            "splits": {k: list(v) for k, v in self.splits.items()},
            "freq": self.freq,
            "season": self.season,
            "offset": self.offset,
            "time_step": self.time_step,
            "local_calendar": self.local_calendar,
            "loss": self.loss,
            "series": len(series),
            "targets": self.target_names(),
            "covariates": list(c.covariates),
            "last_valid_time": {s.name: float(s.time_values[self.splits[s.name][1] - 1])
                                for s in series if s.time_values is not None},
        }
        self._prepared()  # every data error (values float32 cannot hold) before a model is built
        self.warn_validation_mase()
        self.train_defaults = budget(len(self.pairs("train")[1]), c.batch_size)
        self._meta["train_defaults"] = self.train_defaults

    def warn_smape(self, not_positive: list[str], total: int) -> None:
        """A DataWarning when the sMAPE loss, asked for by name, trains on series whose training part
        crosses or touches zero (``not_positive``: their names), where it is undefined."""
        c = self.config
        if self.loss != "smape" or not not_positive or c.quantiles or c.mode != "direct":
            return  # (quantiles train on the pinball loss, the autoregressive mode on the squared error)
        which = "its training part" if total == 1 and not_positive == [""] else \
            f"the training part of {len(not_positive)} of {total} series ({listed(not_positive)})"
        warnings.warn(f"{c.data}: --loss smape: {which} is not all > 0, and sMAPE is undefined where a series "
                      "crosses or touches zero; --loss auto picks mae for such data", DataWarning, stacklevel=3)

    # --- data --------------------------------------------------------------------------

    @staticmethod
    def _label(s: SeriesFrame) -> str:
        return f" (series {s.name!r})" if s.name else ""

    def target_names(self) -> list[str]:
        """The forecast columns: the targets, or for a wide table (one column per series) "value"."""
        return ["value"] if self.config.wide else list(self.config.targets)

    @property
    def lag(self) -> int:
        return {"none": 0, "first": 1, "seasonal": max(1, self.season)}[self.config.diff]

    def load(self, path: str) -> list[SeriesFrame]:
        c = self.config
        series = load_forecast_series(path, c.targets, c.covariates, c.time_col or None, c.id_col or None, c.wide,
                                      c.missing, c.format, encoding=c.encoding)
        warn_gaps(path, series)
        return series

    def load_other(self, path: str) -> list[SeriesFrame]:
        """A file other than the run's own data (forecast, evaluate --csv, backtest), checked against
        the run's time frequency."""
        with columns_of_a_run():
            series = self.load(path)
        self.check_frequency(path, series)
        return series

    @property
    def series(self) -> list[SeriesFrame]:
        if self._series is None:
            self._series = self.load(self.config.data)
        return self._series

    @property
    def frame(self) -> SeriesFrame:
        """The first (for most files the only) series."""
        return self.series[0]

    @property
    def n_train(self) -> int:
        """Training rows of the first series."""
        return next(iter(self.splits.values()))[0]

    def _differenced(self, y: np.ndarray) -> np.ndarray:
        lag = self.lag
        z = np.zeros_like(y)
        if lag:
            z[lag:] = y[lag:] - y[:-lag]
        else:
            z[:] = y
        return z

    def _scaler_rows(self, series: list[SeriesFrame]) -> np.ndarray:
        rows = []
        for s in series:
            n_train = self.splits[s.name][0]
            z = self._differenced(s.targets)[self.lag : n_train]
            rows.append(np.concatenate([z, s.covariates[self.lag : n_train]], 1))
        return np.concatenate(rows, 0)

    def prepare(self, frame: SeriesFrame) -> Prepared:
        c = self.config
        d_y = frame.targets.shape[1]
        z = self._differenced(frame.targets)
        scaled = self.scaler.transform(np.concatenate([z, frame.covariates], 1))
        if c.norm != "global":
            scaled[:, :d_y] = z  # per-window statistics are taken inside the model
        feats = (calendar_features(frame, self.freq, self.season, c.fourier, self.local_calendar) if c.mode == "direct"
                 else np.zeros((len(frame), 0)))
        mask = np.ones((len(frame), 1))
        mask[: self.lag] = 0.0
        scaled[: self.lag, :d_y] = 0.0
        body = np.concatenate([scaled, feats, mask], 1)
        if c.mode == "autoregressive":
            body = np.concatenate([scaled[:, :d_y], mask], 1)
        pad = c.context
        where = f"{frame.path}{self._label(frame)}"  # per-window scaling feeds the values themselves
        inputs = as_float32(np.concatenate([np.zeros((pad, body.shape[1])), body], 0), where)
        return Prepared(frame, inputs, as_float32(scaled[:, :d_y], where), pad)

    def input_dims(self) -> int:
        c = self.config
        d_y = len(self.target_names())
        if c.mode == "autoregressive":
            return d_y + 1
        probe = SeriesFrame(np.zeros((1, d_y)), np.zeros((1, len(c.covariates))), [], [],
                            ["2000-01-01"] if self.freq else ["0"], np.zeros(1) if c.time_col else None)
        return d_y + len(c.covariates) + calendar_features(probe, self.freq, self.season, c.fourier).shape[1] + 1

    def origins(self, split: str, n: int | None = None) -> np.ndarray:
        """Forecast origins (first forecast row) of the first series; see :meth:`pairs`."""
        return self.pairs(split)[1][self.pairs(split)[0] == 0]

    def pairs(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(series index, origin row) of every window of a split: training windows end inside the
        training part; validation windows forecast rows after it, up to the validation end."""
        c = self.config
        sid, org = [], []
        for i, s in enumerate(self.series):
            n_train, n_valid, _ = self.splits[s.name]
            first = self.lag + (c.context if len(self.series) == 1 else 1)
            if split == "train":
                t = np.arange(first, n_train - c.horizon + 1, c.stride)
                if c.recent:  # N-BEATS' L_H: only windows that end in the last `recent` horizons
                    t = t[t >= n_train - c.recent * c.horizon]
            elif split == "valid":
                t = np.arange(max(n_train, first), n_valid - c.horizon + 1)
            else:
                raise ConfigError(expected("split", "train or valid", repr(split)))
            sid.append(np.full(len(t), i))
            org.append(t)
        return np.concatenate(sid).astype(int), np.concatenate(org).astype(int)

    def windows(self, prepared: list[Prepared], sid: np.ndarray, origins: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (L, W, D) and targets (W, H, D_y) in the model's units."""
        c = self.config
        xs, ys = [], []
        for i in np.unique(sid):
            p, t = prepared[i], origins[sid == i]
            idx = t[:, None] + p.pad + np.arange(-c.context, 0)[None, :]
            xs.append(p.inputs[idx])
            ys.append(p.targets[np.minimum(t[:, None] + np.arange(c.horizon)[None, :], len(p.targets) - 1)])
        order = np.argsort(np.concatenate([np.flatnonzero(sid == i) for i in np.unique(sid)]), kind="stable")
        x = np.concatenate(xs, 0)[order]
        y = np.concatenate(ys, 0)[order]
        return (torch.from_numpy(np.ascontiguousarray(x.transpose(1, 0, 2))), torch.from_numpy(np.ascontiguousarray(y)))

    # --- the Task contract ---------------------------------------------------------------

    def config_dict(self) -> dict[str, Any]:
        return self.config.to_dict()

    def metadata(self) -> dict[str, Any]:
        return dict(self._meta)

    def build_model(self) -> nn.Module:
        c = self.config
        d_y = len(self.target_names())
        return Forecaster(input_dims=self.input_dims(), n_targets=d_y, horizon=c.horizon,
                          n_quantiles=max(1, len(c.quantiles)), cell=c.cell, hidden_size=c.hidden_size,
                          num_layers=c.num_layers, dropout=c.dropout, mode=c.mode, cell_options=c.cell_options,
                          revin=c.norm != "global", context=c.context, members=c.ensemble,
                          scale_only=c.norm == "mean")

    def _prepared(self) -> list[Prepared]:
        """Every series of the run's data, prepared once."""
        if getattr(self, "_prep", None) is None:
            self._prep = [self.prepare(s) for s in self.series]
        return self._prep

    def train_batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> Iterator[dict[str, torch.Tensor]]:
        prepared = self._prepared()
        sid, org = self.pairs("train")
        order = np.random.default_rng([self.config.seed, epoch]).permutation(len(org))[rank::world_size]
        bs = self.config.batch_size
        for s in range(0, len(order), bs):
            b = order[s : s + bs]
            x, y = self.windows(prepared, sid[b], org[b])
            yield {"x": x, "y": y}

    def _loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.mode == "autoregressive":
            # Teacher forcing over context + horizon: predict step t+1 from steps <= t.
            d_y = y.shape[-1]
            ones = y.new_ones(y.shape[1], y.shape[0], 1)
            seq = torch.cat([x, torch.cat([y.transpose(0, 1), ones], -1)], 0)  # (L + H, B, D_y + 1)
            mean, std = model.stats(x)
            pred = standardised(model(seq[:-1]), mean, std)
            target = standardised(seq[1:, :, :d_y], mean, std)
            real = seq[1:, :, -1:]
            return ((pred - target) ** 2 * real).sum() / real.sum().clamp_min(1) / d_y
        pred, mean, std = model.members_normalised(x)  # (K, B, H, D_y, Q)
        yn = standardised(y, mean[:, None, :], std[:, None, :])
        if c.quantiles:
            return pinball(pred, yn, c.quantiles)
        err = pred[..., 0] - yn
        if self.loss == "smape":  # in the target's own units: 2 |y - f| / (|y| + |f|)
            f = pred[..., 0] * std[:, None, :] + mean[:, None, :]
            # in halves: |y - f| and |y| + |f| of values near float32's limit stay finite
            return (2 * ((f / 2 - y / 2).abs() / (y.abs() / 2 + f.abs() / 2).clamp_min(5e-9))).mean()
        return err.abs().mean() if self.loss == "mae" else (err ** 2).mean()

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor], carry: Any) -> StepOutput:
        device = next(model.parameters()).device
        loss = self._loss(model, batch["x"].to(device), batch["y"].to(device))
        return StepOutput(loss=loss, n_items=batch["y"].shape[0])

    @torch.no_grad()
    def predict_windows(self, model: nn.Module, x: torch.Tensor, steps: int | None = None) -> np.ndarray:
        """x (L, W, D) -> forecasts (W, H, D_y, Q) in the model's target units (differenced, and
        scaled with norm=global); :meth:`to_data_units` turns them into data units."""
        c = self.config
        steps = c.horizon if steps is None else steps
        was = model.training
        model.eval()
        device = next(model.parameters()).device
        outs = []
        try:
            for s in range(0, x.shape[1], 256):
                xb = x[:, s : s + 256].to(device)
                p = model.rollout(xb, steps) if c.mode == "autoregressive" else model(xb)[:, :steps]
                outs.append(p.float().cpu().numpy())
        finally:
            model.train(was)
        return np.concatenate(outs, 0).astype(np.float64)

    def to_data_units(self, p: np.ndarray, history: list[np.ndarray]) -> np.ndarray:
        """p (W, h, D_y, Q) in the model's units -> data units, given each window's raw history
        (the rows before its origin) to undo differencing."""
        c = self.config
        d_y = p.shape[2]
        if c.norm == "global":
            mean = np.asarray(self.scaler.mean[:d_y])[None, None, :, None]
            std = np.asarray(self.scaler.std[:d_y])[None, None, :, None]
            p = p * std + mean
        lag = self.lag
        if lag:  # y[t + h] = y[t + h - lag] + d[t + h]: from the history, then from earlier forecasts
            out = np.empty_like(p)
            for w, hist in enumerate(history):
                for h in range(p.shape[1]):
                    base = hist[len(hist) - lag + h][:, None] if h < lag else out[w, h - lag]
                    out[w, h] = base + p[w, h]
            p = out
        if p.shape[-1] > 1:
            p = np.sort(p, axis=-1)  # quantile heads may cross; sorting restores their order
        return p

    def point(self, pred: np.ndarray) -> np.ndarray:
        """The point forecast (W, H, D_y): the median quantile, or the only output."""
        if self.config.quantiles:
            return pred[..., self.config.quantiles.index(0.5)]
        return pred[..., 0]

    def forecast_data(self, model: nn.Module, series: list[SeriesFrame], sid: np.ndarray, origins: np.ndarray,
                      steps: int | None = None) -> np.ndarray:
        """Forecasts (W, h, D_y, Q) in data units for windows starting at ``origins`` of ``series[sid]``."""
        prepared = {int(i): self.prepare(series[int(i)]) for i in np.unique(sid)}
        plist = [prepared.get(i) for i in range(len(series))]
        x, _ = self.windows(plist, sid, origins)
        pred = self.predict_windows(model, x, steps)
        return self.to_data_units(pred, [series[i].targets[:t] for i, t in zip(sid, origins)])

    def score(self, model: nn.Module, series: list[SeriesFrame] | SeriesFrame, origins: np.ndarray,
              sid: np.ndarray | None = None, cache: str = "") -> dict[str, Any]:
        """Model and baseline metrics on the windows at ``origins`` of ``series[sid]`` (data units).
        Each window's MASE unit comes from its series' rows before the series' first scored origin.
        ``cache`` names a fixed set of windows (the run's own validation windows) whose baseline
        scores are kept: they do not depend on the model, and Theta is fitted per window."""
        c = self.config
        if isinstance(series, SeriesFrame):
            series = [series]
        origins = np.asarray(origins, dtype=int)
        sid = np.zeros(len(origins), dtype=int) if sid is None else np.asarray(sid, dtype=int)
        if len(origins) == 0:
            raise DataError(expected("forecast windows", "at least one", 0))
        pred = self.forecast_data(model, series, sid, origins)
        y = np.stack([series[i].targets[t : t + c.horizon] for i, t in zip(sid, origins)])  # (W, H, D_y)
        hist = [series[i].targets[:t] for i, t in zip(sid, origins)]
        scale = self.mase_scales(series, sid, origins)
        scales = np.stack([scale[int(i)] for i in sid])  # (W, D_y)
        out: dict[str, Any] = {"windows": int(len(origins)), "series": int(len(scale))}
        out.update(forecast_metrics(y, self.point(pred), scales))
        undefined = self.mase_left_out(series, sid, origins, scale)
        out["mase_series_left_out"], out["_mase_left_out"] = len(undefined), undefined
        kept = self.__dict__.setdefault("_baselines", {})
        if not cache or cache not in kept:
            kept[cache] = self.baselines(y, hist, scales)
        out.update(kept[cache])
        if len(c.quantiles) >= 2:
            lo, hi = pred[..., 0], pred[..., -1]
            out["coverage"] = float(((y >= lo) & (y <= hi)).mean())
            out["interval"] = f"{c.quantiles[0]:g}-{c.quantiles[-1]:g}"
        out["_pred"], out["_y"], out["_origins"], out["_sid"], out["_scales"] = pred, y, origins, sid, scales
        return out

    def mase_scales(self, series: list[SeriesFrame], sid: np.ndarray, origins: np.ndarray) -> dict[int, np.ndarray]:
        """MASE's unit (D_y,) of each scored series (index -> unit) from its rows before its first
        scored origin; NaN for the targets that have none (:func:`mase_scale`), which MASE leaves out."""
        first = {int(i): int(origins[sid == i].min()) for i in np.unique(sid)}
        return {i: mase_scale(series[i].targets[:t], self.season) for i, t in first.items()}

    def warn_validation_mase(self) -> None:
        """The DataWarning naming the series that MASE leaves out of the validation windows, if any."""
        sid, org = self.pairs("valid")
        warn_mase_left_out(f"{self.config.data}: validation windows", self.mase_left_out(self.series, sid, org),
                           len(np.unique(sid)), self.season)

    def mase_left_out(self, series: list[SeriesFrame], sid: np.ndarray, origins: np.ndarray,
                      scales: dict[int, np.ndarray] | None = None) -> list[str]:
        """The names of the scored series with a target that MASE leaves out (no unit; its other
        targets, if any, are kept)."""
        scales = self.mase_scales(series, sid, origins) if scales is None else scales
        return [series[i].name for i, v in scales.items() if np.isnan(v).any()]

    def baselines(self, y: np.ndarray, hist: list[np.ndarray], scales: np.ndarray) -> dict[str, float]:
        """Naive, seasonal-naive (season > 1), Theta and ETS scores on the windows ``y`` (W, H, D_y)
        whose histories are ``hist``."""
        c = self.config
        m = self.season
        out: dict[str, float] = {}
        last = np.stack([h[-1:] for h in hist])  # (W, 1, D_y)
        for k, v in forecast_metrics(y, np.repeat(last, c.horizon, 1), scales).items():
            out[f"naive_{k}"] = v
        if m > 1:
            snaive = np.stack([naive_forecast(_padded(h, m)[None], c.horizon, m)[0] for h in hist])
            for k, v in forecast_metrics(y, snaive, scales).items():
                out[f"snaive_{k}"] = v
        if len(hist) <= THETA_MAX_WINDOWS:
            theta = np.stack([np.stack([theta_forecast(h[:, d], c.horizon, m) for d in range(h.shape[1])], -1)
                              for h in hist])
            for k, v in forecast_metrics(y, theta, scales).items():
                out[f"theta_{k}"] = v
        if c.ets and len(hist) * y.shape[-1] > ETS_MAX_FITS:
            out["ets_left_out"] = 1
        elif c.ets:
            fits = [[ets_forecast(h[:, d], c.horizon, m) for d in range(h.shape[1])] for h in hist]
            ets = np.stack([np.stack([f for f, _ in row], -1) for row in fits])
            for k, v in forecast_metrics(y, ets, scales).items():
                out[f"ets_{k}"] = v
            out["ets_naive_fallbacks"] = sum(not ok for row in fits for _, ok in row)
        return out

    @torch.no_grad()
    def window_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        """The training loss averaged over windows, in chunks."""
        device = next(model.parameters()).device
        total = 0.0
        for s in range(0, x.shape[1], 512):
            xb, yb = x[:, s : s + 512].to(device), y[s : s + 512].to(device)
            total += float(self._loss(model, xb, yb)) * yb.shape[0]
        return total / x.shape[1]

    def evaluate(self, model: nn.Module, split: str = "valid") -> dict[str, float]:
        sid, org = self.pairs(split)
        m = self.score(model, self.series, org, sid, cache=split)
        was = model.training
        model.eval()
        try:
            x, y = self.windows(self._prepared(), sid, org)
            m["loss"] = self.window_loss(model, x, y)
        finally:
            model.train(was)
        return {k: v if isinstance(v, int) else float(v) for k, v in m.items()   # counts stay integers
                if not k.startswith("_") and not isinstance(v, str)}

    # --- files: evaluate / forecast / backtest ----------------------------------------------

    def evaluate_file(self, model: nn.Module, path: str) -> dict[str, Any]:
        """Metrics and baselines over every window of every series of ``path`` (stride 1) that has a
        full context; series with none are left out, named in a DataWarning and counted
        (``series_left_out``)."""
        c = self.config
        series = self.load_other(path)
        sid, org = [], []
        for i, s in enumerate(series):
            t = np.arange(c.context, len(s) - c.horizon + 1)
            sid.append(np.full(len(t), i))
            org.append(t)
        if not sum(len(t) for t in org):
            raise DataError(f"{path}: expected at least context + horizon = {c.context} + {c.horizon} rows in a "
                            f"series, got {max(len(s) for s in series)}")
        short = [s.name for s, t in zip(series, org) if not len(t)]
        if short:
            warnings.warn(f"{path}: {len(short)} of {len(series)} series left out of the scores, shorter than context "
                          f"+ horizon = {c.context} + {c.horizon} rows: {listed(short)}", DataWarning, stacklevel=2)
        m = self.score(model, series, np.concatenate(org), np.concatenate(sid))
        warn_mase_left_out(path, m["_mase_left_out"], m["series"], self.season)
        return {**{k: v for k, v in m.items() if not k.startswith("_")}, "series_left_out": len(short)}

    def after_validation(self, s: SeriesFrame) -> int:
        """The first row of ``s`` after the run's validation span: rows from there on never chose
        the checkpoint. Matched by timestamp when both have a time column, else by row number;
        a series the run never saw is out of sample from its first row."""
        name = s.name
        if name not in self.splits:
            return 0
        last = self._meta.get("last_valid_time", {}).get(name)
        if last is not None and s.time_values is not None:
            return int(np.searchsorted(s.time_values, last, side="right"))
        return self.splits[name][1]

    def backtest_start(self, s: SeriesFrame) -> int:
        """The first backtest origin of ``s``: after the run's validation span, with a full context
        (``context`` rows, plus the differencing lag) before it. A
        series the run never saw, or a file of only later rows, starts at its first full context
        (and never before its third row: MASE's unit needs two rows of history)."""
        return max(self.after_validation(s), self.config.context + self.lag, 2 + self.lag)

    def _nothing_to_backtest(self, series: list[SeriesFrame]) -> DataError:
        c = self.config
        full = (f"context + lag + horizon = {c.context} + {self.lag} + {c.horizon} rows" if self.lag else
                f"context + horizon = {c.context} + {c.horizon} rows")
        # where the validation span, not the context, decides every series' start: its message
        by_validation = all(self.after_validation(t) >= self.backtest_start(t) for t in series)
        if len(series) > 1 and not by_validation:
            return DataError(f"{series[0].path}: backtest: expected a series with at least {full} (and a horizon "
                             f"after the run's validation span, for the series it trained on), got none of "
                             f"{len(series)}")
        s = series[0]
        after = self.after_validation(s)
        if by_validation:
            return DataError(f"{s.path}{self._label(s)}: backtest: expected at least horizon = {c.horizon} rows after "
                             f"the run's validation span (its first {after} rows chose the checkpoint), got "
                             f"{max(0, len(s) - after)}; backtest on a file that extends the series")
        return DataError(f"{s.path}{self._label(s)}: backtest: expected at least {full} (a full context before "
                         f"the first window), got {len(s)}")

    def backtest(self, model: nn.Module, series: list[SeriesFrame] | SeriesFrame, windows: int) -> dict[str, Any]:
        """Rolling origin over data after the validation span: in each series, window k forecasts
        rows [t_k, t_k + H) from the rows before t_k, t_k = :meth:`backtest_start` + k H, for at
        most ``windows`` windows that fit. The model is not refitted between windows. Series
        without a window are left out, named in a DataWarning and counted (``series_left_out``);
        a DataError when no series has one."""
        c = self.config
        if isinstance(series, SeriesFrame):
            series = [series]
        if windows < 1:
            raise ConfigError(expected("--windows", "an integer >= 1", windows))
        sid, org = [], []
        for i, s in enumerate(series):
            t = self.backtest_start(s) + c.horizon * np.arange(windows)
            t = t[t + c.horizon <= len(s)]
            sid.append(np.full(len(t), i))
            org.append(t)
        sid_a, org_a = np.concatenate(sid).astype(int), np.concatenate(org).astype(int)
        if len(org_a) == 0:
            raise self._nothing_to_backtest(series)
        short = [s.name for s, t in zip(series, org) if not len(t)]
        if short:
            rows = f"{c.context} + lag {self.lag}" if self.lag else f"{c.context}"
            warnings.warn(f"{series[0].path}: backtest: {len(short)} of {len(series)} series left out, without a full "
                          f"context ({rows} rows) before a horizon of rows after the run's validation span: "
                          f"{listed(short)}", DataWarning, stacklevel=2)
        total = self.score(model, series, org_a, sid_a)
        total["series_left_out"] = len(short)
        per = []
        for k in range(len(org_a)):
            pm = forecast_metrics(total["_y"][k : k + 1], self.point(total["_pred"][k : k + 1]),
                                  total["_scales"][k : k + 1])   # its series' unit, as score() took it
            row = {"window": k + 1, "series": series[sid_a[k]].name, "origin_row": int(org_a[k]), **pm}
            hist = series[sid_a[k]].targets[: org_a[k]]
            row["naive_mae"] = float(np.abs(total["_y"][k] - hist[-1]).mean())
            if self.season > 1:
                sn = naive_forecast(_padded(hist, self.season)[None], c.horizon, self.season)[0]
                row["snaive_mae"] = float(np.abs(total["_y"][k] - sn).mean())
            per.append(row)
        total["per_window"] = per
        return total

    def backtest_file(self, model: nn.Module, path: str, windows: int, out: str | None = None) -> dict[str, Any]:
        bt = self.backtest(model, self.load_other(path), windows)
        warn_mase_left_out(f"{path}: backtest", bt["_mase_left_out"], bt["series"], self.season)
        if out:
            write_rows(out, bt["per_window"])
        return bt

    def forecast_file(self, model: nn.Module, path: str, horizon: int, out: str | None) -> list[dict[str, Any]]:
        """Forecast ``horizon`` steps past the end of every series of ``path`` from its last rows and
        write them to ``out`` (CSV: series id if any, step, time if known, point and quantile columns)."""
        c = self.config
        if horizon < 1:
            raise ConfigError(expected("--horizon", "an integer >= 1", horizon))
        if c.mode == "direct" and horizon > c.horizon:
            raise ConfigError(expected("--horizon", f"at most the trained horizon {c.horizon} (direct mode; "
                                       "train with a longer --horizon or --mode autoregressive)", horizon))
        series = self.load_other(path)
        self.check_short(path, series)
        # the file's own calendar step, else the run's (a file of one or two rows, or with gaps)
        future = [future_time_values(s, horizon, calendar_offset(s) or self.offset, self.freq or None,
                                     self.time_step) for s in series]
        for s, f in zip(series, future):
            if f is None and s.time_values is not None:  # one row, and a run from before time_step was kept
                raise DataError(f"{path}{self._label(s)}: expected at least 2 rows to tell the time step, got 1")
        sid = np.arange(len(series))
        ends = np.array([len(s) for s in series])
        pred = self.forecast_data(model, [extended(s, horizon, f) for s, f in zip(series, future)], sid, ends,
                                  horizon)
        names = self.target_names()
        rows, cells = [], []   # cells: the time column as the CSV writes it (rows: numbers as numbers)
        for i, s in enumerate(series):
            times = future_times(s, future[i])
            for h in range(horizon):
                row: dict[str, Any] = {}
                if s.name:
                    row[c.id_col or "series"] = s.name
                row["step"] = h + 1
                if times is not None:
                    row[c.time_col] = time_number(times[h])
                    cells.append(times[h])
                for j, name in enumerate(names):
                    row[name] = float(self.point(pred[i : i + 1])[0, h, j])
                    if len(c.quantiles) >= 2:
                        for qi, q in enumerate(c.quantiles):
                            row[f"{name}_q{q:g}"] = float(pred[i, h, j, qi])
                rows.append(row)
        if out:
            write_rows(out, [{**r, c.time_col: t} for r, t in zip(rows, cells)] if cells else rows)
        return rows

    def check_short(self, path: str, series: list[SeriesFrame]) -> None:
        """Series shorter than the context are padded and masked, as in training on many series;
        differencing needs its lag and one row more."""
        c = self.config
        need = self.lag + 1
        for s in series:
            if len(s) < need:
                raise DataError(f"{path}{self._label(s)}: --diff {c.diff}: expected at least {need} rows (the "
                                f"lag {self.lag} and one more), got {len(s)}")
            if len(s) < c.context and len(self.splits) == 1:  # a one-series run never saw padding
                warnings.warn(f"{path}{self._label(s)}: only {len(s)} of the context's {c.context} rows: the "
                              "missing rows are padded and masked, which this run (trained on one series, full "
                              "contexts only) never saw", DataWarning, stacklevel=3)

    def check_frequency(self, path: str, series: list[SeriesFrame]) -> None:
        """A run trained on dates takes its calendar inputs from them: a file of plain-number times
        would give those of 1970, and one at another frequency wrong ones. (Dates with no calendar
        frequency are only warned about, by warn_gaps: their calendar inputs are their own.)"""
        if not self.freq:
            return
        for s in series:
            if not s.times:
                continue
            if plain_numbers(s.times):
                got = "plain numbers (steps, not dates)"
            else:
                freq = infer_frequency(s.times, s.time_values)[0]
                if not freq or freq == self.freq:   # (one row cannot tell: the run's offset steps it)
                    continue
                got = f"{freq} ones"
            raise DataError(f"{path}{self._label(s)}: expected {self.freq} timestamps (the run's training "
                            f"data), got {got}")

    # --- report ------------------------------------------------------------------------

    def report_sections(self, model: nn.Module, run_dir: str) -> list[ReportSection]:
        c = self.config
        sid, org = self.pairs("valid")
        valid = self.score(model, self.series, org, sid, cache="valid")
        sections = [ReportSection("Forecast: scores beside the baselines (validation windows)",
                                  scores_table(valid, self.season))]
        first = sid == 0
        sections.append(ReportSection("History and forecast (last validation window)",
                                      plot_forecast(self.frame, {"_origins": org[first], "_pred": valid["_pred"][first]},
                                                    c, self.n_train)))
        if c.backtest_windows == 0:
            sections.append(ReportSection("Backtest", "<p>Not run: train with --backtest-windows K to hold out K "
                                          "windows after the validation span, or run <code>rnnlab backtest</code> "
                                          "on newer data.</p>"))
            return sections
        try:
            bt = self.backtest(model, self.series, c.backtest_windows)
        except DataError as exc:
            sections.append(ReportSection("Backtest", f"<p>Not run: {exc}</p>"))
            return sections
        first = bt["_sid"] == 0
        sections.append(ReportSection(f"Backtest: rolling origin over the {c.backtest_windows} windows after validation",
                                      scores_table(bt, self.season)
                                      + backtest_table(bt["per_window"], self.season)
                                      + plot_backtest(self.frame, {"_origins": bt["_origins"][first],
                                                                   "_pred": bt["_pred"][first]}, c)))
        return sections


# ----------------------------------------------------------------------------- helpers


def _padded(hist: np.ndarray, m: int) -> np.ndarray:
    """At least ``m`` rows: a history shorter than a season repeats its first row in front."""
    if len(hist) >= m:
        return hist
    return np.concatenate([np.repeat(hist[:1], m - len(hist), 0), hist], 0)


def extended(s: SeriesFrame, horizon: int, future: np.ndarray | None = None) -> SeriesFrame:
    """``s`` with ``horizon`` rows after its end (targets repeat the last one: they are never read
    as inputs, only as the targets of the window that forecasts them). ``future``: the new rows'
    timestamps (default: :func:`future_time_values` of ``s`` alone)."""
    if future is None:
        future = future_time_values(s, horizon)
    t = s.time_values if future is None else np.concatenate([s.time_values, future])
    return SeriesFrame(np.concatenate([s.targets, np.repeat(s.targets[-1:], horizon, 0)]),
                       np.concatenate([s.covariates, np.repeat(s.covariates[-1:], horizon, 0)]),
                       s.target_names, s.covariate_names, s.times and s.times + [s.times[-1]] * horizon,
                       t, s.lines, s.path, s.name)


def warn_gaps(path: str, series: list[SeriesFrame]) -> None:
    """A DataWarning when a dated series skips steps (a missing month): the model reads its rows as
    consecutive steps, so its seasons and calendar inputs slip there. Steps longer than the
    frequency's longest (31 days for monthly data) by half count as gaps; a series whose dates
    pandas finds regular (business days skipping weekends) has none. One more for series whose
    dates have no calendar frequency at all."""
    warn_uneven_steps(path, [s for s in series if s.times and is_number(s.times[-1])])
    no_frequency = []
    for s in series:
        freq = infer_frequency(s.times, s.time_values)[0]
        if not freq:
            if s.times and len(s) >= 3 and not plain_numbers(s.times):
                no_frequency.append(s)
            continue
        longest = next(hi for name, _, _, hi in FREQUENCIES if name == freq)
        gaps = np.flatnonzero(np.diff(s.time_values) > 1.5 * longest)
        if len(gaps) and not calendar_offset(s):   # (pandas, the slower test, only where numpy saw one)
            k = int(gaps[0])
            label = f" (series {s.name!r})" if s.name else ""
            warnings.warn(f"{path}{label}: {len(gaps)} step(s) longer than {freq} in the time column, the first "
                          f"from {s.times[k]} to {s.times[k + 1]}: rows are read as consecutive steps, so seasons "
                          "and calendar inputs slip there; add the missing rows (with empty cells and --missing to fill them)",
                          DataWarning, stacklevel=3)
    warn_no_frequency(path, no_frequency, len(series))


def warn_no_frequency(path: str, found: list[SeriesFrame], total: int) -> None:
    """One DataWarning for the dated series whose median step is no calendar frequency (hourly to
    yearly): their rows are read as consecutive steps. Names the first."""
    if not found:
        return
    s = found[0]
    step = float(np.median(np.diff(s.time_values)))
    shown = f"{step / 86400:g} days" if step >= 86400 else f"{step / 3600:g} hours"
    where = (f"{path}: {len(found)} of {total} series have dates with no calendar frequency; series {s.name!r}"
             if total > 1 else f"{path} (series {s.name!r})" if s.name else path)
    warnings.warn(f"{where}: the time column's dates have no calendar frequency (hourly to yearly; median step "
                  f"{shown}): rows are read as consecutive steps", DataWarning, stacklevel=4)


def uneven_steps(s: SeriesFrame) -> tuple[np.ndarray, float]:
    """The rows after which a numeric time column does not step by its median step, and that step.
    Steps within a millionth of it (or of the times' rounding) count as equal."""
    if s.time_values is None or len(s) < 3:
        return np.zeros(0, dtype=int), 0.0
    steps = np.diff(s.time_values)
    step = float(np.median(steps))
    return np.flatnonzero(np.abs(steps - step) > 1e-6 * abs(step) + 1e-12 * float(np.abs(s.time_values).max())), step


def warn_uneven_steps(path: str, series: list[SeriesFrame]) -> None:
    """One DataWarning when numeric time columns do not step evenly: the model reads rows as
    consecutive steps, so a gap (or a shorter step) is invisible to it. Names the first such
    series and where."""
    found = [(s, *uneven_steps(s)) for s in series]
    found = [(s, rows, step) for s, rows, step in found if len(rows)]
    if not found:
        return
    s, rows, step = found[0]
    k = int(rows[0])
    where = path
    if len(series) > 1:
        where = f"{path}: {len(found)} of {len(series)} series step unevenly in the time column; series {s.name!r}"
    elif s.name:
        where = f"{path} (series {s.name!r})"
    warnings.warn(f"{where}: {len(rows)} of {len(s) - 1} steps of the time column differ from its median step "
                  f"{step:g}, the first from {s.times[k]} to {s.times[k + 1]}: rows are read as consecutive steps; "
                  "add the missing rows (with empty cells and --missing to fill them)", DataWarning, stacklevel=4)


def _pandas() -> Any:
    """pandas, or None: an optional dependency (the forecast extra's), for calendar offsets."""
    try:
        import pandas  # lazy: only dates need it, and importing it costs a fraction of a second
    except ImportError:
        return None
    return pandas


def calendar_offset(frame: SeriesFrame) -> str:
    """The step of a date column as a pandas offset alias ("MS", "ME", "QS-OCT", "YS-JAN", "B",
    "W-SUN", "D", "h", ...): months, quarters and years are no fixed number of seconds. "" for
    numbers, irregular dates, fewer than three rows, or without pandas (an optional dependency)."""
    if frame.times is None or frame.time_values is None or len(frame) < 3 or is_number(frame.times[-1]):
        return ""
    pd = _pandas()
    if pd is None:
        return ""
    try:
        return pd.infer_freq(pd.to_datetime(wall_values(frame), unit="s")) or ""
    except (TypeError, ValueError):
        return ""


def median_step(frame: SeriesFrame) -> float:
    """The median interval of the time column; 0 without one or with a single row."""
    if frame.time_values is None or len(frame) < 2:
        return 0.0
    return float(np.median(np.diff(frame.time_values)))


# the zone designator that ends an ISO datetime (Z, +01:00, -0500, +05): searched after the date
_ZONE = re.compile(r"(?:[Zz]|[+-]\d{2}(?::?\d{2}(?::?\d{2}(?:\.\d+)?)?)?)$")


def utc_offset(cell: str) -> tuple[str, float] | None:
    """The zone designator an ISO datetime cell ends with ("+01:00", "Z") and its offset from UTC
    in seconds; None for a cell without one (read as UTC, see rnnlab.data.tables.parse_time)."""
    s = cell.strip()
    m = _ZONE.search(s, 11) if len(s) > 11 and not is_number(s) else None   # after the date and an hour digit
    if m is None:
        return None
    try:
        dt = datetime.fromisoformat(s[: m.start()] + ("+00:00" if m.group() in ("Z", "z") else m.group()))
    except ValueError:
        return None
    off = dt.utcoffset()
    return None if off is None else (m.group(), off.total_seconds())


def wall_values(frame: SeriesFrame) -> np.ndarray | None:
    """``time_values`` as the clock on the wall reads them: each row shifted by the UTC offset its
    cell writes (2021-03-21T00:00+01:00 is midnight, not 23:00 the day before); the same values
    when the last cell writes none (naive times are UTC)."""
    if frame.times is None or frame.time_values is None or not frame.times or utc_offset(frame.times[-1]) is None:
        return frame.time_values
    return frame.time_values + np.array([(utc_offset(t) or ("", 0.0))[1] for t in frame.times])


MONTHS_PER_STEP = {"monthly": 1, "quarterly": 3, "yearly": 12}


def future_time_values(frame: SeriesFrame, horizon: int, offset: str | None = None, freq: str | None = None,
                       step: float = 0.0) -> np.ndarray | None:
    """Timestamps of the ``horizon`` rows after the last one (seconds, as ``time_values``): by the
    pandas ``offset`` (default: the frame's own, :func:`calendar_offset`), else whole months for a
    monthly, quarterly or yearly ``freq`` (default: inferred), else the median interval (``step``
    when the frame has one row). None without a time column. Times with a UTC offset step on the
    wall clock (:func:`wall_values`) and keep the last row's offset: local midnights stay
    midnights across a change of offset in the file."""
    if frame.time_values is None:
        return None
    wall = wall_values(frame)
    shift = float(wall[-1] - frame.time_values[-1])   # the last row's offset: the future rows keep it
    future = _future_wall(frame, wall, horizon, offset, freq, step)
    return None if future is None else future - shift


def _future_wall(frame: SeriesFrame, wall: np.ndarray, horizon: int, offset: str | None, freq: str | None,
                 step: float) -> np.ndarray | None:
    """:func:`future_time_values` on the wall clock ``wall`` (the frame's times in their own offset)."""
    last = float(wall[-1])
    offset = calendar_offset(frame) if offset is None else offset
    pd = _pandas() if offset else None
    if pd is not None:
        try:
            start, off = pd.Timestamp(last, unit="s"), pd.tseries.frequencies.to_offset(offset)
            return np.array([(start + k * off - pd.Timestamp(0)) / pd.Timedelta(seconds=1)
                             for k in range(1, horizon + 1)])
        except (TypeError, ValueError):
            pass  # an alias this pandas does not know: months or the median step
    freq = infer_frequency(frame.times, frame.time_values)[0] if freq is None else freq
    if freq in MONTHS_PER_STEP:
        day = _month_day(wall)
        return np.array([_add_months(last, k * MONTHS_PER_STEP[freq], day) for k in range(1, horizon + 1)])
    step = (float(np.median(np.diff(wall))) if len(wall) > 1 else 0.0) or step
    if not step:
        return None
    return last + step * np.arange(1, horizon + 1)


def _month_day(values: np.ndarray) -> int:
    """The day of the month a monthly (quarterly, yearly) series falls on: 0 when every row is the
    last day of its month (month ends), else the most common day (a series on the 30th keeps it
    after a February 28th)."""
    days = [datetime.fromtimestamp(float(t), tz=timezone.utc) for t in values]
    if all(d.day == calendar.monthrange(d.year, d.month)[1] for d in days):
        return 0
    counts = np.bincount([d.day for d in days])
    return int(counts.argmax())


def _add_months(t: float, months: int, day: int) -> float:
    """``t`` plus whole months, on ``day`` of the month (0: its last day), cut to the month's length."""
    d = datetime.fromtimestamp(t, tz=timezone.utc)
    y, m = divmod(d.month - 1 + months, 12)
    y, m = d.year + y, m + 1
    end = calendar.monthrange(y, m)[1]
    return d.replace(year=y, month=m, day=end if day == 0 else min(day, end)).timestamp()


_MONTH_CELL = re.compile(r"^(\d{4})([-/])(\d{1,2})$")
_QUARTER_CELL = re.compile(r"^(\d{4})([-/ ]?)([Qq])[1-4]$")
_WEEK_CELL = re.compile(r"^\d{4}(-?)W\d{2}(?:(-?)[1-7])?$")   # ISO weeks: 2021-W28, 2021W28, 2021-W28-1


def future_times(frame: SeriesFrame, future: np.ndarray | None) -> list[str] | None:
    """The timestamps ``future`` written as the time column writes its last cell: numbers, months
    (1955-01), quarters (2020-Q1), ISO weeks (2021-W28), dates, or datetimes in the input's
    precision and UTC offset (2021-03-21T00:00+01:00, 2021-03-21T00:00Z). None without a time
    column."""
    if frame.times is None or future is None:
        return None
    raw = frame.times[-1].strip()
    if is_number(raw):
        return [str(int(t)) if float(t).is_integer() and abs(t) < 1e15 else f"{t:.15g}" for t in future]
    zone, shift = utc_offset(raw) or ("", 0.0)
    raw = raw[: len(raw) - len(zone)]
    out = []
    for t in future:
        # the wall clock in the input's own offset, written in the input's own form
        d = datetime.fromtimestamp(float(t) + shift, tz=timezone.utc).replace(tzinfo=None)
        if m := _MONTH_CELL.match(raw):
            out.append(f"{d.year}{m.group(2)}{d.month:0{len(m.group(3))}d}")
        elif m := _QUARTER_CELL.match(raw):
            out.append(f"{d.year}{m.group(2)}{m.group(3)}{(d.month - 1) // 3 + 1}")
        elif m := _WEEK_CELL.match(raw):
            year, week, day = d.isocalendar()
            out.append(f"{year}{m.group(1)}W{week:02d}" + (f"{m.group(2)}{day}" if m.group(2) is not None else ""))
        elif len(raw) <= 10:
            out.append(d.date().isoformat())
        else:
            sep = raw[10] if raw[10] in " T" else "T"
            out.append((d.isoformat(sep, timespec="minutes") if len(raw) <= 16 else d.isoformat(sep)) + zone)
    return out


def time_number(cell: str) -> int | float | str:
    """A numeric time cell as a number (an int when whole), for JSON; any other cell as written."""
    if not is_number(cell):
        return cell
    v = float(cell)
    return int(v) if v.is_integer() and abs(v) < 1e15 else v


def write_rows(path: str, rows: list[dict[str, Any]]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def scores_table(m: dict[str, Any], season: int) -> str:
    keys = ("mae", "rmse", "smape", "mase")
    rows = [["model"] + [m[k] for k in keys], ["naive (last value)"] + [m[f"naive_{k}"] for k in keys]]
    if season > 1:
        rows.append([f"seasonal naive (m={season})"] + [m[f"snaive_{k}"] for k in keys])
    if "theta_mae" in m:
        rows.append(["Theta"] + [m[f"theta_{k}"] for k in keys])
    if "ets_mae" in m:
        rows.append(["ETS (statsforecast)"] + [m[f"ets_{k}"] for k in keys])
    html = f"<p>{m['windows']} windows.</p>" + table(["", "MAE", "RMSE", "sMAPE %", "MASE"], rows)
    html += "".join(f"<p>{note}</p>" for note in score_notes(m))
    if "coverage" in m:
        html += f"<p>Empirical coverage of the {m['interval']} interval: {m['coverage']:.3f}</p>"
    return html


def backtest_table(per: list[dict[str, Any]], season: int) -> str:
    head = ["window", "origin row", "MAE", "naive MAE"] + (["seasonal-naive MAE"] if season > 1 else [])
    rows = [[p["window"], p["origin_row"], p["mae"], p["naive_mae"]] + ([p["snaive_mae"]] if season > 1 else [])
            for p in per]
    return table(head, rows)


def _plot(title: str):
    fig, ax = pyplot().subplots(figsize=(9, 3.2))
    ax.set_title(title)
    return fig, ax


def _plotted(frame: SeriesFrame) -> str:
    """The first target's name: the config's targets may be empty (a wide table's are implied)."""
    name = frame.target_names[0] if frame.target_names else "value"
    return name if not frame.name or frame.name == name else f"{name} (series {frame.name!r})"


def plot_forecast(frame: SeriesFrame, m: dict[str, Any], c: ForecastConfig, n_train: int) -> str:
    t0 = int(m["_origins"][-1])
    pred = m["_pred"][-1]  # (H, D_y, Q)
    start = max(0, t0 - 4 * c.context)
    fig, ax = _plot(f"{_plotted(frame)}: history, forecast from row {t0}")
    rows = np.arange(start, min(len(frame), t0 + c.horizon))
    ax.plot(rows, frame.targets[rows, 0], color="0.3", lw=1, label="actual")
    fr = np.arange(t0, t0 + c.horizon)
    q = c.quantiles
    ax.plot(fr, pred[:, 0, q.index(0.5)] if q else pred[:, 0, 0], color="C1", lw=1.6, label="forecast")
    if len(q) >= 2:
        ax.fill_between(fr, pred[:, 0, 0], pred[:, 0, -1], color="C1", alpha=0.25,
                        label=f"{q[0]:g}-{q[-1]:g} interval")
    if start <= n_train <= rows[-1]:
        ax.axvline(n_train, color="C2", ls=":", label="train | valid")
    ax.set_xlabel("row")
    ax.legend(loc="upper left", fontsize=8)
    return figure_to_img(fig, "history and forecast")


def plot_backtest(frame: SeriesFrame, bt: dict[str, Any], c: ForecastConfig) -> str:
    origins = bt["_origins"]
    start = max(0, int(origins[0]) - 2 * c.context)
    fig, ax = _plot(f"{_plotted(frame)}: backtest windows")
    rows = np.arange(start, len(frame))
    ax.plot(rows, frame.targets[rows, 0], color="0.3", lw=1, label="actual")
    q = c.quantiles
    for k, t in enumerate(origins):
        fr = np.arange(t, t + c.horizon)
        p = bt["_pred"][k]
        ax.plot(fr, p[:, 0, q.index(0.5)] if q else p[:, 0, 0], color="C1", lw=1.5,
                label="forecast" if k == 0 else None)
        if len(q) >= 2:
            ax.fill_between(fr, p[:, 0, 0], p[:, 0, -1], color="C1", alpha=0.2)
        ax.axvspan(t, t + c.horizon - 1, color="C0", alpha=0.06 if k % 2 else 0.12)
    ax.set_xlabel("row")
    ax.legend(loc="upper left", fontsize=8)
    return figure_to_img(fig, "backtest windows")


def build_forecast_task(config: dict[str, Any], metadata: dict[str, Any] | None = None) -> ForecastTask:
    return ForecastTask(ForecastConfig.from_dict(config), metadata)


register_task("forecast", build_forecast_task)


# ----------------------------------------------------------------------------- run folders


def _load_forecast_run(run_dir: str, checkpoint: str = "best") -> tuple[ForecastTask, nn.Module]:
    cfg = read_run_config(run_dir)
    if cfg["task"] != "forecast":
        raise CheckpointError(expected(f"run folder {run_dir}", "a forecaster (task 'forecast')",
                                       f"a run of task {cfg['task']!r}"))
    task, model, _ = load_run(run_dir, checkpoint)
    return task, model


def evaluate_run(run_dir: str, path: str | None = None, split: str = "valid", checkpoint: str = "best", *,
                 missing: str | None = None, encoding: str | None = None) -> dict[str, Any]:
    """``rnnlab evaluate RUN [--csv FILE [--encoding ENC] [--missing POLICY]]`` for a forecaster:
    every window of the file (read with ``missing`` and ``encoding``, default the run's), or the
    run's own validation windows, with the naive baselines beside the model."""
    if split not in ("valid",) and path is None:
        raise ConfigError(expected("--split for a forecaster", "valid (or --csv FILE)", repr(split)))
    task, model = _load_forecast_run(run_dir, checkpoint)
    if path:
        return _file_options(task, missing, encoding).evaluate_file(model, path)
    m = task.evaluate(model, split)
    if m["mase_series_left_out"]:
        task.warn_validation_mase()
    return m


def _file_options(task: ForecastTask, missing: str | None, encoding: str | None) -> ForecastTask:
    changes = {k: v for k, v in (("missing", missing), ("encoding", encoding)) if v is not None}
    if changes:
        task.config = dataclasses.replace(task.config, **changes)
    return task


def forecast_run(run_dir: str, path: str, horizon: int, out: str | None, checkpoint: str = "best",
                 force: bool = False, missing: str | None = None, encoding: str | None = None) -> list[dict[str, Any]]:
    """``rnnlab forecast RUN --csv FILE --horizon H --out forecast.csv`` (``-``: standard output;
    None: no file, the rows are returned). The output path is checked before anything is read (see
    :func:`rnnlab.outputs.check_output`)."""
    if out:
        check_run_output(out, run_dir, [path], force, stdout=True)
    task, model = _load_forecast_run(run_dir, checkpoint)
    return _file_options(task, missing, encoding).forecast_file(model, path, horizon, out)


def backtest_run(run_dir: str, path: str, windows: int, out: str | None = None,
                 checkpoint: str = "best", force: bool = False, missing: str | None = None,
                 encoding: str | None = None) -> dict[str, Any]:
    """``rnnlab backtest RUN --csv FILE --windows K``: walk-forward scores with baselines."""
    if out:
        check_run_output(out, run_dir, [path], force, stdout=True)
    task, model = _load_forecast_run(run_dir, checkpoint)
    bt = _file_options(task, missing, encoding).backtest_file(model, path, windows, out)
    return {k: v for k, v in bt.items() if not k.startswith("_")}


def baselines_left_out(m: dict[str, Any]) -> list[str]:
    """One sentence for each baseline left out of the scores ``m`` (Theta over THETA_MAX_WINDOWS
    windows; ETS, when asked for, over ETS_MAX_FITS fits), and one for ETS's naive stand-ins."""
    notes = [] if "theta_mae" in m else [f"Theta left out: it is fitted per window, and there are over "
                                          f"{THETA_MAX_WINDOWS}."]
    if m.get("ets_left_out"):
        notes.append(f"ETS left out: over {ETS_MAX_FITS} fits (windows x targets).")
    elif m.get("ets_naive_fallbacks"):
        notes.append(f"ETS could not fit {int(m['ets_naive_fallbacks'])} of the windows' histories (too short): "
                     "naive forecasts stand in there.")
    return notes


def score_notes(m: dict[str, Any]) -> list[str]:
    """What the scores ``m`` leave out, one sentence each: series without a full context
    (``series_left_out``), series without a MASE unit (:func:`mase_scale`), baselines
    (:func:`baselines_left_out`)."""
    notes = []
    if m.get("series_left_out"):
        notes.append(f"{int(m['series_left_out'])} series left out: no full context before a window.")
    k = int(m.get("mase_series_left_out") or 0)
    why = "in-sample naive error zero: constant or exactly periodic"
    if k and int(m.get("series", 1)) == 1:
        notes.append(f"MASE undefined ({why}).")
    elif k:
        tail = ": undefined for every series" if math.isnan(m.get("mase", 0.0)) else ""
        notes.append(f"MASE leaves out {k} of {int(m['series'])} series ({why}){tail}.")
    return notes + baselines_left_out(m)


def format_scores(m: dict[str, Any]) -> str:
    """Scores beside the baselines as the plain text the CLI prints (columns one space apart at
    least, however large the numbers)."""
    rows = [("model", "")] + [("naive", "naive_")] + ([("seasonal naive", "snaive_")] if "snaive_mae" in m else [])
    rows += [("Theta", "theta_")] if "theta_mae" in m else []
    rows += [("ETS", "ets_")] if "ets_mae" in m else []
    lines = [f"{int(m['windows'])} windows" + (f" of {int(m['series'])} series" if m.get("series", 1) > 1 else ""),
             f"{'':<16}" + "".join(f" {h:>10}" for h in ("MAE", "RMSE", "sMAPE%", "MASE"))]
    for name, p in rows:
        lines.append(f"{name:<16}" + "".join(f" {score_cell(m[p + k]):>10}" for k in ("mae", "rmse", "smape", "mase")))
    if "coverage" in m:
        lines.append(f"coverage of the {m['interval']} interval: {m['coverage']:.3f}")
    return "\n".join(lines + score_notes(m))
