"""The sender's retries against a real store (in-process chDB): probing during a backoff, the
gate on a store not migrated yet, and an exact drop counter when the spool is full.

Each backoff here is an hour: a batch that lands within the test did so because a probe
cut the backoff short, not because the backoff ended (the waits are hang guards only).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import open_chdb
from test_forward import store_and_worker, stored_ids, tagged
from test_span_buffer import wait_for

from genops.storage.migrate import migrate
from genops.storage.pipeline import SpanPipeline
from genops.storage.sinks import ClickHouseSink
from genops.storage.spool import Spool

pytestmark = pytest.mark.integration

HOUR = 3600.0


@pytest.fixture(scope="module")
def database(chdb_dir: Path) -> Iterator[tuple[Any, str]]:
    client = open_chdb(chdb_dir)
    name = "retry_" + uuid.uuid4().hex[:8]
    migrate(client, name)
    yield client, name
    client.command(f"DROP DATABASE IF EXISTS {name}")


class CountingSink(ClickHouseSink):
    """The real sink, counting the probes it answers."""

    def __init__(self, client: Any, database: str) -> None:
        super().__init__(client, database)
        self.pings = 0

    def ping(self) -> bool:
        self.pings += 1
        return super().ping()


def test_a_store_not_migrated_yet_gets_no_insert_and_the_spool_drains_once_it_is(database, tmp_path: Path) -> None:
    client, name = database
    run = uuid.uuid4().hex
    sink = CountingSink(None, name)  # no client yet: the store is not reachable or not migrated
    pipeline = SpanPipeline(sink, Spool(tmp_path, max_bytes=1 << 24), batch_size=40, interval_s=0.05,
                            backoff_initial_s=HOUR, backoff_max_s=HOUR, probe_interval_s=0.05)
    pipeline.start()
    try:
        pipeline.submit_sdk_spans(tagged(100, run))
        wait_for(lambda: pipeline.counters.spooled == 100 and pipeline.counters.export_failures >= 1)
        wait_for(lambda: sink.pings >= 3)  # probing, not inserting
        assert pipeline.counters.export_failures == 1, "one try, then only probes while the store is not there"
        assert pipeline.failing and "not migrated" in pipeline.last_error
        sink.attach(client)  # the store answers and is migrated (StoreBoot does this)
        wait_for(lambda: pipeline.counters.exported == 100)
        assert sorted(stored_ids(client, name, run)) == sorted(f"req-{i}" for i in range(100)), "each span once"
        assert pipeline.counters.export_failures == 1 and not pipeline.failing
        assert pipeline.spool.pending_batches == 0
    finally:
        pipeline.shutdown(1.0)


def test_a_store_that_answers_but_refuses_the_insert_keeps_the_full_backoff(database, tmp_path: Path) -> None:
    """The probe cuts a backoff short only for a store that was not answering: one that answers and
    still fails the insert (overloaded, refusing the batch) is not sent a batch every probe."""
    client, _ = database
    sink = CountingSink(client, "no_such_database_" + uuid.uuid4().hex[:6])  # every insert fails, ping works
    pipeline = SpanPipeline(sink, Spool(tmp_path, max_bytes=1 << 24), batch_size=40, interval_s=0.05,
                            backoff_initial_s=HOUR, backoff_max_s=HOUR, probe_interval_s=0.05)
    pipeline.start()
    try:
        pipeline.submit_sdk_spans(tagged(40, uuid.uuid4().hex))
        wait_for(lambda: pipeline.counters.export_failures >= 1)
        wait_for(lambda: sink.pings >= 5)
        assert pipeline.counters.export_failures == 1, "the store answered every probe: no early retry"
        assert pipeline.spool.pending_spans == 40
    finally:
        pipeline.shutdown(0.2)


class HeldSink(ClickHouseSink):
    """The real insert, held until ``gate`` opens (a store slowly coming back)."""

    def __init__(self, client: Any, database: str) -> None:
        super().__init__(client, database)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def insert(self, payload: bytes, token: str, kind: str = "json", spans: int = 0) -> None:
        self.entered.set()
        assert self.gate.wait(30)
        super().insert(payload, token, kind, spans)


def test_a_full_spool_during_a_slow_insert_counts_exactly_the_spans_lost(database, tmp_path: Path) -> None:
    """dropped == spans sent - rows stored, when the segment a full spool drops holds the batch
    being inserted and that insert lands (it used to be counted dropped and stored: one batch over)."""
    client, name = database
    run = uuid.uuid4().hex
    sink = HeldSink(client, name)
    spool = Spool(tmp_path, max_bytes=1 << 18, segment_bytes=1 << 16)  # ~16 KB a batch, 4 a segment
    pipeline = SpanPipeline(sink, spool, batch_size=100, interval_s=0.05)
    pipeline.start()
    try:
        sent = tagged(3000, run)
        pipeline.submit_sdk_spans(sent[:100])
        assert sink.entered.wait(10), "the first batch is being inserted"
        for start in range(100, 3000, 100):  # meanwhile the spool fills and drops its oldest segments
            pipeline.submit_sdk_spans(sent[start:start + 100])
            wait_for(lambda start=start: pipeline.counters.spooled == start + 100)
        assert spool.dropped_spans > 0, "the spool overflowed"
        sink.gate.set()
        wait_for(lambda: spool.pending_batches == 0 and not pipeline.queued)
        stored = stored_ids(client, name, run)
        assert len(stored) == len(set(stored)), "each stored once"
        assert "req-0" in stored, "the batch in flight landed"
        assert spool.dropped_spans == len(sent) - len(stored)
    finally:
        sink.gate.set()
        pipeline.shutdown(2.0)


@pytest.mark.parametrize("probe_interval_s", [0.05, 2.0], ids=["a probe sees it full first", "room before the first probe"])
def test_a_worker_hands_on_as_soon_as_the_store_process_has_room(database, tmp_path: Path, probe_interval_s: float) -> None:
    """A worker probes the store process (GET on its ingest path) instead of sleeping through its backoff.

    A refusal for want of room (429) is what a probe would have found: with a 2 s probe interval the
    store empties its backlog before the worker's first probe, and that probe retries at once. (Only a
    probe that had seen the store full used to cut the backoff short: the worker then waited out its
    whole backoff, an hour here.)
    """
    client, name = database
    run = uuid.uuid4().hex
    with store_and_worker(client, name, tmp_path, store_cache_bytes=1024, batch_size=30, backoff_initial_s=HOUR,
                          backoff_max_s=HOUR, probe_interval_s=probe_interval_s) as (sink, store, worker):
        worker.submit_sdk_spans(tagged(30, run))
        wait_for(lambda: store.spool.pending_spans == 30)  # its backlog (one batch) is full now
        worker.submit_sdk_spans(tagged(60, run)[30:])
        wait_for(lambda: worker.counters.spooled == 30 and worker.counters.export_failures == 1)
        sink.gate.set()  # the store inserts its backlog: room again
        wait_for(lambda: store.counters.exported == 30)
        wait_for(lambda: store.counters.exported == 60 and worker.spool.pending_batches == 0)
        assert worker.counters.export_failures == 1
        assert sorted(stored_ids(client, name, run)) == sorted(f"req-{i}" for i in range(60)), "each span once"
