"""The disk spool on its own (order, restart recovery, torn writes, drop-oldest, locking) and 503 shedding."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from genops.collectors.receiver import create_receiver_app
from genops.config import Settings
from genops.storage.pipeline import SpanPipeline
from genops.storage.spool import Spool, SpoolLocked

pytestmark = pytest.mark.integration


def drain(spool: Spool) -> list[tuple[bytes, str]]:
    out = []
    while (head := spool.peek()) is not None:
        record, payload = head
        out.append((payload, record.token))
        spool.ack(record)
    return out


def test_batches_come_back_in_order_across_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16, cache_bytes=0)
    tokens = [spool.append(f"batch-{i}".encode() * 500, 500).token for i in range(40)]  # several segments
    for _ in range(5):  # the first five are stored
        record, _payload = spool.peek()
        spool.ack(record)
    spool.close()  # a crash or SIGTERM: the rest stays on disk

    reopened = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    assert reopened.pending_batches == 35 and reopened.pending_spans == 35 * 500
    replayed = drain(reopened)
    assert [payload for payload, _ in replayed] == [f"batch-{i}".encode() * 500 for i in range(5, 40)]
    assert [token for _, token in replayed] == tokens[5:]  # same dedup token as the first attempt
    reopened.close()
    assert Spool(tmp_path, max_bytes=1 << 20).pending_batches == 0
    assert len(list(tmp_path.glob("*.seg"))) <= 1  # acknowledged segments are deleted


def test_a_torn_last_record_is_ignored(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append(b"whole", 1)
    spool.append(b"torn-record-payload", 1)
    spool.close()
    segment = next(tmp_path.glob("*.seg"))
    segment.write_bytes(segment.read_bytes()[:-5])  # a SIGKILL in the middle of the write
    reopened = Spool(tmp_path, max_bytes=1 << 20)
    assert [payload for payload, _ in drain(reopened)] == [b"whole"]
    reopened.close()


def test_full_spool_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 18, segment_bytes=1 << 16)
    for i in range(40):
        spool.append(bytes([i]) * 20_000, 10)
    assert spool.bytes_on_disk <= 1 << 18
    assert spool.dropped_spans > 0
    kept = drain(spool)
    assert spool.dropped_spans + 10 * len(kept) == 400
    first_kept = kept[0][0][0]
    assert [payload[0] for payload, _ in kept] == list(range(first_kept, 40))  # the newest survive, in order
    spool.close()


def test_one_process_per_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    with pytest.raises(SpoolLocked):
        Spool(tmp_path, max_bytes=1 << 20)
    spool.close()
    Spool(tmp_path, max_bytes=1 << 20).close()


async def test_receiver_sheds_load_with_503_and_retry_after(tmp_path: Path) -> None:
    """When the export queue is full the receiver answers 503 + Retry-After and keeps nothing."""
    pipeline = SpanPipeline(sink=None, spool=Spool(tmp_path, max_bytes=1 << 20), queue_size=16)  # not started
    app = create_receiver_app(Settings(data_dir=str(tmp_path)), pipeline)
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    def request(n: int) -> bytes:
        spans = [Span(trace_id=bytes([1]) * 16, span_id=bytes([i + 1]) * 8, name="s") for i in range(n)]
        return ExportTraceServiceRequest(
            resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])]).SerializeToString()

    async with TestClient(TestServer(app)) as client:
        ok = await client.post("/v1/traces", data=request(10), headers={"Content-Type": "application/x-protobuf"})
        assert ok.status == 200
        shed = await client.post("/v1/traces", data=request(10), headers={"Content-Type": "application/x-protobuf"})
        assert shed.status == 503
        assert shed.headers["Retry-After"] == "1"
    assert pipeline.queued == 10
    pipeline.spool.close()


def test_each_batch_keeps_its_kind_across_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append(b'{"SpanName": "a"}', 1)
    spool.append(b"\x05span!", 1, "otlp-span-rows")
    spool.close()
    reopened = Spool(tmp_path, max_bytes=1 << 20)
    kinds = []
    while (head := reopened.peek()) is not None:
        kinds.append((head[0].kind, head[1]))
        reopened.ack(head[0])
    assert kinds == [("json", b'{"SpanName": "a"}'), ("otlp-span-rows", b"\x05span!")]
    reopened.close()


async def test_receiver_sheds_clickhouse_decoded_requests_with_503_too(tmp_path: Path) -> None:
    """SpanRow payloads have their own bound (two batches); past it: 503, nothing kept."""
    pipeline = SpanPipeline(sink=None, spool=Spool(tmp_path, max_bytes=1 << 20), queue_size=16,
                            payload_batch_spans=10)  # not started: nothing drains
    pipeline.native_otlp = True
    app = create_receiver_app(Settings(data_dir=str(tmp_path)), pipeline)
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    body = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[
        Span(trace_id=bytes([1]) * 16, span_id=bytes([i + 1]) * 8, name="s") for i in range(10)])])]).SerializeToString()
    async with TestClient(TestServer(app)) as client:
        statuses = []
        for _ in range(3):
            response = await client.post("/v1/traces", data=body, headers={"Content-Type": "application/x-protobuf"})
            statuses.append(response.status)
        assert statuses == [200, 200, 503]
    assert pipeline.queued == 20 and pipeline.counters.received == {"otlp": 20}
    pipeline.spool.close()



@pytest.mark.parametrize("cached", [True, False])
def test_a_full_spool_keeps_the_batch_whose_insert_was_tried_and_counts_exactly_what_it_drops(
        tmp_path: Path, cached: bool) -> None:
    """dropped_spans == spans written - spans stored.

    The oldest batch is the one the sender is inserting (or retrying): that insert may land
    (or have landed: a timeout, a store killed mid-insert). Dropping and counting it over-counted
    by a batch whenever it did. It is kept instead (in memory once its segment is gone) until
    its retry, with the same token, is acknowledged.
    """
    spool = Spool(tmp_path, max_bytes=1 << 18, segment_bytes=1 << 16, cache_bytes=(64 << 20) if cached else 0)
    written = stored = 0
    for i in range(3):
        spool.append(bytes([i]) * 20_000, 10)
        written += 10
    record, payload = spool.peek()  # the sender takes the oldest batch...
    assert payload[:1] == b"\x00"
    for i in range(3, 20):  # ... and while it inserts it (or waits to retry), new batches fill the spool
        spool.append(bytes([i]) * 20_000, 10)
        written += 10
    assert spool.bytes_on_disk <= 1 << 18
    assert not (tmp_path / f"{record.segment:016d}.seg").exists(), "its segment was dropped"
    assert spool.dropped_spans == 20 + 30 * ((spool.dropped_spans - 20) // 30), "with the others of its segment"
    again, payload = spool.peek()  # its insert failed: the retry gets it from memory
    assert again is record and payload == bytes([0]) * 20_000
    spool.ack(record)
    stored += record.spans
    rest = drain(spool)
    stored += 10 * len(rest)
    assert [p[0] for p, _ in rest] == list(range(20 - len(rest), 20)), "the newest kept, in order"
    assert spool.dropped_spans == written - stored
    spool.close()
    reopened = Spool(tmp_path, max_bytes=1 << 18)
    assert reopened.pending_batches == 0, "nothing left for a replay"
    reopened.close()


def test_a_kept_batch_whose_segment_was_dropped_is_replayed_first_after_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 18, segment_bytes=1 << 16)
    for i in range(20):
        spool.append(bytes([i]) * 20_000, 10)
        if i == 2:
            record, _ = spool.peek()  # its insert is tried (and fails) while the spool fills up
    pending = spool.pending_spans
    spool.close()  # shutdown: it is not on disk any more, so it is written back
    reopened = Spool(tmp_path, max_bytes=1 << 18, segment_bytes=1 << 16)
    assert reopened.pending_spans == pending
    replayed = drain(reopened)
    assert replayed[0] == (bytes([0]) * 20_000, record.token), "first, with its token"
    assert [p[0] for p, _ in replayed[1:]] == list(range(20 - len(replayed) + 1, 20))
    reopened.close()
