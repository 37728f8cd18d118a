"""Error-rate spike per model."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

import numpy as np

from genops.collectors.anomaly.baseline import poisson_tail, pooled_rate
from genops.collectors.anomaly.detectors.base import BaselineDetector, Hit, PassContext, hits_from_scores


def rate_scores(events: np.ndarray, calls: np.ndarray, at: np.ndarray, detector: BaselineDetector,
                step: int, *, min_calls: int, min_events: int, min_rate: float, min_ratio: float,
                max_p_value: float = 1e-5) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Observed rate, expected rate, score and fire mask of ``events / calls`` at ``at``.

    The spread is the larger of the history's MAD and the binomial noise of the current
    window (sqrt(p(1-p)/n), with p the larger of the median and the pooled rate of the
    history, at least 0.5%), so a few errors on a small window are not news; and a window
    only fires when its count is also implausible under that rate (Poisson tail below
    ``max_p_value``, 1e-5).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(calls >= min_calls, events / calls, np.nan)
    base = detector.baseline(rate, at, step)
    observed = rate[at]
    n = calls[at]
    # windows overlap, so the pooled counts are over-weighted by window/step; the ratio is unaffected
    pooled = pooled_rate(events, calls, at, lookback=detector.lookback_minutes // step,
                         gap=max(1, detector.window_minutes // step))
    p = np.clip(np.fmax(np.nan_to_num(base.expected, nan=0.0), np.nan_to_num(pooled, nan=0.0)), 0.005, 0.999)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.maximum(np.maximum(base.sigma, np.sqrt(p * (1 - p) / np.maximum(n, 1))), 0.005)
        score = (observed - base.expected) / scale
        fire = ((score >= detector.threshold) & (events[at] >= min_events) & (observed >= min_rate)
                & (observed >= min_ratio * base.expected))
    fire &= ~np.isnan(observed) & ~np.isnan(base.expected)
    for j in np.nonzero(fire)[0]:  # and the count itself must be implausible at the expected rate
        if poisson_tail(events[at[j]], p[j] * n[j]) > max_p_value:
            fire[j] = False
    return observed, base.expected, score, fire


class ErrorRateSpike(BaselineDetector):
    """Error-rate spike per provider/model (429s excluded: see ``rate_limit_burst``).

    Method: the share of failed calls over the last 15 minutes against the median/MAD of the
    same share over the trailing 24 hours. Score = (rate - median) / max(1.4826 * MAD,
    binomial noise sqrt(p(1-p)/n) with p the larger of the median and the pooled
    rate, 0.5 pp). Fires at score >= 5 with at least 5 errors, a rate of at least 5% and 3x
    the median, and a Poisson tail P(errors >= observed | n * p) below 1e-5. Minimum volume:
    20 calls in the window.
    """

    name: ClassVar[str] = "error_rate"

    def detect(self, ctx: PassContext, t_from: dt.datetime, t_to: dt.datetime) -> list[Hit]:
        grid = self.grid(ctx, t_from, t_to, self.history_minutes())
        data = self.fetch(ctx, "model_windows", grid, {"calls": 0, "ok_calls": 0, "ttft_calls": 0,
                                                       "latency_p95": np.nan, "ttft_p95": np.nan, "errors": 0})
        at = grid.eval_indexes(t_from)
        hits: list[Hit] = []
        for entity, series in data.items():
            calls = series["ok_calls"] + series["errors"]  # 429s left out
            observed, expected, score, fire = rate_scores(
                series["errors"], calls, at, self, ctx.step_minutes,
                min_calls=20, min_events=5, min_rate=0.05, min_ratio=3.0)
            hits += hits_from_scores(self, grid, entity, at, fire, observed, expected, score, self.threshold,
                                     "error_rate", "ratio", {"calls": calls[at], "errors": series["errors"][at]})
        return hits
