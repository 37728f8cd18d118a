"""The ``otel_traces`` row schema: columns, and how every value is spelled into them.

This module is the one source of truth for the rows every path writes (the proxy's own spans
through :mod:`~genops.storage.span_batch`, OTLP JSON and protobuf through
:mod:`~genops.storage.otlp_rows`, synthetic data through :func:`insert_rows`); the ClickHouse
view that decodes OTLP protobuf itself (migrations 0060/0070) spells rows the same way, and
``tests/test_row_schema_golden.py`` stores the same spans through every path and compares the
whole rows against one golden file.

Columns, their order and types are those of the OpenTelemetry Collector's ClickHouse
exporter (migration 0001). Values are spelled the way that exporter spells them: attribute
values become strings (bool ``true``/``false``, numbers in plain decimal, arrays and maps as
JSON, bytes as base64), SpanKind is ``Server``/``Client``/..., StatusCode is
``Unset``/``Ok``/``Error``, ids are lower-case hex, a root span's ParentSpanId is empty.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

TRACES_TABLE = "otel_traces"

# -- columns -------------------------------------------------------------------------------

#: ``(name, ClickHouse type)`` of every stored column of ``otel_traces``, in table order, as
#: ``system.columns`` reports them (the collector exporter's INSERT order; Nested columns
#: flattened). ``tests/test_row_schema_golden.py`` checks the migrated table against it.
TRACE_COLUMN_TYPES: tuple[tuple[str, str], ...] = (
    ("Timestamp", "DateTime64(9)"),
    ("TraceId", "String"),
    ("SpanId", "String"),
    ("ParentSpanId", "String"),
    ("TraceState", "String"),
    ("SpanName", "LowCardinality(String)"),
    ("SpanKind", "LowCardinality(String)"),
    ("ServiceName", "LowCardinality(String)"),
    ("ResourceAttributes", "Map(LowCardinality(String), String)"),
    ("ScopeName", "String"),
    ("ScopeVersion", "String"),
    ("SpanAttributes", "Map(LowCardinality(String), String)"),
    ("Duration", "UInt64"),
    ("StatusCode", "LowCardinality(String)"),
    ("StatusMessage", "String"),
    ("Events.Timestamp", "Array(DateTime64(9))"),
    ("Events.Name", "Array(LowCardinality(String))"),
    ("Events.Attributes", "Array(Map(LowCardinality(String), String))"),
    ("Links.TraceId", "Array(String)"),
    ("Links.SpanId", "Array(String)"),
    ("Links.TraceState", "Array(String)"),
    ("Links.Attributes", "Array(Map(LowCardinality(String), String))"),
)
#: ALIAS columns (computed on read, never written): ``(name, ClickHouse type)``.
TRACE_ALIAS_COLUMN_TYPES: tuple[tuple[str, str], ...] = (
    ("ResourceAttributeItems", "Array(String)"),
    ("SpanAttributeItems", "Array(String)"),
)

#: Column order of every row built here.
TRACE_COLUMNS: tuple[str, ...] = tuple(name for name, _ in TRACE_COLUMN_TYPES)
#: A column's position in a row of :data:`TRACE_COLUMNS` order.
TRACE_COLUMN_INDEX: dict[str, int] = {name: i for i, name in enumerate(TRACE_COLUMNS)}

#: The resource attribute the ServiceName column is taken from.
SERVICE_NAME_KEY = "service.name"


def service_name(resource: Mapping[str, str]) -> str:
    """The ServiceName of a span with these (spelled) resource attributes."""
    return resource.get(SERVICE_NAME_KEY, "")


# -- enums -----------------------------------------------------------------------------------
#
# The OTLP enum numbers (opentelemetry-proto Span.SpanKind / Status.StatusCode) and their
# stored names are the one table; the SDK's enums and OTLP/JSON's enum names are derived.

OTLP_KIND_NAMES = {0: "Unspecified", 1: "Internal", 2: "Server", 3: "Client", 4: "Producer", 5: "Consumer"}
OTLP_STATUS_NAMES = {0: "Unset", 1: "Ok", 2: "Error"}
#: The names of an OTLP enum number outside the table (a newer sender's kind or status).
UNKNOWN_KIND_NAME = OTLP_KIND_NAMES[0]
UNKNOWN_STATUS_NAME = OTLP_STATUS_NAMES[0]
#: Stored name -> OTLP number (for re-encoding stored rows as OTLP).
OTLP_KIND_NUMBERS = {name: number for number, name in OTLP_KIND_NAMES.items()}
OTLP_STATUS_NUMBERS = {name: number for number, name in OTLP_STATUS_NAMES.items()}
#: OTLP/JSON may spell enums by name: ``SPAN_KIND_SERVER``, ``STATUS_CODE_ERROR``.
OTLP_KIND_BY_NAME = {"SPAN_KIND_" + name.upper(): number for number, name in OTLP_KIND_NAMES.items()}
OTLP_STATUS_BY_NAME = {"STATUS_CODE_" + name.upper(): number for number, name in OTLP_STATUS_NAMES.items()}

#: The SDK's SpanKind values count from INTERNAL = 0, OTLP's numbers from UNSPECIFIED = 0.
OTLP_KIND_OF_SDK: dict[int, int] = {kind.value: kind.value + 1 for kind in SpanKind}
#: Stored SpanKind name by the SDK's SpanKind value (what compact span batches carry).
SDK_KIND_NAMES: dict[int, str] = {value: OTLP_KIND_NAMES[number] for value, number in OTLP_KIND_OF_SDK.items()}
SPAN_KIND_NAMES: dict[SpanKind, str] = {kind: SDK_KIND_NAMES[kind.value] for kind in SpanKind}
#: The SDK's default kind, for a kind value it does not define.
DEFAULT_SDK_KIND_NAME = SPAN_KIND_NAMES[SpanKind.INTERNAL]
# The SDK's StatusCode values are OTLP's numbers.
STATUS_NAMES: dict[StatusCode, str] = {code: OTLP_STATUS_NAMES[code.value] for code in StatusCode}

# -- attribute values ------------------------------------------------------------------------

#: How a bool attribute value is stored, indexed by the bool (``BOOL_STRINGS[True] == "true"``).
BOOL_STRINGS = ("false", "true")


def attribute_string(value: Any) -> str:
    """One attribute value as the collector exporter stores it (``pcommon.Value.AsString``).

    str as is; bool ``true``/``false``; int in decimal; float in decimal without ``.0`` when
    whole (``8000``), else Python's shortest repr (``0.7``, ``nan``, ``1e+300``); bytes as
    base64; lists and maps as compact JSON (orjson). The ClickHouse view of migration 0060/0070
    spells the values it accepts the same way and hands every other batch back to this code.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return BOOL_STRINGS[value]
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return float_string(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, (list, tuple, Mapping)):
        plain = list(value) if isinstance(value, (list, tuple)) else dict(value)
        try:
            return orjson.dumps(plain, default=str).decode()
        except TypeError:  # an int beyond 64 bits (orjson refuses it): spelled as a string, the span is kept
            return orjson.dumps(_wide_ints_as_strings(plain), default=str).decode()
    return str(value)


def float_string(value: float) -> str:
    """A float attribute value as stored: decimal without ``.0`` when whole (``8000``), else
    Python's shortest repr (``0.7``, ``8.4e-06``, ``nan``, ``1e+300``)."""
    if value.is_integer() and abs(value) < 1e21:  # False for nan and the infinities
        return str(int(value))
    return repr(value)


def _wide_ints_as_strings(value: Any) -> Any:
    """``value`` with every int outside the signed/unsigned 64-bit range as its decimal string."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -(1 << 63) <= value < (1 << 64) else str(value)
    if isinstance(value, (list, tuple)):
        return [_wide_ints_as_strings(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _wide_ints_as_strings(v) for k, v in value.items()}
    return value


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
        SPAN_KIND_NAMES.get(span.kind, DEFAULT_SDK_KIND_NAME),
        service_name(resource_attrs),
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
    """Insert ``otel_traces`` rows (in :data:`TRACE_COLUMNS` order, DateTime64 values as Unix ns) in one batch."""
    if rows:
        client.insert(f"{database}.{TRACES_TABLE}", rows, column_names=TRACE_COLUMNS, settings=settings or None)


# -- JSONEachRow rows (the pipeline's format) ------------------------------------------
#
# The export pipeline serialises rows with orjson and inserts them ``FORMAT JSONEachRow``,
# so ClickHouse parses them in C++ (no Python-side column serialisation holding the GIL).
# A JSON row is a dict keyed by :data:`TRACE_COLUMNS`; DateTime64(9) values are strings
# ``"<seconds>.<nanoseconds>"`` (a bare integer of nanoseconds overflows DateTime64).

MAX_UNIX_NANO = 2**63 - 1  # the last DateTime64(9) instant


def ts64(unix_nano: int) -> str:
    """A DateTime64(9) value for JSONEachRow from Unix nanoseconds.

    The seconds are zero-padded to nine digits: ClickHouse reads a shorter number before the
    point as a date ("1.000000000" fails to parse), and such a batch would never insert. Times
    past DateTime64(9)'s end (2262-04-11, 2^63 - 1 ns) are clamped to it, for the same reason.
    """
    seconds, nanos = divmod(min(int(unix_nano), MAX_UNIX_NANO), 1_000_000_000)
    return f"{seconds:09d}.{nanos:09d}"


def compact_row(start: int, end: int, trace_id: str, span_id: str, parent_span_id: str, trace_state: str, name: str,
                kind: str, service: str, resource: dict[str, str], scope_name: str, scope_version: str,
                attributes: dict[str, str], status: str, status_message: str,
                event_times: Iterable[int], event_names: list[str], event_attributes: list[dict[str, str]],
                link_trace_ids: list[str], link_span_ids: list[str], link_trace_states: list[str],
                link_attributes: list[dict[str, str]]) -> list[Any]:
    """One ``otel_traces`` row as a JSONCompactEachRow list in :data:`TRACE_COLUMNS` order, from a
    span's values already spelled except the times.

    Every decoder builds its rows here (or through :func:`json_row`), so the two computed
    columns are spelled in one place: ``Timestamp`` and ``Events.Timestamp`` from Unix
    nanoseconds (:func:`ts64`) and ``Duration`` as ``end - start``, never negative. The
    arguments follow :data:`TRACE_COLUMNS`, with ``start, end`` first in place of Timestamp and
    Duration.
    """
    return [
        ts64(start), trace_id, span_id, parent_span_id, trace_state, name, kind, service, resource, scope_name,
        scope_version, attributes, end - start if end > start else 0, status, status_message,
        [ts64(t) for t in event_times], event_names, event_attributes,
        link_trace_ids, link_span_ids, link_trace_states, link_attributes,
    ]


def json_row(start: int, end: int, trace_id: str, span_id: str, parent_span_id: str, trace_state: str, name: str,
             kind: str, service: str, resource: dict[str, str], scope_name: str, scope_version: str,
             attributes: dict[str, str], status: str, status_message: str,
             event_times: Iterable[int], event_names: list[str], event_attributes: list[dict[str, str]],
             link_trace_ids: list[str], link_span_ids: list[str], link_trace_states: list[str],
             link_attributes: list[dict[str, str]]) -> dict[str, Any]:
    """:func:`compact_row` as a JSONEachRow row: a dict keyed by :data:`TRACE_COLUMNS`."""
    return dict(zip(TRACE_COLUMNS, compact_row(
        start, end, trace_id, span_id, parent_span_id, trace_state, name, kind, service, resource, scope_name,
        scope_version, attributes, status, status_message, event_times, event_names, event_attributes,
        link_trace_ids, link_span_ids, link_trace_states, link_attributes), strict=True))


def span_to_json_row(span: ReadableSpan) -> dict[str, Any]:
    """One SDK span as a JSONEachRow row (same values as :func:`span_to_row`)."""
    (start, trace_id, span_id, parent_id, trace_state, name, kind, service, resource, scope_name, scope_version,
     attributes, duration, status, message, event_times, event_names, event_attributes, link_trace_ids,
     link_span_ids, link_states, link_attributes) = span_to_row(span)
    return json_row(start, start + duration, trace_id, span_id, parent_id, trace_state, name, kind, service, resource,
                    scope_name, scope_version, attributes, status, message, event_times, event_names,
                    event_attributes, link_trace_ids, link_span_ids, link_states, link_attributes)


def json_rows_payload(rows: Iterable[Mapping[str, Any]]) -> bytes:
    """Rows as one JSONEachRow payload (newline-separated objects)."""
    return b"\n".join(orjson.dumps(row) for row in rows)


def insert_json_payload(client: Any, database: str, payload: bytes, **settings: Any) -> None:
    """Insert a JSONEachRow payload built by :func:`json_rows_payload` (parsed by ClickHouse in C++)."""
    if payload:
        client.raw_insert(f"{database}.{TRACES_TABLE}", None, payload, fmt="JSONEachRow", settings=settings or None)


def insert_compact_payload(client: Any, database: str, payload: bytes, **settings: Any) -> None:
    """Insert a JSONCompactEachRow payload of :func:`compact_row` lists (newline-separated).

    The proxy's own spans go this way: without a key per column the store builds less per row,
    and ClickHouse parses it faster (docs/benchmarks/2026-12-03-per-core-22-store.md).
    """
    if payload:
        client.raw_insert(f"{database}.{TRACES_TABLE}", TRACE_COLUMNS, payload, fmt="JSONCompactEachRow",
                          settings=settings or None)
