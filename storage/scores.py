"""Storage side of feedback and evaluation scores: the ``genops_scores`` table (migration 0040).

Rows are immutable; "the latest score wins" is decided at query time
(view ``genops_scores_latest``). Also the lookups that link a score to its span.

The lookups only see calls GenOps recorded itself (``ScopeName = 'genops.proxy'``,
:data:`genops.semconv.PROXY_SCOPE`): a span that arrived over OTLP can carry any
``genops.request.id`` or trace id, so it must never be what a score attaches to. They
return every recorded call of an id (up to :data:`MAX_CALLS_PER_ID`), not just one,
because request ids are client-chosen: the feedback endpoint refuses an id that
names more than one call (api/feedback.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from genops import semconv as sc
from genops.storage.sql import json_safe, quote

SCORES_TABLE = "genops_scores"
SCORE_COLUMNS = (
    "Timestamp", "ScoreId", "RequestId", "TraceId", "SpanId", "Name", "DataType", "Value", "Label", "Comment",
    "Source", "Metadata",
)


#: Calls reported per request id: two already make it ambiguous; a few more only help a log line.
MAX_CALLS_PER_ID = 4
#: Distinct users reported per trace (a trace with more is one agent serving many users: rare).
MAX_USERS_PER_TRACE = 1000


class SpanRef(NamedTuple):
    """Where a call's span is: hex trace id and span id."""

    trace_id: str
    span_id: str


class CallRef(NamedTuple):
    """One call GenOps recorded: its span and the user it was made for (``genops.user.id``, or "")."""

    trace_id: str
    span_id: str
    user_id: str = ""

    @property
    def span(self) -> SpanRef:
        return SpanRef(self.trace_id, self.span_id)


@dataclass
class Score:
    """One score row. ``value`` is set for numbers and booleans (1/0), ``label`` for labels and booleans."""

    timestamp_us: int
    score_id: str
    request_id: str
    trace_id: str
    span_id: str
    name: str
    data_type: str  # numeric | boolean | categorical
    value: float | None
    label: str
    comment: str
    source: str
    metadata: dict[str, str] = field(default_factory=dict)
    #: The user the client says the call was made for: checked against the call's recorded
    #: user (``genops.user.id``) before the score is stored, and not stored itself.
    user_id: str = ""

    def row(self) -> list[Any]:
        return [self.timestamp_us, self.score_id, self.request_id, self.trace_id, self.span_id, self.name,
                self.data_type, self.value, self.label, self.comment, self.source, self.metadata]


def insert_scores(client: Any, database: str, scores: Iterable[Score]) -> None:
    """Write ``scores`` as one insert."""
    rows = [s.row() for s in scores]
    if rows:
        client.insert(f"{database}.{SCORES_TABLE}", rows, column_names=list(SCORE_COLUMNS))


def _in_list(values: Iterable[str]) -> str:
    return ", ".join(quote(v) for v in values)


def find_requests(client: Any, database: str, request_ids: list[str]) -> dict[str, list[CallRef]]:
    """The calls GenOps recorded with each of ``request_ids`` (``GenOps-Request-Id``): model calls
    first, then pass-through calls; up to :data:`MAX_CALLS_PER_ID` distinct spans per id."""
    found: dict[str, list[CallRef]] = {}
    if not request_ids:
        return found
    scope = quote(sc.PROXY_SCOPE)
    wanted = _in_list(request_ids)
    lookups = (
        f"SELECT RequestId AS rid, TraceId, SpanId, UserId FROM {database}.genops_calls "
        f"WHERE ScopeName = {scope} AND rid IN ({wanted})",
        # pass-through calls (no gen_ai.operation.name) are only in otel_traces; model calls
        # are in both, and the span id dedup below keeps them once
        f"SELECT SpanAttributes['{sc.GENOPS_REQUEST_ID}'] AS rid, TraceId, SpanId, "
        f"SpanAttributes['{sc.GENOPS_USER_ID}'] FROM {database}.otel_traces "
        f"WHERE ScopeName = {scope} AND rid IN ({wanted}) "
        f"AND SpanAttributes['{sc.GEN_AI_OPERATION_NAME}'] = ''",
    )
    for sql in lookups:
        for rid, trace_id, span_id, user_id in client.query(f"{sql} LIMIT {MAX_CALLS_PER_ID} BY rid").result_rows:
            calls = found.setdefault(rid, [])
            if len(calls) < MAX_CALLS_PER_ID and all(c.span_id != span_id for c in calls):
                calls.append(CallRef(trace_id, span_id, user_id))
    return found


def find_traces(client: Any, database: str, trace_ids: list[str]) -> dict[str, set[str]]:
    """The ``trace_ids`` that hold at least one call GenOps recorded, each with the users of its calls."""
    if not trace_ids:
        return {}
    sql = (f"SELECT TraceId, groupUniqArray({MAX_USERS_PER_TRACE})(SpanAttributes['{sc.GENOPS_USER_ID}']) "
           f"FROM {database}.otel_traces WHERE ScopeName = {quote(sc.PROXY_SCOPE)} "
           f"AND TraceId IN ({_in_list(trace_ids)}) GROUP BY TraceId")
    return {trace_id: set(users) for trace_id, users in client.query(sql).result_rows}


def list_scores(client: Any, database: str, *, request_id: str | None = None,
                trace_id: str | None = None) -> list[dict[str, Any]]:
    """Every score row of a request (or of a trace: its calls' and the trace's own; or of the
    request's calls in that trace when both are given), oldest first."""
    conditions = []
    if request_id is not None:
        conditions.append(f"RequestId = {quote(request_id)}")
    if trace_id is not None or request_id is None:
        conditions.append(f"TraceId = {quote(trace_id or '')}")
    where = " AND ".join(conditions)
    sql = (
        "SELECT ScoreId AS id, RequestId AS request_id, TraceId AS trace_id, SpanId AS span_id, Name AS name, "
        "DataType AS data_type, Value AS value, Label AS label, Comment AS comment, Source AS source, "
        "Metadata AS metadata, Timestamp AS created_at "
        f"FROM {database}.{SCORES_TABLE} WHERE {where} ORDER BY Timestamp, ScoreId LIMIT 10000"
    )
    result = client.query(sql)
    columns = list(result.column_names)
    return [{c: json_safe(v) for c, v in zip(columns, row, strict=True)} for row in result.result_rows]
