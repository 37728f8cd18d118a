"""One row schema: the same spans stored through every path give the same ``otel_traces`` rows.

The logical spans below (a chat call with usage, a streamed call with a TTFT event, an error
span, a span with events and links, list/int/float/bool attribute values, non-ASCII text, a
parent/child pair) are stored into real chDB, one database per path:

- ``proxy``: the proxy's own spans, encoded by ``span_batch.SpanEncoder`` and inserted as the
  pipeline inserts a ``SPANS`` batch (``ClickHouseSink``: spelled by the ClickHouse view of
  migration 0090, ``span_batch_sql``); the test asserts the view took them (no fallback);
- ``proxy_python``: the same batch spelled in Python (``span_batch.compact_rows``), as the sink does
  when ClickHouse hands a group back;
- ``otlp_json``: the spans as OTLP/JSON, decoded by ``otlp_rows.decode_json``;
- ``otlp_clickhouse``: the spans as OTLP protobuf, cut into SpanRows and decoded by the
  ClickHouse view (migrations 0060/0070) as the pipeline inserts a ``SPAN_ROWS`` batch; the
  test asserts the view took them (no fallback);
- ``otlp_python``: the same protobuf decoded in Python by ``otlp_rows.decode_protobuf`` (a store
  without the view);
- ``otlp_python_fallback``: the SpanRows decoded in Python as ``otlp_native.insert_span_rows`` does
  when the view hands a batch back (``span_rows_to_json_rows``);
- ``proxy_otlp_export``: the proxy's compact batch exported as OTLP by ``otlp_encode`` (a proxy
  without a store) and decoded by the receiver for a trusted sender;
- ``rows_insert``: ``rows.spans_to_rows`` + ``rows.insert_rows``, the column insert synthetic data uses;
- ``rows_json``: ``rows.span_to_json_row`` as JSONEachRow.

Each database is read back with ``SELECT * ... ORDER BY TraceId, SpanId FORMAT JSONEachRow``
(ClickHouse spells every column, so the comparison is of whole stored rows, byte for byte);
every path is compared with the ``proxy`` path, and that with the golden file
``tests/golden/rows/otel_traces.jsonl``. The only columns allowed to differ by path are in
:data:`PATH_DIFFERENCES`, each with its reason.

Regenerate the golden file after an intended change of the row schema with::

    GENOPS_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -n 0 tests/test_row_schema_golden.py

(the paths must still agree with each other; the file is then written from the ``proxy``
path's rows), and review its diff like code.
"""

from __future__ import annotations

import base64
import os
import re
import uuid
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import open_chdb
from google.protobuf.json_format import MessageToDict
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from genops import semconv as sc
from genops.storage import otlp_encode
from genops.storage.migrate import migrate
from genops.storage.otlp_rows import (
    decode_json,
    decode_protobuf,
    decode_protobuf_for_clickhouse,
    received_scope_name,
    span_rows_to_json_rows,
)
from genops.storage.otlp_span_rows import split_span_rows
from genops.storage.pipeline import JSON, SPAN_ROWS, SPANS, ClickHouseSink
from genops.storage.rows import (
    DEFAULT_SDK_KIND_NAME,
    OTLP_KIND_NAMES,
    OTLP_STATUS_NAMES,
    SDK_KIND_NAMES,
    TRACE_ALIAS_COLUMN_TYPES,
    TRACE_COLUMN_TYPES,
    TRACE_COLUMNS,
    UNKNOWN_KIND_NAME,
    UNKNOWN_STATUS_NAME,
    insert_rows,
    json_rows_payload,
    span_to_json_row,
    spans_to_rows,
)
from genops.storage.span_batch import SpanEncoder, batch_payload

pytestmark = pytest.mark.integration

GOLDEN = Path(__file__).resolve().parent / "golden" / "rows" / "otel_traces.jsonl"
UPDATE = os.environ.get("GENOPS_UPDATE_GOLDEN") == "1"

# Fixed times, so the golden file is stable; the store keeps them (a retention of decades).
BASE = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
RETENTION_DAYS = 20_000  # ~55 years: TTL dates stay below DateTime's end (2106)
SCOPE = (sc.PROXY_SCOPE, "0.9.0")
RESOURCE = Resource({"service.name": "golden-svc", "deployment.environment.name": "test", "host.cpu.count": 8})

#: The paths whose rows a sender cannot make pass for the proxy's own: OTLP received from an
#: untrusted sender stores a scope reserved for GenOps's recorders (``genops.*``) as ``otlp:<name>``
#: (provenance, migration 0070 / ``received_scope_name``). Every other column is equal on every path.
PATH_DIFFERENCES: dict[str, dict[str, tuple[Callable[[Any], Any], str]]] = {
    path: {"ScopeName": (received_scope_name, "an untrusted OTLP sender cannot claim the genops.* scope")}
    for path in ("otlp_json", "otlp_clickhouse", "otlp_python", "otlp_python_fallback")
}


# -- the logical spans -------------------------------------------------------------------------


class _Ids(IdGenerator):
    """Sequential ids: the same spans get the same ids on every run."""

    def __init__(self) -> None:
        self.next_trace = 0x4BF92F3577B34DA6A3CE929D0E0E4700
        self.next_span = 0x00F067AA0BA90200

    def generate_trace_id(self) -> int:
        self.next_trace += 1
        return self.next_trace

    def generate_span_id(self) -> int:
        self.next_span += 1
        return self.next_span


class _Collect(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def logical_spans() -> list[ReadableSpan]:
    """The spans every path stores (values the ClickHouse view spells itself, so it is tested too)."""
    sink = _Collect()
    provider = TracerProvider(resource=RESOURCE, id_generator=_Ids())
    provider.add_span_processor(sink)
    tracer = provider.get_tracer(*SCOPE)
    t = BASE + 123_456_789

    # A parent/child pair: the proxy's server span and the chat call with usage under it.
    server = tracer.start_span("POST /v1/chat/completions", kind=SpanKind.SERVER, start_time=t)
    server.set_attributes({"http.request.method": "POST", "url.path": "/v1/chat/completions",
                           sc.HTTP_RESPONSE_STATUS_CODE: 200})
    chat = tracer.start_span("chat gpt-4o", context=trace_api.set_span_in_context(server), kind=SpanKind.CLIENT,
                             start_time=t + 1_000)
    chat.set_attributes({
        sc.GEN_AI_OPERATION_NAME: "chat", sc.GEN_AI_PROVIDER_NAME: "openai", sc.GEN_AI_REQUEST_MODEL: "gpt-4o",
        sc.GEN_AI_RESPONSE_MODEL: "gpt-4o-2024-08-06", sc.GEN_AI_USAGE_INPUT_TOKENS: 12,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: 34, sc.GEN_AI_REQUEST_STREAM: False, "gen_ai.request.temperature": 0.7,
        sc.GENOPS_COST_USD: 0.00123, sc.HTTP_RESPONSE_STATUS_CODE: 200,
    })
    chat.end(end_time=t + 812_345_678)
    server.set_status(Status(StatusCode.OK))
    server.end(end_time=t + 813_000_000)

    # A streamed call: time to first token as an attribute and as an event.
    stream = tracer.start_span("chat claude-sonnet-4", kind=SpanKind.CLIENT, start_time=t + 2_000_000_000)
    stream.set_attributes({
        sc.GEN_AI_OPERATION_NAME: "chat", sc.GEN_AI_PROVIDER_NAME: "anthropic",
        sc.GEN_AI_REQUEST_MODEL: "claude-sonnet-4", sc.GEN_AI_REQUEST_STREAM: True,
        sc.GEN_AI_USAGE_INPUT_TOKENS: 1500, sc.GEN_AI_USAGE_OUTPUT_TOKENS: 220, sc.GENOPS_LATENCY_TTFT_MS: 381.25,
        sc.GENOPS_LATENCY_OUTPUT_TOKENS_PER_SECOND: 12345678.0,
    })
    stream.add_event("gen_ai.first_token", {sc.GENOPS_LATENCY_TTFT_MS: 381.25}, timestamp=t + 2_381_250_000)
    stream.end(end_time=t + 4_000_000_001)

    # An error span, with the exception event the recorder adds.
    error = tracer.start_span("chat gpt-4o-mini", kind=SpanKind.CLIENT, start_time=t + 5_000_000_000)
    error.set_attributes({sc.GEN_AI_REQUEST_MODEL: "gpt-4o-mini", sc.ERROR_TYPE: "429",
                          sc.HTTP_RESPONSE_STATUS_CODE: 429})
    error.add_event("exception", {"exception.type": "RateLimitError", "exception.message": "Rate limit reached"},
                    timestamp=t + 5_100_000_000)
    error.set_status(Status(StatusCode.ERROR, "HTTP 429"))
    error.end(end_time=t + 5_100_000_000)

    # Events and links, under a remote parent with a trace state.
    remote = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
                         trace_flags=TraceFlags(1), trace_state=TraceState([("vendor", "abc"), ("other", "1")]))
    linked = SpanContext(0x1234567890ABCDEF1234567890ABCDEF, 0x1122334455667788, is_remote=True,
                         trace_flags=TraceFlags(1), trace_state=TraceState([("congo", "t61rcWkgMzE")]))
    plain_link = SpanContext(0xFEDCBA0987654321FEDCBA0987654321, 0x0102030405060708, is_remote=True)
    step = tracer.start_span("agent.step", context=trace_api.set_span_in_context(trace_api.NonRecordingSpan(remote)),
                             kind=SpanKind.INTERNAL, start_time=t + 6_000_000_000,
                             links=[Link(linked, {"link.kind": "follows_from", "n": 2}), Link(plain_link)])
    step.add_event("step.started", timestamp=t + 6_000_000_001)
    step.add_event("step.progress", {"done": 3, "of": 4, "ok": True, "ratio": 0.75}, timestamp=t + 6_500_000_000)
    step.end(end_time=t + 7_000_000_000)

    # Every kind of attribute value.
    values = tracer.start_span("tool.call", kind=SpanKind.PRODUCER, start_time=t + 8_000_000_000)
    values.set_attributes({
        "text": "plain", "empty": "", "int": 42, "negative": -7, "big": 2**62, "zero": 0,
        "float": 2.5, "whole float": 8000.0, "bool true": True, "bool false": False,
        "strings": ["stop", "length"], "ints": [1, -2, 3], "bools": [True, False],
        "json-looking": '{"a": [1, 2]}', "quotes": 'say "hi"\\n\ttab',
    })
    values.end(end_time=t + 8_000_000_000)  # zero duration

    # Non-ASCII text everywhere a string goes.
    text = tracer.start_span("résumé 日本語 ☃", kind=SpanKind.CONSUMER, start_time=t + 9_000_000_000)
    text.set_attributes({"clé.ü": "naïve café — 東京", "emoji": "🚀 ok", "non-ascii list": ["é", "日本", "☃"]})
    text.add_event("événement", {"texte": "ça marche ✓"}, timestamp=t + 9_000_000_500)
    text.set_status(Status(StatusCode.ERROR, "échec ✗"))
    text.end(end_time=t + 9_250_000_000)

    provider.shutdown()
    return sink.spans


def otlp_request(spans: list[ReadableSpan]) -> ExportTraceServiceRequest:
    """The spans as the OTel SDK's OTLP exporter sends them.

    The SDK's encoder leaves ``Link.trace_state`` out; it is set here as a sender that keeps
    it sends it, so the logical spans are the same on every path.
    """
    request = encode_spans(spans)
    by_id = {span.context.span_id: span for span in spans}
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for pb_span in scope_spans.spans:
                sdk_links = by_id[int.from_bytes(pb_span.span_id, "big")].links
                for pb_link, link in zip(pb_span.links, sdk_links, strict=True):
                    pb_link.trace_state = link.context.trace_state.to_header() if link.context.trace_state else ""
    return request


def otlp_json(request: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON of a request: protobuf JSON mapping (enums by name, 64-bit ints as strings), ids in hex."""
    payload = MessageToDict(request)

    def hex_ids(obj: dict[str, Any]) -> None:
        for key in ("traceId", "spanId", "parentSpanId"):
            if key in obj:
                obj[key] = base64.b64decode(obj[key]).hex()

    for resource_spans in payload["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                hex_ids(span)
                for link in span.get("links", []):
                    hex_ids(link)
    return orjson.dumps(payload)


def compact_batch(spans: list[ReadableSpan]) -> bytes:
    """The proxy's compact batch of the spans (``span_batch``), as its pipeline writes it."""
    encoder = SpanEncoder()
    lines = [encoder.encode(span) for span in spans]
    return batch_payload(encoder.header(), lines)


# -- the paths ---------------------------------------------------------------------------------


def _token() -> str:
    return uuid.uuid4().hex


def store_by_path(client: Any, databases: dict[str, str], spans: list[ReadableSpan]) -> None:
    """Store ``spans`` through every path, each into its own database."""
    sinks = {path: ClickHouseSink(client, database) for path, database in databases.items()}
    request = otlp_request(spans)
    body = request.SerializeToString()

    sinks["proxy"].insert(compact_batch(spans), _token(), SPANS, len(spans))
    assert sinks["proxy"].span_fallbacks == 0, "the ClickHouse view must spell the proxy's spans itself"
    ClickHouseSink(client, databases["proxy_python"], sql_spelling=False).insert(
        compact_batch(spans), _token(), SPANS, len(spans))

    decoded = decode_json(otlp_json(request))
    assert (len(decoded.rows), decoded.rejected) == (len(spans), 0)
    sinks["otlp_json"].insert(json_rows_payload(decoded.rows), _token(), JSON, len(spans))

    native = decode_protobuf_for_clickhouse(body)
    assert (native.spans, native.rejected, native.rows) == (len(spans), 0, []), "canonical protobuf: cut into SpanRows"
    sinks["otlp_clickhouse"].insert(native.payload, _token(), SPAN_ROWS, len(spans))
    assert sinks["otlp_clickhouse"].python_fallbacks == 0, "the ClickHouse view must decode these spans itself"

    decoded = decode_protobuf(body)
    assert (len(decoded.rows), decoded.rejected) == (len(spans), 0)
    sinks["otlp_python"].insert(json_rows_payload(decoded.rows), _token(), JSON, len(spans))

    fallback_rows = span_rows_to_json_rows(split_span_rows(native.payload))
    sinks["otlp_python_fallback"].insert(json_rows_payload(fallback_rows), _token(), JSON, len(spans))

    exported = otlp_encode.encode_batch(compact_batch(spans), SPANS)
    assert len(exported) == 1
    decoded = decode_protobuf(exported[0], trusted=True)
    assert (len(decoded.rows), decoded.rejected) == (len(spans), 0)
    sinks["proxy_otlp_export"].insert(json_rows_payload(decoded.rows), _token(), JSON, len(spans))

    insert_rows(client, databases["rows_insert"], spans_to_rows(spans))

    sinks["rows_json"].insert(json_rows_payload(span_to_json_row(span) for span in spans), _token(), JSON,
                              len(spans))


PATHS = ("proxy", "proxy_python", "otlp_json", "otlp_clickhouse", "otlp_python", "otlp_python_fallback", "proxy_otlp_export",
         "rows_insert", "rows_json")


def stored_lines(client: Any, database: str) -> list[bytes]:
    """Every stored row, every column, as ClickHouse spells it (JSONEachRow, times in UTC)."""
    raw = client.raw_query(f"SELECT * FROM {database}.otel_traces ORDER BY TraceId, SpanId FORMAT JSONEachRow",
                           settings={"session_timezone": "UTC", "output_format_json_quote_64bit_integers": 1,
                                     "output_format_json_escape_forward_slashes": 0})
    return [line for line in raw.split(b"\n") if line]


@pytest.fixture(scope="module")
def stored(chdb_dir: Path) -> Iterator[tuple[Any, dict[str, str], dict[str, list[bytes]]]]:
    """(client, database by path, stored JSONEachRow lines by path)."""
    client = open_chdb(chdb_dir)
    suffix = uuid.uuid4().hex[:8]
    databases = {path: f"golden_{path}_{suffix}" for path in PATHS}
    for database in databases.values():
        migrate(client, database, retention_days=RETENTION_DAYS)
    try:
        store_by_path(client, databases, logical_spans())
        yield client, databases, {path: stored_lines(client, database) for path, database in databases.items()}
    finally:
        for database in databases.values():
            client.command(f"DROP DATABASE IF EXISTS {database}")


# -- the checks --------------------------------------------------------------------------------


def _rows(lines: list[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in lines]


def _expected_for(path: str, reference: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reference rows as ``path`` stores them (its declared differences applied)."""
    expected = []
    for row in reference:
        row = dict(row)  # same key order
        for column, (spell, _reason) in PATH_DIFFERENCES.get(path, {}).items():
            row[column] = spell(row[column])
        expected.append(row)
    return expected


def _differences(want: list[dict[str, Any]], have: list[dict[str, Any]]) -> list[str]:
    """Every differing column of every row, readable."""
    if len(want) != len(have):
        return [f"{len(have)} rows instead of {len(want)}"]
    out = []
    for i, (a, b) in enumerate(zip(want, have, strict=True)):
        if list(a) != list(b):
            out.append(f"row {i}: columns {list(b)} instead of {list(a)}")
        out += [f"row {i} ({a.get('SpanName')!r}) {column}: {b.get(column)!r} instead of {a[column]!r}"
                for column in a if a[column] != b.get(column)]
    return out


def test_the_schema_module_and_the_migrated_table_agree(stored: Any) -> None:
    client, databases, lines = stored
    columns = client.query(
        "SELECT name, type, default_kind FROM system.columns WHERE database = {db:String} AND table = 'otel_traces' "
        "ORDER BY position", parameters={"db": databases["proxy"]}).result_rows
    assert [(name, kind) for name, kind, default in columns if default == ""] == list(TRACE_COLUMN_TYPES)
    assert [(name, kind) for name, kind, default in columns if default == "ALIAS"] == list(TRACE_ALIAS_COLUMN_TYPES)
    assert len(columns) == len(TRACE_COLUMN_TYPES) + len(TRACE_ALIAS_COLUMN_TYPES)
    assert list(orjson.loads(lines["proxy"][0])) == list(TRACE_COLUMNS), "SELECT * returns the schema's columns"


def view_transform(migration: str, column: str) -> tuple[dict[int, str], str]:
    """The ``transform(column, [numbers], [names], 'default')`` of a migration's last view: (names by number, default)."""
    sql = resources.files("genops.storage").joinpath(f"migrations/{migration}").read_text()
    query = sql[sql.rindex("CREATE MATERIALIZED VIEW"):]
    found = re.search(rf"transform\({re.escape(column)}, \[([^\]]*)\], \[([^\]]*)\], '(\w+)'\)", query)
    assert found, (migration, column)
    numbers = [int(n) for n in found.group(1).split(",")]
    names = [n.strip().strip("'") for n in found.group(2).split(",")]
    return dict(zip(numbers, names, strict=True)), found.group(3)


def test_the_clickhouse_view_spells_enums_from_the_same_tables() -> None:
    """The SQL view cannot import rows.py: its SpanKind/StatusCode tables must equal rows.py's,
    including the numbers no SDK span carries (Unspecified)."""
    assert view_transform("0070_otlp_provenance.sql", "kind") == (OTLP_KIND_NAMES, UNKNOWN_KIND_NAME)
    assert view_transform("0070_otlp_provenance.sql", "status.code") == (OTLP_STATUS_NAMES, UNKNOWN_STATUS_NAME)


def test_the_proxy_spans_view_spells_enums_from_the_same_tables() -> None:
    """Migration 0090's view spells the proxy's lines, which carry the SDK's SpanKind values
    (INTERNAL = 0) and StatusCode values: its tables must equal rows.py's for the SDK."""
    assert view_transform("0090_proxy_spans_in.sql", "kind") == (SDK_KIND_NAMES, DEFAULT_SDK_KIND_NAME)
    # the SDK's StatusCode values are OTLP's
    assert view_transform("0090_proxy_spans_in.sql", "status") == (OTLP_STATUS_NAMES, UNKNOWN_STATUS_NAME)


@pytest.mark.parametrize("path", [p for p in PATHS if p != "proxy"])
def test_every_path_stores_the_rows_the_proxy_stores(stored: Any, path: str) -> None:
    _, _, lines = stored
    reference = _rows(lines["proxy"])
    assert len(reference) == len(logical_spans())
    expected = _expected_for(path, reference)
    assert _differences(expected, _rows(lines[path])) == []
    if path not in PATH_DIFFERENCES:  # byte for byte, as ClickHouse spells the stored rows
        assert lines[path] == lines["proxy"]


def test_the_stored_rows_are_the_golden_rows(stored: Any) -> None:
    _, _, lines = stored
    text = b"".join(line + b"\n" for line in lines["proxy"])
    if UPDATE:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_bytes(text)
    assert GOLDEN.is_file(), f"no golden file: run with GENOPS_UPDATE_GOLDEN=1 to write {GOLDEN}"
    golden = GOLDEN.read_bytes()
    assert _differences(_rows(golden.splitlines()), _rows(lines["proxy"])) == []
    assert golden == text
    for path, differences in PATH_DIFFERENCES.items():  # the differing columns really differ
        for column in differences:
            assert {row[column] for row in _rows(lines[path])} != {row[column] for row in _rows(lines["proxy"])}, (
                path, column)
