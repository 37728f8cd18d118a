"""Seed data for the session/trace/A-B tests: an agent run with nested sessions, and A/B traffic.

Run as a script (``python tests/seed_sessions.py DATA_DIR``) it writes the rows into the
embedded store of DATA_DIR, in its own process (chDB allows one data path per process and
locks it). Imported, it gives the tests the same data to compute expected results from.
Spans carry the attributes the proxy records (names from genops.semconv), the agent's own
spans those an OpenTelemetry-instrumented agent sends.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

from genops import semconv as sc


@dataclass
class SeedSpan:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    start_ms: float  # offset from the seed's base time
    duration_ms: float
    attrs: dict[str, Any]
    status: str = "Unset"
    service: str = "genops-proxy"
    scope: str = sc.PROXY_SCOPE
    kind: str = "Client"


@dataclass
class SeedScore:
    request_id: str
    trace_id: str
    span_id: str
    name: str
    value: float | None
    label: str = ""
    data_type: str = "numeric"
    source: str = "user"
    at_ms: float = 10_000.0  # offset from the base time; later rows win
    metadata: dict[str, str] = field(default_factory=dict)


def proxy_call(trace_id: str, span_id: str, parent_id: str, start_ms: float, duration_ms: float, *, request_id: str,
               model: str, input_tokens: int | None, output_tokens: int | None, cost: float | None,
               error: str | None = None, **context: str) -> SeedSpan:
    """A span as the proxy records a chat call; ``context`` keys are semconv attribute names."""
    attrs: dict[str, Any] = {
        sc.GEN_AI_OPERATION_NAME: "chat", sc.GEN_AI_PROVIDER_NAME: "openai", sc.GEN_AI_REQUEST_MODEL: model,
        sc.GENOPS_REQUEST_ID: request_id, sc.GENOPS_ROUTE: "openai", sc.HTTP_RESPONSE_STATUS_CODE: 429 if error else 200,
    }
    if not error:
        attrs[sc.GEN_AI_RESPONSE_MODEL] = model
    if input_tokens is not None:
        attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] = input_tokens
        attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = output_tokens
    if cost is not None:
        attrs[sc.GENOPS_COST_USD] = cost
    if error:
        attrs[sc.ERROR_TYPE] = error
    attrs.update(context)
    return SeedSpan(trace_id, span_id, parent_id, f"chat {model}", start_ms, duration_ms, attrs,
                    status="Error" if error else "Unset")


def agent_span(trace_id: str, span_id: str, parent_id: str, name: str, start_ms: float, duration_ms: float,
               **attrs: Any) -> SeedSpan:
    """A span the agent's own OpenTelemetry instrumentation sends (invoke_agent / execute_tool)."""
    return SeedSpan(trace_id, span_id, parent_id, name, start_ms, duration_ms, attrs, service="trip-agent",
                    scope="trip-agent", kind="Internal")


# -- the agent run: session trip-42, planner -> researcher / writer ----------------------------
SESSION = "trip-42"
T1 = "a1" * 16  # instrumented part of the run (traceparent passed to the proxy)
T2 = "b2" * 16  # a later call that sent only session headers: its own trace
CTX = {sc.GEN_AI_CONVERSATION_ID: SESSION, sc.GENOPS_USER_ID: "alice", sc.GENOPS_SESSION_NAME: "Trip to Lisbon"}

AGENT_RUN = [
    agent_span(T1, "0000000000000001", "", "invoke_agent planner", 0, 4000,
               **{sc.GEN_AI_OPERATION_NAME: "invoke_agent", sc.GEN_AI_AGENT_NAME: "planner",
                  sc.GEN_AI_CONVERSATION_ID: SESSION}),
    proxy_call(T1, "0000000000000002", "0000000000000001", 100, 800, request_id="req-plan-1", model="gpt-4o",
               input_tokens=120, output_tokens=40, cost=0.0007,
               **CTX, **{sc.GENOPS_SESSION_PATH: "/planner", sc.GEN_AI_AGENT_NAME: "planner",
                         sc.GENOPS_PROMPT_ID: "trip-plan", sc.GENOPS_PROMPT_VERSION: "v2"}),
    agent_span(T1, "0000000000000003", "0000000000000001", "execute_tool web_search", 1000, 600,
               **{sc.GEN_AI_OPERATION_NAME: "execute_tool", "gen_ai.tool.name": "web_search"}),
    agent_span(T1, "0000000000000004", "0000000000000001", "invoke_agent researcher", 1700, 2000,
               **{sc.GEN_AI_OPERATION_NAME: "invoke_agent", sc.GEN_AI_AGENT_NAME: "researcher",
                  sc.GEN_AI_CONVERSATION_ID: SESSION}),
    proxy_call(T1, "0000000000000005", "0000000000000004", 1800, 1200, request_id="req-research-1",
               model="gpt-4o-mini", input_tokens=300, output_tokens=80, cost=0.000093,
               **CTX, **{sc.GENOPS_SESSION_PATH: "/planner/researcher", sc.GEN_AI_AGENT_NAME: "researcher"}),
    proxy_call(T1, "0000000000000006", "0000000000000004", 3100, 500, request_id="req-research-2",
               model="gpt-4o-mini", input_tokens=None, output_tokens=None, cost=None, error="rate_limit_exceeded",
               **CTX, **{sc.GENOPS_SESSION_PATH: "/planner/researcher", sc.GEN_AI_AGENT_NAME: "researcher"}),
    proxy_call(T2, "0000000000000007", "", 4200, 900, request_id="req-write-1", model="gpt-4o-mini",
               input_tokens=200, output_tokens=150, cost=0.00012,
               **CTX, **{sc.GENOPS_SESSION_PATH: "/planner/writer", sc.GEN_AI_AGENT_NAME: "writer"}),
]
AGENT_SCORES = [
    SeedScore("req-plan-1", T1, "0000000000000002", "thumbs_up", 0.0, "false", "boolean", at_ms=6000),
    SeedScore("req-plan-1", T1, "0000000000000002", "thumbs_up", 1.0, "true", "boolean", at_ms=7000),  # wins
    SeedScore("req-research-1", T1, "0000000000000005", "relevance", 0.8, source="eval"),
    SeedScore("", T1, "", "task_success", 1.0, "true", "boolean"),
]

# -- A/B traffic: prompt support-answer v1 vs v2, over two models -----------------------------
AB_PROMPT = "support-answer"


def _ab() -> tuple[list[SeedSpan], list[SeedScore]]:
    spans: list[SeedSpan] = []
    scores: list[SeedScore] = []
    plan = [  # (version, model, user, duration ms, in, out, cost, error, thumbs)
        ("v1", "gpt-4o-mini", "bob", 300, 100, 50, 0.000045, None, True),
        ("v1", "gpt-4o-mini", "bob", 420, 120, 60, 0.000054, None, False),
        ("v1", "gpt-4o-mini", "carol", 380, 90, 40, 0.0000375, None, None),
        ("v1", "gpt-4o", "carol", 900, 110, 70, 0.000975, None, True),
        ("v1", "gpt-4o-mini", "bob", 50, None, None, None, "rate_limit_exceeded", None),
        ("v1", "gpt-4o-mini", "dave", 610, 130, 55, 0.0000525, None, False),
        ("v2", "gpt-4o", "carol", 1200, 140, 90, 0.00125, None, True),
        ("v2", "gpt-4o", "carol", 1500, 150, 95, 0.0013250, None, True),
        ("v2", "gpt-4o-mini", "dave", 450, 100, 45, 0.000042, None, False),
        ("v2", "gpt-4o", "erin", 1100, 120, 80, 0.0011, None, None),
    ]
    for i, (version, model, user, dur, tin, tout, cost, error, thumbs) in enumerate(plan):
        trace_id = f"{i + 1:032x}"
        span_id = f"{i + 1:016x}"
        rid = f"req-ab-{i}"
        spans.append(proxy_call(trace_id, span_id, "", 20_000 + i * 1000, dur, request_id=rid, model=model,
                                input_tokens=tin, output_tokens=tout, cost=cost, error=error,
                                **{sc.GENOPS_PROMPT_ID: AB_PROMPT, sc.GENOPS_PROMPT_VERSION: version,
                                   sc.GENOPS_USER_ID: user, sc.GEN_AI_CONVERSATION_ID: f"support-{user}"}))
        if thumbs is not None:
            if thumbs:  # an earlier thumbs-down the user changed: the later row must win
                scores.append(SeedScore(rid, trace_id, span_id, "thumbs_up", 0.0, "false", "boolean", at_ms=40_000))
            scores.append(SeedScore(rid, trace_id, span_id, "thumbs_up", 1.0 if thumbs else 0.0,
                                    "true" if thumbs else "false", "boolean", at_ms=50_000))
    return spans, scores


AB_SPANS, AB_SCORES = _ab()
SPANS = AGENT_RUN + AB_SPANS
SCORES = AGENT_SCORES + AB_SCORES


def rows(base_ns: int) -> tuple[list[list[Any]], list[Any]]:
    """otel_traces rows and Score objects, timed from ``base_ns``."""
    from genops.storage.rows import attribute_map
    from genops.storage.scores import Score

    span_rows = []
    for s in SPANS:
        start = base_ns + int(s.start_ms * 1e6)
        span_rows.append([
            start, s.trace_id, s.span_id, s.parent_id, "", s.name, s.kind, s.service,
            {"service.name": s.service}, s.scope, "", attribute_map(s.attrs), int(s.duration_ms * 1e6), s.status, "",
            [], [], [], [], [], [], [],
        ])
    scores = [
        Score(timestamp_us=(base_ns + int(s.at_ms * 1e6)) // 1000 + i, score_id=f"seed-{i:04d}",
              request_id=s.request_id, trace_id=s.trace_id, span_id=s.span_id, name=s.name, data_type=s.data_type,
              value=s.value, label=s.label, comment="", source=s.source, metadata=s.metadata)
        for i, s in enumerate(SCORES)
    ]
    return span_rows, scores


def seed(data_dir: str) -> None:
    """Write the seed into the embedded store of ``data_dir`` (migrating it first)."""
    from genops.config import load_settings
    from genops.storage.client import open_client
    from genops.storage.migrate import migrate
    from genops.storage.rows import insert_rows
    from genops.storage.scores import insert_scores

    settings = load_settings({"data_dir": data_dir})
    client = open_client(settings)
    migrate(client, settings.database, retention_days=settings.retention_days)
    span_rows, scores = rows(time.time_ns() - 3600 * 10**9)
    insert_rows(client, settings.database, span_rows)
    insert_scores(client, settings.database, scores)


if __name__ == "__main__":
    seed(sys.argv[1])
