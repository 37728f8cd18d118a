"""Encoded span lines, copied once into reusable chunks and handed on as batches of chunk views.

The proxy encodes each finished span as one line (:mod:`genops.storage.span_batch`). Keeping
the lines as separate ``bytes`` and joining a batch of them at flush time (~4 MB at 3,000
calls/s) is one ``memcpy`` into fresh memory that holds the GIL, page faults included:
several milliseconds once per batch, during which the event loop cannot run. At 10 clients
that stall raised p99 latency by ~40% (bench/proxy_bench.py; measured by dropping batches
before and after the join). Here each line is copied once, when it is added, into a
fixed-size chunk from a pool; a batch is the list of its chunks' filled parts, which the
spool checksums and writes with the GIL released. Chunks return to the pool once written,
so the steady state allocates nothing. A chunk is an anonymous ``mmap``: its pages are
touched one line at a time as it fills (no zero-filling megabytes on the event loop), and
spare chunks beyond what recent batches needed are unmapped, so resident memory comes back
down after a burst instead of staying at its high-water mark.

Thread use: :meth:`SpanBuffer.add` on the thread that ends spans (the event loop),
:meth:`SpanBuffer.take` and :meth:`SpanBuffer.release` on the batcher thread.
"""

from __future__ import annotations

import mmap
import threading
from collections import deque
from dataclasses import dataclass, field

#: Bytes per chunk: big enough that a batch is a few dozen parts (one ``writev``, few GIL
#: hand-offs to checksum), small enough that a chunk allocated on the event loop (pool
#: empty: start-up or a burst) costs tens of microseconds, not milliseconds.
CHUNK_BYTES = 256 << 10
#: Most spare chunks kept for reuse (32 MB); within that, as many as the biggest of the last
#: :data:`RECENT_BATCHES` batches used (the next batch fills while the last one is sent).
POOL_CHUNKS = 128
RECENT_BATCHES = 8


@dataclass
class Batch:
    """Up to ``batch_size`` lines, each ending in ``\\n``, as consecutive ``parts``."""

    parts: list[memoryview | bytes] = field(default_factory=list)
    spans: int = 0
    #: The pooled chunks behind ``parts`` (handed back with :meth:`SpanBuffer.release`).
    chunks: list[mmap.mmap] = field(default_factory=list)


class SpanBuffer:
    """Lines in, batches of at most ``batch_size`` lines out; at most ``limit`` lines held."""

    def __init__(self, batch_size: int, limit: int, chunk_bytes: int = CHUNK_BYTES,
                 pool_chunks: int = POOL_CHUNKS) -> None:
        self.batch_size = batch_size
        self.limit = limit
        self.chunk_bytes = chunk_bytes
        self.pool_chunks = pool_chunks
        self._lock = threading.Lock()
        self._pool: list[mmap.mmap] = []
        self._recent: deque[int] = deque(maxlen=RECENT_BATCHES)  # chunks per released batch
        self._full: deque[Batch] = deque()  # cut at batch_size, waiting for the batcher
        self._batch = Batch()  # the batch being filled
        self._chunk: mmap.mmap | None = None  # its current chunk ...
        self._used = 0  # ... filled up to here
        self._part_start = 0  # where its part in the current batch starts
        #: Lines held, in full batches and the one being filled.
        self.count = 0

    @property
    def full_batches(self) -> int:
        """Batches of ``batch_size`` lines waiting to be taken."""
        return len(self._full)

    def add(self, line: bytes) -> bool:
        """Append one line (without its newline); False, keeping nothing, when ``limit`` lines are held."""
        size = len(line) + 1
        with self._lock:
            if self.count >= self.limit:
                return False
            batch = self._batch
            if size > self.chunk_bytes:  # a huge span: its own part, no copy
                self._close_part()
                batch.parts.append(line + b"\n")
            else:
                if self._chunk is None or self._used + size > self.chunk_bytes:
                    self._next_chunk()
                chunk, used = self._chunk, self._used
                end = used + size - 1
                chunk[used:end] = line  # type: ignore[index]
                chunk[end] = 10  # type: ignore[index]
                self._used = end + 1
            batch.spans += 1
            self.count += 1
            if batch.spans >= self.batch_size:
                self._cut()
            return True

    def take(self, everything: bool) -> list[Batch]:
        """The full batches, and with ``everything`` also the one being filled."""
        with self._lock:
            if everything and self._batch.spans:
                self._cut()
            batches = list(self._full)
            self._full.clear()
            self.count -= sum(b.spans for b in batches)
        return batches

    def release(self, batch: Batch) -> None:
        """Give a written batch's chunks back to the pool (its parts are invalid from now on)."""
        for part in batch.parts:
            if isinstance(part, memoryview):
                part.release()
        batch.parts = []
        chunks, batch.chunks = batch.chunks, []
        with self._lock:
            self._recent.append(len(chunks))
            pool = self._pool
            pool.extend(chunks)
            # Keep what recent batches needed; after a burst the oldest spares give memory back.
            surplus = len(pool) - min(self.pool_chunks, max(self._recent))
            chunks = pool[:max(surplus, 0)]
            del pool[:max(surplus, 0)]
        for chunk in chunks:
            try:
                chunk.close()
            except BufferError:  # a view of it is still alive somewhere: unmapped when that goes
                pass

    @property
    def pooled_chunks(self) -> int:
        """Spare chunks kept for reuse."""
        return len(self._pool)

    # -- under the lock --------------------------------------------------------------------

    def _close_part(self) -> None:
        """End the current chunk's part of the batch (the chunk itself is not reused here)."""
        if self._chunk is not None and self._used > self._part_start:
            self._batch.parts.append(memoryview(self._chunk)[self._part_start:self._used])
        self._part_start = self._used

    def _next_chunk(self) -> None:
        self._close_part()
        self._chunk = self._pool.pop() if self._pool else mmap.mmap(-1, self.chunk_bytes)
        self._batch.chunks.append(self._chunk)
        self._used = self._part_start = 0

    def _cut(self) -> None:
        """The batch being filled is complete: queue it, start an empty one."""
        self._close_part()
        self._full.append(self._batch)
        self._batch = Batch()
        # The current chunk belongs to the batch just cut (released with it): start a new one.
        self._chunk = None
        self._used = self._part_start = 0
