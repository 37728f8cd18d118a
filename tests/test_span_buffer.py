"""Encoded span lines in reusable chunks; a worker's batches handed to the store directly, the spool
taking only what the hand-off could not."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from genops.proxy.recorder import SpanRecorder
from genops.storage.pipeline import SpanPipeline
from genops.storage.sinks import SPANS, Sink
from genops.storage.span_batch import json_rows
from genops.storage.span_buffer import SpanBuffer
from genops.storage.spool import FileRegion, Spool

pytestmark = pytest.mark.unit


def joined(parts: list[Any]) -> bytes:
    return b"".join(bytes(part) for part in parts)


def test_batches_hold_every_line_once_in_order_across_chunks() -> None:
    buffer = SpanBuffer(batch_size=7, limit=1000, chunk_bytes=64)
    lines = [(b"line-%d-" % i) * (i % 5 + 1) for i in range(30)]  # 7-40 bytes: lines cross chunk ends
    lines.insert(11, b"h" * 200)  # longer than a chunk: its own part
    assert all(buffer.add(line) for line in lines)
    assert buffer.full_batches == 4 and buffer.count == 31
    batches = buffer.take(everything=False)
    assert [b.spans for b in batches] == [7, 7, 7, 7] and buffer.count == 3
    rest = buffer.take(everything=True)
    assert [b.spans for b in rest] == [3] and buffer.count == 0
    out = b"".join(joined(b.parts) for b in batches + rest)
    assert out == b"".join(line + b"\n" for line in lines)


def test_released_chunks_are_reused_and_the_limit_refuses_lines() -> None:
    buffer = SpanBuffer(batch_size=100, limit=5, chunk_bytes=64)
    assert all(buffer.add(b"x" * 20) for _ in range(5))
    assert not buffer.add(b"y"), "a sixth line is over the limit"
    (batch,) = buffer.take(everything=True)
    chunks = [id(c) for c in batch.chunks]
    assert len(chunks) == 2  # three 21-byte lines fit a 64-byte chunk
    buffer.release(batch)
    assert batch.parts == [] and batch.chunks == []
    assert buffer.add(b"z" * 20)  # room again
    (again,) = buffer.take(everything=True)
    assert id(again.chunks[0]) in chunks, "a released chunk is used again, not a new allocation"
    assert joined(again.parts) == b"z" * 20 + b"\n"


def test_a_batch_spooled_as_parts_reads_back_as_its_bytes(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    parts = [b"head\n", memoryview(bytearray(b"0123456789"))[2:8], b"tail\n"]
    record = spool.append(parts, 3, SPANS, token="t" * 32)
    assert record.payload is None, "parts are the caller's to reuse: read back from disk"
    assert spool.peek() == (record, b"head\n234567tail\n") and record.token == "t" * 32
    _, region = spool.peek(regions=True)  # for sendfile: where it is, not what it is
    assert isinstance(region, FileRegion) and len(region) == 16 and region.read() == b"head\n234567tail\n"
    cached = Spool(tmp_path / "cached", max_bytes=1 << 20)
    cached.append(b"whole\n", 1, SPANS)
    assert cached.peek(regions=True)[1] == b"whole\n", "a payload still in memory comes as bytes"
    cached.close()
    spool.close()
    reopened = Spool(tmp_path, max_bytes=1 << 20)  # the checksum covers all the parts
    (replayed, payload) = reopened.peek()
    assert payload == b"head\n234567tail\n" and replayed.token == "t" * 32 and replayed.kind == SPANS
    reopened.close()


class Collect(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def spans(n: int) -> list[ReadableSpan]:
    sink = Collect()
    recorder = SpanRecorder(Resource.create({"service.name": "svc"}), InstrumentationScope("genops.proxy", "1"), [sink])
    for i in range(n):
        span = recorder.start_span(f"chat m{i}")
        span.set_attributes({"genops.request.id": f"req-{i}"})
        span.end()
    return sink.spans


class StoreSink(Sink):
    """The store process's side as the worker sees it: stores a batch, or refuses while down."""

    accepts_parts = True

    def __init__(self) -> None:
        self.down = False
        self.kinds: list[str] = []
        self.by_token: dict[str, list[str]] = {}
        self.part_lists = 0
        self.lock = threading.Lock()

    def insert(self, payload: Any, token: str, kind: str = "json", spans: int = 0) -> None:
        if self.down:
            raise ConnectionRefusedError("store down")
        if not isinstance(payload, bytes):
            self.part_lists += 1
            payload = joined(payload)
        ids = [orjson.loads(row)["SpanAttributes"]["genops.request.id"] for row in json_rows(payload).split(b"\n")]
        with self.lock:
            self.kinds.append(kind)
            self.by_token.setdefault(token, ids)  # a token stored twice is stored once (ClickHouse dedup)

    def stored(self) -> list[str]:
        return [i for ids in self.by_token.values() for i in ids]


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_without_write_ahead_batches_go_straight_to_the_store(tmp_path: Path) -> None:
    store = StoreSink()
    spool = Spool(tmp_path, max_bytes=1 << 24)
    pipeline = SpanPipeline(store, spool, batch_size=50, interval_s=0.05, write_ahead=False)
    pipeline.start()
    try:
        sent = spans(120)
        for start in (0, 50, 100):  # one batch at a time, as a steady rate cuts them
            assert pipeline.submit_sdk_spans(sent[start:start + 50]) == len(sent[start:start + 50])
            wait_for(lambda start=start: pipeline.counters.exported == min(start + 50, 120))
        assert sorted(store.stored()) == sorted(f"req-{i}" for i in range(120))
        assert store.part_lists == len(store.kinds) == 3 and set(store.kinds) == {SPANS}
        assert pipeline.counters.spooled == 0 and spool.pending_batches == 0, "nothing went through the disk"
    finally:
        pipeline.shutdown(2.0)


def test_without_write_ahead_a_down_store_gets_everything_from_the_spool_once(tmp_path: Path) -> None:
    store = StoreSink()
    store.down = True
    spool = Spool(tmp_path / "spool", max_bytes=1 << 24)
    pipeline = SpanPipeline(store, spool, batch_size=40, interval_s=0.05, write_ahead=False,
                            backoff_initial_s=0.05, backoff_max_s=0.1)
    pipeline.start()
    pipeline.submit_sdk_spans(spans(100))
    wait_for(lambda: pipeline.counters.spooled == 100)
    assert pipeline.counters.export_failures >= 1 and spool.pending_spans == 100
    store.down = False
    wait_for(lambda: pipeline.counters.exported == 100)
    assert sorted(store.stored()) == sorted(f"req-{i}" for i in range(100))
    assert pipeline.counters.replayed == 100
    pipeline.shutdown(2.0)


def test_without_write_ahead_shutdown_spools_what_the_store_did_not_take(tmp_path: Path) -> None:
    store = StoreSink()
    store.down = True
    pipeline = SpanPipeline(store, Spool(tmp_path, max_bytes=1 << 24), batch_size=1000, interval_s=60,
                            write_ahead=False, backoff_initial_s=5, backoff_max_s=5)
    pipeline.start()
    pipeline.submit_sdk_spans(spans(30))
    pipeline.shutdown(0.5)  # the store is down: nothing can be handed on
    reopened = Spool(tmp_path, max_bytes=1 << 24)
    assert reopened.pending_spans == 30, "kept for the next start"
    record, payload = reopened.peek()
    assert record.kind == SPANS
    assert sorted(orjson.loads(row)["SpanAttributes"]["genops.request.id"] for row in json_rows(payload).split(b"\n")) \
        == sorted(f"req-{i}" for i in range(30))
    reopened.close()


def test_spare_chunks_shrink_back_after_a_burst() -> None:
    buffer = SpanBuffer(batch_size=1000, limit=10_000, chunk_bytes=64)
    for _ in range(40):  # a burst: one batch of 20 chunks
        buffer.add(b"b" * 30)
    (burst,) = buffer.take(everything=True)
    assert len(burst.chunks) == 20
    buffer.release(burst)
    assert buffer.pooled_chunks == 20, "kept while recent batches needed that many"
    for _ in range(8):  # then quiet batches of one chunk each, as many as the window remembers
        buffer.add(b"q" * 30)
        (quiet,) = buffer.take(everything=True)
        buffer.release(quiet)
    assert buffer.pooled_chunks == 1, "the burst's chunks are unmapped once no recent batch needed them"
    assert buffer.add(b"again") and joined(buffer.take(everything=True)[0].parts) == b"again\n"


class HungStore(StoreSink):
    """Takes a batch, then answers only when released (a store process stuck in an insert)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.answer = threading.Event()

    def insert(self, payload: Any, token: str, kind: str = "json", spans: int = 0) -> None:
        self.entered.set()
        self.answer.wait(10)
        super().insert(payload, token, kind, spans)


def test_a_hand_off_stuck_past_shutdown_is_spooled_with_its_token(tmp_path: Path) -> None:
    store = HungStore()
    pipeline = SpanPipeline(store, Spool(tmp_path, max_bytes=1 << 24), batch_size=1000, interval_s=0.05,
                            write_ahead=False)
    pipeline.start()
    pipeline.submit_sdk_spans(spans(25))
    assert store.entered.wait(5), "the batch was handed on"
    pipeline.shutdown(0.3)  # the store has not answered by the deadline
    store.answer.set()  # ... and then does: that copy lands too
    wait_for(lambda: len(store.by_token) == 1)
    reopened = Spool(tmp_path, max_bytes=1 << 24)
    record, payload = reopened.peek()
    assert reopened.pending_spans == 25, "kept for the next start"
    assert list(store.by_token) == [record.token], "same token: the replay is dropped as a duplicate"
    assert sorted(orjson.loads(row)["SpanAttributes"]["genops.request.id"] for row in json_rows(payload).split(b"\n")) \
        == sorted(store.stored())
    reopened.close()


def test_batches_cut_while_a_hand_off_is_stuck_wait_on_disk_and_go_out_in_order(tmp_path: Path) -> None:
    """A worker holds one batch in memory for the store; the rest of a slow spell goes to its spool."""
    store = HungStore()
    spool = Spool(tmp_path, max_bytes=1 << 24)
    pipeline = SpanPipeline(store, spool, batch_size=20, interval_s=0.05, write_ahead=False)
    pipeline.start()
    sent = spans(80)
    try:
        pipeline.submit_sdk_spans(sent[:20])
        assert store.entered.wait(5), "the first batch is being handed on"
        for start in (20, 40, 60):  # three more batches while the store has not answered
            pipeline.submit_sdk_spans(sent[start:start + 20])
            wait_for(lambda start=start: pipeline.counters.spooled == start)
        assert spool.pending_spans == 60 and pipeline.queued == 20, "only the batch in flight is in memory"
        store.answer.set()
        wait_for(lambda: pipeline.counters.exported == 80)
        assert store.stored() == [f"req-{i}" for i in range(80)], "in order, each once"
        assert spool.pending_batches == 0
    finally:
        store.answer.set()
        pipeline.shutdown(2.0)
