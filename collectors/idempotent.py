"""Idempotent OTLP requests (``GenOps-Dedup-Token``): answered once on disk, merged into large inserts, stored once.

GenOps proxies exporting to a collector (docs/scale-out.md) send every batch with an
idempotency token and retry it until they get a 200. Inserting each request on its own would
be exactly-once (one ``insert_deduplication_token`` per request) but slow: an insert into
``otel_traces`` and the tables its views fill costs a fixed 10-150 ms and leaves parts to merge,
whatever its size, so a collector would manage only a few proxies per core. Here:

1. a request is decoded into ``otel_traces`` rows. If its token is already known (a file below,
   or :mod:`genops.collectors.batch_tokens`) it is a retry: 200, nothing stored again. Else its
   rows are written to a file of their own (``otlp-requests/<seq>-<spans>-<token>.rows``, written
   then renamed: whole or absent), the token is remembered, and the answer is 200;
2. one thread inserts the files in order: once the oldest has waited ``GENOPS_EXPORT_INTERVAL_MS``
   (or ``GENOPS_OTLP_BATCH_SPANS`` spans wait), every file pending, up to that many spans and
   64 MiB, in one insert: inserts grow with the load and stay few (the senders have their
   answer already; this only bounds how soon the spans can be queried). Before it
   inserts, it writes the merge (which files, under which ``insert_deduplication_token``) to a
   journal and appends the files' request tokens to the token log; once ClickHouse took the
   insert, it deletes the files, then the journal.

Exactly once, whatever crashes between the steps: a request is unknown and not stored, or its
file exists (the token is in its name), or its token is in the token log (written before its
rows could be inserted). A merge interrupted by a crash is redone at the next start with the
same files and the same token, so ClickHouse deduplicates it if it had landed. The files
are bounded by ``GENOPS_SPOOL_MAX_BYTES``: beyond it requests get 503 (the proxies keep them),
nothing accepted is ever dropped here. ``GENOPS_SPOOL_FSYNC`` syncs each file before its 200.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from genops.collectors.batch_tokens import TokenLog
from genops.storage.batcher import PAYLOAD_BATCH_BYTES
from genops.storage.sinks import JSON, Sink

log = logging.getLogger("genops.collector")

DIRECTORY = "otlp-requests"
JOURNAL = "merge.json"
SUFFIX = ".rows"
_NAME = re.compile(r"(\d{16})-(\d+)-([0-9a-f]{32})\.rows")

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
BUSY = "busy"
FAILED = "failed"

BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 10.0


@dataclass(frozen=True)
class RequestFile:
    """One accepted request's rows on disk."""

    path: Path
    seq: int
    spans: int
    token: str
    size: int
    added: float = 0.0  # monotonic time it was written (0: found at start, due at once)


def _parse(path: Path) -> RequestFile | None:
    match = _NAME.fullmatch(path.name)
    if match is None:
        return None
    return RequestFile(path, int(match.group(1)), int(match.group(2)), match.group(3), path.stat().st_size)


class IdempotentIngest:
    """Takes idempotent requests for the collector's store (see the module doc).

    ``accept`` runs on the receiver's event loop (its writes in the default executor); the
    inserts run on a thread of their own, through ``sink`` (the collector's pipeline's sink).
    """

    def __init__(self, settings: Any, sink: Sink) -> None:
        self.sink = sink
        self.directory = settings.data_path / DIRECTORY
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.fsync = settings.spool_fsync
        self.max_bytes = settings.spool_max_bytes
        self.merge_spans = settings.otlp_batch_spans
        self.interval_s = settings.export_interval_ms / 1000
        self.probe_interval_s = getattr(settings, "export_probe_interval_ms", 500) / 1000
        self.tokens = TokenLog(settings.data_path, fsync=self.fsync)
        self._lock = threading.Lock()
        self._pending: deque[RequestFile] = deque()
        self._pending_tokens: set[str] = set()
        self._pending_bytes = 0
        self._pending_spans = 0
        self._inflight: dict[str, asyncio.Future] = {}
        for leftover in self.directory.glob("*.tmp"):  # a write a crash cut short: never answered
            leftover.unlink(missing_ok=True)
        found = (_parse(path) for path in self.directory.glob("*" + SUFFIX))
        files = sorted((f for f in found if f is not None), key=lambda f: f.seq)
        for request_file in files:
            self._add(request_file)
        self._seq = files[-1].seq + 1 if files else 0
        #: Requests by outcome, spans inserted, failed insert attempts (``/metrics``).
        self.requests: dict[str, int] = {}
        self.exported = 0
        self.export_failures = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._deadline = float("inf")
        if files:
            log.info("idempotent OTLP requests found on disk; inserting them",
                     extra={"requests": len(files), "spans": self.pending_spans})
        self._thread = threading.Thread(target=self._insert_loop, name="genops-otlp-inserter", daemon=True)
        self._thread.start()

    # -- state ----------------------------------------------------------------------------

    @property
    def pending_spans(self) -> int:
        return self._pending_spans

    def _add(self, request_file: RequestFile) -> None:
        self._pending.append(request_file)
        self._pending_tokens.add(request_file.token)
        self._pending_bytes += request_file.size
        self._pending_spans += request_file.spans

    def known(self, token: str) -> bool:
        """Whether the request ``token`` was taken already (its rows are on disk or stored)."""
        return token in self._pending_tokens or token in self.tokens

    def _count(self, outcome: str) -> str:
        self.requests[outcome] = self.requests.get(outcome, 0) + 1
        return outcome

    # -- taking requests (event loop) ---------------------------------------------------------

    async def accept(self, token: str, rows: bytes, spans: int) -> str:
        """Take one request (its rows as JSONEachRow): :data:`ACCEPTED` once on disk, :data:`DUPLICATE`
        for a request already taken; :data:`BUSY` or :data:`FAILED` when the sender should retry."""
        if self.known(token):
            return self._count(DUPLICATE)
        inflight = self._inflight.get(token)
        if inflight is not None:  # the same request again while its first copy is being written
            outcome = await asyncio.shield(inflight)
            return self._count(DUPLICATE if outcome == ACCEPTED else outcome)
        if self._pending_bytes + len(rows) > self.max_bytes:
            return self._count(BUSY)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._inflight[token] = future
        try:
            outcome = await asyncio.get_running_loop().run_in_executor(None, self._write, token, rows, spans)
        finally:
            del self._inflight[token]
        future.set_result(outcome)
        return self._count(outcome)

    def _write(self, token: str, rows: bytes, spans: int) -> str:
        """Write the request's file (whole, or not at all) and queue it for insert."""
        if not spans:  # only spans rejected as malformed: nothing to store, nothing to retry
            self.tokens.remember([token])
            return ACCEPTED
        with self._lock:
            seq = self._seq
            self._seq += 1
        path = self.directory / f"{seq:016d}-{spans}-{token}{SUFFIX}"
        temporary = path.with_suffix(".tmp")
        try:
            with open(temporary, "wb") as handle:
                handle.write(rows)
                if self.fsync:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(temporary, path)
            if self.fsync:
                _fsync_directory(self.directory)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            log.error("idempotent OTLP request not written; its sender retries", extra={"error": str(exc)[:300]})
            return FAILED
        with self._lock:
            self._add(RequestFile(path, seq, spans, token, len(rows), time.monotonic()))
            full = self._pending_spans >= self.merge_spans
        if full:
            self._wake.set()
        return ACCEPTED

    # -- inserting (its own thread) -------------------------------------------------------------

    def _insert_loop(self) -> None:
        backoff = 0.0
        while True:
            if self._stop.is_set() and time.monotonic() >= self._deadline:
                return  # shutdown: what is left is inserted at the next start
            merge = self._journaled() or self._next_merge()
            if isinstance(merge, float):  # nothing due yet: wait that long, or for a full merge
                if self._stop.is_set() and not self._pending:
                    return
                self._wake.wait(merge)
                self._wake.clear()
                continue
            token, files = merge
            try:
                self._insert(token, files)
            except Exception as exc:  # any storage error: the same merge again, later
                self.export_failures += 1
                backoff = min(BACKOFF_MAX_S, max(BACKOFF_INITIAL_S, backoff * 2))
                log.warning("insert of idempotent OTLP requests failed; retrying the same merge", extra={
                    "requests": len(files), "retry_in_s": round(backoff, 2),
                    "error": (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]})
                self._wait_out(backoff)
                continue
            backoff = 0.0

    def _journaled(self) -> tuple[str, list[RequestFile]] | None:
        """The merge a previous attempt journaled (redone with the same files and token), if any."""
        journal = self.directory / JOURNAL
        try:
            data = orjson.loads(journal.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError):  # torn before its rename could happen: never written
            journal.unlink(missing_ok=True)
            return None
        with self._lock:
            by_name = {f.path.name: f for f in self._pending}
        files = [by_name[name] for name in data["files"] if name in by_name]
        if not files:  # inserted and its files deleted; only the journal was left
            journal.unlink(missing_ok=True)
            return None
        return data["token"], files

    def _next_merge(self) -> tuple[str, list[RequestFile]] | float:
        """Every pending file from the oldest, up to the merge size, journaled before it is inserted;
        or how long to wait first (nothing pending, or the oldest younger than the interval and
        fewer spans than a full merge; at shutdown nothing waits)."""
        files: list[RequestFile] = []
        spans = size = 0
        with self._lock:
            if not self._pending:
                return 0.5
            due = self._pending[0].added + self.interval_s - time.monotonic()
            if due > 0 and not self._stop.is_set() and self._pending_spans < self.merge_spans:
                return due
            for request_file in self._pending:
                if files and (spans + request_file.spans > self.merge_spans
                              or size + request_file.size > PAYLOAD_BATCH_BYTES):
                    break
                files.append(request_file)
                spans += request_file.spans
                size += request_file.size
        token = uuid.uuid4().hex
        journal = self.directory / JOURNAL
        temporary = journal.with_suffix(".tmp")
        temporary.write_bytes(orjson.dumps({"token": token, "files": [f.path.name for f in files]}))
        if self.fsync:
            with open(temporary, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(temporary, journal)
        return token, files

    def _insert(self, token: str, files: list[RequestFile]) -> None:
        self.tokens.persist(f.token for f in files)  # before their rows can be stored
        payload = b"\n".join(f.path.read_bytes() for f in files)
        spans = sum(f.spans for f in files)
        self.sink.insert(payload, token, JSON, spans)
        del payload
        for request_file in files:
            request_file.path.unlink(missing_ok=True)
        (self.directory / JOURNAL).unlink(missing_ok=True)
        with self._lock:
            done = {f.path for f in files}
            self._pending = deque(f for f in self._pending if f.path not in done)
            for request_file in files:
                self._pending_tokens.discard(request_file.token)
                self._pending_bytes -= request_file.size
                self._pending_spans -= request_file.spans
        self.exported += spans

    def _wait_out(self, backoff: float) -> None:
        """Wait for the retry: the backoff, cut short once the store answers a ping again."""
        deadline = time.monotonic() + backoff + random.uniform(0, backoff / 4)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stop.wait(min(self.probe_interval_s, remaining)):
                return
            try:
                if self.sink.ping():  # a sink that cannot tell says no (Sink.ping): the backoff runs out
                    return
            except Exception:  # a failed probe means "not yet"
                pass

    # -- outside ------------------------------------------------------------------------------

    def metrics(self) -> str:
        """Prometheus lines of this component (appended to the receiver's ``/metrics``)."""
        lines = ["# HELP genops_otlp_idempotent_requests_total Idempotent OTLP requests (GenOps-Dedup-Token), "
                 "by outcome (duplicate: a retry of a request already taken; busy, failed: answered 503).",
                 "# TYPE genops_otlp_idempotent_requests_total counter"]
        lines += [f'genops_otlp_idempotent_requests_total{{outcome="{outcome}"}} {self.requests.get(outcome, 0)}'
                  for outcome in (ACCEPTED, DUPLICATE, BUSY, FAILED)]
        lines += ["# HELP genops_otlp_idempotent_spool_spans Spans of idempotent requests on disk, waiting for "
                  "their insert.",
                  "# TYPE genops_otlp_idempotent_spool_spans gauge",
                  f"genops_otlp_idempotent_spool_spans {self.pending_spans}",
                  "# HELP genops_otlp_idempotent_spool_bytes Bytes of idempotent requests on disk.",
                  "# TYPE genops_otlp_idempotent_spool_bytes gauge",
                  f"genops_otlp_idempotent_spool_bytes {self._pending_bytes}",
                  "# HELP genops_otlp_idempotent_spans_exported_total Spans of idempotent requests inserted "
                  "(not counted in genops_spans_exported_total).",
                  "# TYPE genops_otlp_idempotent_spans_exported_total counter",
                  f"genops_otlp_idempotent_spans_exported_total {self.exported}",
                  "# HELP genops_otlp_idempotent_export_failures_total Failed inserts of idempotent requests "
                  "(each is retried, the same merge again).",
                  "# TYPE genops_otlp_idempotent_export_failures_total counter",
                  f"genops_otlp_idempotent_export_failures_total {self.export_failures}"]
        return "\n".join(lines) + "\n"

    def close(self, timeout_s: float = 10.0) -> None:
        """Insert what is on disk until ``timeout_s`` (the rest is inserted at the next start), then stop."""
        self._deadline = time.monotonic() + timeout_s
        self._stop.set()  # nothing waits for its interval any more
        self._wake.set()
        self._thread.join(timeout_s + 1)
        left = self.pending_spans
        if left:
            log.warning("idempotent OTLP requests left on disk for the next start", extra={"spans": left})
        self.tokens.close()


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
