"""Time-series forecasting: the last L values -> the next H values.

The model::

    context window (L, B, D_y + D_x)   scaled targets and covariates, one row per time step
    --rnnlab RNN/LSTM/GRU encoder-->   state after the last context step (B, hidden)
    direct:          --Linear-->  (B, H, D_y, Q)   all H steps at once (Q quantiles, or 1 point)
    autoregressive:  --Linear-->  the next step (B, D_y); fed back as input H times

Direct multi-step is the default: it is trained on the error that is scored, and errors do
not compound. The autoregressive option is trained one step ahead with teacher forcing and
rolled out at forecast time; it forecasts any horizon but, because it must feed its own
outputs back, it takes no covariates and gives point forecasts only.

Quantile forecasts (``quantiles=[0.1, 0.5, 0.9]``) are trained with the pinball loss
``max(q (y - ŷ), (q - 1)(y - ŷ))``; the median is the point forecast and the outer pair
is the prediction interval, whose empirical coverage is reported.

Honest scores: every metric (MAE, RMSE, sMAPE, MASE) is computed in the data's own units on
windows whose targets lie after the training part, and the naive forecast (repeat the last
value) and, with ``season=m``, the seasonal-naive forecast (repeat the last season) are
scored on the very same windows. Scaling is fitted on the training part only. The split is
chronological: the first ``1 - valid_frac`` of the rows train, the windows that forecast the
rest validate (their contexts may reach back into the training rows, as at forecast time).
"""

from __future__ import annotations

import csv
import dataclasses
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from rnnlab.data.tables import Scaler, SeriesFrame, check_length, load_forecast_table
from rnnlab.errors import CheckpointError, ConfigError, DataError, expected
from rnnlab.outputs import atomic_open, check_output
from rnnlab.report.html import figure_to_img, pyplot, table
from rnnlab.tasks.cell_options import check_cell_options
from rnnlab.tasks.recurrent import CELLS, recurrent_layer
from rnnlab.train.rundir import load_run, read_run_config
from rnnlab.train.task import ReportSection, StepOutput, register_task

MODES = ("direct", "autoregressive")


@dataclass
class ForecastConfig:
    data: str = ""                     # CSV/TSV/JSONL with one row per time step
    format: str = "auto"
    time_col: str = ""                 # optional; must increase strictly (checked)
    targets: list[str] = field(default_factory=list)      # columns to forecast
    covariates: list[str] = field(default_factory=list)   # extra input columns (past values only)
    missing: str = "error"             # error | drop | ffill | interpolate
    encoding: str = "utf-8"            # of the data files (utf-16, cp1252, latin-1, ...)
    context: int = 48                  # L: steps the model reads
    horizon: int = 12                  # H: steps it forecasts
    season: int = 0                    # m: the seasonal-naive baseline and MASE's lag; 0 = none (lag 1)
    valid_frac: float = 0.2            # the last fraction of rows: validation targets
    backtest_windows: int = 5          # K: walk-forward windows shown in the run's report
    mode: str = "direct"               # direct | autoregressive
    quantiles: list[float] = field(default_factory=list)  # e.g. [0.1, 0.5, 0.9]; [] = point forecast (MSE)
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
                raise ConfigError(expected(f"forecast {what}", want, repr(got)))

        for name in ("context", "horizon", "hidden_size", "num_layers", "batch_size", "stride",
                     "backtest_windows"):
            v = getattr(self, name)
            check(isinstance(v, int) and not isinstance(v, bool) and v >= 1, name, "an integer >= 1", v)
        check(isinstance(self.season, int) and self.season >= 0, "season", "an integer >= 0", self.season)
        check(self.season <= self.context, "season", f"at most context = {self.context} (the seasonal-naive "
              "forecast repeats the last season of the context)", self.season)
        check(self.mode in MODES, "mode", f"one of {MODES}", self.mode)
        check(self.cell in CELLS, "cell", f"one of {CELLS}", self.cell)
        check(0 <= self.dropout < 1, "dropout", "a number in [0, 1)", self.dropout)
        self.cell_options = check_cell_options(self.cell_options, self.cell)
        check(0 < self.valid_frac < 1, "valid_frac", "a number in (0, 1)", self.valid_frac)
        check(all(isinstance(q, (int, float)) and 0 < q < 1 for q in self.quantiles), "quantiles",
              "numbers in (0, 1)", self.quantiles)
        check(len(set(self.quantiles)) == len(self.quantiles), "quantiles", "distinct values", self.quantiles)
        if self.mode == "autoregressive":
            check(not self.covariates, "covariates", "none in autoregressive mode (it feeds back only "
                  "its own target forecasts)", self.covariates)
            check(not self.quantiles, "quantiles", "none in autoregressive mode (point forecasts only)",
                  self.quantiles)
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


# ----------------------------------------------------------------------------- model


class Forecaster(nn.Module):
    def __init__(self, *, input_dims: int, n_targets: int, horizon: int, n_quantiles: int, cell: str,
                 hidden_size: int, num_layers: int, dropout: float, mode: str,
                 cell_options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.mode, self.horizon, self.n_targets, self.n_quantiles = mode, horizon, n_targets, n_quantiles
        self.rnn = recurrent_layer(cell, input_dims, hidden_size, num_layers, cell_options, dropout=dropout)
        self.drop = nn.Dropout(dropout)
        width = horizon * n_targets * n_quantiles if mode == "direct" else n_targets
        self.head = nn.Linear(hidden_size, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """direct: x (L, B, D) -> (B, H, D_y, Q). autoregressive: x (T, B, D_y) -> next-step
        predictions at every position (T, B, D_y)."""
        out, _ = self.rnn(x)  # (T, B, hidden)
        if self.mode == "direct":
            return self.head(self.drop(out[-1])).view(x.shape[1], self.horizon, self.n_targets, self.n_quantiles)
        return self.head(self.drop(out))

    @torch.no_grad()
    def rollout(self, context: torch.Tensor, steps: int) -> torch.Tensor:
        """Autoregressive forecast: context (L, B, D_y) -> (B, steps, D_y, 1)."""
        out, state = self.rnn(context)
        y = self.head(out[-1])  # (B, D_y)
        preds = [y]
        for _ in range(steps - 1):
            out, state = self.rnn(y[None], state)
            y = self.head(out[-1])
            preds.append(y)
        return torch.stack(preds, 1)[..., None]


def pinball(pred: torch.Tensor, y: torch.Tensor, quantiles: list[float]) -> torch.Tensor:
    """Mean pinball loss. pred (B, H, D, Q), y (B, H, D)."""
    q = torch.tensor(quantiles, dtype=pred.dtype, device=pred.device)
    diff = y[..., None] - pred
    return torch.maximum(q * diff, (q - 1) * diff).mean()


# ----------------------------------------------------------------------------- metrics


def forecast_metrics(y: np.ndarray, yhat: np.ndarray, mase_scale: np.ndarray) -> dict[str, float]:
    """y, yhat (W, H, D) in data units; mase_scale (D,) = in-sample MAE of the (seasonal) naive
    forecast on the training part. sMAPE in percent, with 0/0 counted as 0."""
    err = yhat - y
    # halves first: |y| + |yhat| and the errors of data near float64's limit (1e300) stay finite
    denom = np.abs(y) / 2 + np.abs(yhat) / 2
    smape = np.divide(np.abs(err), denom, out=np.zeros_like(err), where=denom > 0)
    mae_d = np.abs(err).reshape(-1, y.shape[-1]).mean(0)
    peak = float(np.abs(err).max()) if err.size else 0.0
    peak = peak if 0 < peak < np.inf else 1.0  # RMSE on errors divided by the largest: no overflow when squared
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(peak * np.sqrt(((err / peak) ** 2).mean())),
        "smape": float(100 * smape.mean()),
        "mase": float((mae_d / mase_scale).mean()),
    }


def naive_forecast(history: np.ndarray, horizon: int, season: int = 0) -> np.ndarray:
    """history (W, L, D) -> (W, H, D): the last value, or with ``season=m`` the value one
    season before each target step (``y[t+h-m*ceil((h+1)/m)]``)."""
    if season <= 1:
        return np.repeat(history[:, -1:, :], horizon, axis=1)
    idx = [history.shape[1] - season + (h % season) for h in range(horizon)]
    return history[:, idx, :]


def mase_scale(train_targets: np.ndarray, season: int) -> np.ndarray:
    """Per target, the in-sample MAE of the (seasonal) naive one-step forecast: MASE's unit."""
    m = max(1, season)
    if len(train_targets) <= m:
        raise DataError(expected("training part", f"more than season = {m} rows for MASE", len(train_targets)))
    s = np.abs(train_targets[m:] - train_targets[:-m]).mean(0)
    return np.maximum(s, 1e-8)


# ----------------------------------------------------------------------------- the task


class ForecastTask:
    name = "forecast"
    train_defaults = {"max_steps": 0, "max_epochs": 10, "optimizer": "adam", "lr": 3e-3}   # as classify's
    items_name = "samples"
    metric_name = "mase"
    data_keys = ("data",)   # recorded with a checksum in the run folder

    def __init__(self, config: ForecastConfig, metadata: dict[str, Any] | None = None) -> None:
        self.config = c = config
        self._frame: SeriesFrame | None = None
        if metadata is not None:
            self._meta = dict(metadata)
            self.scaler = Scaler.from_dict(metadata["scaler"])
            self.mase_scale = np.asarray(metadata["mase_scale"], dtype=np.float64)
            self.n_train = int(metadata["n_train"])
            return
        if not c.data:
            raise ConfigError(expected("forecast data", "a CSV file", "none"))
        if not c.targets:
            raise ConfigError(expected("forecast targets", "at least one --target column", "none"))
        frame = self.load(c.data)
        n = len(frame)
        self.n_train = int(n * (1 - c.valid_frac))
        check_length(self.n_train, c.context, c.horizon, f"{c.data}: training part (first {1 - c.valid_frac:.0%})")
        if n - self.n_train < c.horizon:
            raise DataError(expected(f"{c.data}: validation part (last {c.valid_frac:.0%})",
                                     f"at least horizon = {c.horizon} rows", n - self.n_train))
        values = np.concatenate([frame.targets, frame.covariates], axis=1)  # (N, D_y + D_x)
        self.scaler = Scaler.fit(values[: self.n_train], f"{c.data}: training part",
                                 list(c.targets) + list(c.covariates))
        self.mase_scale = mase_scale(frame.targets[: self.n_train], c.season)
        self._frame = frame
        self._meta = {
            "scaler": self.scaler.to_dict(),
            "mase_scale": self.mase_scale.tolist(),
            "n_train": self.n_train,
            "n_rows": n,
            "targets": list(c.targets),
            "covariates": list(c.covariates),
        }

    # --- data --------------------------------------------------------------------------

    def load(self, path: str) -> SeriesFrame:
        c = self.config
        return load_forecast_table(path, c.targets, c.covariates, c.time_col or None, c.missing, c.format,
                                   encoding=c.encoding)

    @property
    def frame(self) -> SeriesFrame:
        if self._frame is None:
            self._frame = self.load(self.config.data)
        return self._frame

    def scaled(self, frame: SeriesFrame) -> np.ndarray:
        values = np.concatenate([frame.targets, frame.covariates], axis=1)
        return self.scaler.transform(values).astype(np.float32)  # (N, D)

    def origins(self, split: str, n: int | None = None) -> np.ndarray:
        """Forecast origins t (first forecast step) of a split: targets rows [t, t+H)."""
        c = self.config
        n = len(self.frame) if n is None else n
        if split == "train":
            return np.arange(c.context, self.n_train - c.horizon + 1, c.stride)
        if split == "valid":
            return np.arange(max(self.n_train, c.context), n - c.horizon + 1)
        raise ConfigError(expected("split", "train or valid", repr(split)))

    def windows(self, scaled: np.ndarray, origins: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (L, W, D) and targets (W, H, D_y), both scaled."""
        c = self.config
        d_y = len(c.targets)
        idx = origins[:, None] + np.arange(-c.context, c.horizon)[None, :]  # (W, L + H)
        w = scaled[idx]  # (W, L + H, D)
        x = torch.from_numpy(np.ascontiguousarray(w[:, : c.context].transpose(1, 0, 2)))
        y = torch.from_numpy(np.ascontiguousarray(w[:, c.context :, :d_y]))
        return x, y

    # --- the Task contract ---------------------------------------------------------------

    def config_dict(self) -> dict[str, Any]:
        return self.config.to_dict()

    def metadata(self) -> dict[str, Any]:
        return dict(self._meta)

    def build_model(self) -> nn.Module:
        c = self.config
        d_y, d_x = len(c.targets), len(c.covariates)
        return Forecaster(input_dims=d_y + d_x if c.mode == "direct" else d_y, n_targets=d_y, horizon=c.horizon,
                          n_quantiles=max(1, len(c.quantiles)), cell=c.cell, hidden_size=c.hidden_size,
                          num_layers=c.num_layers, dropout=c.dropout, mode=c.mode, cell_options=c.cell_options)

    def train_batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> Iterator[dict[str, torch.Tensor]]:
        scaled = self.scaled(self.frame)
        origins = self.origins("train")
        order = np.random.default_rng([self.config.seed, epoch]).permutation(len(origins))[rank::world_size]
        bs = self.config.batch_size
        for s in range(0, len(order), bs):
            x, y = self.windows(scaled, origins[order[s : s + bs]])
            yield {"x": x, "y": y}

    def _loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.mode == "autoregressive":
            # Teacher forcing over context + horizon: predict step t+1 from steps <= t.
            d_y = len(c.targets)
            seq = torch.cat([x[..., :d_y], y.transpose(0, 1)], 0)  # (L + H, B, D_y)
            pred = model(seq[:-1])
            return nn.functional.mse_loss(pred, seq[1:])
        pred = model(x)  # (B, H, D_y, Q)
        if c.quantiles:
            return pinball(pred, y, c.quantiles)
        return nn.functional.mse_loss(pred[..., 0], y)

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor], carry: Any) -> StepOutput:
        device = next(model.parameters()).device
        loss = self._loss(model, batch["x"].to(device), batch["y"].to(device))
        return StepOutput(loss=loss, n_items=batch["y"].shape[0])

    @torch.no_grad()
    def predict_windows(self, model: nn.Module, x: torch.Tensor, steps: int | None = None) -> np.ndarray:
        """x (L, W, D) scaled -> forecasts (W, H, D_y, Q) in data units."""
        c = self.config
        steps = c.horizon if steps is None else steps
        was = model.training
        model.eval()
        device = next(model.parameters()).device
        d_y = len(c.targets)
        outs = []
        try:
            for s in range(0, x.shape[1], 256):
                xb = x[:, s : s + 256].to(device)
                if c.mode == "autoregressive":
                    p = model.rollout(xb[..., :d_y], steps)
                else:
                    p = model(xb)[:, :steps]
                outs.append(p.float().cpu().numpy())
        finally:
            model.train(was)
        p = np.concatenate(outs, 0)  # (W, H, D_y, Q) scaled
        mean = np.asarray(self.scaler.mean[:d_y])[None, None, :, None]
        std = np.asarray(self.scaler.std[:d_y])[None, None, :, None]
        p = p * std + mean
        if p.shape[-1] > 1:
            p = np.sort(p, axis=-1)  # quantile heads may cross; sorting restores their order
        return p

    def point(self, pred: np.ndarray) -> np.ndarray:
        """The point forecast (W, H, D_y): the median quantile, or the only output."""
        if self.config.quantiles:
            return pred[..., self.config.quantiles.index(0.5)]
        return pred[..., 0]

    def score(self, model: nn.Module, frame: SeriesFrame, origins: np.ndarray) -> dict[str, Any]:
        """Model and baseline metrics on the windows starting at ``origins`` (data units)."""
        c = self.config
        if len(origins) == 0:
            raise DataError(expected("forecast windows", "at least one", 0))
        scaled = self.scaled(frame)
        x, y_s = self.windows(scaled, origins)
        pred = self.predict_windows(model, x)
        idx = origins[:, None] + np.arange(c.horizon)[None, :]
        y = frame.targets[idx]  # (W, H, D_y)
        hist = frame.targets[origins[:, None] + np.arange(-c.context, 0)[None, :]]  # (W, L, D_y)
        out: dict[str, Any] = {"windows": int(len(origins))}
        out.update(forecast_metrics(y, self.point(pred), self.mase_scale))
        for k, v in forecast_metrics(y, naive_forecast(hist, c.horizon), self.mase_scale).items():
            out[f"naive_{k}"] = v
        if c.season > 1:
            for k, v in forecast_metrics(y, naive_forecast(hist, c.horizon, c.season), self.mase_scale).items():
                out[f"snaive_{k}"] = v
        if len(c.quantiles) >= 2:
            lo, hi = pred[..., 0], pred[..., -1]
            out["coverage"] = float(((y >= lo) & (y <= hi)).mean())
            out["interval"] = f"{c.quantiles[0]:g}-{c.quantiles[-1]:g}"
        out["loss"] = self.window_loss(model, x, y_s)
        out["_pred"], out["_y"], out["_origins"] = pred, y, origins
        return out

    @torch.no_grad()
    def window_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        """The training loss (scaled units) averaged over windows, in chunks."""
        device = next(model.parameters()).device
        total = 0.0
        for s in range(0, x.shape[1], 512):
            xb, yb = x[:, s : s + 512].to(device), y[s : s + 512].to(device)
            total += float(self._loss(model, xb, yb)) * yb.shape[0]
        return total / x.shape[1]

    def evaluate(self, model: nn.Module, split: str = "valid") -> dict[str, float]:
        m = self.score(model, self.frame, self.origins(split))
        return {k: float(v) for k, v in m.items() if not k.startswith("_") and not isinstance(v, str)}

    # --- files: evaluate / forecast / backtest ----------------------------------------------

    def _file(self, path: str, need: int, what: str) -> SeriesFrame:
        frame = self.load(path)
        if len(frame) < need:
            raise DataError(f"{path}: {what}: expected at least {need} rows, got {len(frame)}")
        return frame

    def evaluate_file(self, model: nn.Module, path: str) -> dict[str, float]:
        """Metrics and baselines over every window of ``path`` (stride 1)."""
        c = self.config
        frame = self._file(path, c.context + c.horizon, f"context + horizon = {c.context} + {c.horizon}")
        m = self.score(model, frame, np.arange(c.context, len(frame) - c.horizon + 1))
        return {k: v for k, v in m.items() if not k.startswith("_")}

    def backtest(self, model: nn.Module, frame: SeriesFrame, windows: int) -> dict[str, Any]:
        """Walk forward over the last ``windows`` non-overlapping horizon-long windows: window k
        forecasts rows [t_k, t_k + H) from the L rows before t_k, t_k = N - (K - k) H. The model
        is not refitted between windows; each forecast uses only rows before its origin."""
        c = self.config
        n = len(frame)
        if windows < 1:
            raise ConfigError(expected("--windows", "an integer >= 1", windows))
        need = c.context + windows * c.horizon
        if n < need:
            raise DataError(f"{frame.path}: backtest: expected at least context + windows x horizon = "
                            f"{c.context} + {windows} x {c.horizon} = {need} rows, got {n}")
        origins = np.array([n - (windows - k) * c.horizon for k in range(windows)])
        total = self.score(model, frame, origins)
        per = []
        for k, t in enumerate(origins):
            m = self.score(model, frame, origins[k : k + 1])
            per.append({"window": k + 1, "origin_row": int(t), **{key: v for key, v in m.items()
                                                                 if not key.startswith("_") and key != "windows"}})
        total["per_window"] = per
        return total

    def backtest_file(self, model: nn.Module, path: str, windows: int, out: str | None = None) -> dict[str, Any]:
        frame = self.load(path)
        bt = self.backtest(model, frame, windows)
        if out:
            write_rows(out, bt["per_window"])
        return bt

    def forecast_file(self, model: nn.Module, path: str, horizon: int, out: str) -> list[dict[str, Any]]:
        """Forecast ``horizon`` steps past the end of ``path`` from its last ``context`` rows and
        write them to ``out`` (CSV: step, time if known, point and quantile columns per target)."""
        c = self.config
        if horizon < 1:
            raise ConfigError(expected("--horizon", "an integer >= 1", horizon))
        if c.mode == "direct" and horizon > c.horizon:
            raise ConfigError(expected("--horizon", f"at most the trained horizon {c.horizon} (direct mode; "
                                       "train with a longer --horizon or --mode autoregressive)", horizon))
        frame = self._file(path, c.context, f"context = {c.context}")
        n = len(frame)
        x = torch.from_numpy(self.scaled(frame)[n - c.context :])[:, None, :]  # (L, 1, D)
        pred = self.predict_windows(model, x, horizon)[0]  # (h, D_y, Q)
        times = future_times(frame, horizon)
        rows = []
        for h in range(horizon):
            row: dict[str, Any] = {"step": h + 1}
            if times is not None:
                row[c.time_col] = times[h]
            for j, name in enumerate(c.targets):
                row[name] = float(self.point(pred[None])[0, h, j])
                if len(c.quantiles) >= 2:
                    for qi, q in enumerate(c.quantiles):
                        row[f"{name}_q{q:g}"] = float(pred[h, j, qi])
            rows.append(row)
        write_rows(out, rows)
        return rows

    # --- report ------------------------------------------------------------------------

    def report_sections(self, model: nn.Module, run_dir: str) -> list[ReportSection]:
        c = self.config
        valid = self.score(model, self.frame, self.origins("valid"))
        sections = [ReportSection("Forecast: scores beside the naive baselines (validation windows)",
                                  scores_table(valid, c.season))]
        sections.append(ReportSection("History and forecast (last validation window)",
                                      plot_forecast(self.frame, valid, c, self.n_train)))
        try:
            bt = self.backtest(model, self.frame, c.backtest_windows)
        except DataError as exc:
            sections.append(ReportSection("Backtest", f"<p>Not run: {exc}</p>"))
            return sections
        note = ""
        if bt["_origins"][0] < self.n_train:
            note = ("<p class='note'>Some backtest windows lie in the training part (rows before "
                    f"{self.n_train}); their scores are optimistic.</p>")
        sections.append(ReportSection(f"Backtest: walk-forward over the last {c.backtest_windows} windows",
                                      note + scores_table(bt, c.season) + backtest_table(bt["per_window"], c.season)
                                      + plot_backtest(self.frame, bt, c)))
        return sections


# ----------------------------------------------------------------------------- helpers


def future_times(frame: SeriesFrame, horizon: int) -> list[str] | None:
    """Timestamps after the last row, spaced by the last interval; None without a time column."""
    if frame.times is None or frame.time_values is None or len(frame) < 2:
        return None
    last, step = frame.time_values[-1], frame.time_values[-1] - frame.time_values[-2]
    raw = frame.times[-1]
    out = []
    for h in range(1, horizon + 1):
        t = last + h * step
        try:
            float(raw)
            out.append(f"{t:g}")
        except ValueError:
            dt = datetime.fromtimestamp(t, tz=timezone.utc)
            naive = dt.replace(tzinfo=None)  # written back in the input's own precision
            out.append(dt.date().isoformat() if len(raw) <= 10 else
                       naive.isoformat(timespec="minutes") if len(raw) <= 16 else naive.isoformat())
    return out


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
    html = f"<p>{m['windows']} windows.</p>" + table(["", "MAE", "RMSE", "sMAPE %", "MASE"], rows)
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


def plot_forecast(frame: SeriesFrame, m: dict[str, Any], c: ForecastConfig, n_train: int) -> str:
    t0 = int(m["_origins"][-1])
    pred = m["_pred"][-1]  # (H, D_y, Q)
    start = max(0, t0 - 4 * c.context)
    fig, ax = _plot(f"{c.targets[0]}: history, forecast from row {t0}")
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
    fig, ax = _plot(f"{c.targets[0]}: backtest windows")
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


def evaluate_run(run_dir: str, path: str | None = None, split: str = "valid",
                 checkpoint: str = "best") -> dict[str, Any]:
    """``rnnlab evaluate RUN [--csv FILE]`` for a forecaster: every window of the file (or the
    run's own validation windows), with the naive baselines beside the model."""
    if split not in ("valid",) and path is None:
        raise ConfigError(expected("--split for a forecaster", "valid (or --csv FILE)", repr(split)))
    task, model = _load_forecast_run(run_dir, checkpoint)
    if path:
        return task.evaluate_file(model, path)
    return task.evaluate(model, split)


def _file_options(task: ForecastTask, missing: str | None, encoding: str | None) -> ForecastTask:
    changes = {k: v for k, v in (("missing", missing), ("encoding", encoding)) if v is not None}
    if changes:
        task.config = dataclasses.replace(task.config, **changes)
    return task


def forecast_run(run_dir: str, path: str, horizon: int, out: str, checkpoint: str = "best", force: bool = False,
                 missing: str | None = None, encoding: str | None = None) -> list[dict[str, Any]]:
    """``rnnlab forecast RUN --csv FILE --horizon H --out forecast.csv``. The output path is checked
    before anything is read (see :func:`rnnlab.outputs.check_output`)."""
    check_output(out, [path], force)
    task, model = _load_forecast_run(run_dir, checkpoint)
    return _file_options(task, missing, encoding).forecast_file(model, path, horizon, out)


def backtest_run(run_dir: str, path: str, windows: int, out: str | None = None,
                 checkpoint: str = "best", force: bool = False, missing: str | None = None,
                 encoding: str | None = None) -> dict[str, Any]:
    """``rnnlab backtest RUN --csv FILE --windows K``: walk-forward scores with baselines."""
    if out:
        check_output(out, [path], force)
    task, model = _load_forecast_run(run_dir, checkpoint)
    bt = _file_options(task, missing, encoding).backtest_file(model, path, windows, out)
    return {k: v for k, v in bt.items() if not k.startswith("_")}


def format_scores(m: dict[str, Any]) -> str:
    """Scores beside the baselines as the plain text the CLI prints."""
    rows = [("model", "")] + [("naive", "naive_")] + ([("seasonal naive", "snaive_")] if "snaive_mae" in m else [])
    lines = [f"{int(m['windows'])} windows", f"{'':<16}{'MAE':>10}{'RMSE':>10}{'sMAPE%':>10}{'MASE':>10}"]
    for name, p in rows:
        lines.append(f"{name:<16}" + "".join(f"{m[p + k]:>10.4f}" for k in ("mae", "rmse", "smape", "mase")))
    if "coverage" in m:
        lines.append(f"coverage of the {m['interval']} interval: {m['coverage']:.3f}")
    return "\n".join(lines)
