"""The proxy's compact batches spelled by ClickHouse (migration 0090, ``span_batch_sql``) store
exactly the rows Python's spelling (``span_batch.compact_rows``, the reference) stores, whole
rows compared byte for byte, odd values included; what the view cannot read goes through
Python with the same token, stored once. Real chDB throughout."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import open_chdb
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from test_span_batch import ODD_VALUES

from genops.proxy.recorder import SpanRecorder
from genops.storage.migrate import migrate
from genops.storage.sinks import SPANS, ClickHouseSink
from genops.storage.span_batch import SPAN_VALUES, SpanEncoder, _float_spellings, batch_payload

pytestmark = pytest.mark.integration

#: Values whose JSON text a reader could get wrong: escapes, separators, nesting, exponents.
MORE_ODD_VALUES = {
    "quotes and backslashes": 'say "hi" \\ C:\\path\\ /slash/',
    "control characters": "tab\tnew\nline\r\x00\x01\x1f end",
    "astral": "emoji 🚀 and 𝄞",
    "small float": 8.4e-06,
    "negative float": -0.5,
    "tiny float": 5e-324,
    "big whole float": 1e16,
    "float that is an int": -3.0,
    "list with escapes": ['a"b', "c\\d", "e\nf", "ü"],
    "list of floats": [8.4e-06, 1e300, 2.0],
    "empty list": [],
    "max uint64": 2**64 - 1,
    "min int64": -(2**63),
    "true": True,
    "looks like a number": "8000.0",
    "looks like json": '{"a": [1, 2.0]}',
    "negative zero": -0.0,
    "between 1e-5 and 1e-4": -2.5e-05,
    "whole beyond 1e16": 1.2345678901234567e+19,
    "one-digit exponent": 3e+100,
    "exponent -5": 1e-05,
    "exponent -7": 1.25e-07,
    "just below 1e16": 9999999999999998.0,
    "a mapping": {"b": [1, 2.5, "x"], "a": {"c": True}, "é": "ü"},  # the proxy's recorder keeps what it is given
    "nested lists": [[1, [2.0]], [], ["a\"b"]],
}


class Collect(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def odd_spans() -> list[ReadableSpan]:
    """Spans from the proxy's recorder and the SDK's tracer: every odd value, events and links
    with floats, an error status, a span with no float at all, two resources."""
    now = time.time_ns()  # stored rows older than the table's retention would be dropped
    sink = Collect()
    recorder = SpanRecorder(Resource.create({"service.name": "svc", "k": 3}), InstrumentationScope("genops.proxy", "1.2"),
                            [sink])
    span = recorder.start_span("chat gpt-4o", kind=SpanKind.CLIENT, start_time=now + 1_000)
    span.set_attributes({"gen_ai.request.model": "gpt-4o", **ODD_VALUES, **MORE_ODD_VALUES})
    span.add_event("gen_ai.evaluation.result", {"gen_ai.evaluation.score.value": 0.9, "n": 2}, timestamp=now + 1_500)
    span.add_event("plain", {"k": "v"}, timestamp=now + 1_600)
    span.set_status(Status(StatusCode.ERROR, "HTTP 429 \"quoted\""))
    span.end(end_time=now + 3_000)
    plain = recorder.start_span("GET /v1/models", kind=SpanKind.SERVER)
    plain.set_attributes({"http.response.status_code": 200, "text": "no floats here"})
    plain.end()
    finite = recorder.start_span("chat floats", kind=SpanKind.CLIENT, start_time=now + 2_000)
    finite.set_attributes({"genops.cost.usd": 8.4e-06, "genops.latency.output_tokens_per_second": 1663.209,
                           "whole": 8000.0, "after": "kept in place", "between 1e-5 and 1e-4": 5e-05,
                           "negative zero": -0.0, "whole beyond 1e16": 1e17, "exponent": 1.5e-300, "padded": 2e-7})
    finite.end(end_time=now + 1_000)  # ends before it starts: Duration 0
    spans = sink.spans
    provider = TracerProvider(resource=Resource.create({"service.name": "second"}))
    sdk_sink = Collect()
    provider.add_span_processor(sdk_sink)
    link = Link(SpanContext(0xABC, 0xDEF, True, TraceFlags(1), TraceState([("a", "b")])),
                {"why": "retry", "n": 2, "weight": 0.25})
    with provider.get_tracer("scope-second", "9").start_as_current_span(
            "op", kind=SpanKind.PRODUCER, links=[link], attributes={"list": [1, 2], "x": 1.25}) as sdk_span:
        sdk_span.add_event("e", {"k": "v", "f": 3.0})
    return spans + sdk_sink.spans


def compact_batch(spans: list[ReadableSpan], encoder: SpanEncoder | None = None) -> bytes:
    encoder = encoder or SpanEncoder()
    lines = [encoder.encode(span) for span in spans]
    return batch_payload(encoder.header(), lines)


def fourteen_values(payload: bytes) -> bytes:
    """The batch as a store spooled it before lines carried the view's values (fourteen per line)."""
    header, _, body = payload.partition(b"\n")
    lines = [orjson.dumps(orjson.loads(line)[:SPAN_VALUES]) for line in body.split(b"\n") if line]
    return b"\n".join([header, *lines])


def eighteen_values(payload: bytes) -> bytes:
    """The batch as a store spooled it before migration 0100: eighteen values per line, the span's
    floats named in a map (value 15) instead of marked in float slots."""
    header, _, body = payload.partition(b"\n")
    lines = []
    for line in body.split(b"\n"):
        if line:
            values = orjson.loads(line)[:18]
            values[15] = _float_spellings(values[11])
            lines.append(orjson.dumps(values))
    return b"\n".join([header, *lines])


@pytest.fixture(scope="module")
def client(chdb_dir: Path) -> Any:
    return open_chdb(chdb_dir)


@pytest.fixture
def databases(client: Any) -> Iterator[tuple[str, str]]:
    names = ("sqlspell_" + uuid.uuid4().hex[:8], "pyspell_" + uuid.uuid4().hex[:8])
    for name in names:
        migrate(client, name)
    yield names
    for name in names:
        client.command(f"DROP DATABASE IF EXISTS {name}")


def stored(client: Any, database: str, table: str = "otel_traces") -> list[bytes]:
    """Every stored row, every column, as ClickHouse spells it."""
    raw = client.raw_query(f"SELECT * FROM {database}.{table} ORDER BY TraceId, SpanId FORMAT JSONEachRow",
                           settings={"session_timezone": "UTC", "output_format_json_quote_64bit_integers": 1})
    return [line for line in raw.split(b"\n") if line]


def test_the_view_stores_the_rows_python_stores(client: Any, databases: tuple[str, str]) -> None:
    by_sql, by_python = databases
    spans = odd_spans()
    payload = compact_batch(spans)
    recording = Recording(client)
    sql_sink = ClickHouseSink(recording, by_sql)
    sql_sink.insert(payload, uuid.uuid4().hex, SPANS, len(spans))
    assert sql_sink.span_fallbacks == 0, "the view must read these lines itself"
    assert recording.tables == [f"{by_sql}.otel_traces_genops_in"]  # one insert, into the view's table
    ClickHouseSink(client, by_python, sql_spelling=False).insert(payload, uuid.uuid4().hex, SPANS, len(spans))

    rows = stored(client, by_sql)
    assert len(rows) == len(spans)
    assert rows == stored(client, by_python)
    # the views fed from otel_traces see the same rows too
    assert stored(client, by_sql, "genops_calls") == stored(client, by_python, "genops_calls")
    first = next(orjson.loads(r) for r in rows if orjson.loads(r)["SpanName"] == "chat gpt-4o")
    attributes = first["SpanAttributes"]
    assert (attributes["whole float"], attributes["small float"], attributes["huge float"]) == ("8000", "8.4e-06", "1e+300")
    assert (attributes["negative zero"], attributes["between 1e-5 and 1e-4"], attributes["exponent -7"]) == (
        "0", "-2.5e-05", "1.25e-07")
    assert attributes["whole beyond 1e16"] == "12345678901234567168" and attributes["just below 1e16"] == "9999999999999998"
    assert attributes["looks like a number"] == "8000.0" and attributes["true"] == "true"
    assert attributes["quotes and backslashes"] == MORE_ODD_VALUES["quotes and backslashes"]
    # a list is spelled as JSON (orjson's, floats included), as Python spells it
    assert attributes["list of floats"] == orjson.dumps(MORE_ODD_VALUES["list of floats"]).decode()


def test_a_group_of_batches_from_two_encoders_keeps_each_origin(client: Any, databases: tuple[str, str]) -> None:
    """A store's group mixes workers' batches, each numbering its origins from 0: each line's own
    origin decides its resource and scope."""
    by_sql, by_python = databases
    payloads = []
    for service in ("worker-a", "worker-b"):
        sink = Collect()
        recorder = SpanRecorder(Resource.create({"service.name": service}), InstrumentationScope("genops.proxy", "1"),
                                [sink])
        span = recorder.start_span("chat", kind=SpanKind.CLIENT)
        span.set_attribute("genops.cost.usd", 0.5)
        span.end()
        payloads.append(compact_batch(sink.spans))
    sql_sink = ClickHouseSink(client, by_sql)
    sql_sink.insert_group(payloads, uuid.uuid4().hex, SPANS, 2)
    ClickHouseSink(client, by_python, sql_spelling=False).insert_group(payloads, uuid.uuid4().hex, SPANS, 2)
    assert sql_sink.span_fallbacks == 0
    rows = stored(client, by_sql)
    assert rows == stored(client, by_python)
    assert sorted(orjson.loads(r)["ServiceName"] for r in rows) == ["worker-a", "worker-b"]


@pytest.mark.parametrize("older", [fourteen_values, eighteen_values])
def test_lines_spooled_before_the_view_go_through_python_once(client: Any, databases: tuple[str, str],
                                                              older: Callable[[bytes], bytes]) -> None:
    """A group with a batch of lines spooled by an older GenOps (fourteen values: before migration
    0090; eighteen: before 0100) cannot be read by the view: nothing of it is written, the whole
    group goes through Python with its token, and sending the group again stores nothing twice."""
    by_sql, by_python = databases
    spans = odd_spans()
    old, new = older(compact_batch(spans[:2])), compact_batch(spans[2:])
    token = uuid.uuid4().hex
    sink = ClickHouseSink(client, by_sql)
    sink.insert_group([new, old], token, SPANS, len(spans))
    assert sink.span_fallbacks == 1 and sink.spans.enabled, "refused bytes: this group only, not the view for good"
    sink.insert_group([new, old], token, SPANS, len(spans))  # a retry whose first answer was lost
    ClickHouseSink(client, by_python, sql_spelling=False).insert_group([new, old], uuid.uuid4().hex, SPANS, len(spans))
    rows = stored(client, by_sql)
    assert len(rows) == len(spans)
    assert rows == stored(client, by_python)


class Recording:
    """A client that notes which table each insert went to."""

    def __init__(self, client: Any) -> None:
        self.client, self.tables = client, []

    def raw_insert(self, table: str, *args: Any, **kwargs: Any) -> Any:
        self.tables.append(table)
        return self.client.raw_insert(table, *args, **kwargs)


class AnswerLost:
    """A client whose inserts land and whose answer is then lost, ``lose`` times."""

    def __init__(self, client: Any, lose: int) -> None:
        self.client, self.lose = client, lose

    def raw_insert(self, *args: Any, **kwargs: Any) -> Any:
        result = self.client.raw_insert(*args, **kwargs)
        if self.lose:
            self.lose -= 1
            raise TimeoutError("the insert's answer was lost")
        return result


def test_an_insert_through_the_view_whose_answer_was_lost_is_retried_the_same_way(
        client: Any, databases: tuple[str, str]) -> None:
    """Only a refusal of the lines falls back to Python: a lost answer is raised, and the retry
    goes through the view again with the same token, so the group is stored once (a retry
    through Python would not be deduplicated against the view's insert)."""
    by_sql, once = databases
    spans = odd_spans()
    for span in spans[:3]:  # calls, so genops_calls (a view of the stored rows) has rows to double
        span._attributes["gen_ai.operation.name"] = "chat"  # type: ignore[attr-defined,index]
    payload, token = compact_batch(spans), uuid.uuid4().hex
    sink = ClickHouseSink(AnswerLost(client, lose=1), by_sql)
    with pytest.raises(TimeoutError):
        sink.insert(payload, token, SPANS, len(spans))
    sink.insert(payload, token, SPANS, len(spans))
    assert sink.span_fallbacks == 0
    ClickHouseSink(client, once).insert(payload, uuid.uuid4().hex, SPANS, len(spans))
    assert len(stored(client, by_sql)) == len(spans)
    calls = stored(client, once, "genops_calls")
    assert len(calls) >= 3 and stored(client, by_sql, "genops_calls") == calls


def test_a_store_without_the_view_spells_in_python_from_then_on(client: Any, databases: tuple[str, str]) -> None:
    by_sql, by_python = databases
    client.command(f"DROP VIEW {by_sql}.otel_traces_genops_in_mv")
    client.command(f"DROP TABLE {by_sql}.otel_traces_genops_in")
    spans = odd_spans()
    sink = ClickHouseSink(client, by_sql)
    sink.insert(compact_batch(spans), uuid.uuid4().hex, SPANS, len(spans))
    assert sink.span_fallbacks == 1 and not sink.spans.enabled
    sink.insert(compact_batch(spans[:1]), uuid.uuid4().hex, SPANS, 1)
    assert sink.span_fallbacks == 1, "not tried again"
    assert len(stored(client, by_sql)) == len(spans) + 1


def test_a_line_keeps_the_floats_a_collector_gets_as_doubles() -> None:
    """The stored spellings travel beside the attributes; the attributes keep their floats (the
    OTLP export of a proxy without a store sends doubles)."""
    spans = odd_spans()
    payload = compact_batch(spans)
    line = orjson.loads(payload.split(b"\n")[3])  # "chat floats"
    assert line[7] == "chat floats"
    assert line[11]["genops.cost.usd"] == 8.4e-06 and isinstance(line[11]["whole"], float)
    # every float marked where it stands ("~": the view mends JSON's spelling), spelled in the line
    # only where the view cannot; every other attribute ""
    slots = dict(zip(line[11], line[18], strict=True))
    assert {k: s for k, s in slots.items() if s} == {
        "genops.cost.usd": "~", "genops.latency.output_tokens_per_second": "~", "whole": "~",
        "between 1e-5 and 1e-4": "5e-05", "negative zero": "0", "whole beyond 1e16": "100000000000000000",
        "exponent": "~", "padded": "~"}
    assert all(s == "" for k, s in slots.items() if not isinstance(line[11][k], float))
    assert line[15] == {}, "the span's floats are no longer named in a map"
    assert line[14] == [{"service.name": "svc", "k": "3", **{k: v for k, v in line[14][0].items()
                                                             if k not in ("service.name", "k")}}, "genops.proxy", "1.2"]
    assert math.isfinite(line[1])


@pytest.mark.parametrize("payloads", [
    [b""], [b"header"], [b"header\n"], [b"header\n\n\n"], [b"\nline"], [b"\n\nline\n"],
    [b"h1\n[1]\n[2]\n", b"h2\n[3]\n", b"h3", b"h4\n\n[4]\n\n", bytearray(b"h5\n[5]")],
])
def test_the_lines_of_a_group_are_each_batch_s_lines_without_its_header(payloads: list[bytes]) -> None:
    """lines_of views each batch in place; the reference is each batch's text after its header
    line with its newlines at both ends stripped, batches joined by one newline."""
    from genops.storage.span_batch_sql import lines_of

    reference = [bytes(p).partition(b"\n")[2].strip(b"\n") for p in payloads]
    assert lines_of(payloads) == b"\n".join(body for body in reference if body)
