"""Latency (p95) regression per model."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

import numpy as np

from genops.collectors.anomaly.detectors.base import BaselineDetector, Hit, PassContext, hits_from_scores


class LatencyRegression(BaselineDetector):
    """p95 latency regression per provider/model.

    Method: every 5 minutes, the p95 of successful calls' duration over the last 15 minutes
    (t-digest states from ``genops_rollup_model_1m`` merged across the window) is compared
    with the median and MAD of the same windowed p95 over the trailing 24 hours (windows
    overlapping the current one skipped). Score = (p95 - median) / max(1.4826 * MAD,
    10% of the median, median / sqrt(calls) for the sampling noise of a p95 of few calls).
    Fires at score >= 5 when the p95 is also at least 1.5x the median.
    Minimum volume: 20 successful calls in the window, and 12 such windows of history, so a
    quiet model never alerts on one slow call.
    """

    name: ClassVar[str] = "latency_p95"
    metric: ClassVar[str] = "latency_p95_ms"
    value_column: ClassVar[str] = "latency_p95"
    volume_column: ClassVar[str] = "ok_calls"
    min_volume: ClassVar[int] = 20
    min_ratio: ClassVar[float] = 1.5
    relative_floor: ClassVar[float] = 0.10
    sampling_noise: ClassVar[float] = 1.0

    def detect(self, ctx: PassContext, t_from: dt.datetime, t_to: dt.datetime) -> list[Hit]:
        grid = self.grid(ctx, t_from, t_to, self.history_minutes())
        data = self.fetch(ctx, "model_windows", grid, {"calls": 0, "ok_calls": 0, "ttft_calls": 0,
                                                       "latency_p95": np.nan, "ttft_p95": np.nan})
        at = grid.eval_indexes(t_from)
        hits: list[Hit] = []
        for entity, series in data.items():
            volume = series[self.volume_column]
            values = np.where(volume >= self.min_volume, series[self.value_column], np.nan)
            base = self.baseline(values, at, ctx.step_minutes)
            observed = values[at]
            # a p95 from n calls is noisy: its relative error shrinks like 1/sqrt(n)
            noise = base.expected * self.sampling_noise / np.sqrt(np.maximum(volume[at], 1))
            scale = np.maximum(np.maximum(base.sigma, self.relative_floor * base.expected), noise)
            with np.errstate(invalid="ignore", divide="ignore"):
                score = (observed - base.expected) / scale
                fire = (score >= self.threshold) & (observed >= self.min_ratio * base.expected)
            fire &= ~np.isnan(observed) & ~np.isnan(base.expected)
            hits += hits_from_scores(self, grid, entity, at, fire, observed, base.expected, score, self.threshold,
                                     self.metric, "ms", {"calls": volume[at]})
        return hits
