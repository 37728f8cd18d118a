"""Seeded traffic for the dashboard tests: real OTel SDK spans -> ``storage/rows.py`` -> ``otel_traces``.

Every (service, provider/model, user) combination gets the same four kinds of call, so a
dashboard filtered to any one value still has streams, errors, unpriced calls, cache
reads, safety findings (annotate, redact, block), sessions and custom properties. Three
agent traces (``invoke_agent`` -> ``execute_tool`` -> model calls) exercise the trace view.
A route (``ROUTE``) gets calls before a rollout, then a baseline and a canary that fails
more often, with feedback scores and the rollout's decisions (the Rollouts dashboard).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, set_span_in_context

from genops import semconv as sc
from genops.storage.rows import insert_rows, spans_to_rows

MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-sonnet-4-5"),
    ("gcp.gemini", "gemini-2.5-flash"),
]
SERVICES = ["support-bot", "research-agent", "batch-summarizer"]
USERS = ["alice", "bob", "carol", "dave"]
PROPERTY_TEAMS = {"alice": "growth", "bob": "core", "carol": "growth", "dave": "platform"}
ROUTE = "support-bot"
ROLLOUT_ID = "ro-seeded-1"
ROUTE_BASELINE = MODELS[1]  # openai gpt-4o-mini
ROUTE_CANARY = MODELS[2]  # anthropic claude-sonnet-4-5


@dataclass
class Seeded:
    """What was inserted, for assertions."""

    calls: int  # model calls the proxy recorded
    sdk_calls: int  # the same kind of call recorded by an SDK instrumentation (sent by OTLP)
    agent_trace_ids: list[str]
    window_start: datetime
    window_end: datetime
    # The route's calls: variant ("" outside a rollout, "baseline", "canary") -> request ids, and errors.
    route_calls: dict[str, list[str]]
    route_errors: dict[str, int]


def _ns(t: datetime) -> int:
    return int(t.timestamp() * 1e9)


def seed_traffic(client: Any, database: str, now: datetime | None = None) -> Seeded:
    """Insert the traffic into ``database.otel_traces`` (the genops_calls view fills itself)."""
    now = now or datetime.now(UTC)
    rng = random.Random(6)
    exporter = InMemorySpanExporter()
    providers: dict[str, TracerProvider] = {}

    def tracer(service: str, scope: str):
        if service not in providers:
            provider = TracerProvider(resource=Resource.create({"service.name": service, "deployment.environment": "test"}))
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            providers[service] = provider
        return providers[service].get_tracer(scope, "1.0")

    start = now - timedelta(minutes=150)
    calls = 0

    def model_call(service: str, provider: str, model: str, user: str, kind: int, at: datetime,
                   parent=None, agent: str = "", session: str = "", extra: dict[str, Any] | None = None) -> str:
        nonlocal calls
        request_id = f"req-{calls}"
        duration_ms = rng.uniform(200, 2500) * (3 if kind == 1 else 1)
        attrs: dict[str, Any] = {
            sc.GEN_AI_OPERATION_NAME: "chat",
            sc.GEN_AI_PROVIDER_NAME: provider,
            sc.GEN_AI_REQUEST_MODEL: model,
            sc.GEN_AI_RESPONSE_MODEL: model,
            sc.GEN_AI_REQUEST_STREAM: kind == 0,
            sc.GENOPS_REQUEST_ID: request_id,
            sc.HTTP_RESPONSE_STATUS_CODE: 200,
            **(extra or {}),
        }
        if user:
            attrs[sc.GENOPS_USER_ID] = user
            attrs[sc.GENOPS_PROPERTY_PREFIX + "team"] = PROPERTY_TEAMS[user]
            attrs[sc.GEN_AI_CONVERSATION_ID] = session or f"sess-{user}-{service}-{at.hour}"
        if agent:
            attrs[sc.GEN_AI_AGENT_NAME] = agent
        status = Status(StatusCode.OK)
        if kind == 1:  # an upstream error: no usage, so no price
            code = rng.choice([429, 500, 503])
            attrs.update({sc.ERROR_TYPE: str(code), sc.HTTP_RESPONSE_STATUS_CODE: code,
                          sc.GENOPS_COST_UNKNOWN: True, sc.GENOPS_COST_UNKNOWN_REASON: "no_usage"})
            status = Status(StatusCode.ERROR, f"upstream returned {code}")
        else:
            input_tokens = rng.choice([300, 1200, 4000, 16000, 60000])
            output_tokens = rng.randint(20, 800)
            cost = input_tokens * 2.5e-6 + output_tokens * 1e-5
            attrs.update({
                sc.GEN_AI_USAGE_INPUT_TOKENS: input_tokens,
                sc.GEN_AI_USAGE_OUTPUT_TOKENS: output_tokens,
                sc.GENOPS_COST_USD: cost,
                sc.GENOPS_COST_INPUT_USD: input_tokens * 2.5e-6,
                sc.GENOPS_COST_OUTPUT_USD: output_tokens * 1e-5,
                sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: output_tokens // 4,
            })
            if kind == 0:  # streamed, read from the prompt cache
                cached = input_tokens // 2
                ttft = rng.uniform(80, 900)
                attrs.update({
                    sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: cached,
                    sc.GENOPS_COST_CACHE_SAVINGS_USD: cached * 2.5e-6 * 0.9,
                    sc.GENOPS_LATENCY_TTFT_MS: ttft,
                    sc.GENOPS_LATENCY_OUTPUT_TOKENS_PER_SECOND: output_tokens / max((duration_ms - ttft) / 1000, 0.05),
                })
            if kind in (2, 3):  # safety findings: blocked or redacted
                attrs.update({
                    sc.GENOPS_SAFETY_PII_COUNT: rng.randint(1, 3),
                    sc.GENOPS_SAFETY_SECRETS_COUNT: 1 if kind == 2 else 0,
                    sc.GENOPS_SAFETY_INJECTION_COUNT: 1 if kind == 2 else rng.randint(0, 1),
                    sc.GENOPS_SAFETY_ACTION: "block" if kind == 2 else "redact",
                })
        ctx = set_span_in_context(parent) if parent is not None else None
        span = tracer(service, sc.PROXY_SCOPE).start_span(
            f"chat {model}", context=ctx, kind=SpanKind.CLIENT, attributes=attrs, start_time=_ns(at)
        )
        if kind in (2, 3):
            span.add_event(sc.GEN_AI_EVALUATION_RESULT_EVENT,
                           {"gen_ai.evaluation.name": "pii", "gen_ai.evaluation.score.label": "found"},
                           timestamp=_ns(at + timedelta(milliseconds=5)))
        span.set_status(status)
        span.end(end_time=_ns(at + timedelta(milliseconds=duration_ms)))
        calls += 1
        return request_id

    # Every combination, four kinds of call each, spread over the window.
    combos = [(s, p, m, u) for s in SERVICES for (p, m) in MODELS for u in USERS]
    for _ in range(2):
        for service, provider, model, user in combos:
            for kind in range(4):
                offset = rng.uniform(0, 140)
                model_call(service, provider, model, user, kind, start + timedelta(minutes=offset))
    # Calls without a user (batch jobs).
    for i in range(20):
        provider, model = MODELS[i % len(MODELS)]
        model_call("batch-summarizer", provider, model, "", i % 4, start + timedelta(minutes=rng.uniform(0, 140)))

    # The route: 12 calls before the rollout, then 36 split two to one between baseline and canary.
    # The canary fails half its calls (kinds 1, 1, 0, 3), the baseline a quarter (kinds 0..3).
    route_calls: dict[str, list[str]] = {"": [], "baseline": [], "canary": []}
    route_errors = {"": 0, "baseline": 0, "canary": 0}
    for i in range(48):
        variant = "" if i < 12 else ("baseline", "baseline", "canary")[i % 3]
        provider, model = ROUTE_CANARY if variant == "canary" else ROUTE_BASELINE
        kind = (1, 1, 0, 3)[i % 4] if variant == "canary" else i % 4
        extra: dict[str, Any] = {sc.GENOPS_ROUTE_NAME: ROUTE, sc.GENOPS_ROUTE_TARGET: f"{provider}:{model}",
                                 sc.GENOPS_ROUTE_ATTEMPT: 1,
                                 sc.GENOPS_ROUTE_REASON: "canary" if variant == "canary" else "weighted"}
        if variant:
            extra.update({sc.GENOPS_ROUTE_VARIANT: variant, sc.GENOPS_ROLLOUT_ID: ROLLOUT_ID})
        at = start + timedelta(minutes=(i if i < 12 else 30 + (i - 12) * 3) + rng.uniform(0, 1))
        route_calls[variant].append(model_call(ROUTE, provider, model, USERS[i % len(USERS)], kind, at, extra=extra))
        route_errors[variant] += kind == 1

    # Agent traces: invoke_agent -> execute_tool -> model calls, one session each.
    agent_trace_ids = []
    for n, (user, (provider, model)) in enumerate([("alice", MODELS[0]), ("bob", MODELS[2]), ("alice", MODELS[3])]):
        at = now - timedelta(minutes=90 - 30 * n)
        session = f"agent-session-{n}"
        agent_tracer = tracer("research-agent", "agent-app")
        root = agent_tracer.start_span("invoke_agent researcher", kind=SpanKind.INTERNAL, start_time=_ns(at), attributes={
            sc.GEN_AI_OPERATION_NAME: "invoke_agent", sc.GEN_AI_AGENT_NAME: "researcher", sc.GEN_AI_CONVERSATION_ID: session,
        })
        model_call("research-agent", provider, model, user, 0, at + timedelta(milliseconds=10), parent=root,
                   agent="researcher", session=session)
        tool = agent_tracer.start_span("execute_tool web_search", context=set_span_in_context(root), kind=SpanKind.INTERNAL,
                                       start_time=_ns(at + timedelta(seconds=3)),
                                       attributes={sc.GEN_AI_OPERATION_NAME: "execute_tool", "gen_ai.tool.name": "web_search"},
                                       links=[Link(root.get_span_context(), {"reason": "planned-by"})])
        tool.end(end_time=_ns(at + timedelta(seconds=4)))
        model_call("research-agent", provider, model, user, 3, at + timedelta(seconds=4, milliseconds=50), parent=root,
                   agent="researcher", session=session)
        root.end(end_time=_ns(at + timedelta(seconds=9)))
        agent_trace_ids.append(format(root.get_span_context().trace_id, "032x"))

    # An agent instrumented with OpenTelemetry's OpenAI instrumentation sends its own client
    # spans too: no cost, no user, another scope.
    sdk_calls = 12
    sdk_tracer = tracer("support-bot", "opentelemetry.instrumentation.openai_v2")
    for i in range(sdk_calls):
        at = start + timedelta(minutes=10 * i + 3)
        span = sdk_tracer.start_span("chat gpt-4o", kind=SpanKind.CLIENT, start_time=_ns(at), attributes={
            sc.GEN_AI_OPERATION_NAME: "chat", sc.GEN_AI_PROVIDER_NAME: "openai", sc.GEN_AI_REQUEST_MODEL: "gpt-4o",
            sc.GEN_AI_USAGE_INPUT_TOKENS: 500, sc.GEN_AI_USAGE_OUTPUT_TOKENS: 50,
        })
        span.end(end_time=_ns(at + timedelta(milliseconds=700)))

    rows = spans_to_rows(exporter.get_finished_spans())
    insert_rows(client, database, rows)
    for provider in providers.values():
        provider.shutdown()
    return Seeded(calls=calls, sdk_calls=sdk_calls, agent_trace_ids=agent_trace_ids, window_start=start, window_end=now,
                  route_calls=route_calls, route_errors=route_errors)


ANOMALY_COLUMNS = ["detector", "entity", "start", "end", "observed", "expected", "score", "severity", "status",
                   "metric", "version"]


def seed_anomalies(client: Any, database: str, now: datetime) -> None:
    """A resolved latency and cost anomaly, and an open error-rate one updated once (two versions of one row)."""
    minute = now.replace(second=0, microsecond=0, tzinfo=None)
    rows = [
        ["latency_p95", "openai/gpt-4o", minute - timedelta(minutes=80), minute - timedelta(minutes=70),
         4200.0, 1100.0, 7.5, "critical", "resolved", "p95_ms"],
        ["error_rate", "anthropic/claude-sonnet-4-5", minute - timedelta(minutes=20), minute - timedelta(minutes=15),
         0.3, 0.02, 5.0, "warning", "open", "error_rate"],
        ["error_rate", "anthropic/claude-sonnet-4-5", minute - timedelta(minutes=20), minute - timedelta(minutes=5),
         0.35, 0.02, 6.0, "warning", "open", "error_rate"],
        ["cost_surge", "user:alice", minute - timedelta(minutes=50), minute - timedelta(minutes=40),
         12.0, 2.0, 4.2, "warning", "resolved", "cost_usd"],
    ]
    client.insert(f"{database}.genops_anomalies", [row + [i + 1] for i, row in enumerate(rows)], column_names=ANOMALY_COLUMNS)


SCORE_COLUMNS = ["Timestamp", "ScoreId", "RequestId", "Name", "DataType", "Value", "Label", "Source"]


def seed_scores(client: Any, database: str, now: datetime, seeded: Seeded) -> dict[str, float]:
    """Feedback on the route's calls: baseline 0.8 / 0.9, canary 0.4 / 0.5, each the latest of its call.

    The first canary call was scored 1.0 before it was scored again (only the latest counts), and
    one label-only score (no value) is ignored. Returns the expected mean per variant.
    """
    at = now.replace(tzinfo=None) - timedelta(minutes=5)
    rows: list[list[Any]] = []
    expected: dict[str, float] = {}
    for variant, values in (("baseline", (0.8, 0.9)), ("canary", (0.4, 0.5))):
        scored = seeded.route_calls[variant][:8]
        for i, request_id in enumerate(scored):
            rows.append([at, f"s-{variant}-{i}", request_id, "helpfulness", "NUMERIC", values[i % 2], "", "user"])
        expected[variant] = sum(values[i % 2] for i in range(len(scored))) / len(scored)
    first_canary = seeded.route_calls["canary"][0]
    rows.append([at - timedelta(minutes=1), "s-old", first_canary, "helpfulness", "NUMERIC", 1.0, "", "user"])
    rows.append([at, "s-label", first_canary, "tone", "CATEGORICAL", None, "friendly", "user"])
    client.insert(f"{database}.genops_scores", rows, column_names=SCORE_COLUMNS)
    return expected


ROLLOUT_COLUMNS = ["Timestamp", "RolloutId", "Route", "Action", "Step", "Percent", "Target", "Reason", "Actor"]


def seed_rollouts(client: Any, database: str, now: datetime) -> list[list[Any]]:
    """The route's rollout: started at 5%, advanced to 25%, a check, rolled back; and another route's start."""
    minute = now.replace(second=0, microsecond=0, tzinfo=None)
    target = f"{ROUTE_CANARY[0]}:{ROUTE_CANARY[1]}"
    rows = [
        [minute - timedelta(minutes=120), ROLLOUT_ID, ROUTE, "start", 0, 5, target, "started by cli", "cli"],
        [minute - timedelta(minutes=90), ROLLOUT_ID, ROUTE, "advance", 1, 25, target, "all gates passed at 5%", "auto"],
        [minute - timedelta(minutes=60), ROLLOUT_ID, ROUTE, "check", 1, 25, target, "waiting for calls", "auto"],
        [minute - timedelta(minutes=30), ROLLOUT_ID, ROUTE, "rollback", 1, 0, target,
         "error_rate: error rate 50.0% vs 25.0% (+1 pt tolerated; p=3e-09 < 0.01)", "auto"],
        [minute - timedelta(minutes=10), "ro-other-1", "other-route", "start", 0, 1, "openai:gpt-4o", "started by api", "api"],
    ]
    client.insert(f"{database}.genops_rollouts", rows, column_names=ROLLOUT_COLUMNS)
    return rows
