"""The pipeline's durable queue and its sender thread: spool, send in order, retry, probe, count.

The stage between the batcher (:mod:`genops.storage.batcher`) and the sink
(:mod:`genops.storage.sinks`), as the OpenTelemetry SDK's export loop sits between its
processor's queue and its exporter, with a disk spool (:mod:`genops.storage.spool`) as the queue:

- a cut batch is written to the spool (:meth:`Sender.enqueue`); when the disk fails it is sent
  at once instead, retried until it lands (or shutdown ends it: counted as dropped);
- without write-ahead (a proxy worker) the batch is held in memory instead (:meth:`Sender.hold`,
  up to :attr:`Sender.max_ready`) and handed to the sink from there; one that fails, is cut
  while another waits, or is left at shutdown goes to the spool with its token;
- the sender thread inserts the oldest spooled batch, then the held ones, strictly in order,
  each with its own deduplication token; to a sink that ``accepts_groups`` (ClickHouse) it
  inserts consecutive spooled batches as one group instead, once the oldest has waited
  ``linger_s`` or they hold ``group_spans`` spans (:meth:`~genops.storage.spool.Spool.peek_group`:
  a retry or replay re-forms the same group, with the same token); on a failure the batch stays and is retried with
  exponential backoff (``backoff_initial_s`` doubling to ``backoff_max_s``, with jitter), cut
  short when a probe (:meth:`Sink.ping`, every ``probe_interval_s``) finds the store answering
  again after it did not; an acknowledged batch leaves the spool.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from genops.storage.client import describe_error
from genops.storage.pipeline_counters import Counters
from genops.storage.sinks import GROUPED_KINDS, SPANS, Sink, StoreFull
from genops.storage.span_buffer import Batch
from genops.storage.spool import Spool, group_token

log = logging.getLogger("genops.storage.pipeline")


class Sender:
    """Spools batches and sends them to ``sink`` on a thread of its own (see the module doc).

    ``release`` frees a held batch's chunks (:meth:`~genops.storage.span_buffer.SpanBuffer.release`)
    once they are sent or written; ``stopping`` is set by shutdown, and ``batcher_done`` once the
    batcher thread ended (nothing more will come).
    """

    #: Batches a worker holds in memory for the sender, the one being handed on included; a
    #: batch cut while they wait goes to the spool (the store is falling behind). Each is up
    #: to a flush interval of span lines (~6 MB at 5,000 calls/s): this bounds the worker's
    #: memory whatever the store's pace.
    max_ready = 1

    def __init__(self, sink: Sink, spool: Spool, counters: Counters, *, release: Callable[[Batch], None],
                 stopping: threading.Event, batcher_done: threading.Event, backoff_initial_s: float = 0.1,
                 backoff_max_s: float = 10.0, probe_interval_s: float = 0.5, group_spans: int = 1,
                 linger_s: float = 0.0) -> None:
        self.sink = sink
        #: Most spans one group insert takes (a sink that ``accepts_groups``); 1: a batch at a time.
        self.group_spans = group_spans
        #: How long the oldest spooled batch waits for others to share its insert (see the module doc).
        self.linger_s = linger_s
        #: A flush waits: batches go at once, without lingering, until the spool is empty.
        self.hurry = False
        self.spool = spool
        self.counters = counters
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        #: While a failed batch waits for its retry, the store is pinged this often (see _wait_out_backoff).
        self.probe_interval_s = probe_interval_s
        #: The last insert failed (cleared by the next one that succeeds): the store is not taking spans.
        self.failing = False
        #: Why the last insert failed (first line of the error).
        self.last_error = ""
        #: Shutdown's end: a batch that fails after it is left in the spool (set by shutdown).
        self.deadline = float("inf")
        self._release = release
        self._stopping = stopping
        self._batcher_done = batcher_done
        # Without write-ahead: cut batches waiting for the sender, oldest first, as
        # (token, parts, batch); the head stays here while it is being sent.
        self._ready: deque[tuple[str, list[Any], Batch]] = deque()
        self._ready_lock = threading.Lock()
        self._handoff_lock = threading.Lock()
        self._wake = threading.Event()
        self._backoff = 0.0
        #: Shutdown's deadline passed with a batch failing: stop trying, it stays in the spool.
        self._give_up = False
        #: A batch failed since the spool was last empty: what is sent until then counts as replayed.
        self._outage = False
        #: A probe found the store not answering since the last successful insert.
        self._store_was_down = False
        #: Seconds until the lingering oldest batch is due (0: nothing lingers).
        self._due_in = 0.0
        self._thread = threading.Thread(target=self._send_loop, name="genops-span-sender", daemon=True)

    # -- life ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def wake(self) -> None:
        """Have the sender look for batches now (one was spooled or held)."""
        self._wake.set()

    # -- the queue ----------------------------------------------------------------------------

    @property
    def ready_spans(self) -> int:
        """Spans of the batches held in memory for the sink (gauge)."""
        return sum(b.spans for _, _, b in list(self._ready))

    @property
    def has_ready(self) -> bool:
        """Whether batches are held in memory for the sink."""
        return bool(self._ready)

    @property
    def drained(self) -> bool:
        """Nothing left to send: the spool is empty and no batch is held."""
        return self.spool.pending_batches == 0 and not self._ready

    def enqueue(self, payload: bytes | list[Any], spans: int, kind: str,
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
        self._wake.set()

    def hold(self, parts: list[Any], batch: Batch) -> None:
        """Hold a cut batch of the proxy's spans for the sink (no write-ahead); past
        :attr:`max_ready` held ones, the newest go to the spool. The caller wakes the sender."""
        with self._ready_lock:
            self._ready.append((uuid.uuid4().hex, parts, batch))
            # The store is slow to take them: the newer ones wait on disk, not in memory.
            overflow = [self._ready.pop() for _ in range(len(self._ready) - self.max_ready)][::-1]
        for token, parts, batch in overflow:
            self.enqueue(parts, batch.spans, SPANS, token=token, release=functools.partial(self._release, batch))

    def accept_handoff(self, payload: bytes, spans: int, kind: str, token: str) -> bool:
        """Take a batch a proxy worker hands on: spool it with its token; False (nothing kept)
        while the spool's backlog is full. Raises ``OSError`` when it cannot be written.

        The store answers a worker once the batch is here, not once it is inserted: a worker
        then holds its spans for the loopback hand-off only, not for however long ClickHouse
        takes (0.25-2.5 s per batch on a busy machine, i.e. several batches of span lines in
        the worker's memory). The backlog is bounded by the spool's memory cache, so every
        accepted batch is inserted from memory; beyond it a worker keeps, and spools, its own.
        """
        spool = self.spool
        with self._handoff_lock:  # workers hand off concurrently: one check-and-append at a time
            if spool.knows(token):
                # Handed in again (its first hand-off landed, the answer did not): taken already. A
                # group insert has a token of its own, so ClickHouse would not see this one as a duplicate.
                log.info("a worker's batch taken already was handed in again; not stored twice",
                         extra={"spans": spans})
                return True
            if spool.pending_batches and spool.pending_bytes + len(payload) > spool.cache_bytes:
                return False
            spool.append(payload, spans, kind, token=token)
            self.counters.spooled += spans
        self._wake.set()
        return True

    def has_handoff_room(self) -> bool:
        """Whether :meth:`accept_handoff` would take a batch now (what a worker's probe asks)."""
        spool = self.spool
        return not spool.pending_batches or spool.pending_bytes < spool.cache_bytes

    def spool_ready(self, release: bool = True) -> None:
        """Move every held batch to the spool, in order, each with its token (a hand-off that did
        land is then not stored twice). ``release=False`` leaves the chunks alone (a stuck send
        may still be reading them)."""
        with self._ready_lock:
            ready, self._ready = self._ready, deque()
        for token, parts, batch in ready:
            self.enqueue(parts, batch.spans, SPANS, token=token,
                         release=functools.partial(self._release, batch) if release else None)

    # -- sending ------------------------------------------------------------------------------

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

    def _send_loop(self) -> None:
        while True:
            if self._backoff:
                if self._stopping.is_set():  # shutting down: keep trying until the deadline, gently
                    time.sleep(min(self._backoff, 0.2))
                else:
                    self._wait_out_backoff()
            else:
                self._wake.wait(min(self._due_in, 0.5) if self._due_in else 0.5)
            self._wake.clear()
            self._send_pending()
            if self._stopping.is_set() and (self.spool.closed or self._batcher_done.is_set() and
                                            ((self.spool.pending_batches == 0 and not self._ready) or self._give_up)):
                return  # closed: shutdown ended while a send was stuck; what is left is in the spool

    def _wait_out_backoff(self) -> None:
        """Wait for the retry of a failed batch: the backoff (with jitter), cut short by SIGTERM (a
        last try), or by a probe that finds the store answering again after it did not.

        Without the probe a store back after a long outage would wait up to ``backoff_max_s``
        (10 s) for its first insert while the spool, possibly full, drops its oldest spans. A
        store that answered the probe all along failed the insert for another reason (it is
        overloaded, refuses the batch...): that retry keeps its full backoff, so a struggling
        store is not sent a batch every probe interval. A :class:`~genops.storage.sinks.StoreFull`
        refusal counts as a probe that found the store down: its probe asks for exactly the room
        it lacked.
        """
        deadline = time.monotonic() + self._backoff + random.uniform(0, self._backoff / 4)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stopping.wait(min(self.probe_interval_s, remaining)):
                return
            if time.monotonic() < deadline and self._store_answers_again():
                return

    def _answers(self) -> bool:
        """Whether the store answers a probe now (any failure of the probe means no)."""
        try:
            return bool(self.sink.ping())
        except Exception:  # noqa: BLE001 - a probe that fails in any way says "not now"
            return False

    def _store_answers_again(self) -> bool:
        """Ping the store; True when it answers and a probe since the last insert found it down."""
        if not self._answers():
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

    def _send_pending(self) -> None:
        """The spool's batches in order, then (without write-ahead) the held ones; stop at a failure."""
        # At most max_ready batches are held; with older ones spooled, these go after them.
        if self._ready and self.spool.pending_batches:
            self.spool_ready()  # the spool holds only batches older than every held one
        if self._send_spooled():
            self._send_ready()

    def _send_ready(self) -> None:
        """Hand the held batches to the sink, oldest first; on a failure, spool them all."""
        accepts_parts = self.sink.accepts_parts
        while self._ready:
            if self.spool.pending_batches:  # spooled meanwhile, after the one just sent: they go first
                return
            token, parts, batch = self._ready[0]
            started = time.perf_counter()
            try:
                self.sink.insert(parts if accepts_parts else b"".join(parts), token, SPANS, batch.spans)
            except Exception as exc:  # noqa: BLE001 - any storage error means "spool it and retry"
                self._failed(exc, batch.spans)
                self.spool_ready()
                return
            self.counters.latency.observe(time.perf_counter() - started)
            # Counted before it leaves: whoever sees nothing held sees it counted.
            self.counters.exported += batch.spans
            self.counters.batches_exported += 1
            with self._ready_lock:
                if self._ready and self._ready[0][2] is batch:  # else shutdown spooled it meanwhile
                    self._ready.popleft()
                    self._release(batch)
            self._sent()

    def _failed(self, exc: Exception, spans: int) -> None:
        self.counters.export_failures += 1
        if isinstance(exc, StoreFull):
            # A refusal for want of room is what a probe would have found: the first probe that
            # finds room retries at once, even if no probe ran before the room came back.
            self._store_was_down = True
        self._backoff = min(self.backoff_max_s, max(self.backoff_initial_s, self._backoff * 2))
        self._outage = True  # everything inserted until the spool is empty again counts as replayed
        self.failing = True
        self.last_error = describe_error(exc)
        log.warning("span export failed; batch kept in the spool for retry",
                    extra={"spans": spans, "retry_in_s": round(self._backoff, 2),
                           "spooled_batches": self.spool.pending_batches, "error": self.last_error})
        # Shutting down: retry while the store answers (an insert can fail on a busy store), until the
        # deadline; a store that does not answer a probe is down, and the spooled spans wait for the
        # next start instead of holding the exit (SIGTERM during an outage exits at once).
        if self._stopping.is_set() and (time.monotonic() >= self.deadline or not self._answers()):
            self._give_up = True

    def _send_spooled(self) -> bool:
        """Insert the spool's batches in order; False after a failure (the batch stays for a retry).

        To a sink that ``accepts_groups``, consecutive batches go as one insert, once the oldest
        has lingered (not while stopping or flushing); True while it lingers (:attr:`_due_in`)."""
        sink, spool = self.sink, self.spool
        grouped = sink.accepts_groups and self.group_spans > 1
        kinds = GROUPED_KINDS if grouped else ()
        while True:
            self._due_in = 0.0
            if grouped and self.linger_s and not self.hurry and not self._stopping.is_set():
                wait = spool.group_wait(kinds, self.group_spans, self.linger_s)
                if wait:
                    self._due_in = wait
                    return True
            # File regions only without groups: a group's payloads come as bytes.
            head = spool.peek_group(self.group_spans if grouped else 1, kinds,
                                    regions=sink.accepts_regions and not grouped)
            if head is None:
                self._backoff = 0.0
                self._outage = False
                self.hurry = False
                return True
            records, payloads = head
            spans = sum(r.spans for r in records)
            started = time.perf_counter()
            try:
                if len(records) == 1:
                    sink.insert(payloads[0], records[0].token, records[0].kind, spans)
                else:
                    sink.insert_group(cast(list[bytes], payloads), group_token(records), records[0].kind, spans)
            except Exception as exc:  # noqa: BLE001 - any storage error means "keep it and retry"
                self._failed(exc, spans)
                return False
            del head, payloads  # payloads read back are freed before the next ones are read
            self.counters.latency.observe(time.perf_counter() - started)
            # Counted before the spool lets go of them: whoever sees the spool drained sees them counted.
            self.counters.exported += spans
            self.counters.batches_exported += 1
            if records[0].replay or self._outage:
                self.counters.replayed += spans
            spool.ack(records)
            self._sent()
