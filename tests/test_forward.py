"""A worker's hand-off to the store process: answered once the batch is in the store's spool,
inserted (into the session's real chDB) by the store's sender afterwards; refused, and kept by
the worker, while the store's backlog is full."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import free_port, open_chdb
from test_span_buffer import spans, wait_for

from genops.api.ingest import ingest_route
from genops.api.metrics import render, snapshot
from genops.storage.forward import ForwardingSink
from genops.storage.migrate import migrate
from genops.storage.pipeline import SpanPipeline
from genops.storage.sinks import SPANS, ClickHouseSink
from genops.storage.spool import Spool

pytestmark = pytest.mark.integration

SECRET = "s" * 32


class GatedSink(ClickHouseSink):
    """The real chDB insert, held until ``gate`` opens (a store busy with an earlier insert)."""

    def __init__(self, client: Any, database: str) -> None:
        super().__init__(client, database)
        self.gate = threading.Event()
        self.tokens: list[str] = []

    def insert_group(self, payloads: Any, token: str, kind: str, spans: int) -> None:
        # Every insert of span batches comes here (one batch is a group of one).
        self.gate.wait(30)
        super().insert_group(payloads, token, kind, spans)
        self.tokens.append(token)


@pytest.fixture(scope="module")
def database(chdb_dir: Path) -> Iterator[tuple[Any, str]]:
    client = open_chdb(chdb_dir)
    name = "forward_" + uuid.uuid4().hex[:8]
    migrate(client, name)
    yield client, name
    client.command(f"DROP DATABASE IF EXISTS {name}")


class StoreServer:
    """The store process's ingest endpoint, served from a thread of its own."""

    def __init__(self, pipeline: SpanPipeline) -> None:
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        app = web.Application()
        ingest_route(app, pipeline, SECRET)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def stored_ids(client: Any, database: str, prefix: str) -> list[str]:
    return [r[0] for r in client.query(
        f"SELECT SpanAttributes['genops.request.id'] FROM {database}.otel_traces "
        "WHERE ResourceAttributes['run'] = {p:String}", parameters={"p": prefix}).result_rows]


def tagged(n: int, run: str) -> list[Any]:
    """``n`` finished spans whose resource carries ``run`` (to find them among other tests' rows)."""
    from opentelemetry.sdk.resources import Resource

    out = spans(n)
    resource = Resource.create({"service.name": "svc", "run": run})
    for span in out:
        span._resource = resource  # the test's own spans, before they are encoded
    return out


@contextmanager
def store_and_worker(client: Any, name: str, tmp_path: Path, store_cache_bytes: int = 64 << 20,
                     **worker_options: Any) -> Iterator[tuple[GatedSink, SpanPipeline, SpanPipeline]]:
    """A store pipeline (inserts held by its sink's gate) behind its ingest endpoint, and a
    worker pipeline handing batches to it; everything stopped afterwards."""
    sink = GatedSink(client, name)
    store = SpanPipeline(sink, Spool(tmp_path / "store", max_bytes=1 << 26, cache_bytes=store_cache_bytes))
    store.start()
    server = StoreServer(store)
    worker = SpanPipeline(ForwardingSink(server.url, SECRET), Spool(tmp_path / "worker", max_bytes=1 << 24),
                          interval_s=0.05, write_ahead=False, **worker_options)
    worker.start()
    try:
        yield sink, store, worker
    finally:
        sink.gate.set()
        worker.shutdown(5)
        server.close()
        store.shutdown(5)


def test_the_store_answers_once_the_batch_is_spooled_and_inserts_it_after(database, tmp_path: Path) -> None:
    client, name = database
    run = uuid.uuid4().hex
    with store_and_worker(client, name, tmp_path, batch_size=40) as (sink, store, worker):
        sent = tagged(100, run)
        for start in (0, 40, 80):  # one batch at a time, as a steady rate cuts them
            worker.submit_sdk_spans(sent[start:start + 40])
            # Handed on and answered while the store's insert is still held: nothing waits on ClickHouse.
            wait_for(lambda start=start: worker.counters.exported == min(start + 40, 100))
        assert worker.counters.spooled == 0, "nothing went through the worker's disk"
        assert store.spool.pending_spans == 100 and store.counters.exported == 0
        assert stored_ids(client, name, run) == []
        assert snapshot(worker)["forwarded"] == 100 and snapshot(worker)["exported"] == 0
        sink.gate.set()
        wait_for(lambda: store.counters.exported == 100)
        assert sorted(stored_ids(client, name, run)) == sorted(f"req-{i}" for i in range(100))
        # Two inserts: the first batch alone (it was being inserted when the others came), then
        # the two that waited behind it, as one group.
        assert store.spool.pending_batches == 0 and len(sink.tokens) == 2
        text = render(store, workers=[snapshot(worker)])
        assert "genops_spans_exported_total 100" in text and "genops_spans_forwarded_total 100" in text


def test_a_full_store_backlog_refuses_and_the_worker_keeps_its_batches(database, tmp_path: Path) -> None:
    client, name = database
    run = uuid.uuid4().hex
    # A backlog of one batch: the store's spool caches at most 1 KB of hand-offs.
    with store_and_worker(client, name, tmp_path, store_cache_bytes=1024, batch_size=30,
                          backoff_initial_s=0.05, backoff_max_s=0.1) as (sink, store, worker):
        worker.submit_sdk_spans(tagged(30, run))
        wait_for(lambda: store.spool.pending_spans == 30)
        worker.submit_sdk_spans(tagged(60, run)[30:])
        # The store holds its one batch: the next ones stay with the worker, on its disk (sent
        # from there with sendfile once the store has room).
        wait_for(lambda: worker.counters.spooled == 30 and worker.counters.export_failures >= 1)
        time.sleep(0.3)
        assert store.spool.pending_spans == 30 and worker.spool.pending_spans == 30
        sink.gate.set()
        wait_for(lambda: store.counters.exported == 60 and worker.spool.pending_batches == 0)
        ids = stored_ids(client, name, run)
        assert sorted(ids) == sorted(f"req-{i}" for i in range(60)), "every span once"
        assert store.counters.exported == 60 and worker.counters.exported == 60


def test_a_hand_off_without_its_span_count_is_refused(database, tmp_path: Path) -> None:
    import http.client

    client, name = database
    store = SpanPipeline(ClickHouseSink(client, name), Spool(tmp_path / "store", max_bytes=1 << 24))
    server = StoreServer(store)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("POST", "/genops/internal/rows", body=b"{}\n", headers={
            "Authorization": f"Bearer {SECRET}", "GenOps-Dedup-Token": "t" * 32, "GenOps-Batch-Kind": SPANS})
        response = connection.getresponse()
        assert response.status == 400 and b"GenOps-Batch-Spans" in response.read()
        assert store.spool.pending_batches == 0
    finally:
        server.close()
        store.shutdown(1)
