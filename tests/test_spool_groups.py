"""Batches inserted as one group: the spool re-forms exactly the same group (same records, same
token) for a retry and for a replay after a restart, caps a group, remembers what it acknowledged,
and a lingering group never makes the spool drop or refuse a batch."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from genops.storage.pipeline import SpanPipeline
from genops.storage.sinks import GROUPED_KINDS, JSON, SPAN_ROWS, SPANS, Sink
from genops.storage.spool import ACKED, CURSOR, Spool, group_token

pytestmark = pytest.mark.integration


def spool_of(path: Path, batches: int, kind: str = SPANS, **options: int) -> tuple[Spool, list[str]]:
    spool = Spool(path, max_bytes=options.pop("max_bytes", 1 << 24), **options)
    return spool, [spool.append(f"batch-{i}\n".encode() * 10, 10, kind).token for i in range(batches)]


def test_a_group_is_the_consecutive_batches_of_one_kind_up_to_its_caps(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 24)
    for kind in (SPANS, SPANS, SPANS, JSON, SPAN_ROWS, SPAN_ROWS):
        spool.append(b"rows\n" * 10, 10, kind)
    records, payloads = spool.peek_group(25, GROUPED_KINDS)
    assert [r.kind for r in records] == [SPANS, SPANS] and payloads == [b"rows\n" * 10] * 2  # 25 spans: two of 10
    spool.ack(records)
    records, _ = spool.peek_group(100, GROUPED_KINDS)
    assert [r.kind for r in records] == [SPANS]  # a JSON batch behind it starts the next group
    spool.ack(records)
    records, _ = spool.peek_group(100, GROUPED_KINDS)
    assert [r.kind for r in records] == [JSON]
    spool.ack(records)
    records, _ = spool.peek_group(100, GROUPED_KINDS)
    assert [r.kind for r in records] == [SPAN_ROWS]  # not a kind that goes in groups: one at a time
    spool.ack(records)
    spool.append(b"x" * 1000, 1, SPANS)
    spool.append(b"x" * 1000, 1, SPANS)
    spool.ack(spool.peek_group(100, GROUPED_KINDS)[0])
    records, _ = spool.peek_group(100, GROUPED_KINDS, max_bytes=1500)  # the bytes cap
    assert len(records) == 1
    spool.close()


def test_a_failed_group_is_retried_as_exactly_that_group_with_its_token(tmp_path: Path) -> None:
    spool, tokens = spool_of(tmp_path, 3)
    records, _ = spool.peek_group(1000, GROUPED_KINDS)
    token = group_token(records)
    assert len(records) == 3 and len(token) == 32 and token not in tokens
    spool.append(b"later\n", 1, SPANS)  # came while the insert failed: not in the retry
    again, _ = spool.peek_group(1000, GROUPED_KINDS)
    assert again == records and group_token(again) == token
    spool.ack(again)
    rest, payloads = spool.peek_group(1000, GROUPED_KINDS)
    assert payloads == [b"later\n"] and group_token(rest) == rest[0].token  # one batch keeps its own token
    spool.close()


def test_a_group_tried_before_a_crash_is_replayed_as_that_group(tmp_path: Path) -> None:
    spool, _ = spool_of(tmp_path, 3)
    records, _ = spool.peek_group(1000, GROUPED_KINDS)
    token = group_token(records)
    assert (tmp_path / CURSOR).read_text().split()[2] == "3", "the group's size is on disk before its insert"
    spool.append(b"later\n", 1, SPANS)
    spool.close()  # the insert may have landed; its acknowledgement did not

    reopened = Spool(tmp_path, max_bytes=1 << 24)
    replayed, payloads = reopened.peek_group(1000, GROUPED_KINDS)
    assert group_token(replayed) == token and payloads == [f"batch-{i}\n".encode() * 10 for i in range(3)]
    reopened.ack(replayed)
    assert (tmp_path / CURSOR).read_text().split()[2:] == [], "acknowledged: no group pending"
    reopened.close()
    assert [p for p in (Spool(tmp_path, max_bytes=1 << 24).peek_group(1000, GROUPED_KINDS) or ((), ()))[1]] == [
        b"later\n"]


def test_a_batch_tried_alone_before_a_crash_is_replayed_alone(tmp_path: Path) -> None:
    """A spool written before groups existed, or whose head was tried alone: its first batch goes
    alone with its own token (its insert may have landed under that token)."""
    spool, tokens = spool_of(tmp_path, 3)
    record, _ = spool.peek()
    spool.close()
    reopened = Spool(tmp_path, max_bytes=1 << 24)
    first, _ = reopened.peek_group(1000, GROUPED_KINDS)
    assert [r.token for r in first] == tokens[:1] == [record.token]
    reopened.ack(first)
    rest, _ = reopened.peek_group(1000, GROUPED_KINDS)
    assert [r.token for r in rest] == tokens[1:]  # then free to group
    reopened.close()


def test_a_full_spool_keeps_a_whole_group_being_inserted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 16, segment_bytes=1 << 14)
    group = [spool.append(f"g{i}".encode() * 2000, 1, SPANS) for i in range(3)]
    records, _ = spool.peek_group(1000, GROUPED_KINDS)
    assert records == group
    for i in range(40):  # the outage goes on: the spool drops the oldest, never the group
        spool.append(f"n{i}".encode() * 2000, 1, SPANS)
    assert spool.dropped_spans > 0
    again, payloads = spool.peek_group(1000, GROUPED_KINDS)
    assert again == group and payloads == [f"g{i}".encode() * 2000 for i in range(3)]
    spool.close()  # the kept group goes back on disk, first in line
    reopened = Spool(tmp_path, max_bytes=1 << 16, segment_bytes=1 << 14)
    replayed, payloads = reopened.peek_group(1000, GROUPED_KINDS)
    assert group_token(replayed) == group_token(group) and payloads == [f"g{i}".encode() * 2000 for i in range(3)]
    reopened.close()


def test_a_batch_bigger_than_the_whole_spool_is_written_without_hanging(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append(b"small", 1, SPANS)
    writer = threading.Thread(target=spool.append, args=(b"x" * (1 << 20), 5, SPANS), daemon=True)
    writer.start()
    writer.join(30)
    assert not writer.is_alive(), "dropping older segments never ends"
    assert spool.pending_spans == 5 and spool.dropped_spans == 1
    spool.close()


def test_acknowledged_tokens_are_remembered_across_a_restart_up_to_a_bound(tmp_path: Path) -> None:
    spool, tokens = spool_of(tmp_path, 8, remember_tokens=3)
    assert all(spool.knows(t) for t in tokens), "pending batches are known"
    for _ in range(4):
        records, _ = spool.peek_group(20, GROUPED_KINDS)  # two at a time
        spool.ack(records)
    assert [spool.knows(t) for t in tokens] == [False] * 5 + [True] * 3
    spool.close()
    reopened = Spool(tmp_path, max_bytes=1 << 24, remember_tokens=3)
    assert [reopened.knows(t) for t in tokens] == [False] * 5 + [True] * 3
    assert len((tmp_path / ACKED).read_text().split()) <= 6, "the file is compacted"
    assert not reopened.knows("0" * 32)
    reopened.close()


def test_lingering_waits_for_the_oldest_batch_but_never_past_a_bound(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, cache_bytes=1 << 20)
    assert spool.group_wait(GROUPED_KINDS, 100, 5.0) is None
    spool.append(b"a" * 1000, 10, SPANS)
    wait = spool.group_wait(GROUPED_KINDS, 100, 5.0)
    assert wait is not None and 4.0 < wait <= 5.0
    time.sleep(0.05)
    assert spool.group_wait(GROUPED_KINDS, 100, 5.0) < wait, "the linger counts from the oldest batch"
    assert spool.group_wait(GROUPED_KINDS, 10, 5.0) == 0, "the spans cap reached: due now"
    assert spool.group_wait(GROUPED_KINDS, 100, 0.0) == 0
    spool.append(b"b" * (300 << 10), 1, SPANS)  # over a quarter of the spool: due, before it would drop
    assert spool.group_wait(GROUPED_KINDS, 100, 5.0) == 0
    spool.ack(spool.peek_group(100, GROUPED_KINDS)[0])
    spool.append(b"c", 1, SPAN_ROWS)
    assert spool.group_wait(GROUPED_KINDS, 100, 5.0) == 0, "a kind that is not grouped goes at once"
    spool.close()
    reopened = Spool(tmp_path, max_bytes=1 << 20)
    assert reopened.group_wait(GROUPED_KINDS, 100, 5.0) == 0, "found at start: due at once"
    reopened.close()


def test_a_group_replayed_to_a_sink_that_takes_no_groups_goes_batch_by_batch(tmp_path: Path) -> None:
    """The spool changed hands (the proxy now exports to a collector): the group it was inserting
    goes one batch at a time, each with its own token, instead of failing forever."""
    spool, tokens = spool_of(tmp_path, 3)
    spool.peek_group(1000, GROUPED_KINDS)
    spool.close()

    class OneAtATime(Sink):
        def __init__(self) -> None:
            self.tokens: list[str] = []

        def insert(self, payload: object, token: str, kind: str = JSON, spans: int = 0) -> None:
            self.tokens.append(token)

    sink = OneAtATime()
    pipeline = SpanPipeline(sink, Spool(tmp_path, max_bytes=1 << 24), backoff_initial_s=0.01, backoff_max_s=0.01)
    pipeline.start()
    try:
        assert pipeline.flush(10)
        assert sink.tokens == tokens
    finally:
        pipeline.shutdown(5)
