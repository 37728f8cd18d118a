"""The span pipeline shared by the proxy's own spans and the OTLP receiver: :class:`SpanPipeline` wires its stages.

    span processor (:mod:`~genops.storage.span_processor`: the proxy's OpenTelemetry spans)
    -> batcher (:mod:`~genops.storage.batcher`: submit never blocks; bounded memory queues;
       [batcher thread] batches by size and age)
    -> durable queue (:mod:`~genops.storage.spool`: each batch written to disk)
    -> sender (:mod:`~genops.storage.sender`: [sender thread] inserts the oldest spooled batch,
       retrying with exponential backoff, cut short once a probe finds the store answering
       again, with the batch's ClickHouse ``insert_deduplication_token`` -> acknowledged, leaves the spool)
    -> sink (:mod:`~genops.storage.sinks`: ClickHouse, the store process, or an OTLP collector).

These are the OpenTelemetry SDK's seams (span processor, batching, exporter), with a disk spool as
the queue between batching and export. This module only builds and wires the stages and
offers one object to the rest of GenOps; each stage's module documents its part.

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

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from genops.storage import otlp_native
from genops.storage.batcher import PAYLOAD_BATCH_BYTES, Batcher
from genops.storage.pipeline_counters import LATENCY_BUCKETS, Counters, Histogram
from genops.storage.sender import Sender
from genops.storage.sinks import JSON, PING_TIMEOUT_S, SPAN_ROWS, SPANS, ClickHouseSink, Sink
from genops.storage.span_buffer import SpanBuffer
from genops.storage.spool import Spool

log = logging.getLogger("genops.storage.pipeline")

#: Acknowledged tokens a store's spool remembers: ClickHouse's own deduplication window is 1,000
#: inserts per table (migration 0010); this covers ten hand-offs per insert.
REMEMBERED_TOKENS = 10_000

#: Names other modules import from here (the stages' own modules are their home).
__all__ = ["JSON", "LATENCY_BUCKETS", "PAYLOAD_BATCH_BYTES", "PING_TIMEOUT_S", "SPANS", "SPAN_ROWS", "ClickHouseSink",
           "Counters", "Histogram", "Sink", "SpanPipeline", "build_pipeline"]


class SpanPipeline:
    """Bounded, batched, spooled, retried export of ``otel_traces`` rows (see the module doc).

    The intake methods (:meth:`submit_sdk_spans`, :meth:`submit`, :meth:`submit_payload`,
    :meth:`has_room`) are the batcher's own, bound at construction: the proxy's event loop
    calls them for every span, so the facade adds no call of its own there.
    """

    #: Queue spans (``convert`` turns each into a row on the batcher thread): :meth:`Batcher.submit`.
    submit: Callable[..., int]
    #: Queue one SpanRow payload, all or nothing: :meth:`Batcher.submit_payload`.
    submit_payload: Callable[[bytes, int, str], bool]
    #: Queue finished OpenTelemetry SDK spans: :meth:`Batcher.submit_sdk_spans`.
    submit_sdk_spans: Callable[[list[Any]], int]
    #: Whether that many more spans fit in the memory queue: :meth:`Batcher.has_room`.
    has_room: Callable[[int], bool]
    #: Take a batch a proxy worker hands on (into the spool): :meth:`Sender.accept_handoff`.
    accept_handoff: Callable[[bytes, int, str, str], bool]
    #: Whether :meth:`accept_handoff` would take a batch now: :meth:`Sender.has_handoff_room`.
    has_handoff_room: Callable[[], bool]

    def __init__(self, sink: Sink, spool: Spool, *, batch_size: int = 512, interval_s: float = 1.0,
                 queue_size: int = 65536, backoff_initial_s: float = 0.1, backoff_max_s: float = 10.0,
                 payload_batch_spans: int | None = None, write_ahead: bool = True,
                 probe_interval_s: float = 0.5, insert_linger_s: float = 0.0) -> None:
        self.sink = sink
        self.spool = spool
        #: Whether the proxy's span batches are spooled before they are sent (see the module doc).
        self.write_ahead = write_ahead
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.queue_size = queue_size
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.probe_interval_s = probe_interval_s
        self.counters = Counters()
        #: The :class:`~genops.storage.store_boot.StoreBoot` of the store this pipeline inserts into,
        #: whose state ``/metrics`` and ``/readyz`` report; None when the pipeline hands batches on (a worker's).
        self.store: Any = None
        # Whether ClickHouse decodes OTLP protobuf for this pipeline (set by build_pipeline).
        self.native_otlp = False
        self._stopping = threading.Event()
        batched = threading.Event()  # the batcher thread ended: nothing more comes to the sender
        encoded = SpanBuffer(batch_size, queue_size)
        self.sender = Sender(sink, spool, self.counters, release=encoded.release, stopping=self._stopping,
                             batcher_done=batched, backoff_initial_s=backoff_initial_s, backoff_max_s=backoff_max_s,
                             probe_interval_s=probe_interval_s, group_spans=batch_size, linger_s=insert_linger_s)
        self.batcher = Batcher(self.sender, self.counters, encoded, stopping=self._stopping, done=batched,
                               batch_size=batch_size, interval_s=interval_s, queue_size=queue_size,
                               payload_batch_spans=payload_batch_spans, write_ahead=write_ahead)
        self.payload_batch_spans = self.batcher.payload_batch_spans
        self.payload_queue_spans = self.batcher.payload_queue_spans
        self.submit = self.batcher.submit
        self.submit_payload = self.batcher.submit_payload
        self.submit_sdk_spans = self.batcher.submit_sdk_spans
        self.has_room = self.batcher.has_room
        self.accept_handoff = self.sender.accept_handoff
        self.has_handoff_room = self.sender.has_handoff_room
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self.batcher.start()
            self.sender.start()

    @property
    def queued(self) -> int:
        """Spans waiting in memory (gauge)."""
        return self.batcher.queued + self.sender.ready_spans

    @property
    def failing(self) -> bool:
        """The last insert failed (cleared by the next one that succeeds): the store is not taking spans."""
        return self.sender.failing

    @property
    def last_error(self) -> str:
        """Why the last insert failed (first line of the error)."""
        return self.sender.last_error

    # -- flush and stop -----------------------------------------------------------------------

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Spool (or hand on) everything queued so far and wait until none of it is left (or ``timeout_s``)."""
        event = self.batcher.request_flush()
        deadline = time.monotonic() + timeout_s
        if not event.wait(timeout_s):
            return False
        sender = self.sender
        while not sender.drained and time.monotonic() < deadline:
            # What is spooled goes now, not once it has lingered (set again each time: the sender
            # clears it whenever it finds the spool empty, maybe just before the batcher's batch came).
            sender.hurry = True
            sender.wake()
            time.sleep(0.01)
        return sender.drained

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Spool every queued span, try to insert what is spooled until ``timeout_s``, then stop.

        Anything still unsent stays in the spool and is replayed at the next start.
        """
        if not self._started:
            self.spool.close()
            return
        sender = self.sender
        sender.deadline = time.monotonic() + timeout_s
        self._stopping.set()
        self.batcher.wake()
        self.batcher.join(timeout_s)
        sender.wake()
        sender.join(max(0.1, sender.deadline - time.monotonic()))
        # Not handed on in time: replayed at the next start (a send still running may land too; the token tells).
        if sender.has_ready:
            sender.spool_ready(release=not sender.is_alive())
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
    # It remembers the tokens it acknowledged: a worker's batch handed in again after it was
    # inserted in a group (under the group's token) is recognised (Sender.accept_handoff).
    spool = Spool(settings.spool_path, max_bytes=settings.spool_max_bytes, fsync=settings.spool_fsync,
                  remember_tokens=REMEMBERED_TOKENS)
    pipeline = SpanPipeline(
        sink if sink is not None else ClickHouseSink(client, settings.database),
        spool,
        batch_size=settings.export_batch_size,
        interval_s=settings.export_interval_ms / 1000,
        queue_size=settings.export_queue_size,
        payload_batch_spans=settings.otlp_batch_spans,
        probe_interval_s=settings.export_probe_interval_ms / 1000,
        insert_linger_s=settings.export_insert_interval_ms / 1000,
    )
    if sink is None:
        pipeline.native_otlp = (settings.otlp_decode == "clickhouse"
                                and otlp_native.native_ingest_available(client, settings.database))
    if start:
        pipeline.start()
    return pipeline
