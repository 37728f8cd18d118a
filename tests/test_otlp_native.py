"""OTLP protobuf decoded by ClickHouse (migration 0060) stores exactly the rows the Python decoder stores.

Each case ingests one payload twice into in-process chDB: through the old path (Python
``decode_protobuf`` -> JSONEachRow) into one database and through the new one (SpanRows ->
``otel_traces_otlp_in`` -> view) into another, then compares every column of every row. Cases
the view cannot spell alike must fall back to the Python decoder (and still match);
everything else must be decoded by ClickHouse.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import open_chdb
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from genops.storage.migrate import migrate
from genops.storage.otlp_native import insert_span_rows, native_ingest_available
from genops.storage.otlp_rows import decode_protobuf, decode_protobuf_for_clickhouse
from genops.storage.otlp_span_rows import split_span_rows
from genops.storage.rows import insert_json_payload, json_rows_payload

pytestmark = pytest.mark.integration

COLUMNS = ("Timestamp, TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind, ServiceName, ResourceAttributes, "
           "ScopeName, ScopeVersion, SpanAttributes, Duration, StatusCode, StatusMessage, Events.Timestamp, Events.Name, "
           "Events.Attributes, Links.TraceId, Links.SpanId, Links.TraceState, Links.Attributes")
DEDUP = {"deduplicate_blocks_in_dependent_materialized_views": 1}
NOW = time.time_ns() // 10**9 * 10**9  # stored spans must be younger than the retention TTL


@pytest.fixture(scope="module")
def stores(chdb_dir: Path) -> Any:
    """(client, python_db, clickhouse_db): two migrated databases in the session's chDB."""
    client = open_chdb(chdb_dir)
    suffix = uuid.uuid4().hex[:8]
    python_db, native_db = f"otlp_py_{suffix}", f"otlp_ch_{suffix}"
    for database in (python_db, native_db):
        migrate(client, database)
    assert native_ingest_available(client, native_db)
    yield client, python_db, native_db
    for database in (python_db, native_db):
        client.command(f"DROP DATABASE IF EXISTS {database}")


def v(value: Any) -> AnyValue:
    """A Python value as an OTLP AnyValue (lists -> array_value, dicts -> kvlist_value)."""
    if isinstance(value, AnyValue):
        return value
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[v(x) for x in value]))
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v(x)) for k, x in value.items()]))
    return AnyValue(string_value=str(value))


def kvs(*pairs: tuple[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=key, value=v(value)) for key, value in pairs]


def ids() -> tuple[bytes, bytes]:
    return uuid.uuid4().bytes, uuid.uuid4().bytes[:8]


def span(name: str, attributes: list[KeyValue] | None = None, **fields: Any) -> Span:
    trace_id, span_id = ids()
    start = fields.pop("start", NOW + 123_456_789)
    return Span(trace_id=fields.pop("trace_id", trace_id), span_id=fields.pop("span_id", span_id), name=name,
                start_time_unix_nano=start, end_time_unix_nano=fields.pop("end", start + 1_500_000),
                attributes=attributes or [], **fields)


def request(*spans: Span, resource: list[KeyValue] | None = None, scope: tuple[str, str] = ("agent.scope", "1.0")) -> bytes:
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=resource if resource is not None else kvs(("service.name", "svc"))),
        scope_spans=[ScopeSpans(scope=InstrumentationScope(name=scope[0], version=scope[1]), spans=list(spans))],
    )]).SerializeToString()


def rows(client: Any, database: str, span_ids: list[str]) -> list[tuple]:
    return client.query(f"SELECT {COLUMNS} FROM {database}.otel_traces WHERE SpanId IN {{ids:Array(String)}} "
                        "ORDER BY SpanId", parameters={"ids": span_ids}).result_rows


def ingest_both(stores: Any, body: bytes) -> bool:
    """Store ``body`` both ways, assert identical rows; returns True when ClickHouse decoded it."""
    client, python_db, native_db = stores
    old = decode_protobuf(body)
    new = decode_protobuf_for_clickhouse(body)
    assert (new.spans + len(new.rows), new.rejected, new.errors) == (len(old.rows), old.rejected, old.errors)
    if old.rows:
        insert_json_payload(client, python_db, json_rows_payload(old.rows))
    if new.rows:  # not canonically encoded: the receiver decoded it in Python
        assert not new.payload
        insert_json_payload(client, native_db, json_rows_payload(new.rows))
        native = False
    else:
        native = insert_span_rows(client, native_db, new.payload, insert_deduplication_token=uuid.uuid4().hex, **DEDUP)
    span_ids = [row["SpanId"] for row in old.rows]
    expected, got = rows(client, python_db, span_ids), rows(client, native_db, span_ids)
    assert len(got) == len(expected) == len(old.rows)
    for want, have in zip(expected, got, strict=True):
        for column, a, b in zip(COLUMNS.split(", "), want, have, strict=True):
            assert a == b, f"{column}: python {a!r} != clickhouse {b!r}"
    return native


def test_every_span_field_is_spelled_like_the_python_decoder(stores: Any) -> None:
    trace_id, parent_id = ids()
    link_trace, link_span = ids()
    spans = [
        span("chat gpt-4o", kvs(("gen_ai.operation.name", "chat"), ("gen_ai.usage.input_tokens", 1234),
                                ("neg", -9_223_372_036_854_775_808), ("flag", True), ("off", False),
                                ("temperature", 0.7), ("cost", 0.00123), ("whole", 3.0), ("zero", 0.0),
                                ("big", 123456789012345.67), ("small", 0.0001), ("neg_double", -2.5),
                                ("blob", b"\x00\xffbytes"), ("unset", AnyValue()), ("text", "multi\nline \"q\" é 🙂"),
                                ("finish", ["stop", "length"]), ("paths", ["a/b", "c\\d", "q\"uote", "tab\there", "nl\n"]),
                                ("nums", [1, -2, 3]), ("bools", [True, False]), ("empty", []),
                                ("kv", {"a": "x", "b": "y/z"}), ("empty_kv", {})),
             trace_id=trace_id, kind=Span.SPAN_KIND_CLIENT, parent_span_id=parent_id, trace_state="k=v,k2=v2",
             status=Status(code=Status.STATUS_CODE_ERROR, message="boom")),
        span("with events", kvs(("a", "b")), kind=Span.SPAN_KIND_SERVER,
             events=[Span.Event(time_unix_nano=NOW + 200_000_000, name="gen_ai.choice",
                                attributes=kvs(("index", 0), ("finish_reason", "stop"), ("ok", True))),
                     Span.Event(time_unix_nano=NOW + 300_000_001, name="empty")],
             links=[Span.Link(trace_id=link_trace, span_id=link_span, trace_state="x=1",
                              attributes=kvs(("why", "follows"), ("n", 2))),
                    Span.Link(trace_id=b"\x01" * 16, span_id=b"\x02" * 8)],
             status=Status(code=Status.STATUS_CODE_OK)),
        span("zero parent", parent_span_id=b"\0" * 8, kind=Span.SPAN_KIND_PRODUCER),
        span("unknown kind and status", kind=9, status=Status(code=7, message="odd")),
        span("consumer, end before start", kind=Span.SPAN_KIND_CONSUMER, start=NOW + 2_000, end=NOW + 1_000),
        span("internal", kind=Span.SPAN_KIND_INTERNAL, flags=0x301, dropped_attributes_count=3),
        span("bad trace id", trace_id=b"\x01" * 15),
        span("zero span id", span_id=b"\0" * 8),
        span("bad parent", parent_span_id=b"\x01" * 7),
    ]
    # Two resources (one with values only Python spells: kept in Python) and two scopes.
    body = ExportTraceServiceRequest(resource_spans=[
        ResourceSpans(resource=Resource(attributes=kvs(("service.name", "agent"), ("host", "h1"), ("dup", "first"),
                                                       ("labels", {"team": "ml", "n": 1}), ("weird", 1e-7),
                                                       ("dup", "second"))),
                      scope_spans=[ScopeSpans(scope=InstrumentationScope(name="s1", version="1",  # scope attributes
                                                                         attributes=kvs(("lib", "x"))),  # are not stored
                                              spans=spans[:5]),
                                   ScopeSpans(scope=InstrumentationScope(name="s2"), spans=spans[5:])]),
        ResourceSpans(resource=Resource(), scope_spans=[ScopeSpans(spans=[span("no resource", kvs(("x", 1)))])]),
    ]).SerializeToString()
    assert ingest_both(stores, body), "this payload must be decoded by ClickHouse, not handed back to Python"


def test_doubles_and_strings_across_their_range(stores: Any) -> None:
    rnd = random.Random(7)
    doubles = [rnd.uniform(-1e6, 1e6) for _ in range(300)]
    doubles += [rnd.random() * 10 ** rnd.randint(-4, 14) for _ in range(300)]
    doubles += [float(rnd.randint(-10**15, 10**15)) for _ in range(100)]
    doubles = [d for d in doubles if d == 0 or 1e-4 <= abs(d) < 1e15]
    strings = ["".join(chr(rnd.choice([*range(0x20, 0x7f), 0x09, 0x0a, 0x0d, 0x08, 0x0c, 0xe9, 0x4e2d, 0x1f600]))
                       for _ in range(rnd.randint(0, 12))) for _ in range(200)]
    spans = [span(f"d{i}", kvs(*(("v" + str(j), d) for j, d in enumerate(doubles[i::20])),
                               ("arr", strings[i::20]), ("kv", {s: s[::-1] for s in strings[i::40]}),
                               ("s", strings[i])))
             for i in range(20)]
    assert ingest_both(stores, request(*spans))


@pytest.mark.parametrize("value", [
    pytest.param(1.5e-5, id="double below 1e-4"),
    pytest.param(1e21, id="double with exponent"),
    pytest.param(2.0 ** 60, id="integral double beyond 2^53"),
    pytest.param(-0.0, id="negative zero"),
    pytest.param(math.inf, id="infinity"),
    pytest.param(math.nan, id="nan"),
    pytest.param([1.5, 2.0], id="array of doubles"),
    pytest.param(["a", 1], id="array mixing types"),
    pytest.param([["nested"]], id="nested array"),
    pytest.param([b"bytes"], id="bytes in an array"),
    pytest.param([AnyValue()], id="unset value in an array"),
    pytest.param({"a": 1}, id="kvlist with an int"),
    pytest.param({"a": {"b": "c"}}, id="nested kvlist"),
    pytest.param(["\x1b[0m"], id="escape control character in an array"),
    pytest.param(["line\u2028sep"], id="U+2028 in an array"),
    pytest.param({"k\x1f": "v"}, id="control character in a kvlist key"),
])
def test_values_the_view_cannot_spell_fall_back_to_python(stores: Any, value: Any) -> None:
    body = request(span("plain", kvs(("ok", "yes"))), span("odd", kvs(("x", "y"), ("value", value))))
    assert not ingest_both(stores, body)


@pytest.mark.parametrize("where", ["span", "event", "link"])
def test_duplicate_keys_fall_back_to_python(stores: Any, where: str) -> None:
    dup = kvs(("k", "first"), ("other", 1), ("k", "last"))
    if where == "span":
        item = span("dup", dup)
    elif where == "event":
        item = span("dup", events=[Span.Event(time_unix_nano=NOW, name="e", attributes=dup)])
    else:
        item = span("dup", links=[Span.Link(trace_id=b"\x03" * 16, span_id=b"\x04" * 8, attributes=dup)])
    assert not ingest_both(stores, request(item))


def test_times_past_2262_are_clamped_alike(stores: Any) -> None:
    """Past DateTime64(9)'s range both paths store the last instant (and keep the real duration)."""
    client, _python_db, native_db = stores
    late = span("late", start=2**64 - 100, end=2**64 - 1,
                events=[Span.Event(time_unix_nano=2**63 + 7, name="e"), Span.Event(time_unix_nano=NOW, name="f")])
    # the TTL drops such rows from otel_traces at once, so compare what the view produces
    decoded = decode_protobuf_for_clickhouse(request(late))
    client.command(f"CREATE TABLE IF NOT EXISTS {native_db}.late AS {native_db}.otel_traces ENGINE = Memory")
    view = client.query("SELECT as_select FROM system.tables WHERE database = {db:String} "
                        "AND name = 'otel_traces_otlp_in_mv'", parameters={"db": native_db}).result_rows[0][0]
    client.command(f"CREATE MATERIALIZED VIEW IF NOT EXISTS {native_db}.late_mv TO {native_db}.late AS {view}")
    assert insert_span_rows(client, native_db, decoded.payload)
    client.raw_insert(f"{native_db}.late", None, json_rows_payload(decode_protobuf(request(late)).rows), fmt="JSONEachRow")
    stored = client.query(f"SELECT toString(Timestamp), Duration, arrayMap(t -> toString(t), Events.Timestamp) "
                          f"FROM {native_db}.late").result_rows
    assert len(stored) == 2 and stored[0] == stored[1]  # the view's row and the Python decoder's
    assert stored[0][:2] == ("2262-04-11 23:47:16.854775807", 99)
    assert stored[0][2][0] == "2262-04-11 23:47:16.854775807"


def test_real_sdk_export_is_decoded_by_clickhouse(stores: Any) -> None:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource as SdkResource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Link, SpanKind, StatusCode
    from opentelemetry.trace import Status as SdkStatus

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=SdkResource.create({"service.name": "sdk-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("agent.scope", "1.2.3")
    with tracer.start_as_current_span("invoke_agent planner", kind=SpanKind.INTERNAL) as root:
        root.set_attributes({"gen_ai.operation.name": "invoke_agent", "int": 42, "float": 0.25, "whole": 3.0,
                             "flag": True, "list": ["a", "b"], "nums": [1, 2], "gen_ai.response.finish_reasons": ["stop"]})
        root.add_event("plan.ready", {"steps": 3, "ok": False})
        with tracer.start_as_current_span("execute_tool search", kind=SpanKind.CLIENT,
                                          links=[Link(root.get_span_context(), {"why": "follows"})]) as child:
            child.set_status(SdkStatus(StatusCode.ERROR, "tool timed out"))
    provider.shutdown()
    body = encode_spans(exporter.get_finished_spans()).SerializeToString()
    assert ingest_both(stores, body)


@pytest.mark.parametrize("fallback", [False, True], ids=["clickhouse", "python fallback"])
def test_a_replayed_batch_is_stored_once_through_every_view(stores: Any, fallback: bool) -> None:
    """The same SpanRows with the same token twice (a replay after a lost acknowledgement): no duplicates."""
    client, _python_db, native_db = stores
    service = "replay-" + uuid.uuid4().hex[:8]
    attrs = kvs(("gen_ai.operation.name", "chat"), ("gen_ai.provider.name", "openai"),
                ("gen_ai.request.model", "gpt-4o"), ("gen_ai.usage.input_tokens", 10))
    if fallback:
        attrs += kvs(("tiny", 1e-9))
    bodies = [request(*(span("chat gpt-4o", attrs) for _ in range(5)), resource=kvs(("service.name", service)))
              for _ in range(2)]
    payload = b"".join(decode_protobuf_for_clickhouse(body).payload for body in bodies)
    assert len(split_span_rows(payload)) == 10
    token = uuid.uuid4().hex
    results = [insert_span_rows(client, native_db, payload, insert_deduplication_token=token, **DEDUP)
               for _ in range(2)]
    assert results == [not fallback, not fallback]

    def count(table: str) -> int:
        return client.query(f"SELECT count() FROM {native_db}.{table} WHERE ServiceName = {{s:String}}",
                            parameters={"s": service}).result_rows[0][0]

    assert count("otel_traces") == 10
    assert count("genops_calls") == 10
    traces = client.query(f"SELECT DISTINCT TraceId FROM {native_db}.otel_traces WHERE ServiceName = {{s:String}}",
                          parameters={"s": service}).result_rows
    in_lookup = client.query(f"SELECT count() FROM {native_db}.otel_traces_trace_id_ts WHERE TraceId IN {{t:Array(String)}}",
                             parameters={"t": [t[0] for t in traces]}).result_rows[0][0]
    assert in_lookup == len(traces) == 10


def test_spans_from_before_1973_do_not_poison_the_json_path(stores: Any) -> None:
    """A zero start time (an SDK bug) once made the whole JSONEachRow batch fail on every retry."""
    client, python_db, _native_db = stores
    decoded = decode_protobuf(request(span("epoch", start=0, end=0), span("early", start=10**9, end=10**9 + 5)))
    insert_json_payload(client, python_db, json_rows_payload(decoded.rows))  # raises if ClickHouse cannot parse it


def test_pipeline_spools_and_inserts_span_rows_next_to_json_rows(stores: Any, tmp_path: Path) -> None:
    """SpanRow payloads go through the same spool and sender as JSON rows; a fallback batch is counted."""
    from genops.api.metrics import render
    from genops.storage.pipeline import SpanPipeline
    from genops.storage.sinks import ClickHouseSink
    from genops.storage.spool import Spool

    client, _python_db, native_db = stores
    service = "pipeline-" + uuid.uuid4().hex[:8]
    pipeline = SpanPipeline(ClickHouseSink(client, native_db), Spool(tmp_path, max_bytes=1 << 24),
                            batch_size=4, interval_s=0.05, payload_batch_spans=6)
    pipeline.start()
    try:
        for i in range(4):  # 3 spans each: two batches of two payloads; the last has a value Python must spell
            extra = kvs(("tiny", 1e-9)) if i == 3 else []
            decoded = decode_protobuf_for_clickhouse(request(*(span(f"s{i}", kvs(("i", i)) + extra) for _ in range(3)),
                                                             resource=kvs(("service.name", service))))
            assert pipeline.submit_payload(decoded.payload, decoded.spans, "otlp")
        assert pipeline.flush(30)
    finally:
        pipeline.shutdown()
    stored = client.query(f"SELECT SpanName, count() FROM {native_db}.otel_traces WHERE ServiceName = {{s:String}} "
                          "GROUP BY SpanName ORDER BY SpanName", parameters={"s": service}).result_rows
    assert stored == [("s0", 3), ("s1", 3), ("s2", 3), ("s3", 3)]
    assert pipeline.counters.exported == 12 and pipeline.counters.batches_exported == 2
    assert "genops_otlp_python_fallback_batches_total 1" in render(pipeline)


def test_embedded_inserts_read_the_packaged_schema_and_write_nothing_to_the_cwd(
        stores: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client, _python_db, native_db = stores
    monkeypatch.chdir(tmp_path)
    decoded = decode_protobuf_for_clickhouse(request(span("cwd", kvs(("a", "b")))))
    assert insert_span_rows(client, native_db, decoded.payload)
    assert list(tmp_path.iterdir()) == []  # a schema passed as text would be cached in ./__cache__


def test_a_refused_batch_writes_nothing_even_past_one_read_block(stores: Any) -> None:
    """The view's refusal must come before any row of the batch is written (it falls back as a whole).

    70,000 spans is more than ClickHouse reads per chunk (max_block_size 65,409); the insert
    squashes them into one block, so the odd value in the last span stops all of them.
    """
    from genops.storage.otlp_native import TABLE, insert_settings

    client, _python_db, native_db = stores
    service = "one-block-" + uuid.uuid4().hex[:8]
    plain = decode_protobuf_for_clickhouse(request(*(span("p") for _ in range(1000)),
                                                   resource=kvs(("service.name", service)))).payload
    odd = decode_protobuf_for_clickhouse(request(span("odd", kvs(("tiny", 1e-9))),
                                                 resource=kvs(("service.name", service)))).payload
    with pytest.raises(Exception, match="OTLP_SQL_FALLBACK"):
        client.raw_insert(f"{native_db}.{TABLE}", None, plain * 70 + odd, fmt="Protobuf",
                          settings=insert_settings(client))
    assert client.query(f"SELECT count() FROM {native_db}.otel_traces WHERE ServiceName = {{s:String}}",
                        parameters={"s": service}).result_rows[0][0] == 0


@pytest.mark.parametrize("extra", [
    pytest.param(Span(name="second").SerializeToString(), id="name given twice"),
    pytest.param(Span(trace_id=b"\x07" * 16).SerializeToString(), id="trace_id given twice"),
    pytest.param(Span(status=Status(message="a")).SerializeToString() + Span(status=Status(code=2)).SerializeToString(),
                 id="status given twice"),
    pytest.param(b"\x30\x00", id="explicit default kind"),
])
def test_non_canonical_encodings_are_decoded_in_python(stores: Any, extra: bytes) -> None:
    """A field given twice is legal protobuf (the last wins) but ClickHouse reads it otherwise."""
    def delimited(tag: int, data: bytes) -> bytes:
        return bytes([tag]) + _varint(len(data)) + data

    from genops.storage.otlp_span_rows import _varint

    span_bytes = span("first", kvs(("a", "b"))).SerializeToString() + extra
    body = delimited(0x0A, delimited(0x12, delimited(0x12, span_bytes)))  # resource_spans.scope_spans.spans
    assert not ingest_both(stores, body)


def test_without_migration_0060_the_python_decoder_is_kept(stores: Any) -> None:
    client, _python_db, _native_db = stores
    assert not native_ingest_available(client, "no_such_database_" + uuid.uuid4().hex[:8])


@pytest.mark.parametrize("extra", [
    pytest.param(b"\x28\x05", id="name with the varint wire type"),
    pytest.param(b"\x38\x05", id="start time with the varint wire type"),
    pytest.param(b"\xfb\x01\xfc\x01", id="an unknown group"),
])
def test_fields_of_an_unexpected_wire_type_are_stored_like_python(stores: Any, extra: bytes) -> None:
    """upb keeps such a field as unknown; ClickHouse refuses these (the batch then goes through Python).

    Not covered: a length-delimited value for a varint field (kind, status code), which
    ClickHouse reads as 0 where the Python decoder keeps the earlier value (docs/otlp.md).
    """
    from genops.storage.otlp_span_rows import _varint

    def delimited(tag: int, data: bytes) -> bytes:
        return bytes([tag]) + _varint(len(data)) + data

    span_bytes = span("typed", kvs(("a", "b")), kind=Span.SPAN_KIND_CLIENT).SerializeToString() + extra
    ingest_both(stores, delimited(0x0A, delimited(0x12, delimited(0x12, span_bytes))))


def test_a_group_outside_the_spans_is_decoded_in_python(stores: Any) -> None:
    body = request(span("g")) + b"\xfb\x01\xfc\x01"  # an unknown group in the request itself
    assert not ingest_both(stores, body)


def test_reserved_scope_names_are_stored_alike_and_never_as_genops_own(stores: Any) -> None:
    """A scope named like GenOps's own recorders (genops.*) is stored as otlp:<name> by both decoders."""
    client, python_db, native_db = stores
    forged = span("chat gpt-4o", kvs(("gen_ai.operation.name", "chat"), ("genops.cost.usd", 99999.5),
                                     ("genops.user.id", "victim-user")))
    demo, plain, prefixed = span("demo"), span("plain"), span("already prefixed")
    body = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=kvs(("service.name", "forger"))),
        scope_spans=[ScopeSpans(scope=InstrumentationScope(name=name, version="1"), spans=[s]) for name, s in
                     (("genops.proxy", forged), ("genops.demo", demo), ("genopsx", plain),
                      ("otlp:genops.proxy", prefixed))],
    )]).SerializeToString()
    assert ingest_both(stores, body)
    span_ids = [s.span_id.hex() for s in (forged, demo, plain, prefixed)]
    for database in (python_db, native_db):
        scopes = dict(client.query(f"SELECT SpanId, ScopeName FROM {database}.otel_traces WHERE SpanId IN "
                                   "{ids:Array(String)}", parameters={"ids": span_ids}).result_rows)
        assert [scopes[i] for i in span_ids] == ["otlp:genops.proxy", "otlp:genops.demo", "genopsx",
                                                 "otlp:genops.proxy"]
        calls = client.query(f"SELECT ScopeName FROM {database}.genops_calls WHERE SpanId = {{id:String}}",
                             parameters={"id": forged.span_id.hex()}).result_rows
        assert calls == [("otlp:genops.proxy",)]


@pytest.mark.parametrize("fallback", [False, True])
def test_span_rows_that_kept_a_reserved_scope_are_renamed_on_insert(stores: Any, fallback: bool) -> None:
    """SpanRows whose tail still names genops.proxy (spooled by an older receiver): the view
    (migration 0070) renames it, and so does the Python decoder a refused batch goes through."""
    from genops.storage.otlp_span_rows import frame_span_rows, tail_bytes

    client, _python_db, native_db = stores
    attributes = kvs(("gen_ai.operation.name", "chat"), *([("tiny", 1.5e-5)] if fallback else []))
    forged = span("chat gpt-4o", attributes)
    body = request(forged, scope=("genops.proxy", "1"))
    payload = frame_span_rows(body, [[tail_bytes({"service.name": "svc"}, "svc", "genops.proxy", "1")]], [True])
    native = insert_span_rows(client, native_db, payload, insert_deduplication_token=uuid.uuid4().hex, **DEDUP)
    assert native is not fallback
    stored = client.query(f"SELECT ScopeName FROM {native_db}.otel_traces WHERE SpanId = {{id:String}}",
                          parameters={"id": forged.span_id.hex()}).result_rows
    assert stored == [("otlp:genops.proxy",)]


def test_migration_0070_runs_again_harmlessly(stores: Any) -> None:
    """Its MODIFY QUERY is safe to repeat (a migration interrupted before its ledger row runs again)."""
    from genops.storage.migrate import available_migrations

    client, _python_db, native_db = stores
    (migration,) = [m for m in available_migrations() if m.version == 70]
    for _ in range(2):
        for statement in migration.statements(database=native_db, retention_days=30):
            client.command(statement)
    assert ingest_both(stores, request(span("again"), scope=("genops.proxy", "2")))
