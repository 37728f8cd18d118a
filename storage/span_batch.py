"""Compact batches of the proxy's own spans: encoded on the request path, spelled as rows by the store.

Turning an SDK span into an ``otel_traces`` row (every attribute stringified, ids formatted,
22 named columns) costs ~15 µs of Python per span. Done on the proxy's export thread it also
makes the event loop wait for the GIL; done in the proxy at all it is work a proxy worker
need not do. So the proxy only *encodes* each finished span, once, on its own thread
(~2-4 µs: one ``orjson.dumps`` of the span's values as they are), and the process that owns
the store *expands* a batch into JSONCompactEachRow rows just before inserting it
(:func:`compact_rows`) — the same division of labour as an OTel SDK exporting OTLP to a
collector. Encoded lines hold bytes only: nothing for the garbage collector to traverse
while they wait for their batch.

Payload (pipeline/spool kind :data:`KIND`): one header line, then one line per span, each
a JSON array (the last line may end with a newline)::

    {"origins": [[resource attributes, scope name, scope version], ...]}
    [origin, start ns, end ns, trace id hex, span id hex, parent span id hex, trace state,
     name, SpanKind value, StatusCode value, status message, attributes, events, links,
     [resource attributes, scope name, scope version], {} (was: span float spellings),
     [event float spellings, ...], [link float spellings, ...], span float slots]

The first fourteen values are the span; the five after them let ClickHouse spell the row
itself (:mod:`~genops.storage.span_batch_sql`, migrations 0090 and 0100): the line's own origin
(a store's group of batches mixes workers' origin indexes) and where the float-valued attributes
are. JSON writes ``8000.0`` and ``8.4e-6`` where the store keeps ``8000`` and ``8.4e-06``: the
view mends those, and the line spells the few it cannot (:func:`json_float_unmended`). The span's
are marked by position (:func:`_float_slots`, one entry per attribute), events' and links' by
name. The floats themselves stay floats, so a collector still gets doubles
(:mod:`~genops.storage.otlp_encode`). Lines of a batch spooled by an earlier GenOps have fourteen
or eighteen values: Python reads them (it takes the first fourteen), ClickHouse's table refuses
them and the store spells their group in Python.

Attribute values travel as JSON values and are stringified by the store with
:func:`~genops.storage.rows.attribute_map`, and the row is built by
:func:`~genops.storage.rows.compact_row` with :mod:`~genops.storage.rows`'s enum names, so the
stored row is exactly :func:`~genops.storage.rows.span_to_json_row`'s. A value JSON cannot carry exactly (NaN,
infinities, integers beyond 64 bits, bytes, other objects) is stringified by the encoder
instead, which spells it the same way.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson

from genops.storage.rows import (
    DEFAULT_SDK_KIND_NAME,
    OTLP_STATUS_NAMES,
    SDK_KIND_NAMES,
    TRACE_COLUMNS,
    attribute_map,
    compact_row,
    float_string,
    service_name,
)

#: Pipeline and spool kind of a compact span batch.
KIND = "genops-spans"
#: The span's own values at the head of each line (what follows is for ClickHouse's spelling).
SPAN_VALUES = 14

_dumps = orjson.dumps


def _attributes(mapping: Mapping[str, Any] | None) -> dict[str, Any]:
    """A span's or event's attributes as a plain dict (the recorder's spans already hold one)."""
    if not mapping:
        return {}
    return mapping if type(mapping) is dict else dict(mapping)


def _raw_attributes(span: Any) -> dict[str, Any]:
    # ReadableSpan.attributes wraps its dict in a fresh MappingProxyType on every access, which
    # orjson cannot serialise; the dict itself is read-only by then (the span has ended). The SDK
    # has no public way to the dict without a copy per span, so this reads its private field and
    # falls back to the public mapping (copied) whenever that field is not a plain dict.
    raw = getattr(span, "_attributes", None)
    return raw if type(raw) is dict else _attributes(span.attributes)


def _float_spellings(attributes: Mapping[str, Any]) -> dict[str, str]:
    """An event's or a link's float-valued attributes by name, each with ``""`` when ClickHouse
    mends JSON's spelling into the stored one (migration 0090), else the stored spelling
    (:func:`json_float_unmended`). No ``repr`` here: that is most of a float's cost."""
    return {key: float_string(value) if json_float_unmended(value) else ""
            for key, value in attributes.items() if type(value) is float}


def _float_slots(attributes: Mapping[str, Any]) -> list[str]:
    """Where the span's float-valued attributes are, in the attributes' order (migration 0100):
    ``""`` for any other value, ``"~"`` for a float ClickHouse mends from JSON's spelling, else
    the float's stored spelling. Empty when there is no float (the view reads that as all ``""``)."""
    slots: list[str] | None = None
    for i, value in enumerate(attributes.values()):
        if type(value) is float:
            if slots is None:
                slots = [""] * len(attributes)
            slots[i] = float_string(value) if json_float_unmended(value) else "~"
    return slots if slots is not None else []


def json_float_unmended(value: float) -> bool:
    """Whether migration 0090's view cannot turn orjson's spelling of ``value`` into
    :func:`~genops.storage.rows.float_string`'s: zero (its sign), 1e-5 <= |value| < 1e-4 (orjson
    writes 0.00001, Python 1e-05), and whole numbers from 1e16 to 1e21 (orjson 1e+16, the store
    every digit). Every other finite float is orjson's text with a whole number's ``.0`` dropped
    and a one-digit exponent padded (:func:`mended_json_float`)."""
    magnitude = abs(value)
    return magnitude == 0.0 or 1e-5 <= magnitude < 1e-4 or (1e16 <= magnitude < 1e21 and value.is_integer())


def mended_json_float(text: str) -> str:
    """What migration 0090's view does to orjson's text of a float it mends (Python's mirror of
    the SQL, for :func:`json_floats_as_expected`)."""
    if text.endswith(".0"):
        return text[:-2]
    return re.sub(r"e([+-])([0-9])$", r"e\g<1>0\2", text)


#: Floats of every form the view mends or leaves to the line (see :func:`json_floats_as_expected`).
FLOAT_PROBES = (8000.0, -3.0, 0.5, 0.015, 8.4e-06, 1.5e-300, 1e300, 1.7976931348623157e308, 5e-324, 1e15 + 0.5,
                123456.789, 0.1 + 0.2, 1e21, 2.0**70, 1e16, -1e-5, 0.0, -0.0)


def json_floats_as_expected() -> bool:
    """Whether this orjson spells floats as migration 0090's view expects (a later orjson could
    spell them otherwise; the store then spells the proxy's spans in Python)."""
    return all(json_float_unmended(v) or mended_json_float(_dumps(v).decode()) == float_string(v) for v in FLOAT_PROBES)


def _inexact(value: Any) -> bool:
    """Whether JSON would not carry ``value`` back as itself (NaN and infinities become null)."""
    if type(value) is float:
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return any(_inexact(v) for v in value)
    if isinstance(value, Mapping):
        return any(_inexact(v) for v in value.values())
    return value is None


class SpanEncoder:
    """Encodes finished SDK spans as lines of a compact batch; one per pipeline.

    ``encode`` runs on the thread that ends the span; ``header`` on the batcher thread. The
    origins (resource, scope) seen so far only ever grow, so a header taken after a span was
    encoded always names that span's origin.
    """

    def __init__(self) -> None:
        # (id(resource), id(scope)) -> (index, resource, scope, spelled origin, its JSON)
        self._origins: dict[tuple[int, int], tuple[int, Any, Any, list[Any], orjson.Fragment]] = {}
        self._header = _dumps({"origins": []})
        self._lock = threading.Lock()

    def header(self) -> bytes:
        """The header line naming every origin encoded so far."""
        return self._header

    def _origin(self, resource: Any, scope: Any) -> tuple[int, orjson.Fragment]:
        """The origin's index in the header, and the origin itself as JSON (for the line)."""
        key = (id(resource), id(scope))
        known = self._origins.get(key)
        if known is not None and known[1] is resource and known[2] is scope:
            return known[0], known[4]
        with self._lock:
            index = len(self._origins)
            spelled = [attribute_map(resource.attributes) if resource is not None else {},
                       scope.name if scope is not None else "", (scope.version or "") if scope is not None else ""]
            # holding resource and scope keeps their ids unique
            self._origins[key] = (index, resource, scope, spelled, orjson.Fragment(_dumps(spelled)))
            origins = [o[3] for o in sorted(self._origins.values(), key=lambda o: o[0])]
            self._header = _dumps({"origins": origins})
        return index, self._origins[key][4]

    def encode(self, span: Any) -> bytes:
        """One span as one line (no newline)."""
        ctx = span.context
        parent = span.parent
        start = span.start_time or 0
        events = span.events
        links = span.links
        origin, spelled_origin = self._origin(span.resource, span.instrumentation_scope)
        attributes = _raw_attributes(span)
        values = [
            origin,
            start,
            span.end_time or start,
            format(ctx.trace_id, "032x"),
            format(ctx.span_id, "016x"),
            format(parent.span_id, "016x") if parent is not None else "",
            ctx.trace_state.to_header() if ctx.trace_state else "",
            span.name,
            span.kind.value,
            span.status.status_code.value,
            span.status.description or "",
            attributes,
            [[e.name, e.timestamp, _attributes(e.attributes)] for e in events] if events else [],
            [[format(link.context.trace_id, "032x"), format(link.context.span_id, "016x"),
              link.context.trace_state.to_header() if link.context.trace_state else "",
              _attributes(link.attributes)] for link in links] if links else [],
            spelled_origin,
            {},  # the span's floats are in its float slots (the last value)
        ]
        values.append([_float_spellings(e[2]) for e in values[12]])
        values.append([_float_spellings(link[3]) for link in values[13]])
        values.append(_float_slots(attributes))
        try:
            line = _dumps(values)
        except TypeError:  # a value JSON has no type for (bytes, a 65-bit integer, an object)
            return self._stringified(values)
        if b"null" in line and self._inexact(values):  # "null" is usually just text inside a value
            return self._stringified(values)
        return line

    @staticmethod
    def _inexact(values: list[Any]) -> bool:
        if _inexact(values[11]):
            return True
        return any(_inexact(e[2]) for e in values[12]) or any(_inexact(link[3]) for link in values[13])

    @staticmethod
    def _stringified(values: list[Any]) -> bytes:
        """The line with every attribute value already spelled as stored (stringifying is idempotent)."""
        values[11] = attribute_map(values[11])
        values[12] = [[name, ts, attribute_map(attrs)] for name, ts, attrs in values[12]]
        values[13] = [[t, s, state, attribute_map(attrs)] for t, s, state, attrs in values[13]]
        values[16] = [{} for _ in values[12]]
        values[17] = [{} for _ in values[13]]
        values[18] = []
        return _dumps(values)


def batch_payload(header: bytes, lines: Iterable[bytes]) -> bytes:
    """A batch: the header line, then the span lines (the form :class:`~genops.storage.span_buffer.SpanBuffer`
    writes in parts ends each line with a newline; both read the same)."""
    return b"\n".join((header, *lines))


def _row_lists(payload: bytes) -> Iterator[list[Any]]:
    """A compact batch's spans as ``otel_traces`` rows in :func:`~genops.storage.rows.compact_row` form."""
    header, _, body = payload.partition(b"\n")
    origins = [(attribute_map(resource), name, version) for resource, name, version in orjson.loads(header)["origins"]]
    services = [service_name(resource) for resource, _, _ in origins]
    loads = orjson.loads
    kind_names, status_names = SDK_KIND_NAMES, OTLP_STATUS_NAMES  # the SDK's StatusCode values are OTLP's
    for line in body.split(b"\n"):
        if not line:  # the last line's newline
            continue
        (origin, start, end, trace_id, span_id, parent_id, trace_state, name, kind, status, message,
         attributes, events, links) = loads(line)[:SPAN_VALUES]
        resource, scope_name, scope_version = origins[origin]
        yield compact_row(
            start, end, trace_id, span_id, parent_id, trace_state, name,
            kind_names.get(kind, DEFAULT_SDK_KIND_NAME), services[origin], resource, scope_name, scope_version,
            attribute_map(attributes), status_names[status], message,
            [e[1] for e in events], [e[0] for e in events], [attribute_map(e[2]) for e in events],
            [link[0] for link in links], [link[1] for link in links], [link[2] for link in links],
            [attribute_map(link[3]) for link in links],
        )


def compact_rows(payload: bytes) -> bytes:
    """A compact batch as a JSONCompactEachRow payload of ``otel_traces`` rows in
    :data:`~genops.storage.rows.TRACE_COLUMNS` order (what the store inserts)."""
    return b"\n".join(map(_dumps, _row_lists(payload)))


def json_rows(payload: bytes) -> bytes:
    """A compact batch as a JSONEachRow payload of ``otel_traces`` rows (the same rows as
    :func:`compact_rows`, keyed by column name)."""
    return b"\n".join(_dumps(dict(zip(TRACE_COLUMNS, row, strict=True))) for row in _row_lists(payload))
