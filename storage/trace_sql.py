"""The read-only SQL behind ``genops trace``: find the traces of an id, then their spans and scores.

Plain SQL text with quoted literals, because it runs through the server's read-only SQL
endpoint as well as directly. Table names are unqualified: both paths default to the
GenOps database.
"""

from __future__ import annotations

from collections.abc import Iterable

from genops import semconv as sc
from genops.storage.sql import quote

MAX_TRACES = 200
MAX_SPANS = 20_000

# The span attributes the tree shows (everything else stays in storage).
TREE_ATTRIBUTES = (
    sc.GEN_AI_OPERATION_NAME,
    sc.GEN_AI_REQUEST_MODEL,
    sc.GEN_AI_RESPONSE_MODEL,
    sc.GEN_AI_USAGE_INPUT_TOKENS,
    sc.GEN_AI_USAGE_OUTPUT_TOKENS,
    sc.GENOPS_USAGE_ESTIMATED,
    sc.GENOPS_COST_USD,
    sc.GENOPS_COST_UNKNOWN,
    sc.GENOPS_REQUEST_ID,
    sc.GEN_AI_CONVERSATION_ID,
    sc.GENOPS_SESSION_PATH,
    sc.GENOPS_SESSION_NAME,
    sc.GENOPS_USER_ID,
    sc.GEN_AI_AGENT_NAME,
    sc.GENOPS_PROMPT_ID,
    sc.GENOPS_PROMPT_VERSION,
    sc.ERROR_TYPE,
    sc.HTTP_RESPONSE_STATUS_CODE,
    "gen_ai.tool.name",
    sc.GENOPS_RESPONSE_TOOL_NAMES,
)


def _in(values: Iterable[str]) -> str:
    return ", ".join(quote(v) for v in values)


def resolve_sql(ident: str) -> str:
    """Rows (kind, TraceId): is ``ident`` a trace id, a request id or a session id? (indexed tables)"""
    q = quote(ident)
    return (
        "SELECT kind, TraceId FROM ("
        f" SELECT 'trace' AS kind, TraceId FROM otel_traces_trace_id_ts WHERE TraceId = lower({q})"
        f" UNION ALL SELECT 'request' AS kind, TraceId FROM genops_calls WHERE RequestId = {q}"
        f" UNION ALL SELECT 'session' AS kind, TraceId FROM genops_calls WHERE SessionId = {q}"
        f") GROUP BY kind, TraceId ORDER BY kind, min(TraceId) LIMIT {MAX_TRACES + 1}"
    )


def resolve_fallback_sql(ident: str) -> str:
    """Same, scanning every span's attributes: pass-through calls and spans outside genops_calls."""
    q = quote(ident)
    request = f"SpanAttributes['{sc.GENOPS_REQUEST_ID}'] = {q}"
    session = f"SpanAttributes['{sc.GEN_AI_CONVERSATION_ID}'] = {q}"
    return (
        f"SELECT if({request}, 'request', 'session') AS kind, TraceId FROM otel_traces "
        f"WHERE {request} OR {session} GROUP BY kind, TraceId ORDER BY kind LIMIT {MAX_TRACES + 1}"
    )


def spans_sql(trace_ids: list[str]) -> str:
    """Every span of ``trace_ids``, oldest first (time-narrowed by the trace-id lookup table, like Grafana)."""
    ids = _in(trace_ids)
    keys = _in(TREE_ATTRIBUTES)
    return (
        "SELECT TraceId, SpanId, ParentSpanId, SpanName, ServiceName, StatusCode, StatusMessage, "
        "toUnixTimestamp64Nano(Timestamp) AS StartNs, Duration, "
        f"mapFilter((k, v) -> k IN ({keys}), SpanAttributes) AS Attributes "
        f"FROM otel_traces WHERE TraceId IN ({ids}) "
        f"AND toDateTime(Timestamp) >= (SELECT min(Start) FROM otel_traces_trace_id_ts WHERE TraceId IN ({ids})) "
        f"AND toDateTime(Timestamp) <= (SELECT max(End) FROM otel_traces_trace_id_ts WHERE TraceId IN ({ids})) "
        f"ORDER BY Timestamp, SpanId LIMIT {MAX_SPANS}"
    )


def scores_sql(trace_ids: list[str]) -> str:
    """The latest score per (call or trace, name, source) in ``trace_ids``."""
    return (
        "SELECT RequestId, TraceId, SpanId, Name, Source, DataType, Value, Label "
        f"FROM genops_scores_latest WHERE TraceId IN ({_in(trace_ids)}) ORDER BY Name, Source"
    )
