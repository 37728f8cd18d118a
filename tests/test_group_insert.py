"""The store inserts a worker's consecutive hand-offs as one group (one ClickHouse insert for
several batches), exactly once: a group whose insert landed but whose answer was lost is
retried, and replayed after a crash, as the same group with the same token, and a worker's
batch handed in again after its group was inserted is not stored twice. Real chDB throughout."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import open_chdb
from test_forward import SECRET, StoreServer, stored_ids, tagged
from test_span_buffer import wait_for

from genops.storage.forward import ForwardingSink
from genops.storage.migrate import migrate
from genops.storage.pipeline import SpanPipeline
from genops.storage.rows import json_rows_payload, span_to_json_row
from genops.storage.sinks import JSON, SPANS, ClickHouseSink
from genops.storage.spool import Spool

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def database(chdb_dir: Path) -> Iterator[tuple[Any, str]]:
    client = open_chdb(chdb_dir)
    name = "groups_" + uuid.uuid4().hex[:8]
    migrate(client, name)
    yield client, name
    client.command(f"DROP DATABASE IF EXISTS {name}")


class LosingSink(ClickHouseSink):
    """The real insert; then, ``lose`` times, an error as if the store's answer never came."""

    def __init__(self, client: Any, database: str, lose: int = 0) -> None:
        super().__init__(client, database)
        self.lose = lose
        self.inserts: list[tuple[str, int]] = []  # (token, batches)
        self.payloads: list[bytes] = []

    def insert_group(self, payloads: Sequence[bytes], token: str, kind: str, spans: int) -> None:
        super().insert_group(payloads, token, kind, spans)
        self.inserts.append((token, len(payloads)))
        self.payloads += payloads
        if self.lose:
            self.lose -= 1
            raise TimeoutError("the insert's answer was lost")


@contextmanager
def store_and_worker(sink: ClickHouseSink, spool_dir: Path, linger_s: float) -> Iterator[tuple[SpanPipeline, SpanPipeline]]:
    store = SpanPipeline(sink, Spool(spool_dir, max_bytes=1 << 26, remember_tokens=100), batch_size=1000,
                         insert_linger_s=linger_s, backoff_initial_s=0.05, backoff_max_s=0.1, probe_interval_s=0.05)
    store.start()
    server = StoreServer(store)
    worker = SpanPipeline(ForwardingSink(server.url, SECRET), Spool(spool_dir.parent / "worker", max_bytes=1 << 24),
                          batch_size=40, interval_s=0.05, write_ahead=False)
    worker.start()
    try:
        yield store, worker
    finally:
        worker.shutdown(5)
        server.close()
        store.shutdown(1)


def hand_off(worker: SpanPipeline, run: str, batches: int) -> None:
    sent, before = tagged(40 * batches, run), worker.counters.exported
    for start in range(0, len(sent), 40):
        worker.submit_sdk_spans(sent[start:start + 40])
        wait_for(lambda start=start: worker.counters.exported == before + start + 40)  # handed on, one batch each


def test_hand_offs_linger_then_go_as_one_insert(database, tmp_path: Path) -> None:
    client, name = database
    run = uuid.uuid4().hex
    sink = LosingSink(client, name)
    with store_and_worker(sink, tmp_path / "store", linger_s=600) as (store, worker):
        hand_off(worker, run, 3)
        assert store.spool.pending_batches == 3 and store.counters.exported == 0, "they linger"
        assert stored_ids(client, name, run) == []
        store.sender.linger_s = 0.01  # the oldest has now lingered long enough
        store.sender.wake()
        wait_for(lambda: store.counters.exported == 120)
        assert sink.inserts == [(sink.inserts[0][0], 3)] and store.counters.batches_exported == 1
        assert sorted(stored_ids(client, name, run)) == sorted(f"req-{i}" for i in range(120))
        hand_off(worker, run, 1)
        assert store.flush(10), "a flush does not wait for the linger"
        assert len(stored_ids(client, name, run)) == 160


def test_a_group_whose_answer_was_lost_is_retried_as_that_group_and_stored_once(database, tmp_path: Path) -> None:
    client, name = database
    run = uuid.uuid4().hex
    sink = LosingSink(client, name, lose=2)
    with store_and_worker(sink, tmp_path / "store", linger_s=600) as (store, worker):
        hand_off(worker, run, 3)
        store.sender.linger_s = 0.01
        store.sender.wake()
        wait_for(lambda: sink.lose == 0)  # landed twice under one token, answered neither time
        hand_off(worker, run, 1)  # comes during the retries: not part of that group
        wait_for(lambda: store.counters.exported == 160)
        tokens = [token for token, _ in sink.inserts]
        assert [batches for _, batches in sink.inserts][:3] == [3, 3, 3] and len(set(tokens[:3])) == 1
        ids = stored_ids(client, name, run)  # each hand_off numbers its spans from req-0
        assert sorted(ids) == sorted([f"req-{i}" for i in range(120)] + [f"req-{i}" for i in range(40)]), \
            "every span once"


def test_a_group_that_landed_before_a_crash_is_replayed_as_that_group_and_stored_once(
        database, tmp_path: Path) -> None:
    client, name = database
    run = uuid.uuid4().hex
    lost = LosingSink(client, name, lose=10**6)  # lands, never answered: the store stops with it spooled
    with store_and_worker(lost, tmp_path / "store", linger_s=600) as (store, worker):
        hand_off(worker, run, 3)
        store.sender.linger_s = 0.01
        store.sender.wake()
        wait_for(lambda: len(lost.inserts) >= 1)
    assert len(stored_ids(client, name, run)) == 120, "it did land"
    handed = list(lost.payloads[:3])

    replay = LosingSink(client, name)
    spool = Spool(tmp_path / "store", max_bytes=1 << 26, remember_tokens=100)
    tokens = [r.token for r in spool._pending]
    assert len(tokens) == 3
    again = SpanPipeline(replay, spool, batch_size=1000)
    again.start()
    try:
        wait_for(lambda: again.spool.pending_batches == 0)
        assert replay.inserts == [(lost.inserts[0][0], 3)], "the same group, with the same token"
        assert sorted(stored_ids(client, name, run)) == sorted(f"req-{i}" for i in range(120)), "stored once"
        # A worker that never heard back hands the second batch in again: taken already.
        assert again.accept_handoff(handed[1], 40, SPANS, tokens[1])
        assert again.flush(10) and again.counters.spooled == 0
        assert len(stored_ids(client, name, run)) == 120
    finally:
        again.shutdown(5)


def test_json_row_batches_go_as_one_insert_too(database, tmp_path: Path) -> None:
    """The OTLP/JSON receiver's batches (JSONEachRow rows) share an insert the same way."""
    client, name = database
    run = uuid.uuid4().hex
    sink = LosingSink(client, name)
    pipeline = SpanPipeline(sink, Spool(tmp_path / "store", max_bytes=1 << 26), batch_size=1000, insert_linger_s=600)
    pipeline.start()
    try:
        for _ in range(3):
            pipeline.sender.enqueue(json_rows_payload(span_to_json_row(s) for s in tagged(10, run)), 10, JSON)
        assert pipeline.flush(10)
        assert [batches for _, batches in sink.inserts] == [3] and pipeline.counters.exported == 30
        assert len(stored_ids(client, name, run)) == 30
    finally:
        pipeline.shutdown(5)
