"""Cost or token surge per service, user or custom property."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

import numpy as np

from genops.collectors.anomaly.baseline import upper_quantile
from genops.collectors.anomaly.detectors.base import BaselineDetector, Hit, PassContext, hits_from_scores
from genops.collectors.anomaly.queries import from_unix


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
    minutes, i.e. $2 an hour. Minimum volume: 5 calls in the window. Of the surges one
    cause raises together (a user, their service, its properties; or a runaway session) only
    the most specific is reported (see ``most_specific``).
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
    explained_share: ClassVar[float] = 0.7

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
        if not hits:
            return hits
        sessions = ctx.rows("session_windows", from_ts=t_from, to_ts=t_to, window=self.window_minutes,
                            min_calls=10**12, min_cost=self.explained_share * self.min_increase["cost_usd"])
        return self.most_specific(hits, sessions)

    def most_specific(self, hits: list[Hit], sessions: list[dict]) -> list[Hit]:
        """Drop the surges another, more specific one explains at the same time.

        One heavy user raises their user entity, their service, its team and feature
        properties at once. A hit is dropped when a more specific entity (session > user >
        property > service) rose by at least ``explained_share`` of its increase in the same
        window; the kept hit lists what it explains in ``details["explains"]``. A session's
        spend in the window counts as its increase (sessions are new, so expected ~0), and
        surges a runaway session explains are left to ``runaway_agent``.
        """
        def rank(entity: str) -> int:
            return 0 if entity.startswith("session=") else 1 if entity.startswith("user=") else \
                2 if entity.startswith("property.") else 3

        explainers: dict[dt.datetime, list[tuple[int, float, str, str]]] = {}
        for h in hits:
            explainers.setdefault(h.t, []).append((rank(h.entity), h.observed - h.expected, h.entity, h.metric))
        for row in sessions:
            explainers.setdefault(from_unix(row["t"]), []).append((0, float(row["cost_usd"]), row["entity"], "cost_usd"))
        kept = []
        for h in hits:
            increase = h.observed - h.expected
            by = [e for r, inc, e, m in explainers[h.t]
                  if r < rank(h.entity) and m == h.metric and inc >= self.explained_share * increase]
            if by:
                continue
            explains = sorted(e for r, inc, e, m in explainers[h.t]
                              if r > rank(h.entity) and m == h.metric and increase >= self.explained_share * inc)
            if explains:
                h.details["explains"] = explains
            kept.append(h)
        return kept
