"""Span pipeline batches as OTLP ``ExportTraceServiceRequest`` protobuf, for a proxy that exports to a collector.

A proxy with ``GENOPS_EXPORTER=otlp`` keeps its durable pipeline (spool, batching, retries,
:mod:`genops.storage.pipeline`) and only swaps the insert for an OTLP/HTTP export
(:mod:`genops.storage.otlp_sink`). This module turns a batch, of whichever pipeline kind, into
the protobuf requests that carry it, on the pipeline's sender thread (never on the request path):

- :data:`~genops.storage.span_batch.KIND` (the proxy's own spans, compact lines with the
  attribute values as the SDK gave them): values keep their OTLP type (string, bool, int,
  double, arrays of those), so any OTLP backend reads them natively; a value OTLP cannot carry
  as itself (an integer beyond 64 bits, a map, a nested list) is sent as the string GenOps
  stores for it. Either way a GenOps collector stores exactly the row the proxy's own store
  would have (``tests/test_scale_out.py`` checks the two paths agree);
- JSONEachRow rows (spans the proxy's OTLP receiver took) and SpanRows (a spool written
  before the exporter was switched): every value is already the stored string.

A batch is cut into requests of at most :data:`MAX_REQUEST_BYTES` of protobuf, always at the
same places for the same batch, so a request retried after a restart carries the same spans
under the same idempotency token (see :class:`~genops.storage.otlp_sink.OtlpSink`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from genops.storage import otlp_span_rows, span_batch
from genops.storage.otlp_rows import span_rows_to_json_rows
from genops.storage.rows import (
    OTLP_KIND_NUMBERS,
    OTLP_KIND_OF_SDK,
    OTLP_STATUS_NUMBERS,
    attribute_map,
    attribute_string,
)

#: Largest request (protobuf, before gzip) a batch is cut into: well below a collector's default
#: body limit (GENOPS_OTLP_MAX_BODY_BYTES, 20 MiB), and a short request to retry.
MAX_REQUEST_BYTES = 4 << 20

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

# -- protobuf wire format ----------------------------------------------------------------------
#
# Written by hand (bytes joined in Python), in canonical form: fields in number order, proto3
# defaults left out, so ``ExportTraceServiceRequest.FromString(body).ByteSize() == len(body)``.
# Building the generated message objects instead cost ~90 µs per proxy span; this ~4x less.
# Field numbers: opentelemetry/proto/{collector/trace,trace,common,resource}/v1/*.proto.

_PREFIXES = [bytes([n]) if n < 0x80 else bytes([(n & 0x7F) | 0x80, n >> 7]) for n in range(1 << 14)]
_fixed64 = struct.Struct("<Q").pack
_double = struct.Struct("<d").pack


def _varint(value: int) -> bytes:
    if value < 16384:
        return _PREFIXES[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, body: bytes) -> bytes:
    """A length-delimited field: ``tag`` (one byte, wire type 2), length, ``body``."""
    n = len(body)
    return tag + (_PREFIXES[n] if n < 16384 else _varint(n)) + body


def _str(tag: bytes, text: str) -> bytes:
    """A string field, or nothing for "" (the proto3 default)."""
    return _field(tag, text.encode()) if text else b""


# AnyValue: string_value = 1, bool_value = 2, int_value = 3, double_value = 4, array_value = 5;
# ArrayValue: values = 1; KeyValue: key = 1, value = 2.
_EMPTY_STRING = b"\x0a\x00"  # string_value = "": set, so the value is a string (not an empty AnyValue)
_TRUE, _FALSE = b"\x10\x01", b"\x10\x00"


def _scalar(value: Any) -> bytes | None:
    """``value`` as an encoded AnyValue, or None when OTLP has no exact type for it."""
    kind = type(value)
    if kind is str:
        return _field(b"\x0a", value.encode()) if value else _EMPTY_STRING
    if kind is bool:
        return _TRUE if value else _FALSE
    if kind is int:
        if not _INT64_MIN <= value <= _INT64_MAX:
            return None
        return b"\x18" + _varint(value if value >= 0 else value + (1 << 64))
    if kind is float:
        return b"\x21" + _double(value)
    return None


def any_value(value: Any) -> bytes:
    """An attribute value as the SDK gave it (decoded from JSON), as an encoded OTLP AnyValue.

    The receiver stringifies an AnyValue exactly as the proxy's store stringifies the value
    (:func:`~genops.storage.rows.attribute_string`); what has no faithful OTLP type (an integer
    beyond 64 bits, a map, a list of those or of lists) is sent as that string already.
    """
    encoded = _scalar(value)
    if encoded is not None:
        return encoded
    if type(value) is list:
        items = [_scalar(v) for v in value]
        if None not in items:
            return _field(b"\x2a", b"".join(_field(b"\x0a", item) for item in items))  # type: ignore[arg-type]
    return _field(b"\x0a", attribute_string(value).encode())


class _Keys:
    """Encoded ``KeyValue.key`` fields, cached (a proxy's spans repeat the same few dozen keys)."""

    def __init__(self) -> None:
        self._cache: dict[str, bytes] = {}

    def __call__(self, key: str) -> bytes:
        encoded = self._cache.get(key)
        if encoded is None:
            encoded = _str(b"\x0a", key)
            if len(self._cache) < 4096:
                self._cache[key] = encoded
        return encoded


_keys = _Keys()


def _attributes(tag: bytes, mapping: Mapping[str, Any]) -> bytes:
    """Repeated ``KeyValue`` fields ``tag`` of ``mapping`` (values as the SDK gave them)."""
    keys, prefixes = _keys, _PREFIXES
    out: list[bytes] = []
    append = out.append
    for key, value in mapping.items():
        if type(value) is str and 0 < len(value) < 4096:  # most values: inlined (this loop is most of the cost)
            data = value.encode()
            n = len(data)
            if n < 16381:
                kv = keys(key) + b"\x12" + prefixes[n + len(prefixes[n]) + 1] + b"\x0a" + prefixes[n] + data
                append(tag + prefixes[len(kv)] + kv if len(kv) < 16384 else _field(tag, kv))
                continue
        append(_field(tag, keys(key) + _field(b"\x12", any_value(value))))
    return b"".join(out)


def _string_attributes(tag: bytes, mapping: Mapping[str, str]) -> bytes:
    keys = _keys
    return b"".join(
        _field(tag, keys(key) + _field(b"\x12", _field(b"\x0a", value.encode()) if value else _EMPTY_STRING))
        for key, value in mapping.items())


def _span(trace_id: str, span_id: str, trace_state: str, parent_id: str, name: str, kind: int, start: int,
          end: int, attributes: bytes, events: bytes, links: bytes, status_code: int, status_message: str) -> bytes:
    """A Span message: trace_id = 1, span_id = 2, trace_state = 3, parent_span_id = 4, name = 5, kind = 6,
    start = 7, end = 8 (fixed64), attributes = 9, events = 11, links = 13, status = 15 (message = 2, code = 3)."""
    status = _str(b"\x12", status_message) + (b"\x18" + _varint(status_code) if status_code else b"")
    return b"".join((
        b"\x0a\x10", bytes.fromhex(trace_id), b"\x12\x08", bytes.fromhex(span_id),
        _str(b"\x1a", trace_state),
        b"\x22\x08" + bytes.fromhex(parent_id) if parent_id else b"",
        _str(b"\x2a", name),
        b"\x30" + _varint(kind) if kind else b"",
        b"\x39" + _fixed64(start) if start else b"",
        b"\x41" + _fixed64(end) if end else b"",
        attributes, events, links,
        _field(b"\x7a", status) if status else b"",
    ))


def _event(timestamp: int, name: str, attributes: bytes) -> bytes:
    """Span.events (11): time_unix_nano = 1 (fixed64), name = 2, attributes = 3."""
    return _field(b"\x5a", (b"\x09" + _fixed64(timestamp) if timestamp else b"") + _str(b"\x12", name) + attributes)


def _link(trace_id: str, span_id: str, trace_state: str, attributes: bytes) -> bytes:
    """Span.links (13): trace_id = 1, span_id = 2, trace_state = 3, attributes = 4."""
    return _field(b"\x6a", b"\x0a\x10" + bytes.fromhex(trace_id) + b"\x12\x08" + bytes.fromhex(span_id)
                  + _str(b"\x1a", trace_state) + attributes)


def _unix_nano(ts64: str) -> int:
    """Unix nanoseconds of a JSONEachRow DateTime64(9) value (``"<seconds>.<nanoseconds>"``)."""
    seconds, _, nanos = ts64.partition(".")
    return int(seconds) * 1_000_000_000 + int(nanos.ljust(9, "0")[:9] or 0)


# -- batches to spans ------------------------------------------------------------------------


@dataclass
class Origin:
    """A resource and instrumentation scope: the encoded ``Resource`` and ``InstrumentationScope`` bodies."""

    resource: bytes
    scope: bytes


def _origin(resource: Mapping[str, str], scope_name: str, scope_version: str) -> Origin:
    # Resource.attributes = 1; InstrumentationScope: name = 1, version = 2.
    return Origin(_string_attributes(b"\x0a", resource), _str(b"\x0a", scope_name) + _str(b"\x12", scope_version))


@dataclass
class Chunk:
    """Spans of one request, in batch order: ``(origin index, encoded Span)``."""

    spans: list[tuple[int, bytes]] = field(default_factory=list)
    size: int = 0

    def halves(self) -> tuple[Chunk, Chunk]:
        """The first and second half (for a collector whose body limit is below this chunk)."""
        middle = len(self.spans) // 2
        first, second = self.spans[:middle], self.spans[middle:]
        return Chunk(first, sum(len(s) for _, s in first)), Chunk(second, sum(len(s) for _, s in second))


def _compact_spans(payload: bytes) -> tuple[list[Origin], list[tuple[int, bytes]]]:
    """A compact span batch (:mod:`genops.storage.span_batch`) as origins and encoded Spans."""
    header, _, body = payload.partition(b"\n")
    origins = [_origin(attribute_map(resource), name, version)
               for resource, name, version in orjson.loads(header)["origins"]]
    spans = []
    loads = orjson.loads
    for line in body.split(b"\n"):
        if not line:
            continue
        (origin, start, end, trace_id, span_id, parent_id, trace_state, name, kind, status, message,
         attributes, events, links) = loads(line)[:span_batch.SPAN_VALUES]
        spans.append((origin, _span(
            trace_id, span_id, trace_state, parent_id, name,
            OTLP_KIND_OF_SDK[kind],  # the SDK's SpanKind value as OTLP's number
            start, end, _attributes(b"\x4a", attributes),
            b"".join(_event(timestamp, event_name, _attributes(b"\x1a", event_attributes))
                     for event_name, timestamp, event_attributes in events),
            b"".join(_link(link_trace, link_span, link_state, _attributes(b"\x22", link_attributes))
                     for link_trace, link_span, link_state, link_attributes in links),
            status, message)))  # the SDK's StatusCode numbers are OTLP's
    return origins, spans


def _row_spans(rows: Iterable[Mapping[str, Any]]) -> tuple[list[Origin], list[tuple[int, bytes]]]:
    """``otel_traces`` JSON rows (every value already the stored string) as origins and encoded Spans."""
    origins: list[Origin] = []
    index: dict[tuple[bytes, str, str], int] = {}
    spans = []
    for row in rows:
        resource = row.get("ResourceAttributes") or {}
        key = (orjson.dumps(resource, option=orjson.OPT_SORT_KEYS), row.get("ScopeName", ""),
               row.get("ScopeVersion", ""))
        origin = index.get(key)
        if origin is None:
            origin = index[key] = len(origins)
            origins.append(_origin(resource, key[1], key[2]))
        start = _unix_nano(row["Timestamp"])
        spans.append((origin, _span(
            row["TraceId"], row["SpanId"], row.get("TraceState", ""), row.get("ParentSpanId") or "",
            row.get("SpanName", ""), OTLP_KIND_NUMBERS.get(row.get("SpanKind", ""), 0),
            start, start + int(row.get("Duration") or 0),
            _string_attributes(b"\x4a", row.get("SpanAttributes") or {}),
            b"".join(_event(_unix_nano(timestamp), name, _string_attributes(b"\x1a", attributes))
                     for timestamp, name, attributes in zip(row.get("Events.Timestamp") or [],
                                                            row.get("Events.Name") or [],
                                                            row.get("Events.Attributes") or [],
                                                            strict=False)),  # a short array: no event, not a poison batch
            b"".join(_link(trace_id, span_id, state, _string_attributes(b"\x22", attributes))
                     for trace_id, span_id, state, attributes in zip(row.get("Links.TraceId") or [],
                                                                     row.get("Links.SpanId") or [],
                                                                     row.get("Links.TraceState") or [],
                                                                     row.get("Links.Attributes") or [],
                                                                     strict=False)),
            OTLP_STATUS_NUMBERS.get(row.get("StatusCode", ""), 0), row.get("StatusMessage", ""))))
    return origins, spans


def batch_spans(payload: bytes, kind: str) -> tuple[list[Origin], list[tuple[int, bytes]]]:
    """The origins and encoded Spans of one pipeline batch of ``kind``."""
    if kind == span_batch.KIND:
        return _compact_spans(payload)
    if kind == otlp_span_rows.KIND:
        return _row_spans(span_rows_to_json_rows(otlp_span_rows.split_span_rows(payload)))
    return _row_spans(orjson.loads(line) for line in payload.split(b"\n") if line.strip())


# -- requests --------------------------------------------------------------------------------


def chunks(spans: list[tuple[int, bytes]], max_bytes: int = MAX_REQUEST_BYTES) -> list[Chunk]:
    """``spans`` cut in order into chunks of at most ``max_bytes`` of spans (at least one span each).

    Deterministic: the same spans are always cut at the same places.
    """
    out: list[Chunk] = []
    current = Chunk()
    for origin, span in spans:
        size = len(span) + 6  # + the field's tag and length
        if current.spans and current.size + size > max_bytes:
            out.append(current)
            current = Chunk()
        current.spans.append((origin, span))
        current.size += size
    if current.spans:
        out.append(current)
    return out


def request_bytes(origins: list[Origin], chunk: Chunk) -> bytes:
    """One ExportTraceServiceRequest (resource_spans = 1) holding ``chunk``'s spans, grouped by origin
    in first-seen order: ResourceSpans (resource = 1, scope_spans = 2), ScopeSpans (scope = 1, spans = 2)."""
    groups: dict[int, list[bytes]] = {}
    for index, span in chunk.spans:
        groups.setdefault(index, []).append(span)
    parts = []
    for index, spans in groups.items():
        origin = origins[index]
        scope_spans = (_field(b"\x0a", origin.scope) if origin.scope else b"") + b"".join(
            _field(b"\x12", span) for span in spans)
        # an empty Resource is still written: receivers tell "no resource" from "empty resource" alike
        parts.append(_field(b"\x0a", _field(b"\x0a", origin.resource) + _field(b"\x12", scope_spans)))
    return b"".join(parts)


def encode_batch(payload: bytes, kind: str, max_bytes: int = MAX_REQUEST_BYTES) -> list[bytes]:
    """A pipeline batch as the serialized requests that carry it (empty for a batch without spans)."""
    origins, spans = batch_spans(payload, kind)
    return [request_bytes(origins, chunk) for chunk in chunks(spans, max_bytes)]
