"""The collector's idempotent requests (collectors/idempotent.py) against a real store (in-process chDB):
many requests become few inserts, a merge cut short by a crash is redone with its token and
stored once, taken requests are known across a restart, and a full disk budget refuses, never drops.

Faults are injected around the real ClickHouse insert (it lands, then the "process dies"); waits
are hang guards only.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import open_chdb
from test_scale_out import chat_span_request
from test_span_buffer import wait_for

from genops.collectors.idempotent import ACCEPTED, BUSY, DUPLICATE, JOURNAL, IdempotentIngest
from genops.config import Settings
from genops.storage.migrate import migrate
from genops.storage.otlp_rows import decode_protobuf
from genops.storage.rows import json_rows_payload
from genops.storage.sinks import ClickHouseSink

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def database(chdb_dir: Path) -> Iterator[tuple[Any, str]]:
    client = open_chdb(chdb_dir)
    name = "idem_" + uuid.uuid4().hex[:8]
    migrate(client, name)
    yield client, name
    client.command(f"DROP DATABASE IF EXISTS {name}")


def settings(tmp_path: Path, name: str, **extra: Any) -> Settings:
    return Settings(data_dir=str(tmp_path), database=name, export_interval_ms=50, **extra)


def request_rows(request_id: str) -> tuple[bytes, int]:
    rows = decode_protobuf(chat_span_request("idem", request_id), trusted=True).rows
    return json_rows_payload(rows), len(rows)


def stored(client: Any, name: str, prefix: str) -> dict[str, int]:
    result = client.query(f"SELECT SpanAttributes['genops.request.id'] AS id, count() FROM {name}.otel_traces "
                          f"WHERE startsWith(id, '{prefix}') GROUP BY id")
    return {row[0]: int(row[1]) for row in result.result_rows}


class CountingSink(ClickHouseSink):
    """The real sink; counts inserts, can hold the first one until released, and can "crash" once
    after an insert landed (as a collector killed before it heard back)."""

    def __init__(self, client: Any, database: str, hold_first: bool = False,
                 crash: Any = None) -> None:
        super().__init__(client, database)
        self.inserts = 0
        self.release = threading.Event()
        self.holding = threading.Event()
        self.hold_first = hold_first
        self.crash = crash

    def insert(self, payload: bytes, token: str, kind: str = "json", spans: int = 0) -> None:
        if self.hold_first and self.inserts == 0:
            self.holding.set()
            assert self.release.wait(60)
        super().insert(payload, token, kind, spans)
        self.inserts += 1
        if self.crash is not None:
            crash, self.crash = self.crash, None
            crash()
            raise RuntimeError("the collector died after the insert landed")


def accept_all(ingest: IdempotentIngest, requests: list[tuple[str, bytes, int]]) -> list[str]:
    async def run() -> list[str]:
        return list(await asyncio.gather(*(ingest.accept(token, rows, spans) for token, rows, spans in requests)))

    return asyncio.run(run())


def requests_for(prefix: str, count: int) -> list[tuple[str, bytes, int]]:
    return [(uuid.uuid4().hex, *request_rows(f"{prefix}-{i}")) for i in range(count)]


def test_many_requests_become_few_inserts_and_each_is_stored_once(database, tmp_path: Path) -> None:
    client, name = database
    prefix = "merge-" + uuid.uuid4().hex[:8]
    sink = CountingSink(client, name, hold_first=True)
    ingest = IdempotentIngest(settings(tmp_path, name), sink)
    try:
        first = requests_for(prefix + "-a", 1)
        assert accept_all(ingest, first) == [ACCEPTED]
        assert sink.holding.wait(60)  # the first insert is under way: the next requests wait on disk
        later = requests_for(prefix + "-b", 40)
        assert accept_all(ingest, later) == [ACCEPTED] * 40
        assert accept_all(ingest, later[:5]) == [DUPLICATE] * 5, "retries of requests on disk"
        sink.release.set()
        wait_for(lambda: ingest.exported == 41)
        assert sink.inserts == 2, "the 40 waiting requests went in one insert"
        assert accept_all(ingest, first + later[-3:]) == [DUPLICATE] * 4, "retries of inserted requests"
    finally:
        ingest.close()
    counts = stored(client, name, prefix)
    assert len(counts) == 41 and set(counts.values()) == {1}


def test_a_merge_cut_short_by_a_crash_is_redone_with_its_token_and_stored_once(database, tmp_path: Path) -> None:
    client, name = database
    prefix = "crash-" + uuid.uuid4().hex[:8]
    box: dict[str, IdempotentIngest] = {}

    def die() -> None:  # the inserter stops right after the insert landed: files and journal stay
        ingest = box["ingest"]
        ingest._deadline = 0.0
        ingest._stop.set()

    crashing = CountingSink(client, name, hold_first=True, crash=die)
    box["ingest"] = first = IdempotentIngest(settings(tmp_path, name), crashing)
    requests = requests_for(prefix, 10)
    assert accept_all(first, requests[:1]) == [ACCEPTED]
    assert crashing.holding.wait(60)  # the first merge (one request) is being inserted; 9 more wait
    assert accept_all(first, requests[1:]) == [ACCEPTED] * 9
    crashing.release.set()
    first._thread.join(60)
    assert not first._thread.is_alive() and crashing.inserts == 1
    first.close()
    directory = tmp_path / "otlp-requests"
    assert (directory / JOURNAL).exists() and len(list(directory.glob("*.rows"))) == 10
    assert stored(client, name, prefix) == {f"{prefix}-0": 1}, "the journaled merge landed"

    sink = CountingSink(client, name)
    restarted = IdempotentIngest(settings(tmp_path, name), sink)  # the next start
    try:
        assert accept_all(restarted, requests[:3]) == [DUPLICATE] * 3, "known from the files on disk"
        wait_for(lambda: restarted.exported == 10)
        assert sink.inserts == 2, "the journaled merge again (same files, same token), then the other 9"
        assert not list(directory.glob("*.rows")) and not (directory / JOURNAL).exists()
    finally:
        restarted.close()
    counts = stored(client, name, prefix)
    assert len(counts) == 10 and set(counts.values()) == {1}, "the redone merge was deduplicated"

    again = IdempotentIngest(settings(tmp_path, name), CountingSink(client, name))
    try:
        assert accept_all(again, requests) == [DUPLICATE] * 10, "known from the token log"
    finally:
        again.close()


def test_a_full_disk_budget_refuses_and_drops_nothing(database, tmp_path: Path) -> None:
    client, name = database
    prefix = "full-" + uuid.uuid4().hex[:8]
    sink = CountingSink(client, name, hold_first=True)
    requests = requests_for(prefix, 6)
    budget = sum(len(rows) for _, rows, _ in requests[:3]) + 10
    ingest = IdempotentIngest(settings(tmp_path, name, spool_max_bytes=1 << 20), sink)
    ingest.max_bytes = budget  # (the setting's minimum is 1 MiB; a few requests make the point)
    try:
        assert accept_all(ingest, requests[:1]) == [ACCEPTED]
        assert sink.holding.wait(60)
        outcomes = [accept_all(ingest, [request])[0] for request in requests[1:]]
        assert outcomes[:2] == [ACCEPTED, ACCEPTED] and set(outcomes[2:]) == {BUSY}
        sink.release.set()
        wait_for(lambda: ingest.exported == 3)
        assert accept_all(ingest, requests[3:]) == [ACCEPTED] * 3, "the sender's retry, once there is room"
        wait_for(lambda: ingest.exported == 6)
    finally:
        ingest.close()
    counts = stored(client, name, prefix)
    assert len(counts) == 6 and set(counts.values()) == {1}
