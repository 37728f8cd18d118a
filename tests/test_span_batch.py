"""The proxy's compact span batches become exactly the rows the direct conversion makes."""

from __future__ import annotations

import math

import orjson
import pytest
from opentelemetry.propagate import extract
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from genops.proxy.recorder import SpanRecorder
from genops.storage.rows import TRACE_COLUMNS, span_to_json_row
from genops.storage.span_batch import SpanEncoder, batch_payload, compact_rows, json_rows

pytestmark = pytest.mark.unit

ODD_VALUES = {
    "nan": math.nan,
    "inf": -math.inf,
    "whole float": 8000.0,
    "float": 0.015,
    "huge float": 1e300,
    "big int": 2**70,
    "big ints in a list": [2**70, 7, -(2**64)],  # orjson refuses them: the list once dropped the span
    "negative": -(2**63),
    "bytes": b"\x00\xffbin",
    "tuple": ("stop", "length"),
    "floats": [1.5, 2.0],
    "nan in list": [1.0, math.nan],
    "bools": [True, False],
    "flag": False,
    "text with null": "null and none",
    "unicode": "naïve ☃ \u2028",
    "empty": "",
}


class Collect(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def _expanded(encoder: SpanEncoder, spans: list[ReadableSpan]) -> list[dict]:
    lines = [encoder.encode(span) for span in spans]
    payload = batch_payload(encoder.header(), lines)  # the header after the lines: it names their origins
    # What the store inserts (JSONCompactEachRow, in column order), keyed by column name.
    rows = [dict(zip(TRACE_COLUMNS, orjson.loads(line), strict=True)) for line in compact_rows(payload).split(b"\n")]
    assert rows == [orjson.loads(line) for line in json_rows(payload).split(b"\n")]
    return rows


def test_recorded_spans_with_every_kind_of_value_expand_to_the_direct_rows() -> None:
    sink = Collect()
    recorder = SpanRecorder(Resource.create({"service.name": "svc", "k": 3}), InstrumentationScope("genops.proxy", "1.2"),
                            [sink])
    parent = extract({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                      "tracestate": "vendor=abc"})
    child = recorder.start_span("POST /v1/x", context=parent, kind=SpanKind.CLIENT, start_time=1_000)
    child.update_name("chat gpt-4o")
    child.set_attributes({"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 12, **ODD_VALUES})
    child.add_event("gen_ai.evaluation.result", {"gen_ai.evaluation.score.value": 0.9, "nan": math.nan}, timestamp=1_500)
    child.set_status(Status(StatusCode.ERROR, "HTTP 429"))
    child.end(end_time=3_000)
    plain = recorder.start_span("GET /v1/models", kind=SpanKind.SERVER)
    plain.set_attributes({"http.response.status_code": 200, "genops.latency.output_tokens_per_second": 8000.0})
    plain.end()

    encoder = SpanEncoder()
    rows = _expanded(encoder, sink.spans)
    assert rows == [span_to_json_row(span) for span in sink.spans]
    attributes = rows[0]["SpanAttributes"]
    assert (attributes["nan"], attributes["inf"], attributes["whole float"], attributes["big int"]) == (
        "nan", "-inf", "8000", str(2**70))
    assert attributes["tuple"] == '["stop","length"]' and attributes["flag"] == "false"
    assert attributes["big ints in a list"] == f'["{2**70}",7,"{-(2**64)}"]'  # kept, the wide ones as strings
    assert rows[0]["TraceState"] == "vendor=abc" and rows[0]["StatusCode"] == "Error"
    assert rows[0]["Events.Attributes"] == [{"gen_ai.evaluation.score.value": "0.9", "nan": "nan"}]
    assert rows[1]["ParentSpanId"] == "" and rows[1]["SpanKind"] == "Server"
    assert rows[1]["SpanAttributes"]["genops.latency.output_tokens_per_second"] == "8000"


def test_sdk_spans_from_two_resources_with_links_keep_their_origin() -> None:
    """Spans made by the SDK's own tracer (not the recorder) encode too, each with its resource and scope."""
    spans = []
    for service in ("first", "second"):
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        sink = Collect()
        provider.add_span_processor(sink)
        tracer = provider.get_tracer("scope-" + service, "9")
        link = Link(SpanContext(0xABC, 0xDEF, True, TraceFlags(1), TraceState([("a", "b")])), {"why": "retry", "n": 2})
        with tracer.start_as_current_span("op", kind=SpanKind.PRODUCER, links=[link],
                                          attributes={"list": [1, 2], "x": 1.25}) as span:
            span.add_event("e", {"k": "v"})
        spans.extend(sink.spans)

    encoder = SpanEncoder()
    rows = _expanded(encoder, spans)
    assert rows == [span_to_json_row(span) for span in spans]
    assert [row["ServiceName"] for row in rows] == ["first", "second"]
    assert [row["ScopeName"] for row in rows] == ["scope-first", "scope-second"]
    assert rows[0]["Links.TraceState"] == ["a=b"] and rows[0]["Links.Attributes"] == [{"why": "retry", "n": "2"}]


def test_an_unencodable_span_is_refused_alone() -> None:
    encoder = SpanEncoder()
    bad = ReadableSpan(name="bad", context=SpanContext(1, 2, False, TraceFlags(1)),
                       attributes={"k": "v"}, events=[Event("e", {1: "not a string key"}, 5)])
    with pytest.raises(TypeError):
        encoder.encode(bad)


def test_the_floats_the_view_mends_come_out_as_the_store_spells_them() -> None:
    """Migration 0090's view turns orjson's text of a float into float_string's, except the few
    the line spells itself: checked over floats of every magnitude and random bit patterns."""
    import random
    import struct

    from genops.storage.rows import float_string
    from genops.storage.span_batch import FLOAT_PROBES, json_float_unmended, json_floats_as_expected, mended_json_float

    rng = random.Random(22)
    values = list(FLOAT_PROBES)
    for _ in range(20_000):
        magnitude = rng.choice([-1, 1]) * 10 ** rng.uniform(-30, 30)
        values += [magnitude, float(round(magnitude)), struct.unpack("d", struct.pack("Q", rng.getrandbits(63)))[0]]
    mended = 0
    for value in values:
        if not math.isfinite(value) or json_float_unmended(value):
            continue
        assert mended_json_float(orjson.dumps(value).decode()) == float_string(value), value
        mended += 1
    assert mended > len(values) * 3 // 4  # most are mended by the view
    assert json_floats_as_expected()


def test_a_store_whose_orjson_spells_floats_otherwise_spells_in_python(monkeypatch: pytest.MonkeyPatch) -> None:
    from genops.storage import span_batch_sql

    assert span_batch_sql.SqlSpelling().enabled
    monkeypatch.setattr(span_batch_sql, "json_floats_as_expected", lambda: False)
    assert not span_batch_sql.SqlSpelling().enabled
