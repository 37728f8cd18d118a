"""The OTLP/HTTP receiver of a real ``genops serve`` (embedded mode): formats, conventions, errors."""

from __future__ import annotations

import gzip
import os
import time
import urllib.error
import urllib.request
import uuid

import orjson
import pytest
from conftest import Proxy
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, StatusCode
from opentelemetry.trace import Status as SpanStatus

from genops.storage.otlp_rows import decode_protobuf
from genops.storage.rows import span_to_json_row

pytestmark = pytest.mark.e2e

PROTOBUF = {"Content-Type": "application/x-protobuf"}


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url + "/v1/traces", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def sdk_spans(service: str) -> list:
    """Real SDK spans covering every value type, kinds, status, events and links."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service, "deployment.environment": "test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("agent.scope", "1.2.3")
    with tracer.start_as_current_span("invoke_agent planner", kind=SpanKind.INTERNAL) as root:
        root.set_attributes({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner",
                             "int": 42, "float": 0.25, "whole": 3.0, "flag": True, "list": ["a", "b"],
                             "nums": [1, 2]})
        root.add_event("plan.ready", {"steps": 3, "ok": False})
        with tracer.start_as_current_span("execute_tool search", kind=SpanKind.CLIENT,
                                          links=[Link(root.get_span_context(), {"why": "follows"})]) as child:
            child.set_attribute("gen_ai.tool.name", "search")
            child.set_status(SpanStatus(StatusCode.ERROR, "tool timed out"))
    provider.shutdown()
    return list(exporter.get_finished_spans())


def test_protobuf_rows_match_the_proxys_own_conventions() -> None:
    """A span sent by OTLP becomes exactly the row the proxy's own exporter makes of it."""
    spans = sdk_spans("conv-" + uuid.uuid4().hex[:8])
    body = encode_spans(spans).SerializeToString()
    decoded = decode_protobuf(body)
    assert decoded.rejected == 0
    by_id = {row["SpanId"]: row for row in decoded.rows}
    for span in spans:
        expected = span_to_json_row(span)
        got = by_id[expected["SpanId"]]
        # The SDK adds its telemetry.sdk.* resource attributes either way; everything must match.
        assert got == expected
    child = next(r for r in decoded.rows if r["SpanName"] == "execute_tool search")
    assert child["SpanKind"] == "Client" and child["StatusCode"] == "Error"
    assert child["StatusMessage"] == "tool timed out"
    assert child["Links.Attributes"] == [{"why": "follows"}]


def test_protobuf_export_is_stored(proxy: Proxy) -> None:
    service = "pb-" + uuid.uuid4().hex[:8]
    spans = sdk_spans(service)
    status, headers, body = post(proxy.otlp_url, encode_spans(spans).SerializeToString(), PROTOBUF)
    assert status == 200, body
    assert headers["Content-Type"] == "application/x-protobuf"
    response = ExportTraceServiceResponse.FromString(body)
    assert response.partial_success.rejected_spans == 0
    rows = proxy.wait_rows(f"SELECT * FROM otel_traces WHERE ServiceName = '{service}' ORDER BY ParentSpanId", 2)
    assert len(rows) == 2
    agent, tool = rows
    assert agent["SpanName"] == "invoke_agent planner" and agent["SpanKind"] == "Internal"
    assert agent["ScopeName"] == "agent.scope" and agent["ScopeVersion"] == "1.2.3"
    assert agent["ResourceAttributes"]["deployment.environment"] == "test"
    attrs = agent["SpanAttributes"]
    assert (attrs["int"], attrs["float"], attrs["whole"], attrs["flag"]) == ("42", "0.25", "3", "true")
    assert orjson.loads(attrs["list"]) == ["a", "b"] and orjson.loads(attrs["nums"]) == [1, 2]
    assert agent["Events.Name"] == ["plan.ready"]
    assert agent["Events.Attributes"] == [{"steps": "3", "ok": "false"}]
    assert tool["ParentSpanId"] == agent["SpanId"] and tool["TraceId"] == agent["TraceId"]
    assert tool["Links.SpanId"] == [agent["SpanId"]] and tool["Links.TraceId"] == [agent["TraceId"]]
    assert tool["StatusCode"] == "Error" and tool["StatusMessage"] == "tool timed out"


def test_protobuf_partial_success_keeps_the_valid_spans(proxy: Proxy) -> None:
    """ClickHouse-decoded protobuf (the default): a span with a malformed id is rejected alone."""
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    service = "pb-partial-" + uuid.uuid4().hex[:8]
    start = time.time_ns() - 10**9
    trace_id = os.urandom(16)
    spans = [Span(trace_id=trace_id, span_id=os.urandom(8), name=f"ok {i}", start_time_unix_nano=start,
                  end_time_unix_nano=start + 1000) for i in range(2)]
    spans.insert(1, Span(trace_id=trace_id, span_id=b"\x01" * 7, name="short id", start_time_unix_nano=start))
    body = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource={"attributes": [{"key": "service.name", "value": {"string_value": service}}]},
        scope_spans=[ScopeSpans(spans=spans)])]).SerializeToString()
    status, _headers, answer = post(proxy.otlp_url, body, PROTOBUF)
    assert status == 200, answer
    response = ExportTraceServiceResponse.FromString(answer)
    assert response.partial_success.rejected_spans == 1
    assert "span_id must be 8 bytes" in response.partial_success.error_message
    rows = proxy.wait_rows(f"SELECT SpanName FROM otel_traces WHERE ServiceName = '{service}' ORDER BY SpanName", 2)
    assert [r["SpanName"] for r in rows] == ["ok 0", "ok 1"]


def _json_request(service: str, trace_id: str, spans: list[dict]) -> dict:
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"scope": {"name": "json.scope", "version": "0.1"}, "spans": spans}],
    }]}


def _json_span(trace_id: str, span_id: str, name: str, **extra) -> dict:
    start = time.time_ns() - 10**9  # within the retention TTL (older spans are dropped at insert)
    return {"traceId": trace_id, "spanId": span_id, "name": name, "kind": 3,
            "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 5_000_000), **extra}


def test_json_gzip_export_with_partial_success(proxy: Proxy) -> None:
    """OTLP/JSON, gzip-compressed; a span with a malformed id is rejected alone (partial success)."""
    service = "json-" + uuid.uuid4().hex[:8]
    trace_id = os.urandom(16).hex()
    good = _json_span(trace_id, os.urandom(8).hex(), "chat gpt-4o", attributes=[
        {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "12"}},
        {"key": "gen_ai.request.temperature", "value": {"doubleValue": 0.5}},
    ], status={"code": 1}, events=[{"timeUnixNano": str(time.time_ns()), "name": "e1",
                                     "attributes": [{"key": "k", "value": {"boolValue": True}}]}])
    bad = _json_span("zz" * 16, os.urandom(8).hex(), "broken")
    payload = gzip.compress(orjson.dumps(_json_request(service, trace_id, [good, bad])))
    status, headers, body = post(proxy.otlp_url, payload, {"Content-Type": "application/json",
                                                          "Content-Encoding": "gzip"})
    assert status == 200, body
    response = orjson.loads(body)
    assert response["partialSuccess"]["rejectedSpans"] == "1"
    assert "traceId" in response["partialSuccess"]["errorMessage"]
    rows = proxy.wait_rows(f"SELECT * FROM otel_traces WHERE ServiceName = '{service}'", 1)
    assert len(rows) == 1
    row = rows[0]
    assert row["TraceId"] == trace_id and row["SpanKind"] == "Client" and row["StatusCode"] == "Ok"
    assert row["SpanAttributes"]["gen_ai.usage.input_tokens"] == "12"
    assert row["SpanAttributes"]["gen_ai.request.temperature"] == "0.5"
    assert row["Events.Attributes"] == [{"k": "true"}]
    assert row["Duration"] == 5_000_000


def _valid_protobuf(service: str, count: int = 20) -> bytes:
    spans = []
    for _ in range(count // 2):
        spans.extend(sdk_spans(service))
    return encode_spans(spans).SerializeToString()


def _truncated(body: bytes) -> bytes:
    """A prefix of ``body`` that protobuf refuses to parse (a cut inside a field)."""
    for cut in range(len(body) * 2 // 3, len(body)):
        try:
            ExportTraceServiceRequest.FromString(body[:cut])
        except Exception:  # DecodeError
            return body[:cut]
    raise AssertionError("no truncation point fails to parse")


@pytest.mark.parametrize("case", ["truncated_protobuf", "wrong_content_type", "invalid_json", "wrong_json_shape",
                                  "bad_gzip", "body_50mb", "gzip_bomb"])
def test_malformed_requests_get_a_clear_4xx_and_store_nothing(proxy: Proxy, case: str) -> None:
    service = f"bad-{case}-" + uuid.uuid4().hex[:6]
    json_headers = {"Content-Type": "application/json"}
    if case == "truncated_protobuf":
        body, headers, expected, words = _truncated(_valid_protobuf(service)), PROTOBUF, 400, "protobuf"
    elif case == "wrong_content_type":
        body, headers, expected, words = _valid_protobuf(service), {"Content-Type": "text/plain"}, 415, "Content-Type"
    elif case == "invalid_json":
        body = orjson.dumps(_json_request(service, "", [_json_span(os.urandom(16).hex(), os.urandom(8).hex(), "x")]))
        body, headers, expected, words = body[:-7], json_headers, 400, "JSON"
    elif case == "wrong_json_shape":
        good = _json_span(os.urandom(16).hex(), os.urandom(8).hex(), "ok")
        request = _json_request(service, "", [good, {**good, "spanId": os.urandom(8).hex(), "attributes": "nope"}])
        body, headers, expected, words = orjson.dumps(request), json_headers, 400, "attributes"
    elif case == "bad_gzip":
        body = b"\x1f\x8b\x08\x00" + os.urandom(200)
        headers, expected, words = {**PROTOBUF, "Content-Encoding": "gzip"}, 400, "gzip"
    elif case == "body_50mb":
        body, headers, expected, words = b"\x0a" * (50 * 1024 * 1024), PROTOBUF, 413, "GENOPS_OTLP_MAX_BODY_BYTES"
    else:  # 100 MB of zeros gzip to ~100 KB: the limit applies to the decompressed size
        body = gzip.compress(b"\0" * (100 * 1024 * 1024), compresslevel=1)
        headers, expected, words = {**PROTOBUF, "Content-Encoding": "gzip"}, 413, "GENOPS_OTLP_MAX_BODY_BYTES"
    status, response_headers, response = post(proxy.otlp_url, body, headers)
    assert status == expected, response[:300]
    if response_headers.get("Content-Type") == "application/x-protobuf":
        message = Status.FromString(response).message
    else:
        message = orjson.loads(response)["message"]
    assert words in message
    # The receiver keeps serving: a valid export right after is stored...
    marker = "after-" + uuid.uuid4().hex[:8]
    assert post(proxy.otlp_url, _valid_protobuf(marker, 2), PROTOBUF)[0] == 200
    proxy.wait_rows(f"SELECT 1 FROM otel_traces WHERE ServiceName = '{marker}'", 2)
    # ...and nothing of the malformed request was (it would have been batched before the marker).
    assert proxy.sql(f"SELECT count() AS n FROM otel_traces WHERE ServiceName = '{service}'")[0]["n"] == 0


def test_metrics_on_proxy_and_receiver_ports(proxy: Proxy) -> None:
    post(proxy.otlp_url, _valid_protobuf("metrics-" + uuid.uuid4().hex[:6], 2), PROTOBUF)
    post(proxy.otlp_url, b"x", {"Content-Type": "text/plain"})
    for base in (proxy.url, proxy.otlp_url):
        with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = response.read().decode()
        samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                   for line in text.splitlines() if line and not line.startswith("#")}
        assert samples['genops_spans_received_total{source="otlp"}'] >= 2
        assert samples['genops_otlp_requests_total{code="415",encoding="unknown"}'] >= 1
        for name in ("genops_spans_spooled_total", "genops_spans_exported_total", "genops_spans_replayed_total",
                     'genops_spans_dropped_total{reason="spool_full"}', "genops_export_latency_seconds_count",
                     "genops_spool_spans", "genops_export_failures_total"):
            assert name in samples, name
