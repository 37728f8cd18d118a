"""Synthetic calls of a canary rollout, stored through the real span path (``otel_traces`` rows, so
the ``genops_calls`` view fills the route columns): shared by the rollout tests."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from typing import Any

from genops.storage.rows import insert_rows
from genops.storage.scores import Score, insert_scores


def call_row(ts: dt.datetime, attributes: dict[str, str], *, duration_ms: float = 100.0, error: bool = False) -> list[Any]:
    """One ``otel_traces`` row (TRACE_COLUMNS order) of a model call the proxy recorded."""
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
             **attributes}
    return [int(ts.timestamp() * 1e9), uuid.uuid4().hex, uuid.uuid4().hex[:16], "", "", "chat gpt-4o-mini", "Client",
            "rollout-test", {}, "genops.proxy", "1", attrs, int(duration_ms * 1e6), "Error" if error else "Unset",
            "upstream error" if error else "", [], [], [], [], [], [], []]


def insert_calls(client: Any, database: str, rollout_id: str, variant: str, count: int, start: dt.datetime, *,
                 seconds: float = 60.0, error_rate: float = 0.01, latency_ms: float = 100.0, cost_usd: float | None = 0.001,
                 flagged_rate: float = 0.0, route: str = "support-bot", target: str = "openai:gpt-4o-mini",
                 seed: int = 0, rescued_rate: float = 0.0) -> list[str]:
    """``count`` calls of one arm spread over ``seconds`` from ``start``; returns their request ids.

    Errors and safety findings hit exactly ``round(count * rate)`` calls (spread evenly), so a test
    knows the counts; latency and cost vary +-50% around their means (seeded). ``rescued_rate``: that
    share answered without an error by the route's fallback, after the arm's target failed (attempt 2).
    """
    rng = random.Random(seed)
    errors = round(count * error_rate)
    flagged = round(count * flagged_rate)
    rescued = round(count * rescued_rate)
    ids, rows = [], []
    for i in range(count):
        request_id = uuid.uuid4().hex
        ids.append(request_id)
        attrs = {"genops.route.name": route, "genops.route.target": target, "genops.route.attempt": "1",
                 "genops.route.reason": "canary" if variant == "canary" else "weighted",
                 "genops.route.variant": variant, "genops.rollout.id": rollout_id, "genops.request.id": request_id}
        if cost_usd is not None:
            attrs["genops.cost.usd"] = repr(cost_usd * rng.uniform(0.5, 1.5))
        if rescued and i * rescued // count != (i + 1) * rescued // count:
            attrs.update({"genops.route.attempt": "2", "genops.route.reason": "fallback",
                          "genops.route.target": "openai:gpt-4o"})
        if flagged and i * flagged // count != (i + 1) * flagged // count:
            attrs["genops.safety.pii.count"] = "1"
        error = bool(errors) and i * errors // count != (i + 1) * errors // count
        ts = start + dt.timedelta(seconds=seconds * i / count)
        rows.append(call_row(ts, attrs, duration_ms=latency_ms * rng.uniform(0.5, 1.5), error=error))
    insert_rows(client, database, rows)
    return ids


def insert_numeric_scores(client: Any, database: str, request_ids: list[str], values: list[float],
                          name: str = "helpfulness", at: dt.datetime | None = None) -> None:
    """One numeric score per request id (``values`` cycled), as the feedback endpoint stores them, at ``at``."""
    now_us = int((at or dt.datetime.now(dt.UTC)).timestamp() * 1e6)
    insert_scores(client, database, [
        Score(timestamp_us=now_us, score_id=uuid.uuid4().hex, request_id=rid, trace_id="", span_id="", name=name,
              data_type="numeric", value=values[i % len(values)], label="", comment="", source="user")
        for i, rid in enumerate(request_ids)])
