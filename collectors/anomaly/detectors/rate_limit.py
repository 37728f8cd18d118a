"""Upstream 429 (rate limit) bursts per provider."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

from genops.collectors.anomaly.detectors.base import BaselineDetector, Hit, PassContext, hits_from_scores
from genops.collectors.anomaly.detectors.error_rate import rate_scores


class RateLimitBurst(BaselineDetector):
    """Burst of upstream 429 responses per provider (rate limits hit an account, not a model).

    Method: the share of calls answered 429 over the last 15 minutes against the median/MAD
    of that share over the trailing 24 hours, with the binomial noise floor of
    ``error_rate``. Fires at score >= 5 with at least 5 429s, a share of at least 5% and
    3x the median, and a Poisson tail below 1e-5. Minimum volume: 20 calls in the window.
    """

    name: ClassVar[str] = "rate_limit_burst"

    def detect(self, ctx: PassContext, t_from: dt.datetime, t_to: dt.datetime) -> list[Hit]:
        grid = self.grid(ctx, t_from, t_to, self.history_minutes())
        data = self.fetch(ctx, "provider_windows", grid, {"calls": 0, "rate_limited": 0})
        at = grid.eval_indexes(t_from)
        hits: list[Hit] = []
        for entity, series in data.items():
            observed, expected, score, fire = rate_scores(
                series["rate_limited"], series["calls"], at, self, ctx.step_minutes,
                min_calls=20, min_events=5, min_rate=0.05, min_ratio=3.0)
            hits += hits_from_scores(self, grid, entity, at, fire, observed, expected, score, self.threshold,
                                     "rate_limited_share", "ratio",
                                     {"calls": series["calls"][at], "rate_limited": series["rate_limited"][at]})
        return hits
