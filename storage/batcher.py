"""The pipeline's intake and its batcher thread: three span formats in, batches out to the sender.

The stage after the span processor (:mod:`genops.storage.span_processor`), as the
OpenTelemetry SDK's ``BatchSpanProcessor`` queue and worker: intake never blocks and never
does I/O (the proxy's event loop calls it), and the batcher thread cuts batches by size
(``batch_size`` spans) and age (``interval_s``) and hands each to the sender
(:mod:`genops.storage.sender`), which spools it (or, without write-ahead, holds it).

Three intakes, each with its own bounded queue:

- :meth:`Batcher.submit_sdk_spans`: the proxy's own spans, encoded as one compact line each
  as they end (:mod:`genops.storage.span_batch`) into reusable chunks
  (:mod:`genops.storage.span_buffer`); a batch is a list of chunk slices, never joined here;
- :meth:`Batcher.submit`: items turned into ``otel_traces`` rows on the batcher thread,
  batched as JSONEachRow (OTLP/JSON, and OTLP protobuf that ClickHouse cannot decode);
- :meth:`Batcher.submit_payload`: OTLP SpanRow payloads that ClickHouse decodes itself,
  joined up to ``payload_batch_spans`` spans and :data:`PAYLOAD_BATCH_BYTES`.

When a queue is full new spans are dropped and counted (the OTLP receiver sheds load with 503
before that: :meth:`Batcher.has_room`; a SpanRow payload that does not fit is refused whole).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from genops.storage import span_batch
from genops.storage.pipeline_counters import Counters
from genops.storage.rows import json_rows_payload
from genops.storage.sender import Sender
from genops.storage.sinks import JSON, SPAN_ROWS, SPANS
from genops.storage.span_buffer import SpanBuffer

log = logging.getLogger("genops.storage.pipeline")

# Largest SpanRow batch: one insert must stay one ClickHouse block (below its 256 MB squashing
# limit), so the view's refusal of a batch happens before any of it is written.
PAYLOAD_BATCH_BYTES = 64 << 20


class Batcher:
    """Bounded intake queues and the thread that cuts them into batches for ``sender``.

    ``encoded`` holds the proxy's encoded spans (its chunks are released by whoever writes or
    sends a batch); ``stopping`` is set by shutdown, and the batcher sets ``done`` when its
    thread ends (everything queued was handed to the sender).
    """

    def __init__(self, sender: Sender, counters: Counters, encoded: SpanBuffer, *, stopping: threading.Event,
                 done: threading.Event, batch_size: int = 512, interval_s: float = 1.0, queue_size: int = 65536,
                 payload_batch_spans: int | None = None, write_ahead: bool = True) -> None:
        self.sender = sender
        self.counters = counters
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.queue_size = queue_size
        #: Whether the proxy's span batches are spooled before they are sent (else held for the sender).
        self.write_ahead = write_ahead
        # Items are (converter, item): converter(item) -> row dict, run on the batcher thread.
        self._queue: deque[tuple[Callable[[Any], dict[str, Any]] | None, Any]] = deque()
        # SpanRow payloads (one per OTLP request) and the spans they hold.
        self._payloads: deque[tuple[bytes, int]] = deque()
        self._payload_spans = 0
        self._payload_lock = threading.Lock()
        # The proxy's own spans, each already encoded as one line of a compact batch.
        self._encoded = encoded
        self._encoder = span_batch.SpanEncoder()
        self.payload_batch_spans = payload_batch_spans or batch_size
        # Payload spans have their own bound (room for two batches): a SpanRow is ~1 KB of bytes,
        # not a Python object per span, and a batch must be able to fill up before it is cut.
        self.payload_queue_spans = max(queue_size, 2 * self.payload_batch_spans)
        self._stopping = stopping
        self._done = done
        self._wake = threading.Event()
        self._flush_requests: list[threading.Event] = []
        self._flush_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="genops-span-batcher", daemon=True)

    # -- life ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)

    def wake(self) -> None:
        """Have the batcher look at its queues now (shutdown)."""
        self._wake.set()

    def request_flush(self) -> threading.Event:
        """Ask for everything queued so far to be cut and handed on now; the event is set once it was."""
        event = threading.Event()
        with self._flush_lock:
            self._flush_requests.append(event)
        self._wake.set()
        return event

    # -- intake (any thread; never blocks) ----------------------------------------------------

    @property
    def queued(self) -> int:
        """Spans waiting in the intake queues (gauge)."""
        return len(self._queue) + self._encoded.count + self._payload_spans

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
            self._wake.set()
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
            self._wake.set()
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
            self._wake.set()
        return accepted

    # -- batcher thread -----------------------------------------------------------------------

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
        write-ahead hold them for the sender; whether there were any."""
        batches = self._encoded.take(everything)
        for batch in batches:
            # The header is taken after the lines: it names their origins.
            parts = [self._encoder.header() + b"\n", *batch.parts]
            if self.write_ahead:
                self.sender.enqueue(parts, batch.spans, SPANS, release=functools.partial(self._encoded.release, batch))
                continue
            self.sender.hold(parts, batch)
        if batches and not self.write_ahead:
            self.sender.wake()
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
            self.sender.enqueue(json_rows_payload(rows), len(rows), JSON)

    def _run(self) -> None:
        try:
            self._batch_loop()
        finally:
            self._done.set()  # the sender may stop once what is left is sent

    def _batch_loop(self) -> None:
        last_flush = time.monotonic()
        while True:
            timeout = max(0.0, last_flush + self.interval_s - time.monotonic())
            self._wake.wait(timeout)
            self._wake.clear()
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
                self.sender.enqueue(*self._take_payloads(), SPAN_ROWS)
                last_flush = time.monotonic()
            if due:
                last_flush = time.monotonic()
            for event in flushes:
                event.set()
            if stopping and not self._queue and not self._encoded.count and not self._payloads:
                return
