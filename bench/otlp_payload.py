"""Realistic OTLP protobuf payloads for the ingest benchmark (GenAI model-call spans)."""

from __future__ import annotations

import os
import random
import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span


def _kv(key: str, value: object) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def make_request(spans: int = 512, *, seed: int | None = None, service: str = "bench-agent") -> bytes:
    """One ExportTraceServiceRequest with ``spans`` spans shaped like an agent's model calls."""
    rnd = random.Random(seed)
    now = time.time_ns()
    items = []
    trace_id = os.urandom(16)
    parent = os.urandom(8)
    for i in range(spans):
        if i % 8 == 0:
            trace_id, parent = os.urandom(16), os.urandom(8)
        start = now - rnd.randint(0, 10**9)
        items.append(Span(
            trace_id=trace_id, span_id=os.urandom(8), parent_span_id=parent, name="chat gpt-4o-mini",
            kind=Span.SPAN_KIND_CLIENT, start_time_unix_nano=start, end_time_unix_nano=start + rnd.randint(10**6, 10**9),
            attributes=[
                _kv("gen_ai.operation.name", "chat"), _kv("gen_ai.provider.name", "openai"),
                _kv("gen_ai.request.model", "gpt-4o-mini"), _kv("gen_ai.response.model", "gpt-4o-mini-2024-07-18"),
                _kv("gen_ai.response.id", f"chatcmpl-{rnd.getrandbits(64):x}"),
                _kv("gen_ai.usage.input_tokens", rnd.randint(10, 5000)), _kv("gen_ai.usage.output_tokens", rnd.randint(1, 900)),
                _kv("gen_ai.request.temperature", 0.7), _kv("gen_ai.request.stream", bool(i % 2)),
                _kv("server.address", "api.openai.com"), _kv("server.port", 443),
                _kv("http.response.status_code", 200), _kv("genops.cost.usd", 0.00123),
                _kv("gen_ai.conversation.id", f"session-{i % 17}"),
            ],
        ))
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource={"attributes": [_kv("service.name", service), _kv("service.version", "1.0"),
                                 _kv("telemetry.sdk.language", "python")]},
        scope_spans=[ScopeSpans(scope={"name": "opentelemetry.instrumentation.openai_v2", "version": "2.4b0"},
                                spans=items)],
    )])
    return request.SerializeToString()
