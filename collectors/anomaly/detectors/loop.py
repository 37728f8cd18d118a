"""Agent loop: a session repeating near-identical calls."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

from genops.collectors.anomaly.detectors.base import Detector, Hit, PassContext
from genops.collectors.anomaly.queries import from_unix


class AgentLoop(Detector):
    """Agent stuck in a loop: a session (``session=<id>``) repeating near-identical calls.

    Method: each call gets a fingerprint at insert time (``genops_rollup_session_1m``): the
    ``genops.request.fingerprint`` attribute if set, else the captured input messages with
    digits masked, else model + exact input token count (a retry loop re-sends the same
    context; a progressing conversation grows it). Over a 15-minute window a session fires
    when it made at least 8 calls and at most a third of them were distinct. Observed = the
    share of repeated calls, expected = 0 (a healthy agent does not repeat itself), score =
    the number of repeated calls (critical from 30).
    """

    name: ClassVar[str] = "agent_loop"
    window_minutes: ClassVar[int] = 15
    min_calls: ClassVar[int] = 8
    max_distinct_share: ClassVar[float] = 1 / 3

    def detect(self, ctx: PassContext, t_from: dt.datetime, t_to: dt.datetime) -> list[Hit]:
        rows = ctx.rows("session_windows", from_ts=t_from, to_ts=t_to, window=self.window_minutes,
                        min_calls=self.min_calls, min_cost=1e18)
        hits = []
        for row in rows:
            calls, distinct = int(row["calls"]), int(row["distinct_calls"])
            if calls < self.min_calls or distinct > self.max_distinct_share * calls:
                continue
            repeats = calls - distinct
            hits.append(Hit(
                self.name, row["entity"], from_unix(row["t"]), round(repeats / calls, 4), 0.0, float(repeats),
                "critical" if repeats >= 30 else "warning", "repeated_call_share", "ratio",
                {"service": row["service"], "user": row["user"], "calls": calls, "distinct_calls": distinct},
            ))
        return hits
