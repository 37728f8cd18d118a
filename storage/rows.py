"""Spans to ``otel_traces`` rows, spelled the way the OTel Collector's ClickHouse exporter spells them.

Attribute values become strings (bool ``true``/``false``, numbers in plain decimal,
arrays and maps as JSON), SpanKind is ``Server``/``Client``/..., StatusCode is
``Unset``/``Ok``/``Error``. The OTLP receiver uses the same helpers, so the proxy's own
spans and ingested ones are indistinguishable in storage.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import orjson
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

TRACES_TABLE = "otel_traces"

# Column order of every row built here (the collector exporter's INSERT order).
TRACE_COLUMNS: tuple[str, ...] = (
    "Timestamp",
    "TraceId",
    "SpanId",
    "ParentSpanId",
    "TraceState",
    "SpanName",
    "SpanKind",
    "ServiceName",
    "ResourceAttributes",
    "ScopeName",
    "ScopeVersion",
    "SpanAttributes",
    "Duration",
    "StatusCode",
    "StatusMessage",
    "Events.Timestamp",
    "Events.Name",
    "Events.Attributes",
    "Links.TraceId",
    "Links.SpanId",
    "Links.TraceState",
    "Links.Attributes",
)

SPAN_KIND_NAMES = {
    SpanKind.INTERNAL: "Internal",
    SpanKind.SERVER: "Server",
    SpanKind.CLIENT: "Client",
    SpanKind.PRODUCER: "Producer",
    SpanKind.CONSUMER: "Consumer",
}
STATUS_NAMES = {StatusCode.UNSET: "Unset", StatusCode.OK: "Ok", StatusCode.ERROR: "Error"}


def attribute_string(value: Any) -> str:
    """One attribute value as the collector exporter stores it (``pcommon.Value.AsString``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value) and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    if isinstance(value, bytes):
        import base64

        return base64.b64encode(value).decode()
    if isinstance(value, (list, tuple)):
        return orjson.dumps(list(value), default=str).decode()
    if isinstance(value, Mapping):
        return orjson.dumps(dict(value), default=str).decode()
    return str(value)


def attribute_map(attributes: Mapping[str, Any] | None) -> dict[str, str]:
    """An attribute mapping with every value stringified."""
    if not attributes:
        return {}
    out = {}
    for key, value in attributes.items():
        kind = type(value)  # exact types first: this runs for every attribute of every span
        if kind is str:
            out[key] = value
        elif kind is int:
            out[key] = str(value)
        else:
            out[key] = attribute_string(value)
    return out


_resource_cache: dict[int, tuple[Any, dict[str, str]]] = {}


def _resource_map(resource: Any) -> dict[str, str]:
    """Stringified resource attributes, cached per resource (one per process in practice)."""
    cached = _resource_cache.get(id(resource))
    if cached is not None and cached[0] is resource:
        return cached[1]
    mapped = attribute_map(resource.attributes)
    if len(_resource_cache) > 64:
        _resource_cache.clear()
    _resource_cache[id(resource)] = (resource, mapped)
    return mapped


def span_to_row(span: ReadableSpan) -> list[Any]:
    """One SDK span as one ``otel_traces`` row, in :data:`TRACE_COLUMNS` order."""
    ctx = span.context
    parent = span.parent
    resource_attrs = _resource_map(span.resource) if span.resource else {}
    scope = span.instrumentation_scope
    start = span.start_time or 0
    end = span.end_time or start
    events = span.events or ()
    links = span.links or ()
    return [
        start,
        format(ctx.trace_id, "032x"),
        format(ctx.span_id, "016x"),
        format(parent.span_id, "016x") if parent is not None else "",
        ctx.trace_state.to_header() if ctx.trace_state else "",
        span.name,
        SPAN_KIND_NAMES.get(span.kind, "Internal"),
        resource_attrs.get("service.name", ""),
        resource_attrs,
        scope.name if scope else "",
        (scope.version or "") if scope else "",
        attribute_map(span.attributes),
        max(0, end - start),
        STATUS_NAMES[span.status.status_code],
        span.status.description or "",
        [e.timestamp for e in events],
        [e.name for e in events],
        [attribute_map(e.attributes) for e in events],
        [format(link.context.trace_id, "032x") for link in links],
        [format(link.context.span_id, "016x") for link in links],
        [link.context.trace_state.to_header() if link.context.trace_state else "" for link in links],
        [attribute_map(link.attributes) for link in links],
    ]


def spans_to_rows(spans: Iterable[ReadableSpan]) -> list[list[Any]]:
    """Many SDK spans as rows."""
    return [span_to_row(span) for span in spans]


def insert_rows(client: Any, database: str, rows: Sequence[Sequence[Any]], **settings: Any) -> None:
    """Insert ``otel_traces`` rows (built by this module) in one batch."""
    if rows:
        client.insert(f"{database}.{TRACES_TABLE}", rows, column_names=TRACE_COLUMNS, settings=settings or None)


# -- JSONEachRow rows (the pipeline's format) ------------------------------------------
#
# The export pipeline serialises rows with orjson and inserts them ``FORMAT JSONEachRow``,
# so ClickHouse parses them in C++ (no Python-side column serialisation holding the GIL).
# A JSON row is a dict keyed by :data:`TRACE_COLUMNS`; DateTime64(9) values are strings
# ``"<seconds>.<nanoseconds>"`` (a bare integer of nanoseconds overflows DateTime64).

# OTLP enum numbers (opentelemetry-proto Span.SpanKind / Status.StatusCode) to the names above.
OTLP_KIND_NAMES = {0: "Unspecified", 1: "Internal", 2: "Server", 3: "Client", 4: "Producer", 5: "Consumer"}
OTLP_STATUS_NAMES = {0: "Unset", 1: "Ok", 2: "Error"}
# OTLP/JSON may spell enums by name.
OTLP_KIND_BY_NAME = {
    "SPAN_KIND_UNSPECIFIED": 0, "SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3, "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5,
}
OTLP_STATUS_BY_NAME = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}


MAX_UNIX_NANO = 2**63 - 1  # the last DateTime64(9) instant


def ts64(unix_nano: int) -> str:
    """A DateTime64(9) value for JSONEachRow from Unix nanoseconds.

    The seconds are zero-padded to nine digits: ClickHouse reads a shorter number before the
    point as a date ("1.000000000" fails to parse), and such a batch would never insert. Times
    past DateTime64(9)'s end (2262-04-11, 2^63 - 1 ns) are clamped to it, for the same reason.
    """
    seconds, nanos = divmod(min(int(unix_nano), MAX_UNIX_NANO), 1_000_000_000)
    return f"{seconds:09d}.{nanos:09d}"


def span_to_json_row(span: ReadableSpan) -> dict[str, Any]:
    """One SDK span as a JSONEachRow row (same values as :func:`span_to_row`)."""
    row = dict(zip(TRACE_COLUMNS, span_to_row(span)))
    row["Timestamp"] = ts64(row["Timestamp"])
    row["Events.Timestamp"] = [ts64(t) for t in row["Events.Timestamp"]]
    return row


def json_rows_payload(rows: Iterable[Mapping[str, Any]]) -> bytes:
    """Rows as one JSONEachRow payload (newline-separated objects)."""
    return b"\n".join(orjson.dumps(row) for row in rows)


def insert_json_payload(client: Any, database: str, payload: bytes, **settings: Any) -> None:
    """Insert a JSONEachRow payload built by :func:`json_rows_payload` (parsed by ClickHouse in C++)."""
    if payload:
        client.raw_insert(f"{database}.{TRACES_TABLE}", None, payload, fmt="JSONEachRow", settings=settings or None)
