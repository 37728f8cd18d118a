"""OTLP trace payloads (protobuf or JSON) to ``otel_traces`` JSON rows, or to SpanRows ClickHouse decodes.

The values are spelled by :mod:`genops.storage.rows` (enum names, attribute values, and the
row itself, :func:`~genops.storage.rows.json_row`), the same helpers the proxy's own spans go
through, so stored rows look the same whichever way a span arrived. Spans with a
malformed id are rejected one by one (OTLP partial success); a payload that cannot be
decoded at all is an :class:`OtlpError` (HTTP 400).

Provenance is the receiver's to say, not the sender's: an instrumentation scope named like
one of GenOps's own recorders (``genops.proxy``, ``genops.demo``: any ``genops.*``) is stored
as ``otlp:<name>`` (:func:`received_scope_name`), on every decode path, so no span received
over OTLP counts as a call the proxy recorded (``genops_calls.ScopeName = 'genops.proxy'``).
The one exception is a *trusted* sender (a GenOps proxy exporting with
``GENOPS_OTLP_TRUSTED_TOKEN``, see :mod:`genops.collectors.receiver`): its spans are decoded with
``trusted=True``, in Python (the ClickHouse-side view renames every reserved scope), and keep
their scope, so they are stored exactly as that proxy would have stored them itself.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from genops.storage.otlp_span_rows import SpanRowTail, frame_span_rows, tail_bytes
from genops.storage.rows import (
    BOOL_STRINGS,
    OTLP_KIND_BY_NAME,
    OTLP_KIND_NAMES,
    OTLP_STATUS_BY_NAME,
    OTLP_STATUS_NAMES,
    UNKNOWN_KIND_NAME,
    UNKNOWN_STATUS_NAME,
    attribute_string,
    json_row,
    service_name,
)

# Scope names reserved for GenOps's own recorders (semconv.PROXY_SCOPE, the demo traffic's scope).
RESERVED_SCOPE_PREFIX = "genops."
# What a reserved scope name received over OTLP is stored under (migration 0070 spells it alike).
RECEIVED_SCOPE_PREFIX = "otlp:"


def received_scope_name(name: str) -> str:
    """The scope name a span received over OTLP is stored under.

    A name reserved for GenOps's own recorders gets the ``otlp:`` prefix, so a sender can
    never make its spans pass for the proxy's (cost, user and request ids it made up would
    otherwise be counted as recorded calls). Idempotent: ``otlp:genops.x`` stays as it is.
    """
    return RECEIVED_SCOPE_PREFIX + name if name.startswith(RESERVED_SCOPE_PREFIX) else name


class OtlpError(ValueError):
    """The payload is not a valid OTLP ExportTraceServiceRequest (the message says why)."""


@dataclass
class Decoded:
    """The rows of one request, and how many spans were rejected and why."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    # Or, decoded by ClickHouse: the accepted spans as SpanRows, and how many.
    payload: bytes = b""
    spans: int = 0

    def reject(self, message: str) -> None:
        self.rejected += 1
        if len(self.errors) < 5:
            self.errors.append(message)


# -- protobuf ------------------------------------------------------------------------------


def _pb_value(value: Any) -> Any:
    """An OTLP AnyValue as a plain Python value (what attribute_string expects)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        return value.double_value
    if kind == "array_value":
        return [_pb_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _pb_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value
    return ""


def _pb_attrs(attributes: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for kv in attributes:
        value = kv.value
        which = value.WhichOneof("value")
        # Inlined common cases of attribute_string (this loop is most of the receiver's CPU time).
        if which == "string_value":
            out[kv.key] = value.string_value
        elif which == "int_value":
            out[kv.key] = str(value.int_value)
        elif which == "bool_value":
            out[kv.key] = BOOL_STRINGS[value.bool_value]
        else:
            out[kv.key] = attribute_string(_pb_value(value))
    return out


_ZERO16 = b"\0" * 16
_ZERO8 = b"\0" * 8


def _parse_request(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise OtlpError(f"the body is not a valid protobuf ExportTraceServiceRequest ({exc})") from None
    return request


def _pb_invalid(span: Any) -> str | None:
    """Why a span is rejected (malformed ids), or None."""
    trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
    if len(trace_id) != 16 or trace_id == _ZERO16:
        return f"span {span.name!r}: trace_id must be 16 bytes and not all zero"
    if len(span_id) != 8 or span_id == _ZERO8:
        return f"span {span.name!r}: span_id must be 8 bytes and not all zero"
    if parent and len(parent) != 8:
        return f"span {span.name!r}: parent_span_id must be empty or 8 bytes"
    return None


def pb_span_row(span: Any, resource: dict[str, str], service: str, scope_name: str,
                scope_version: str) -> dict[str, Any]:
    """One (valid) protobuf Span as an ``otel_traces`` JSON row."""
    events = span.events
    links = span.links
    status = span.status
    parent = span.parent_span_id
    return json_row(
        span.start_time_unix_nano, span.end_time_unix_nano, span.trace_id.hex(), span.span_id.hex(),
        parent.hex() if parent and parent != _ZERO8 else "", span.trace_state, span.name,
        OTLP_KIND_NAMES.get(span.kind, UNKNOWN_KIND_NAME), service, resource, scope_name, scope_version,
        _pb_attrs(span.attributes), OTLP_STATUS_NAMES.get(status.code, UNKNOWN_STATUS_NAME), status.message,
        [e.time_unix_nano for e in events] if events else [],
        [e.name for e in events] if events else [],
        [_pb_attrs(e.attributes) for e in events] if events else [],
        [link.trace_id.hex() for link in links] if links else [],
        [link.span_id.hex() for link in links] if links else [],
        [link.trace_state for link in links] if links else [],
        [_pb_attrs(link.attributes) for link in links] if links else [],
    )


def decode_protobuf(body: bytes, trusted: bool = False) -> Decoded:
    """Decode a binary ExportTraceServiceRequest into rows (``trusted``: scope names kept as sent)."""
    return _decode_request(_parse_request(body), trusted)


def _decode_request(request: ExportTraceServiceRequest, trusted: bool = False) -> Decoded:
    decoded = Decoded()
    rows = decoded.rows
    for resource_spans in request.resource_spans:
        resource = _pb_attrs(resource_spans.resource.attributes)
        service = service_name(resource)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            scope_name, scope_version = scope.name if trusted else received_scope_name(scope.name), scope.version
            for span in scope_spans.spans:
                reason = _pb_invalid(span)
                if reason is not None:
                    decoded.reject(reason)
                    continue
                rows.append(pb_span_row(span, resource, service, scope_name, scope_version))
    return decoded


def decode_protobuf_for_clickhouse(body: bytes) -> Decoded:
    """Validate a binary ExportTraceServiceRequest and cut it into SpanRows for ClickHouse to decode.

    The same checks as :func:`decode_protobuf` (a body the protobuf parser rejects is an
    :class:`OtlpError`; spans with malformed ids are rejected one by one), but the spans'
    attributes are not touched in Python: ``payload`` carries each accepted span's own bytes
    (see :mod:`genops.storage.otlp_native`), ``spans`` counts them. A body that is not
    canonically encoded is decoded in Python instead (``rows``).
    """
    request = _parse_request(body)
    if request.ByteSize() != len(body):
        # Not canonically encoded (a field given twice, explicit defaults, overlong varints):
        # ClickHouse would not necessarily read a repeated field as the protobuf library does
        # (the last value wins), so the Python decoder takes this one.
        return _decode_request(request)
    decoded = Decoded()
    tails: list[list[bytes]] = []
    keep: list[bool] = []
    for resource_spans in request.resource_spans:
        resource = _pb_attrs(resource_spans.resource.attributes)
        service = service_name(resource)
        scope_tails = []
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            # Renamed here and again by the view (migration 0070), which also covers SpanRows spooled before it.
            scope_tails.append(tail_bytes(resource, service, received_scope_name(scope.name), scope.version))
            for span in scope_spans.spans:
                trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
                if (len(trace_id) == 16 and len(span_id) == 8 and trace_id != _ZERO16 and span_id != _ZERO8
                        and (not parent or len(parent) == 8)):
                    keep.append(True)
                else:
                    keep.append(False)
                    decoded.reject(_pb_invalid(span) or "malformed span")
        tails.append(scope_tails)
    decoded.spans = len(keep) - decoded.rejected
    if decoded.spans:
        try:
            decoded.payload = frame_span_rows(body, tails, keep)
        except (ValueError, IndexError):  # a group (wire type 3/4) outside the spans: legal, just not cut here
            return _decode_request(request)
    return decoded


def span_rows_to_json_rows(span_rows: list[bytes]) -> list[dict[str, Any]]:
    """SpanRow messages (built by :func:`decode_protobuf_for_clickhouse`) as JSON rows, decoded in Python."""
    rows = []
    for data in span_rows:
        span = Span.FromString(data)  # the SpanRow's extra fields (1000+) are unknown to Span: ignored
        tail = SpanRowTail.FromString(data)  # and the span's fields are unknown to the tail
        resource = {pair.key: pair.value for pair in tail.resource_attributes}
        # Renamed again: a batch spooled by an older receiver carries the sender's name as it was.
        rows.append(pb_span_row(span, resource, tail.service_name, received_scope_name(tail.scope.name),
                                tail.scope.version))
    return rows


# -- JSON (OTLP/JSON: ids are hex strings, enums are numbers, 64-bit ints may be strings) ----


def _json_value(value: Any) -> Any:
    if not isinstance(value, Mapping):
        raise OtlpError(f"an attribute value must be an AnyValue object, got {type(value).__name__}")
    if "stringValue" in value:
        return str(value["stringValue"])
    if "intValue" in value:
        return int(value["intValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "arrayValue" in value:
        return [_json_value(v) for v in (value["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in value:
        return {kv["key"]: _json_value(kv.get("value", {})) for kv in (value["kvlistValue"] or {}).get("values", [])}
    if "bytesValue" in value:
        return base64.b64decode(value["bytesValue"])
    return ""


def _json_attrs(attributes: Any) -> dict[str, str]:
    if attributes is None:
        return {}
    if not isinstance(attributes, list):
        raise OtlpError("attributes must be a list of {key, value} objects")
    out: dict[str, str] = {}
    for kv in attributes:
        if not isinstance(kv, Mapping) or not isinstance(kv.get("key"), str):
            raise OtlpError("attributes must be a list of {key, value} objects")
        out[kv["key"]] = attribute_string(_json_value(kv.get("value", {})))
    return out


def _hex_id(value: Any, size: int) -> str | None:
    """A lower-case hex id of ``size`` bytes, or None when malformed."""
    if not isinstance(value, str) or len(value) != size * 2:
        return None
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return None
    return None if raw == b"\0" * size else raw.hex()


def _enum(value: Any, by_name: Mapping[str, int]) -> int:
    if isinstance(value, str):
        return by_name.get(value, 0)
    return int(value or 0)


def _list(obj: Mapping[str, Any], key: str) -> list[Any]:
    value = obj.get(key) or []
    if not isinstance(value, list):
        raise OtlpError(f"{key} must be a list")
    return value


def decode_json(body: bytes, trusted: bool = False) -> Decoded:
    """Decode an OTLP/JSON ExportTraceServiceRequest into rows (``trusted``: scope names kept as sent)."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise OtlpError(f"the body is not valid JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise OtlpError("the body must be a JSON object with resourceSpans")
    decoded = Decoded()
    try:
        for resource_spans in _list(payload, "resourceSpans"):
            resource = _json_attrs((resource_spans.get("resource") or {}).get("attributes"))
            service = service_name(resource)
            for scope_spans in _list(resource_spans, "scopeSpans"):
                scope = scope_spans.get("scope") or {}
                for span in _list(scope_spans, "spans"):
                    _json_span(span, resource, service, scope, decoded, trusted)
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        if isinstance(exc, OtlpError):
            raise
        raise OtlpError(f"the JSON does not follow the OTLP ExportTraceServiceRequest shape ({exc})") from None
    return decoded


def _json_span(span: Mapping[str, Any], resource: dict[str, str], service: str, scope: Mapping[str, Any],
               decoded: Decoded, trusted: bool = False) -> None:
    name = str(span.get("name", ""))
    trace_id = _hex_id(span.get("traceId"), 16)
    span_id = _hex_id(span.get("spanId"), 8)
    parent_raw = span.get("parentSpanId") or ""
    parent = _hex_id(parent_raw, 8) if parent_raw else ""
    if trace_id is None:
        decoded.reject(f"span {name!r}: traceId must be 32 hex characters and not all zero")
        return
    if span_id is None:
        decoded.reject(f"span {name!r}: spanId must be 16 hex characters and not all zero")
        return
    if parent is None:
        decoded.reject(f"span {name!r}: parentSpanId must be empty or 16 hex characters")
        return
    start = int(span.get("startTimeUnixNano") or 0)
    end = int(span.get("endTimeUnixNano") or 0)
    status = span.get("status") or {}
    events = _list(span, "events")
    links = _list(span, "links")
    scope_name = str(scope.get("name", ""))
    decoded.rows.append(json_row(
        start, end, trace_id, span_id, parent, str(span.get("traceState", "")), name,
        OTLP_KIND_NAMES.get(_enum(span.get("kind"), OTLP_KIND_BY_NAME), UNKNOWN_KIND_NAME), service, resource,
        scope_name if trusted else received_scope_name(scope_name), str(scope.get("version", "")),
        _json_attrs(span.get("attributes")),
        OTLP_STATUS_NAMES.get(_enum(status.get("code"), OTLP_STATUS_BY_NAME), UNKNOWN_STATUS_NAME),
        str(status.get("message", "")),
        [int(e.get("timeUnixNano") or 0) for e in events],
        [str(e.get("name", "")) for e in events],
        [_json_attrs(e.get("attributes")) for e in events],
        [_hex_id(link.get("traceId"), 16) or "" for link in links],
        [_hex_id(link.get("spanId"), 8) or "" for link in links],
        [str(link.get("traceState", "")) for link in links],
        [_json_attrs(link.get("attributes")) for link in links],
    ))


# -- responses -------------------------------------------------------------------------------


def response_body(decoded: Decoded, *, as_json: bool) -> bytes:
    """The ExportTraceServiceResponse for a request (partial_success when spans were rejected)."""
    message = "; ".join(decoded.errors)
    if as_json:
        if not decoded.rejected:
            return b"{}"
        return orjson.dumps({"partialSuccess": {"rejectedSpans": str(decoded.rejected), "errorMessage": message}})
    response = ExportTraceServiceResponse()
    if decoded.rejected:
        response.partial_success.rejected_spans = decoded.rejected
        response.partial_success.error_message = message
    return response.SerializeToString()
