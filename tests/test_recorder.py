"""The proxy's lean span recorder produces standard SDK spans for the SDK's processors."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, Status, StatusCode

from genops.proxy.recorder import SpanRecorder
from genops.storage.rows import TRACE_COLUMNS, span_to_row

pytestmark = pytest.mark.unit


class Collect(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def recorder() -> tuple[SpanRecorder, Collect]:
    sink = Collect()
    return SpanRecorder(Resource.create({"service.name": "svc"}), InstrumentationScope("genops.proxy", "1"), [sink]), sink


def test_child_of_incoming_traceparent_with_attributes_events_and_status():
    rec, sink = recorder()
    parent = extract({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    span = rec.start_span("POST /v1/x", context=parent, kind=SpanKind.CLIENT, start_time=1_000)
    span.update_name("chat gpt-4o")
    span.set_attributes({"gen_ai.request.model": "gpt-4o", "skip": None})
    span.set_attribute("gen_ai.usage.input_tokens", 12)
    span.add_event("gen_ai.evaluation.result", {"gen_ai.evaluation.name": "pii"}, timestamp=1_500)
    span.set_status(Status(StatusCode.ERROR, "HTTP 429"))
    assert span.is_recording()
    span.end(end_time=3_000)
    span.end(end_time=9_000)  # a second end is ignored
    assert not span.is_recording()

    [done] = sink.spans
    row = dict(zip(TRACE_COLUMNS, span_to_row(done), strict=True))
    assert row["TraceId"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert row["ParentSpanId"] == "00f067aa0ba902b7"
    assert row["SpanId"] == format(span.get_span_context().span_id, "016x") != row["ParentSpanId"]
    assert row["SpanName"] == "chat gpt-4o" and row["SpanKind"] == "Client"
    assert row["SpanAttributes"] == {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": "12"}
    assert row["Events.Name"] == ["gen_ai.evaluation.result"] and row["Events.Timestamp"] == [1_500]
    assert (row["Duration"], row["StatusCode"], row["StatusMessage"]) == (2_000, "Error", "HTTP 429")
    assert (row["ServiceName"], row["ScopeName"]) == ("svc", "genops.proxy")


def test_root_span_gets_fresh_ids_and_propagates():
    rec, sink = recorder()
    a = rec.start_span("a", kind=SpanKind.CLIENT)
    b = rec.start_span("b", context=extract({}), kind=SpanKind.CLIENT)
    assert a.get_span_context().trace_id != b.get_span_context().trace_id
    assert a.get_span_context().trace_flags.sampled
    carrier: dict[str, str] = {}
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    TraceContextTextMapPropagator().inject(carrier, context=trace.set_span_in_context(a))
    assert carrier["traceparent"] == f"00-{a.get_span_context().trace_id:032x}-{a.get_span_context().span_id:016x}-01"
    a.end()
    assert sink.spans[0].parent is None
