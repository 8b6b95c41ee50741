"""``rnnlab train forecast``, ``rnnlab forecast`` and ``rnnlab backtest``: thin wrappers over
``rnnlab.tasks.forecast``. ``rnnlab evaluate RUN --csv FILE`` (the training core's command)
reaches :func:`rnnlab.tasks.forecast.evaluate_run` for a forecaster run."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import List, Optional

import typer

from rnnlab.cli.classify import split_list
from rnnlab.cli.train import (TrainArgs, cell_option_flag, cell_options_from_flags, check_file_flags, check_input_file,
                              extra_options, json_number, missing_option, one_stdout, print_data_warnings,
                              register_evaluator, with_train_options)
from rnnlab.errors import ConfigError, DataWarning, expected
from rnnlab.outputs import shown, status_stream


# ``rnnlab train forecast`` flag (parameter) -> ForecastConfig key, where the names differ.
CONFIG_KEYS = {"csv": "data", "target": "targets", "fmt": "format", "data_seed": "seed", "cell_option": "cell_options"}


def scores_json(m: dict) -> str:
    """Scores (and per-window rows) as one JSON object, without the arrays kept for plots."""
    return json.dumps(json_number({k: v for k, v in m.items() if not k.startswith("_")}))


def _floats(values: Optional[List[str]]) -> list[float]:
    out = []
    for v in split_list(values):
        try:
            out.append(float(v))
        except ValueError:
            raise ConfigError(expected("--quantiles", "numbers in (0, 1) such as 0.1,0.9", repr(v))) from None
    return out


EVALUATE_FLAGS = ("--csv", "--encoding", "--missing")   # rnnlab evaluate's, for a forecaster


def evaluate_forecast(run_dir: Path, split: str, checkpoint: str, extra: list[str]) -> dict:
    """``rnnlab evaluate RUN [--csv FILE [--encoding ENC] [--missing POLICY]]`` for a forecaster:
    scores beside the naive baselines."""
    from rnnlab.tasks.forecast import evaluate_run  # lazy: keeps --help fast

    opts = extra_options(extra, EVALUATE_FLAGS)
    check_file_flags(opts, "--csv")
    check_input_file(opts.get("csv"), "--csv")
    with print_data_warnings():  # series too short to score are named on stderr
        return evaluate_run(str(run_dir), opts.get("csv"), split, checkpoint, missing=opts.get("missing"),
                            encoding=opts.get("encoding"))


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    register_evaluator("forecast", evaluate_forecast, EVALUATE_FLAGS)

    @train_app.command("forecast")
    @with_train_options
    def train_forecast(
        csv: Optional[Path] = typer.Option(None, "--csv", help="One row per time step (.csv/.tsv/.jsonl); needed unless --resume."),
        target: Optional[List[str]] = typer.Option(None, "--target", help="Column(s) to forecast (repeat or comma-separate)."),
        covariates: Optional[List[str]] = typer.Option(None, "--covariates", help="Extra input columns (past values)."),
        time_col: str = typer.Option("", "--time-col", help="Time column: numbers, dates (2024-01-31, with or without a UTC offset), months (1949-01), quarters (1949-Q1) or ISO weeks (2021-W28); checked to increase strictly. Dates give calendar features."),
        id_col: str = typer.Option("", "--id-col", help="A long table: the column that tells the series apart (one global model)."),
        wide: bool = typer.Option(False, "--wide", help="A wide table: every --target column (default: every column but the time) is a series."),
        fmt: str = typer.Option("auto", "--format", help="auto | csv | tsv | jsonl."),
        missing: str = typer.Option("error", "--missing", help="error | drop | ffill | interpolate."),
        encoding: str = typer.Option("utf-8", "--encoding", help="Encoding of --csv (utf-16, cp1252, latin-1, ...)."),
        context: int = typer.Option(0, "--context", help="L: steps the model reads; 0 = 4 horizons (at least two seasons and 16 steps)."),
        horizon: int = typer.Option(12, "--horizon", help="H: steps it forecasts."),
        season: int = typer.Option(0, "--season", help="m: seasonal-naive baseline and MASE lag (0 = the period of a dated series' frequency, e.g. 24 hourly or 12 monthly, when it fits in --context; else none)."),
        valid_frac: float = typer.Option(0.1, "--valid-frac", help="Last fraction of each series (at least --horizon rows) used for validation."),
        backtest_windows: int = typer.Option(0, "--backtest-windows", help="K horizon-long windows held out after validation, backtested in the report."),
        norm: str = typer.Option("revin", "--norm", help="revin: per-window mean and spread | mean: per-window mean magnitude (DeepAR) | global: one scaler."),
        diff: str = typer.Option("none", "--diff", help="none | first | seasonal differencing, inverted at the output."),
        fourier: int = typer.Option(2, "--fourier", help="Fourier terms per calendar cycle (dates only); 0 = none."),
        loss: str = typer.Option("auto", "--loss", help="auto (smape when every training value is > 0, else mae) | mae | mse | smape (point forecasts)."),
        recent: int = typer.Option(0, "--recent", help="Train only on windows whose targets end in the last K horizons of each series; 0 = all."),
        ensemble: int = typer.Option(1, "--ensemble", help="Members with their own seed and context length; their median."),
        ets: bool = typer.Option(False, "--ets", help="Also score statsforecast's automatic ETS on the same windows (pip install 'rnnlab\\[forecast]'; one fit per window: seconds to a minute)."),
        mode: str = typer.Option("direct", "--mode", help="direct | autoregressive."),
        quantiles: Optional[List[str]] = typer.Option(None, "--quantiles", help="e.g. 0.1,0.9 (the median is added)."),
        cell: str = typer.Option("lstm", "--cell", help="lstm | gru | rnn."),
        hidden_size: int = typer.Option(64, "--hidden-size", "--hidden"),
        num_layers: int = typer.Option(1, "--num-layers", "--layers"),
        dropout: float = typer.Option(0.0, "--dropout"),
        batch_size: int = typer.Option(32, "--batch-size"),
        stride: int = typer.Option(1, "--stride", help="Step between training windows."),
        data_seed: int = typer.Option(0, "--data-seed", help="Seeds the batch order."),
        cell_option: Optional[List[str]] = cell_option_flag(),
        as_json: bool = typer.Option(False, "--json", help="Print the validation scores as one JSON object."),
        run: TrainArgs = None,
    ) -> None:
        """Train a forecaster; its scores are printed beside the naive baselines."""
        from rnnlab.tasks.forecast import ForecastConfig, ForecastTask, format_scores  # lazy: keeps --help fast
        from rnnlab.train import load_run  # lazy: keeps --help fast

        def config() -> ForecastConfig:
            return ForecastConfig(
                data=str(csv) if csv else "", format=fmt, time_col=time_col, targets=split_list(target),
                covariates=split_list(covariates), id_col=id_col, wide=wide, missing=missing, encoding=encoding,
                context=context, horizon=horizon, season=season, valid_frac=valid_frac,
                backtest_windows=backtest_windows, norm=norm, diff=diff, fourier=fourier, loss=loss, recent=recent,
                ensemble=ensemble, ets=ets, mode=mode,
                quantiles=_floats(quantiles), cell=cell, hidden_size=hidden_size, num_layers=num_layers, dropout=dropout,
                batch_size=batch_size, stride=stride, seed=data_seed, cell_options=cell_options_from_flags(cell_option))

        def build() -> ForecastTask:
            if csv is None or not (target or wide):
                raise missing_option(*(("--csv", "a data file") if csv is None else ("--target", "at least one column")))
            return ForecastTask(config())  # every data error is raised here, before any model is built

        with print_data_warnings():  # gaps in the time column, padded series: one line each on stderr
            if run.resume_run is None:
                task = build()  # the training budget follows the number of training windows (task.train_defaults)
                defaults = task.train_defaults
                if run.given.get("max_epochs") and "max_steps" not in run.given:
                    defaults = ForecastTask.train_defaults  # --max-epochs alone: that many epochs, not the step budget
                result = run.start(lambda: task, "forecast", lambda: config().to_dict(), CONFIG_KEYS,
                                   ForecastTask.data_keys, **defaults)
            else:
                result = run.start(build, "forecast", lambda: config().to_dict(), CONFIG_KEYS, ForecastTask.data_keys,
                                   **ForecastTask.train_defaults)
        if run.given.get("quiet") and not as_json:  # --json always prints its object
            return
        with warnings.catch_warnings():   # the same file again: its warnings were printed above
            warnings.simplefilter("ignore", DataWarning)
            task, model, _ = load_run(result.run_dir)
            sid, origins = task.pairs("valid")
            scores = task.score(model, task.series, origins, sid)
        if as_json:
            # the fields of every `train --json` (valid: the best checkpoint's scores), the scores also
            # at the top level as before
            head = {"run": str(result.run_dir), "stop_reason": result.stop_reason, "steps": int(result.step),
                    "best_step": None if result.best_step is None else int(result.best_step)}
            valid = json.loads(scores_json(scores))
            extra = {"compile": result.compile} if result.compile is not None else {}
            numbers = {k: v for k, v in valid.items() if v is None or isinstance(v, (int, float))}
            print(json.dumps({**head, **valid, "valid": numbers, **extra}))
            return
        print(f"forecast: run {result.run_dir}, best checkpoint, validation windows")
        print(format_scores(scores))

    @app.command("forecast")
    def forecast_cmd(
        run: Path = typer.Argument(..., metavar="RUN", help="A forecaster run folder."),
        csv: Path = typer.Option(..., "--csv", help="History to forecast from (its last --context rows are used)."),
        horizon: int = typer.Option(..., "--horizon", help="Steps to forecast past the end of the file."),
        out: Optional[Path] = typer.Option(None, "--out", help="Where to write the forecast rows as CSV; - for standard output (default: forecast.csv, or no file with --json)."),
        checkpoint: str = typer.Option("best", "--checkpoint", help="best | latest | a checkpoint folder of the run."),
        force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
        missing: Optional[str] = typer.Option(None, "--missing", help="error | drop | ffill | interpolate (default: the run's)."),
        encoding: Optional[str] = typer.Option(None, "--encoding", help="Encoding of --csv (default: the run's)."),
        as_json: bool = typer.Option(False, "--json", help="Print the forecast rows as one JSON object (a file only with --out)."),
    ) -> None:
        """Forecast the next steps after the end of every series of a file."""
        from rnnlab.tasks.forecast import forecast_run  # lazy: keeps --help fast

        one_stdout(out, as_json)
        target = str(out) if out else (None if as_json else "forecast.csv")
        check_input_file(csv, "--csv")
        with print_data_warnings():  # series shorter than the context are padded: said on stderr
            rows = forecast_run(str(run), str(csv), horizon, target, checkpoint, force, missing, encoding)
        if as_json:
            print(json.dumps({"out": target, "rows": rows}))
            return
        print(f"forecast: {len(rows)} rows ({horizon} steps per series) -> {shown(target)}",
              file=status_stream(target))

    @app.command("backtest")
    def backtest_cmd(
        run: Path = typer.Argument(..., metavar="RUN", help="A forecaster run folder."),
        csv: Path = typer.Option(..., "--csv", help="Series to backtest on."),
        windows: int = typer.Option(5, "--windows", help="K: at most K horizon-long windows per series, rolling forward from the end of the run's validation span (a series the run never saw: from its first full --context)."),
        out: Optional[Path] = typer.Option(None, "--out", help="Per-window scores as CSV; - for standard output (the summary then goes to stderr)."),
        checkpoint: str = typer.Option("best", "--checkpoint", help="best | latest | a checkpoint folder of the run."),
        force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
        missing: Optional[str] = typer.Option(None, "--missing", help="error | drop | ffill | interpolate (default: the run's)."),
        encoding: Optional[str] = typer.Option(None, "--encoding", help="Encoding of --csv (default: the run's)."),
        as_json: bool = typer.Option(False, "--json", help="Print the scores and per-window rows as one JSON object."),
    ) -> None:
        """Rolling-origin evaluation on data after the run's validation span, beside the baselines."""
        from rnnlab.tasks.forecast import backtest_run, format_scores  # lazy: keeps --help fast

        one_stdout(out, as_json)
        check_input_file(csv, "--csv")
        with print_data_warnings():  # series left out (no full context, no MASE unit): one line each on stderr
            bt = backtest_run(str(run), str(csv), windows, str(out) if out else None, checkpoint, force, missing,
                              encoding)
        if as_json:
            print(scores_json(bt))
            return
        text = status_stream(out)
        print(format_scores(bt), file=text)
        for p in bt["per_window"]:
            extra = f", seasonal-naive MAE {p['snaive_mae']:.4f}" if "snaive_mae" in p else ""
            where = f"series {p['series']!r}, " if p['series'] else ""
            print(f"window {p['window']} ({where}origin row {p['origin_row']}): MAE {p['mae']:.4f}, "
                  f"naive MAE {p['naive_mae']:.4f}{extra}", file=text)
