"""Statistical baselines scored beside every forecaster: naive, seasonal naive, Theta and ETS.

Theta is the standard Theta method of Assimakopoulos & Nikolopoulos (2000), the best method of
the M3 competition, in the form Hyndman & Billah (2003) proved equivalent and that R's
``forecast::thetaf`` and statsforecast's ``Theta`` compute:

1. if the series is seasonal (period ``m > 1``, at least ``3 m`` values, and the lag-``m``
   autocorrelation significant at 90 %), divide it by classical multiplicative seasonal
   indices;
2. simple exponential smoothing (SES) of the adjusted series, ``alpha`` chosen by least squares
   of the one-step errors, plus half the slope ``b`` of the least-squares line as drift:
   ``yhat(h) = level_n + b / 2 * (h - 1 + 1 / alpha - (1 - alpha)^n / alpha)``;
3. multiply the forecasts by the seasonal indices again.

SES starts from the first value (level after step 1 = ``y_1``), which makes step 2 exactly the
average of the extrapolated regression line (the theta = 0 line) and SES of the theta = 2 line
``2 y - line``, the method's original definition.

ETS is statsforecast's automatic exponential smoothing (Hyndman et al. 2002; R's
``forecast::ets``): every admissible error/trend/season form fitted by maximum likelihood, the
one with the lowest AICc forecasting. It needs the ``statsforecast`` package (``pip install
'rnnlab[forecast]'``); :func:`ets_available` says whether it is there.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings

import numpy as np

# Fewer values than this and statsforecast's ETS refuses the series ("tiny datasets"); such
# series get the naive forecast instead, and the callers count them.
ETS_MIN_VALUES = 4


def ses_levels(y: np.ndarray, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SES for several smoothing constants at once: final levels (A,) and the sum of squared
    one-step errors (A,). The level after the first value is that value."""
    level = np.full(len(alphas), float(y[0]))
    sse = np.zeros(len(alphas))
    for v in y[1:]:
        e = v - level
        sse += e * e
        level = level + alphas * e
    return level, sse


def fit_ses(y: np.ndarray) -> tuple[float, float]:
    """(alpha, final level) minimising the in-sample one-step squared error over alpha in
    [0.01, 0.99]: a grid, then two finer grids around its best point."""
    lo, hi = 0.01, 0.99
    best = 0.5
    for _ in range(3):
        grid = np.linspace(lo, hi, 25)
        _, sse = ses_levels(y, grid)
        k = int(np.argmin(sse))
        best = float(grid[k])
        step = (hi - lo) / 24
        lo, hi = max(0.01, best - step), min(0.99, best + step)
    level, _ = ses_levels(y, np.array([best]))
    return best, float(level[0])


def seasonal_indices(y: np.ndarray, m: int) -> np.ndarray:
    """Classical multiplicative decomposition: the ratio of the series to its centred moving
    average of order ``m`` (2 x m for even m), averaged per position in the season and
    normalised to mean 1. Index ``k`` belongs to the positions ``t = k (mod m)`` of ``y``."""
    n = len(y)
    if m % 2:
        w = np.ones(m) / m
    else:
        w = np.r_[0.5, np.ones(m - 1), 0.5] / m
    trend = np.convolve(y, w, mode="valid")
    start = (len(w) - 1) // 2
    ratio = y[start : start + len(trend)] / trend
    pos = (np.arange(len(trend)) + start) % m
    idx = np.array([ratio[pos == k].mean() for k in range(m)])
    return idx / idx.mean() if n else idx


def is_seasonal(y: np.ndarray, m: int) -> bool:
    """The test of ``forecast::thetaf``: |r_m| above 1.645 standard errors (Bartlett's formula)."""
    n = len(y)
    if m <= 1 or n < 3 * m:
        return False
    d = y - y.mean()
    denom = float(d @ d)
    if denom == 0:
        return False
    r = np.array([float(d[k:] @ d[: n - k]) / denom for k in range(1, m + 1)])
    stat = abs(r[m - 1]) / np.sqrt((1 + 2 * float(np.sum(r[: m - 1] ** 2))) / n)
    return bool(stat > 1.645)


def theta_forecast(y: np.ndarray, horizon: int, season: int = 0) -> np.ndarray:
    """The standard Theta forecast (see the module docstring) of a 1-D series, ``horizon`` steps."""
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    if n < 2:
        return np.full(horizon, y[-1] if n else 0.0)
    seas = np.ones(n + horizon)
    if season > 1 and np.all(y > 0) and is_seasonal(y, season):
        idx = seasonal_indices(y, season)
        seas = idx[np.arange(n + horizon) % season]
    x = y / seas[:n]
    alpha, level = fit_ses(x)
    t = np.arange(1, n + 1)
    b = float(np.polyfit(t, x, 1)[0])
    h = np.arange(1, horizon + 1)
    fc = level + b / 2 * (h - 1 + 1 / alpha - (1 - alpha) ** n / alpha)
    return fc * seas[n:]


@functools.cache
def _ets_functions():
    """statsforecast's ETS fit and forecast functions, or None where statsforecast is missing
    (looked up once per process, not once per fit).
    They come from ``statsforecast.ets`` (compiled code, imported in about a second) rather than
    ``statsforecast.models.AutoETS``, the same fit behind a class, whose module compiles every
    other model of the package with numba on first import (about a minute)."""
    try:
        ets = importlib.import_module("statsforecast.ets")
    except ImportError:
        return None
    fit, forecast = getattr(ets, "ets_f", None), getattr(ets, "forecast_ets", None)
    if fit is None or forecast is None:   # moved in another statsforecast release: the public class
        models = importlib.import_module("statsforecast.models")
        return lambda y, m: models.AutoETS(season_length=m), lambda mod, h, y: mod.forecast(y=y, h=h)
    return (lambda y, m: fit(y, m=m)), (lambda mod, h, y: forecast(mod, h))


def ets_available() -> bool:
    """Whether the ETS baseline can run here (statsforecast installed)."""
    return importlib.util.find_spec("statsforecast") is not None


def ets_forecast(y: np.ndarray, horizon: int, season: int = 0) -> tuple[np.ndarray, bool]:
    """statsforecast's automatic ETS forecast of a 1-D series, ``horizon`` steps, with seasonal
    period ``season`` (0 or 1: none), and whether ETS made it: series it cannot fit (fewer than
    ``ETS_MIN_VALUES`` values, or a failed fit) get the naive forecast and ``False``. Raises
    ImportError without statsforecast."""
    functions = _ets_functions()
    if functions is None:
        raise ImportError("statsforecast is not installed (pip install 'rnnlab[forecast]')")
    fit, forecast = functions
    y = np.asarray(y, dtype=np.float64)
    if len(y) < ETS_MIN_VALUES:
        return np.full(horizon, y[-1] if len(y) else 0.0), False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # its variance of a perfect fit divides by zero
        try:
            fc = np.asarray(forecast(fit(y, max(1, season)), horizon, y)["mean"], dtype=np.float64)
        except (ValueError, IndexError, NotImplementedError, ZeroDivisionError, FloatingPointError):
            return np.full(horizon, y[-1]), False
    if fc.shape != (horizon,) or not np.all(np.isfinite(fc)):
        return np.full(horizon, y[-1]), False
    return fc, True
