"""Cost or token surge per service, user or custom property."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

import numpy as np

from genops.collectors.anomaly.baseline import upper_quantile
from genops.collectors.anomaly.detectors.base import BaselineDetector, Hit, PassContext, hits_from_scores


class CostSurge(BaselineDetector):
    """Cost (or, where prices are unknown, token) surge per ``service=``, ``user=`` and
    ``property.<name>=`` entity.

    Method: spend in USD over the last 15 minutes against a seasonal baseline (same window
    at the same time of day on up to 7 previous days, for entities with 3+ days of history
    and a daily cycle by STL strength >= 0.3 as in ``traffic_drop``; else the trailing 2
    hours' median/MAD; minutes without calls count as zero). When an entity's calls carry no
    cost at all (unknown model prices), tokens are used instead. Score = (observed -
    expected) / max(1.4826 * MAD, 25% of expected, a floor of 1 cent or 1000 tokens).
    Fires at score >= 6 when observed >= 2x expected, above the entity's own 95th
    percentile window of the trailing 24 hours (bursty entities, such as a small user whose
    rare long sessions dwarf their median, are judged against their usual peaks), and the
    increase is material: at least $0.50 (or 100,000 tokens) more than expected in 15
    minutes, i.e. $2 an hour. Minimum volume: 5 calls in the window.
    """

    name: ClassVar[str] = "cost_surge"
    threshold: ClassVar[float] = 6.0
    lookback_minutes: ClassVar[int] = 120
    use_seasonality: ClassVar[bool] = True
    recent_minutes: ClassVar[int] = 24 * 60  # the 24-hour p95 needs the whole last day
    min_ratio: ClassVar[float] = 2.0
    min_calls: ClassVar[int] = 5
    dimension_filter: ClassVar[str] = "Dimension IN ('service', 'user') OR startsWith(Dimension, 'property.')"
    above_day_high: ClassVar[float] = 1.0
    min_increase: ClassVar[dict[str, float]] = {"cost_usd": 0.50, "tokens": 100_000}
    abs_floor: ClassVar[dict[str, float]] = {"cost_usd": 0.01, "tokens": 1000}

    def detect(self, ctx: PassContext, t_from: dt.datetime, t_to: dt.datetime) -> list[Hit]:
        grid = self.grid(ctx, t_from, t_to, self.history_minutes())
        data = self.fetch(ctx, "dim_windows", grid, {"calls": 0, "cost_usd": 0.0, "tokens": 0},
                          dimension_filter=self.dimension_filter, slices=self.seasonal_slices(ctx, t_from, t_to))
        at = grid.eval_indexes(t_from)
        seasonal = self.seasonal_entities(ctx, t_from, self.dimension_filter)
        hits: list[Hit] = []
        for entity, series in data.items():
            metric = "cost_usd" if np.nansum(series["cost_usd"]) > 0 else "tokens"
            values = series[metric].copy()
            calls = series["calls"]
            first = int(np.argmax(calls > 0)) if np.any(calls > 0) else len(calls)
            values[:first] = np.nan
            base = self.baseline(values, at, ctx.step_minutes, seasonal=entity in seasonal)
            step = ctx.step_minutes
            day_high = upper_quantile(values, at, lookback=24 * 60 // step, gap=self.window_minutes // step, q=0.95)
            observed = series[metric][at]
            expected = base.expected
            with np.errstate(invalid="ignore", divide="ignore"):
                scale = np.maximum(np.maximum(base.sigma, 0.25 * expected), self.abs_floor[metric])
                score = (observed - expected) / scale
                fire = ((score >= self.threshold) & (observed >= self.min_ratio * expected)
                        & (observed - expected >= self.min_increase[metric])
                        & (observed >= self.above_day_high * np.nan_to_num(day_high))
                        & (calls[at] >= self.min_calls))
            fire &= ~np.isnan(expected)
            hits += hits_from_scores(self, grid, entity, at, fire, observed, expected, score, self.threshold,
                                     metric, "USD" if metric == "cost_usd" else "tokens",
                                     {"calls": calls[at]})
        return hits
