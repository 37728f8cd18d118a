"""Storage side of feedback and evaluation scores: the ``genops_scores`` table (migration 0040).

Rows are immutable; "the latest score wins" is decided at query time
(view ``genops_scores_latest``). Also the lookups that link a score to its span.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple

from genops import semconv as sc
from genops.storage.sql import json_safe, quote

SCORES_TABLE = "genops_scores"
SCORE_COLUMNS = (
    "Timestamp", "ScoreId", "RequestId", "TraceId", "SpanId", "Name", "DataType", "Value", "Label", "Comment",
    "Source", "Metadata",
)


class SpanRef(NamedTuple):
    """Where a call's span is: hex trace id and span id."""

    trace_id: str
    span_id: str


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


def find_requests(client: Any, database: str, request_ids: list[str]) -> dict[str, SpanRef]:
    """Stored spans of ``request_ids`` (``GenOps-Request-Id``), model calls first, then any span."""
    found: dict[str, SpanRef] = {}
    if not request_ids:
        return found
    lookups = (
        ("RequestId", f"{database}.genops_calls"),
        # pass-through calls (no gen_ai.operation.name) are only in otel_traces
        (f"SpanAttributes['{sc.GENOPS_REQUEST_ID}']", f"{database}.otel_traces"),
    )
    for column, table in lookups:
        missing = [r for r in request_ids if r not in found]
        if not missing:
            break
        sql = (f"SELECT {column} AS rid, any(TraceId), any(SpanId) FROM {table} "
               f"WHERE rid IN ({_in_list(missing)}) GROUP BY rid")
        for rid, trace_id, span_id in client.query(sql).result_rows:
            found[rid] = SpanRef(trace_id, span_id)
    return found


def find_traces(client: Any, database: str, trace_ids: list[str]) -> set[str]:
    """The ``trace_ids`` that have stored spans (via the trace-id lookup table)."""
    if not trace_ids:
        return set()
    sql = (f"SELECT DISTINCT TraceId FROM {database}.otel_traces_trace_id_ts "
           f"WHERE TraceId IN ({_in_list(trace_ids)})")
    return {row[0] for row in client.query(sql).result_rows}


def list_scores(client: Any, database: str, *, request_id: str | None = None,
                trace_id: str | None = None) -> list[dict[str, Any]]:
    """Every score row of a request (or of a trace: its calls' and the trace's own), oldest first."""
    if request_id is not None:
        where = f"RequestId = {quote(request_id)}"
    else:
        where = f"TraceId = {quote(trace_id or '')}"
    sql = (
        "SELECT ScoreId AS id, RequestId AS request_id, TraceId AS trace_id, SpanId AS span_id, Name AS name, "
        "DataType AS data_type, Value AS value, Label AS label, Comment AS comment, Source AS source, "
        "Metadata AS metadata, Timestamp AS created_at "
        f"FROM {database}.{SCORES_TABLE} WHERE {where} ORDER BY Timestamp, ScoreId LIMIT 10000"
    )
    result = client.query(sql)
    columns = list(result.column_names)
    return [{c: json_safe(v) for c, v in zip(columns, row)} for row in result.result_rows]
