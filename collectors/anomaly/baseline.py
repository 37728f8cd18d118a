"""Robust baselines: median and MAD over a trailing window, or over the same time of day on
previous days when there is enough history (seasonality).

Series are regular grids: one value per evaluation step (``step`` minutes) per entity, NaN
where the value is unknown or too thin to trust (below a detector's minimum volume).
Median/MAD are used instead of mean/standard deviation because a few anomalous windows
in the history (earlier incidents) barely move them.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

MAD_TO_SIGMA = 1.4826  # MAD * this = standard deviation, for normal data


@dataclass
class Baseline:
    """Expected value and robust spread per evaluated point (NaN = not enough history)."""

    expected: np.ndarray
    sigma: np.ndarray  # MAD scaled to a standard deviation
    points: np.ndarray  # how many history values the baseline used
    seasonal: np.ndarray  # True where the same-time-of-day baseline was used


def _nan_median(matrix: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows -> NaN, on purpose
        return np.nanmedian(matrix, axis=1) if matrix.size else np.full(matrix.shape[0], np.nan)


def upper_quantile(values: np.ndarray, at: np.ndarray, *, lookback: int, gap: int, q: float = 0.99,
                   stride: int = 12) -> np.ndarray:
    """The ``q`` quantile of ``values[i - lookback : i - gap + 1)`` for each ``i`` in ``at`` (NaN-aware).

    Computed every ``stride`` points and carried forward (a day-long quantile barely moves
    within an hour, and the full computation is the slowest step of a week-long backfill).
    """
    if not len(at):
        return np.full(0, np.nan)
    sub = at[::stride]
    offsets = np.arange(-lookback, -gap + 1)
    padded = np.concatenate([np.full(lookback, np.nan), values])
    matrix = padded[sub[:, None] + offsets[None, :] + lookback]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        upper = np.nanquantile(matrix, q, axis=1)
    return np.repeat(upper, stride)[: len(at)]


def pooled_rate(events: np.ndarray, calls: np.ndarray, at: np.ndarray, *, lookback: int, gap: int) -> np.ndarray:
    """sum(events) / sum(calls) over ``[i - lookback, i - gap]`` for each ``i`` in ``at``.

    For rare events (errors, safety findings) the median of per-window ratios is mostly 0;
    the pooled rate is the honest expectation for the binomial/Poisson noise floor.
    """
    ev = np.concatenate([[0.0], np.cumsum(np.nan_to_num(events))])
    ca = np.concatenate([[0.0], np.cumsum(np.nan_to_num(calls))])
    hi = np.clip(at - gap + 1, 0, len(events))
    lo = np.clip(at - lookback, 0, len(events))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ev[hi] - ev[lo]) / (ca[hi] - ca[lo])


def _stats(matrix: np.ndarray, min_points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    points = np.sum(~np.isnan(matrix), axis=1)
    median = _nan_median(matrix)
    mad = _nan_median(np.abs(matrix - median[:, None]))
    thin = points < min_points
    median[thin] = np.nan
    mad[thin] = np.nan
    return median, mad * MAD_TO_SIGMA, points


def trailing(values: np.ndarray, at: np.ndarray, *, lookback: int, gap: int, min_points: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median, sigma and count of ``values[i - lookback : i - gap + 1)`` for each index ``i`` in ``at``.

    ``gap`` skips the points whose windows overlap the evaluated one (and the anomaly itself).
    """
    offsets = np.arange(-lookback, -gap + 1)
    idx = at[:, None] + offsets[None, :]
    padded = np.concatenate([np.full(lookback, np.nan), values])
    matrix = padded[idx + lookback] if len(at) else np.empty((0, len(offsets)))
    return _stats(matrix, min_points)


def seasonal(values: np.ndarray, at: np.ndarray, *, period: int, days: int = 7, spread: int = 1,
             min_points: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median, sigma and count of the values at the same time of day on up to ``days`` previous days.

    ``spread`` neighbours on each side widen the sample (±1 step by default).
    """
    offsets = np.array([-k * period + d for k in range(1, days + 1) for d in range(-spread, spread + 1)])
    pad = days * period + spread
    idx = at[:, None] + offsets[None, :]
    padded = np.concatenate([np.full(pad, np.nan), values, np.full(spread, np.nan)])
    matrix = padded[idx + pad] if len(at) else np.empty((0, len(offsets)))
    return _stats(matrix, min_points)


def robust_baseline(values: np.ndarray, at: np.ndarray, *, step_minutes: int, window_minutes: int,
                    lookback_minutes: int, min_points: int, use_seasonality: bool,
                    seasonal_min_days: int = 3) -> Baseline:
    """The baseline each detector uses.

    Trailing median/MAD over ``lookback_minutes`` (skipping windows that overlap the current
    one). With ``use_seasonality`` and at least ``seasonal_min_days`` previous days holding a
    value at this time of day, the same-time-of-day median/MAD replaces it, so a daily cycle
    (quiet nights, busy afternoons) is not mistaken for a drop or a surge.
    """
    gap = max(1, window_minutes // step_minutes)
    med, sigma, points = trailing(values, at, lookback=lookback_minutes // step_minutes, gap=gap,
                                  min_points=min_points)
    used_seasonal = np.zeros(len(at), dtype=bool)
    if use_seasonality:
        period = 24 * 60 // step_minutes
        s_med, s_sigma, s_points = seasonal(values, at, period=period, min_points=3 * seasonal_min_days)
        ok = ~np.isnan(s_med)
        med = np.where(ok, s_med, med)
        sigma = np.where(ok, s_sigma, sigma)
        points = np.where(ok, s_points, points)
        used_seasonal = ok
    return Baseline(med, sigma, points, used_seasonal)


def poisson_tail(k: float, lam: float) -> float:
    """P(X >= k) for X ~ Poisson(lam): how surprising ``k`` events are when ``lam`` are expected.

    For rare events (errors at a 1% rate, safety findings) the normal approximation behind a
    z-score badly understates this tail on small windows; this is exact.
    """
    k = int(math.ceil(k))
    if k <= 0:
        return 1.0
    if lam <= 0:
        return 0.0
    term = math.exp(-lam)  # P(X = 0)
    below = term
    for i in range(1, k):
        term *= lam / i
        below += term
    return max(0.0, 1.0 - below) if below < 0.999999 else _upper_sum(k, lam)


def _upper_sum(k: int, lam: float) -> float:
    """P(X >= k) summed upward (accurate when it is tiny)."""
    log_term = -lam + k * math.log(lam) - math.lgamma(k + 1)
    total, i = 0.0, k
    while True:
        term = math.exp(log_term)
        total += term
        i += 1
        log_term += math.log(lam / i)
        if term < total * 1e-12 or i > k + 10_000:
            return total
