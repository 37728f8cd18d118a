"""Runaway agent: a session whose call rate or spend per minute explodes."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

import numpy as np

from genops.collectors.anomaly.detectors.base import Detector, Hit, PassContext, severity_for
from genops.collectors.anomaly.queries import from_unix


class RunawayAgent(Detector):
    """Runaway agent session (``session=<gen_ai.conversation.id>``): calls or spend per 5 minutes.

    Method: sessions are short-lived, so the baseline is the population, not the session's
    own past: per hour, the 99th percentile of calls and of spend per active session per
    5-minute bucket (``genops_rollup_session_1m``); the expected value at t is the median
    of those hourly p99s over the trailing 24 hours. A session fires when, in a 5-minute
    window, its calls reach max(30, 5x the p99) or its spend reaches max($1, 10x the p99).
    Score = observed / that threshold (>= 1 when firing). Minimum volume is the absolute
    part of the thresholds (30 calls or $1 in 5 minutes).
    """

    name: ClassVar[str] = "runaway_agent"
    window_minutes: ClassVar[int] = 5
    min_calls: ClassVar[int] = 30
    call_factor: ClassVar[float] = 5.0
    min_cost: ClassVar[float] = 1.0
    cost_factor: ClassVar[float] = 10.0

    def detect(self, ctx: PassContext, t_from: dt.datetime, t_to: dt.datetime) -> list[Hit]:
        rows = ctx.rows("session_windows", from_ts=t_from, to_ts=t_to, window=self.window_minutes,
                        min_calls=self.min_calls, min_cost=self.min_cost)
        if not rows:
            return []
        population = ctx.rows("session_population", from_ts=t_from - dt.timedelta(hours=24), to_ts=t_to)
        hours = np.array([r["hour"] for r in population], dtype=np.int64)
        calls_p99 = np.array([r["calls_p99"] for r in population], dtype=float)
        cost_p99 = np.array([r["cost_p99"] for r in population], dtype=float)
        hits = []
        for row in rows:
            t = int(row["t"])
            past = (hours < t - 3600) & (hours >= t - 86400 - 3600)  # finished hours of the last day
            base_calls = float(np.median(calls_p99[past])) if past.any() else 0.0
            base_cost = float(np.median(cost_p99[past])) if past.any() else 0.0
            call_limit = max(self.min_calls, self.call_factor * base_calls)
            cost_limit = max(self.min_cost, self.cost_factor * base_cost)
            by_calls = row["calls"] / call_limit
            by_cost = row["cost_usd"] / cost_limit
            if max(by_calls, by_cost) < 1:
                continue
            use_calls = by_calls >= by_cost
            score = by_calls if use_calls else by_cost
            hits.append(Hit(
                self.name, row["entity"], from_unix(t),
                float(row["calls"] if use_calls else round(row["cost_usd"], 6)),
                round(base_calls if use_calls else base_cost, 6), round(score, 3), severity_for(score, 1.0),
                "calls_per_5m" if use_calls else "cost_usd_per_5m", "calls" if use_calls else "USD",
                {"service": row["service"], "user": row["user"], "calls": int(row["calls"]),
                 "cost_usd": round(float(row["cost_usd"]), 6), "tokens": int(row["tokens"])},
            ))
        return hits
