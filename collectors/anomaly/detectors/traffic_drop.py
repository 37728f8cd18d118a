"""Traffic drop: a service that stopped (or nearly stopped) calling."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

import numpy as np

from genops.collectors.anomaly.detectors.base import BaselineDetector, Hit, PassContext, hits_from_scores


class TrafficDrop(BaselineDetector):
    """Traffic drop per service (``service=<name>``).

    Method: calls over the last 30 minutes against a seasonal baseline: the median/MAD of
    the same 30-minute window at the same time of day (±5 minutes) on up to 7 previous days,
    for services with at least 3 days of history whose hourly calls show a daily cycle
    (STL seasonal strength >= 0.3, from ClickHouse's seriesDecomposeSTL); otherwise the
    median/MAD of the trailing 2 hours. Minutes
    without calls count as zero. Score = (expected - observed) / max(1.4826 * MAD,
    sqrt(expected)) (Poisson noise floor). Fires at score >= 3.5 when observed <= 10% of
    expected: agent traffic is bursty (sessions come in clumps), so "stopped" means near
    zero, not merely low, and a 30-minute window rides out the natural lulls between
    bursts (at the cost of reporting a stop up to 30 minutes after it began). Minimum volume:
    40 expected calls in the window, so quiet hours and quiet services never alert.
    """

    name: ClassVar[str] = "traffic_drop"
    window_minutes: ClassVar[int] = 30
    lookback_minutes: ClassVar[int] = 120
    use_seasonality: ClassVar[bool] = True
    min_history_points: ClassVar[int] = 12
    min_expected: ClassVar[float] = 40.0
    max_ratio: ClassVar[float] = 0.10
    threshold: ClassVar[float] = 3.5

    def detect(self, ctx: PassContext, t_from: dt.datetime, t_to: dt.datetime) -> list[Hit]:
        grid = self.grid(ctx, t_from, t_to, self.history_minutes())
        data = self.fetch(ctx, "dim_windows", grid, {"calls": 0}, dimension_filter="Dimension = 'service'",
                          slices=self.seasonal_slices(ctx, t_from, t_to))
        at = grid.eval_indexes(t_from)
        seasonal = self.seasonal_entities(ctx, t_from, "Dimension = 'service'")
        hits: list[Hit] = []
        for entity, series in data.items():
            calls = series["calls"]
            # before an entity's first call the zeros are "not born yet", not "stopped"
            first = int(np.argmax(calls > 0)) if np.any(calls > 0) else len(calls)  # NaN > 0 is False
            values = calls.copy()
            values[:first] = np.nan
            base = self.baseline(values, at, ctx.step_minutes, seasonal=entity in seasonal)
            observed = calls[at]
            expected = base.expected
            with np.errstate(invalid="ignore", divide="ignore"):
                scale = np.maximum(base.sigma, np.sqrt(np.maximum(expected, 1)))
                score = (expected - observed) / scale
                fire = (score >= self.threshold) & (expected >= self.min_expected) & (observed <= self.max_ratio * expected)
            fire &= ~np.isnan(expected)
            hits += hits_from_scores(self, grid, entity, at, fire, observed, expected, score, self.threshold,
                                     "calls", "calls", {"seasonal": base.seasonal.astype(float)})
        return hits
