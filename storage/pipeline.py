"""The span pipeline shared by the proxy's own spans and the OTLP receiver.

    submit (never blocks) -> bounded memory queue -> [batcher thread] batches by size and age,
    converts, serialises and writes each batch to the disk spool
    -> [sender thread] inserts the oldest spooled batch, retrying with exponential backoff
    (cut short once a probe finds the store answering again, :meth:`Sink.ping`),
    with the batch's ClickHouse ``insert_deduplication_token`` -> acknowledged, leaves the spool.

Three kinds of batches share that path: the proxy's own spans, encoded compactly as they
end (``submit_sdk_spans``; :mod:`genops.storage.span_batch`) and spelled as rows by the
sink; JSONEachRow rows (OTLP/JSON, and OTLP protobuf when ClickHouse cannot decode it); and
OTLP SpanRow payloads that ClickHouse decodes itself (``submit_payload``;
:mod:`genops.storage.otlp_native`). The spool records each batch's kind, so a replay
inserts it the same way.

A proxy worker's pipeline (``write_ahead=False``) hands its span batches to the store
process directly instead: the store answers once a batch is in its own spool
(:meth:`SpanPipeline.accept_handoff`), and a worker's batch goes to the worker's spool only
when that hand-off fails, is refused, or falls behind (then the spool's order and retries
apply as above). Writing every batch to disk and reading it back
before the hand-off had cost the worker ~40% of its 10-client p99 latency: fresh page-cache
and buffer pages for ~4 MB a second, on the proxy's own core (bench/proxy_bench.py).

Guarantees: the caller is never blocked or slowed by storage; a batch is on disk within
one flush interval of its first span (a worker's: once its hand-off fails, and at
shutdown); batches reach ClickHouse in order and exactly once
(deduplication token + ``non_replicated_deduplication_window``, migration 0010); when the
spool is full the oldest batches are dropped and counted, exactly the spans never stored
(:mod:`genops.storage.spool`); when the memory queue is full new spans are dropped and
counted (the OTLP receiver sheds load with 503 before that). Until the store is reachable and
migrated the sink has no client and nothing is inserted (:mod:`genops.storage.store_boot`).
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from genops.storage import otlp_native, otlp_span_rows, span_batch
from genops.storage.span_buffer import Batch, SpanBuffer
from genops.storage.rows import insert_json_payload, json_rows_payload
from genops.storage.client import StorageUnavailable, describe_error
from genops.storage.spool import Spool

log = logging.getLogger("genops.storage.pipeline")

# Export latency histogram buckets (seconds).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


JSON = "json"
SPAN_ROWS = otlp_span_rows.KIND
SPANS = span_batch.KIND
# Largest SpanRow batch: one insert must stay one ClickHouse block (below its 256 MB squashing
# limit), so the view's refusal of a batch happens before any of it is written.
PAYLOAD_BATCH_BYTES = 64 << 20


class Sink(Protocol):
    """Where batches go: one call inserts one payload with its dedup token.

    ``kind`` is the batch's pipeline kind (:data:`JSON`, :data:`SPANS`, :data:`SPAN_ROWS`);
    ``spans`` how many spans it holds.
    """

    def insert(self, payload: bytes, token: str, kind: str = JSON, spans: int = 0) -> None: ...

    def ping(self) -> bool:
        """Whether the store would take a batch now: cheap (no batch sent), answers within about a
        second. The sender probes with it while a failed batch waits for its retry."""
        ...


#: How long a sink's :meth:`Sink.ping` waits for the store's answer.
PING_TIMEOUT_S = 1.0


class ClickHouseSink:
    """Inserts into ``{database}.otel_traces`` (parsed by ClickHouse in C++), deduplicated by token.

    ``client`` may be None until the store is reachable and migrated (:meth:`attach`,
    :mod:`genops.storage.store_boot`): until then every insert fails at once, never trying
    tables that may not exist yet, and :meth:`ping` says no.
    """

    def __init__(self, client: Any, database: str) -> None:
        self.client = client
        self.database = database
        self.python_fallbacks = 0  # SpanRow batches the view handed back to the Python decoder

    def attach(self, client: Any) -> None:
        """Start inserting through ``client`` (the store answers and its schema is current)."""
        self.client = client

    def ping(self) -> bool:
        client = self.client
        return client is not None and bool(client.ping(PING_TIMEOUT_S))

    def insert(self, payload: bytes, token: str, kind: str = JSON, spans: int = 0) -> None:
        if self.client is None:
            raise StorageUnavailable("the store is not reachable or not migrated yet")
        settings = {
            "insert_deduplication_token": token,
            # dependent materialized views (genops_calls, ...) skip a duplicate block too
            "deduplicate_blocks_in_dependent_materialized_views": 1,
        }
        if kind == SPAN_ROWS:
            if not otlp_native.insert_span_rows(self.client, self.database, payload, **settings):
                self.python_fallbacks += 1
            return
        if kind == SPANS:
            payload = span_batch.json_rows(payload)
        insert_json_payload(self.client, self.database, payload, **settings)


@dataclass
class Histogram:
    """A Prometheus histogram (cumulative buckets are computed when rendered)."""

    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value
        self.count += 1


@dataclass
class Counters:
    """Everything ``/metrics`` reports about the pipeline (monotonic unless named a gauge)."""

    received: dict[str, int] = field(default_factory=dict)  # by source
    spooled: int = 0
    exported: int = 0
    replayed: int = 0
    dropped_queue_full: int = 0
    dropped_invalid: int = 0
    export_failures: int = 0
    batches_exported: int = 0
    spool_write_errors: int = 0
    latency: Histogram = field(default_factory=Histogram)


class SpanPipeline:
    """Bounded, batched, spooled, retried export of ``otel_traces`` rows."""

    def __init__(self, sink: Sink, spool: Spool, *, batch_size: int = 512, interval_s: float = 1.0,
                 queue_size: int = 65536, backoff_initial_s: float = 0.1, backoff_max_s: float = 10.0,
                 payload_batch_spans: int | None = None, write_ahead: bool = True,
                 probe_interval_s: float = 0.5) -> None:
        self.sink = sink
        #: Whether the proxy's span batches are spooled before they are sent (see the module doc).
        self.write_ahead = write_ahead
        self.spool = spool
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.queue_size = queue_size
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        #: While a failed batch waits for its retry, the store is pinged this often (see _wait_out_backoff).
        self.probe_interval_s = probe_interval_s
        self.counters = Counters()
        #: The last insert failed (cleared by the next one that succeeds): the store is not taking spans.
        self.failing = False
        #: Why the last insert failed (first line of the error).
        self.last_error = ""
        #: The :class:`~genops.storage.store_boot.StoreBoot` of the store this pipeline inserts into,
        #: whose state ``/metrics`` and ``/readyz`` report; None when the pipeline hands batches on (a worker's).
        self.store: Any = None
        # Items are (converter, item): converter(item) -> row dict, run on the batcher thread.
        self._queue: deque[tuple[Callable[[Any], dict[str, Any]] | None, Any]] = deque()
        # SpanRow payloads (one per OTLP request) and the spans they hold.
        self._payloads: deque[tuple[bytes, int]] = deque()
        self._payload_spans = 0
        self._payload_lock = threading.Lock()
        # The proxy's own spans, each already encoded as one line of a compact batch.
        self._encoded = SpanBuffer(batch_size, queue_size)
        self._encoder = span_batch.SpanEncoder()
        # Without write-ahead: cut batches waiting for the sender, oldest first, as
        # (token, parts, batch); the head stays here while it is being sent.
        self._ready: deque[tuple[str, list[Any], Batch]] = deque()
        self._ready_lock = threading.Lock()
        self._handoff_lock = threading.Lock()
        self.payload_batch_spans = payload_batch_spans or batch_size
        # Payload spans have their own bound (room for two batches): a SpanRow is ~1 KB of bytes,
        # not a Python object per span, and a batch must be able to fill up before it is cut.
        self.payload_queue_spans = max(queue_size, 2 * self.payload_batch_spans)
        # Whether ClickHouse decodes OTLP protobuf for this pipeline (set by build_pipeline).
        self.native_otlp = False
        self._wake_batcher = threading.Event()
        self._wake_sender = threading.Event()
        self._stopping = threading.Event()
        self._flush_requests: list[threading.Event] = []
        self._flush_lock = threading.Lock()
        self._backoff = 0.0
        self._batcher = threading.Thread(target=self._batch_loop, name="genops-span-batcher", daemon=True)
        self._sender = threading.Thread(target=self._send_loop, name="genops-span-sender", daemon=True)
        self._started = False

    # -- intake (any thread; never blocks) ----------------------------------------------------

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._batcher.start()
            self._sender.start()

    @property
    def queued(self) -> int:
        """Spans waiting in memory (gauge)."""
        return len(self._queue) + self._encoded.count + self._payload_spans + sum(b.spans for _, _, b in list(self._ready))

    def has_room(self, spans: int) -> bool:
        """Whether ``spans`` more spans fit in the memory queue (the receiver sheds load when not)."""
        return len(self._queue) + spans <= self.queue_size

    def submit(self, items: list[Any], source: str, convert: Callable[[Any], dict[str, Any]] | None = None) -> int:
        """Queue spans (``convert`` turns each into a row on the batcher thread; None = already rows).

        Returns how many were accepted; the rest are dropped and counted.
        """
        received = self.counters.received
        received[source] = received.get(source, 0) + len(items)
        room = self.queue_size - len(self._queue)
        accepted = items if room >= len(items) else items[:max(room, 0)]
        if len(accepted) < len(items):
            self.counters.dropped_queue_full += len(items) - len(accepted)
        append = self._queue.append
        for item in accepted:
            append((convert, item))
        if len(self._queue) >= self.batch_size:
            self._wake_batcher.set()
        return len(accepted)

    def submit_payload(self, payload: bytes, spans: int, source: str) -> bool:
        """Queue one SpanRow payload of ``spans`` spans, all or nothing.

        False when it does not fit: nothing is kept, and the caller tells its client to retry (503).
        """
        with self._payload_lock:
            if self._payload_spans + spans > self.payload_queue_spans:
                return False
            self._payloads.append((payload, spans))
            self._payload_spans += spans
            full = self._payload_spans >= self.payload_batch_spans
        received = self.counters.received
        received[source] = received.get(source, 0) + spans
        if full:
            self._wake_batcher.set()
        return True

    def submit_sdk_spans(self, spans: list[Any]) -> int:
        """Queue finished OpenTelemetry SDK spans, encoded now (~2-4 µs each, see :mod:`span_batch`).

        Returns how many were accepted (the rest are dropped and counted: queue full, or a
        span that cannot be encoded).
        """
        counters = self.counters
        counters.received["proxy"] = counters.received.get("proxy", 0) + len(spans)
        encoded = self._encoded
        accepted = 0
        for span in spans:
            try:
                line = self._encoder.encode(span)
            except Exception:  # noqa: BLE001 - one bad span must not fail the call that recorded it
                log.exception("span encoding failed; span dropped")
                counters.dropped_invalid += 1
                continue
            if not encoded.add(line):
                counters.dropped_queue_full += 1
                continue
            accepted += 1
        if encoded.full_batches:
            self._wake_batcher.set()
        return accepted

    def accept_handoff(self, payload: bytes, spans: int, kind: str, token: str) -> bool:
        """Take a batch a proxy worker hands on: spool it with its token for the sender; False
        (nothing kept) while the spool's backlog is full. Raises ``OSError`` when it cannot be written.

        The store answers a worker once the batch is here, not once it is inserted: a worker
        then holds its spans for the loopback hand-off only, not for however long ClickHouse
        takes (0.25-2.5 s per batch on a busy machine, i.e. several batches of span lines in
        the worker's memory). The backlog is bounded by the spool's memory cache, so every
        accepted batch is inserted from memory; beyond it a worker keeps, and spools, its own.
        """
        spool = self.spool
        with self._handoff_lock:  # workers hand off concurrently: one check-and-append at a time
            if spool.pending_batches and spool.pending_bytes + len(payload) > spool.cache_bytes:
                return False
            spool.append(payload, spans, kind, token=token)
            self.counters.spooled += spans
        self._wake_sender.set()
        return True

    def has_handoff_room(self) -> bool:
        """Whether :meth:`accept_handoff` would take a batch now (what a worker's probe asks)."""
        spool = self.spool
        return not spool.pending_batches or spool.pending_bytes < spool.cache_bytes

    # -- batcher ------------------------------------------------------------------------------

    def _take_batch(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        queue = self._queue
        while queue and len(rows) < self.batch_size:
            convert, item = queue.popleft()
            try:
                rows.append(convert(item) if convert is not None else item)
            except Exception:  # noqa: BLE001 - one bad span must not stop the pipeline
                log.exception("span conversion failed; span dropped")
                self.counters.dropped_invalid += 1
        return rows

    def _spool_encoded(self, everything: bool) -> bool:
        """Spool the encoded spans' full batches (all of them with ``everything``), or without
        write-ahead hand them to the sender; whether there were any."""
        batches = self._encoded.take(everything)
        for batch in batches:
            # The header is taken after the lines: it names their origins.
            parts = [self._encoder.header() + b"\n", *batch.parts]
            if self.write_ahead:
                self._spool_payload(parts, batch.spans, SPANS, release=functools.partial(self._encoded.release, batch))
                continue
            with self._ready_lock:
                self._ready.append((uuid.uuid4().hex, parts, batch))
                # The store is slow to take them: the newer ones wait on disk, not in memory.
                overflow = [self._ready.pop() for _ in range(len(self._ready) - self.max_ready)][::-1]
            for token, parts, batch in overflow:
                self._spool_payload(parts, batch.spans, SPANS, token=token,
                                    release=functools.partial(self._encoded.release, batch))
        if batches and not self.write_ahead:
            self._wake_sender.set()
        return bool(batches)

    def _take_payloads(self) -> tuple[bytes, int]:
        """SpanRow payloads joined up to ``payload_batch_spans`` spans and PAYLOAD_BATCH_BYTES (at least one)."""
        parts: list[bytes] = []
        spans = size = 0
        with self._payload_lock:
            while self._payloads and (not parts or (spans + self._payloads[0][1] <= self.payload_batch_spans
                                                    and size + len(self._payloads[0][0]) <= PAYLOAD_BATCH_BYTES)):
                payload, count = self._payloads.popleft()
                parts.append(payload)
                spans += count
                size += len(payload)
            self._payload_spans -= spans
        return b"".join(parts), spans

    def _spool_batch(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._spool_payload(json_rows_payload(rows), len(rows), JSON)

    def _spool_payload(self, payload: bytes | list[Any], spans: int, kind: str,
                       release: Callable[[], None] | None = None, token: str | None = None) -> None:
        """Spool one batch: bytes, or consecutive parts that ``release()`` frees once they are written."""
        try:
            self.spool.append(payload, spans, kind, token=token)
        except OSError as exc:
            # Disk trouble: the batch still goes out, just without the durability of the spool.
            self.counters.spool_write_errors += 1
            log.error("spool write failed; inserting without spooling", extra={"error": str(exc)})
            whole = payload if isinstance(payload, bytes) else b"".join(payload)
            if release is not None:
                release()
            self._insert_direct(whole, spans, kind, token)
            return
        if release is not None:
            release()
        self.counters.spooled += spans
        self._wake_sender.set()

    def _insert_direct(self, payload: bytes, spans: int, kind: str, token: str | None = None) -> None:
        token = token or uuid.uuid4().hex
        delay = self.backoff_initial_s
        while True:
            try:
                self.sink.insert(payload, token, kind, spans)
                self.counters.exported += spans
                return
            except Exception:  # noqa: BLE001
                self.counters.export_failures += 1
                if self._stopping.is_set():
                    self.counters.dropped_queue_full += spans
                    return
                time.sleep(delay)
                delay = min(delay * 2, self.backoff_max_s)

    def _batch_loop(self) -> None:
        last_flush = time.monotonic()
        while True:
            timeout = max(0.0, last_flush + self.interval_s - time.monotonic())
            self._wake_batcher.wait(timeout)
            self._wake_batcher.clear()
            stopping = self._stopping.is_set()
            with self._flush_lock:
                flushes, self._flush_requests = self._flush_requests, []
            due = time.monotonic() - last_flush >= self.interval_s
            while self._queue and (len(self._queue) >= self.batch_size or due or flushes or stopping):
                self._spool_batch(self._take_batch())
                last_flush = time.monotonic()
            if self._spool_encoded(everything=bool(due or flushes or stopping)):
                last_flush = time.monotonic()
            while self._payloads and (self._payload_spans >= self.payload_batch_spans or due or flushes or stopping):
                self._spool_payload(*self._take_payloads(), SPAN_ROWS)
                last_flush = time.monotonic()
            if due:
                last_flush = time.monotonic()
            for event in flushes:
                event.set()
            if stopping and not self._queue and not self._encoded.count and not self._payloads:
                return

    # -- sender -------------------------------------------------------------------------------

    def _send_loop(self) -> None:
        while True:
            if self._backoff:
                if self._stopping.is_set():  # shutting down: keep trying until the deadline, gently
                    time.sleep(min(self._backoff, 0.2))
                else:
                    self._wait_out_backoff()
            else:
                self._wake_sender.wait(0.5)
            self._wake_sender.clear()
            self._send_pending()
            if self._stopping.is_set() and (self.spool.closed or not self._batcher.is_alive() and
                                            ((self.spool.pending_batches == 0 and not self._ready) or self._give_up)):
                return  # closed: shutdown ended while a send was stuck; what is left is in the spool

    _give_up = False
    _outage = False
    #: A probe found the store not answering since the last successful insert.
    _store_was_down = False

    def _wait_out_backoff(self) -> None:
        """Wait for the retry of a failed batch: the backoff (with jitter), cut short by SIGTERM (a
        last try), or by a probe that finds the store answering again after it did not.

        Without the probe a store back after a long outage would wait up to ``backoff_max_s``
        (10 s) for its first insert while the spool, possibly full, drops its oldest spans. A
        store that answered the probe all along failed the insert for another reason (it is
        overloaded, refuses the batch...): that retry keeps its full backoff, so a struggling
        store is not sent a batch every probe interval.
        """
        deadline = time.monotonic() + self._backoff + random.uniform(0, self._backoff / 4)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stopping.wait(min(self.probe_interval_s, remaining)):
                return
            if time.monotonic() < deadline and self._store_answers_again():
                return

    def _store_answers_again(self) -> bool:
        """Ping the store; True when it answers and a probe since the last insert found it down."""
        try:
            answers = bool(self.sink.ping())
        except Exception:  # noqa: BLE001 - a probe that fails in any way says "not yet"; the backoff still ends
            answers = False
        if not answers:
            self._store_was_down = True
            return False
        if self._store_was_down:
            # One early retry per "down, then up": if it fails too, the next needs a probe that saw it down again.
            self._store_was_down = False
            log.info("the store answers again; retrying the spooled batches now",
                     extra={"spooled_batches": self.spool.pending_batches})
            return True
        return False

    def _sent(self) -> None:
        """An insert (or hand-off) succeeded: the store takes spans."""
        self._backoff = 0.0
        self.failing = False
        self._store_was_down = False

    #: Batches a worker holds in memory for the sender, the one being handed on included; a
    #: batch cut while they wait goes to the spool (the store is falling behind). Each is up
    #: to a flush interval of span lines (~6 MB at 5,000 calls/s): this bounds the worker's
    #: memory whatever the store's pace.
    max_ready = 1

    def _send_pending(self) -> None:
        """The spool's batches in order, then (without write-ahead) the ready ones; stop at a failure."""
        # The batcher keeps at most max_ready batches ready; with older ones spooled, these go after them.
        if self._ready and self.spool.pending_batches:
            self._spool_ready()  # the spool holds only batches older than every ready one
        if self._send_spooled():
            self._send_ready()

    def _spool_ready(self, release: bool = True) -> None:
        """Move every ready batch to the spool, in order, each with its token (a hand-off that did
        land is then not stored twice). ``release=False`` leaves the chunks alone (a stuck send
        may still be reading them)."""
        with self._ready_lock:
            ready, self._ready = self._ready, deque()
        for token, parts, batch in ready:
            self._spool_payload(parts, batch.spans, SPANS, token=token,
                                release=functools.partial(self._encoded.release, batch) if release else None)

    def _send_ready(self) -> None:
        """Hand the ready batches to the sink, oldest first; on a failure, spool them all."""
        accepts_parts = getattr(self.sink, "accepts_parts", False)
        while self._ready:
            if self.spool.pending_batches:  # spooled meanwhile, after the one just sent: they go first
                return
            token, parts, batch = self._ready[0]
            started = time.perf_counter()
            try:
                self.sink.insert(parts if accepts_parts else b"".join(parts), token, SPANS, batch.spans)
            except Exception as exc:  # noqa: BLE001 - any storage error means "spool it and retry"
                self._failed(exc, batch.spans)
                self._spool_ready()
                return
            with self._ready_lock:
                if self._ready and self._ready[0][2] is batch:  # else shutdown spooled it meanwhile
                    self._ready.popleft()
                    self._encoded.release(batch)
            self.counters.latency.observe(time.perf_counter() - started)
            self._sent()
            self.counters.exported += batch.spans
            self.counters.batches_exported += 1

    def _failed(self, exc: Exception, spans: int) -> None:
        self.counters.export_failures += 1
        self._backoff = min(self.backoff_max_s, max(self.backoff_initial_s, self._backoff * 2))
        self._outage = True  # everything inserted until the spool is empty again counts as replayed
        self.failing = True
        self.last_error = describe_error(exc)
        log.warning("span export failed; batch kept in the spool for retry",
                    extra={"spans": spans, "retry_in_s": round(self._backoff, 2),
                           "spooled_batches": self.spool.pending_batches, "error": self.last_error})
        if self._stopping.is_set() and time.monotonic() >= self._deadline:
            self._give_up = True

    def _send_spooled(self) -> bool:
        """Insert the spool's batches in order; False after a failure (the batch stays for a retry)."""
        while True:
            head = self.spool.peek(regions=getattr(self.sink, "accepts_regions", False))
            if head is None:
                self._backoff = 0.0
                self._outage = False
                return True
            record, payload = head
            started = time.perf_counter()
            try:
                self.sink.insert(payload, record.token, record.kind, record.spans)
            except Exception as exc:  # noqa: BLE001 - any storage error means "keep it and retry"
                self._failed(exc, record.spans)
                return False
            del head, payload  # a payload read back is freed before the next one is read
            self.counters.latency.observe(time.perf_counter() - started)
            self.spool.ack(record)
            self._sent()
            self.counters.exported += record.spans
            self.counters.batches_exported += 1
            if record.replay or self._outage:
                self.counters.replayed += record.spans

    # -- flush and stop -----------------------------------------------------------------------

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Spool (or hand on) everything queued so far and wait until none of it is left (or ``timeout_s``)."""
        event = threading.Event()
        with self._flush_lock:
            self._flush_requests.append(event)
        self._wake_batcher.set()
        deadline = time.monotonic() + timeout_s
        if not event.wait(timeout_s):
            return False
        while (self.spool.pending_batches or self._ready) and time.monotonic() < deadline:
            self._wake_sender.set()
            time.sleep(0.01)
        return self.spool.pending_batches == 0 and not self._ready

    _deadline = float("inf")

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Spool every queued span, try to insert what is spooled until ``timeout_s``, then stop.

        Anything still unsent stays in the spool and is replayed at the next start.
        """
        if not self._started:
            self.spool.close()
            return
        self._deadline = time.monotonic() + timeout_s
        self._stopping.set()
        self._wake_batcher.set()
        self._batcher.join(timeout_s)
        self._wake_sender.set()
        self._sender.join(max(0.1, self._deadline - time.monotonic()))
        if self._ready:  # not handed on in time: replayed at the next start (a send still running may land too; the token tells)
            self._spool_ready(release=not self._sender.is_alive())
        if self.spool.pending_batches:
            log.warning("spans left in the spool for the next start",
                        extra={"spans": self.spool.pending_spans, "batches": self.spool.pending_batches})
        self.spool.close()


def build_pipeline(settings: Any, client: Any = None, *, sink: ClickHouseSink | None = None,
                   start: bool = True) -> SpanPipeline:
    """The pipeline for ``settings`` (spool under ``GENOPS_DATA_DIR/spool``) inserting through
    ``client`` (or ``sink``: one whose client comes once the store is migrated); started unless
    ``start`` is False. With ``client``, whether ClickHouse decodes OTLP protobuf is asked now;
    with ``sink``, the caller sets ``native_otlp`` once it knows (:mod:`genops.storage.store_boot`).
    """
    spool = Spool(settings.spool_path, max_bytes=settings.spool_max_bytes, fsync=settings.spool_fsync)
    pipeline = SpanPipeline(
        sink if sink is not None else ClickHouseSink(client, settings.database),
        spool,
        batch_size=settings.export_batch_size,
        interval_s=settings.export_interval_ms / 1000,
        queue_size=settings.export_queue_size,
        payload_batch_spans=settings.otlp_batch_spans,
        probe_interval_s=settings.export_probe_interval_ms / 1000,
    )
    if sink is None:
        pipeline.native_otlp = (settings.otlp_decode == "clickhouse"
                                and otlp_native.native_ingest_available(client, settings.database))
    if start:
        pipeline.start()
    return pipeline
