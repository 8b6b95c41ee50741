"""A documented synthetic series for the forecasting example: hourly electricity-like load.

This is *generated* data, not a measurement; it is built so that each part of a forecaster
has something to find, and so that anyone can regenerate the exact file (fixed seed):

    temp_t = 12 + 6 sin(2 pi t / 24 - pi / 2) + u_t,        u_t = 0.9 u_{t-1} + N(0, 0.7^2)
    load_t = 50 + 8 sin(2 pi t / 24 - 2)                      daily cycle (season 24)
             - 6 [t falls on a Saturday or Sunday]             weekly effect (invisible to a 24-h seasonal naive)
             + 0.8 (temp_t - 12)                               the covariate matters
             + e_t,                                            e_t = 0.8 e_{t-1} + N(0, 1.5^2)  persistent noise

t counts hours from 2024-01-01T00:00. Columns: ``time`` (ISO 8601), ``load`` (the target),
``temp`` (a covariate).

    python examples/make_load_series.py --days 150 --out work/load.csv
"""

from __future__ import annotations

import argparse
import datetime

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    n = 24 * args.days
    t = np.arange(n)
    u = np.zeros(n)
    e = np.zeros(n)
    for k in range(1, n):
        u[k] = 0.9 * u[k - 1] + rng.normal(0, 0.7)
        e[k] = 0.8 * e[k - 1] + rng.normal(0, 1.5)
    temp = 12 + 6 * np.sin(2 * np.pi * t / 24 - np.pi / 2) + u
    start = datetime.datetime(2024, 1, 1)
    times = [start + datetime.timedelta(hours=int(k)) for k in t]
    weekend = np.array([d.weekday() >= 5 for d in times], dtype=float)
    load = 50 + 8 * np.sin(2 * np.pi * t / 24 - 2) - 6 * weekend + 0.8 * (temp - 12) + e
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.write("time,load,temp\n")
        for d, y, x in zip(times, load, temp):
            fh.write(f"{d.isoformat(timespec='minutes')},{y:.3f},{x:.3f}\n")
    print(f"{n} hourly rows -> {args.out}")


if __name__ == "__main__":
    main()
