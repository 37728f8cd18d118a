"""Safety-finding surge per service."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

import numpy as np

from genops.collectors.anomaly.baseline import poisson_tail, pooled_rate
from genops.collectors.anomaly.detectors.base import BaselineDetector, Hit, PassContext, hits_from_scores


class SafetySurge(BaselineDetector):
    """Surge of safety findings (PII, secrets, prompt injection) per ``service=``.

    Method: findings per call over the last 15 minutes against the median/MAD of the same
    ratio over the trailing 24 hours. Score = (ratio - median) / max(1.4826 * MAD,
    Poisson noise sqrt(p / calls) with p the larger of the median and the pooled ratio of
    the history (at least 0.01), 0.01). Fires at score >= 5 with at least 5 findings in the
    window, a ratio of 3x the median, and a Poisson tail P(findings >= observed | calls * p)
    below 1e-6. Minimum volume: 30 calls.
    """

    name: ClassVar[str] = "safety_surge"
    min_calls: ClassVar[int] = 30

    def detect(self, ctx: PassContext, t_from: dt.datetime, t_to: dt.datetime) -> list[Hit]:
        grid = self.grid(ctx, t_from, t_to, self.history_minutes())
        data = self.fetch(ctx, "dim_windows", grid, {"calls": 0, "safety_findings": 0}, dimension_filter="Dimension = 'service'")
        at = grid.eval_indexes(t_from)
        hits: list[Hit] = []
        for entity, series in data.items():
            calls, findings = series["calls"], series["safety_findings"]
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = np.where(calls >= self.min_calls, findings / calls, np.nan)
            base = self.baseline(ratio, at, ctx.step_minutes)
            observed = ratio[at]
            pooled = pooled_rate(findings, calls, at, lookback=self.lookback_minutes // ctx.step_minutes,
                                 gap=self.window_minutes // ctx.step_minutes)
            p = np.maximum(np.fmax(np.nan_to_num(base.expected, nan=0.0), np.nan_to_num(pooled, nan=0.0)), 0.01)
            with np.errstate(invalid="ignore", divide="ignore"):
                scale = np.maximum(np.maximum(base.sigma, np.sqrt(p / np.maximum(calls[at], 1))), 0.01)
                score = (observed - base.expected) / scale
                fire = ((score >= self.threshold) & (findings[at] >= 5) & (observed >= 3 * base.expected))
            fire &= ~np.isnan(observed) & ~np.isnan(base.expected)
            for j in np.nonzero(fire)[0]:  # the count must be implausible at the expected rate too
                if poisson_tail(findings[at[j]], p[j] * calls[at[j]]) > 1e-6:
                    fire[j] = False
            hits += hits_from_scores(self, grid, entity, at, fire, observed, base.expected, score, self.threshold,
                                     "findings_per_call", "ratio", {"calls": calls[at], "findings": findings[at]})
        return hits
