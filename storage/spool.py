"""A durable, bounded, append-only spool of span batches on local disk.

Every batch is written here before it is inserted (write-ahead), so a batch survives a
storage outage, a restart and a SIGKILL; it leaves the spool only once ClickHouse has
acknowledged it. Batches are replayed strictly in the order they were written, each with
the deduplication token it was first given, so a batch whose first insert did land (but
whose acknowledgement was lost) is not stored twice.

Layout under the spool directory:
- ``NNNNNNNNNNNNNNNN.seg``: segment files of records
  ``magic(4) | payload length(4) | span count(4) | crc32(4) | token(32, ascii) | payload``;
  the magic names the payload's kind (``GSP1``: JSONEachRow rows for ``otel_traces``,
  ``GSP2``: OTLP SpanRows for ClickHouse to decode, see :mod:`genops.storage.otlp_native`;
  ``GSP3``: the proxy's own spans as compact lines, see :mod:`genops.storage.span_batch`);
- ``cursor``: ``<segment> <offset>`` of the first record not yet acknowledged (atomic rename);
- ``lock``: held with ``flock`` so two processes never share a spool.

When the spool would exceed its size limit, the oldest segment is dropped (oldest first:
the newest spans are kept) and its spans are counted in ``dropped_spans``, exactly the
spans that are never stored. One batch is kept however full the spool is: the oldest, once
its insert was tried (it is being sent, or its insert failed). That insert may have landed
(a timeout, a store killed mid-insert): only its retry, with the same deduplication token,
can tell, so it stays (its payload in memory once its segment is gone) until it is
acknowledged; the next ones are dropped instead. A torn record at the end of a segment (a
crash in the middle of a write) ends that segment's readable data.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import uuid
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: What a payload part may be (``collections.abc.Buffer`` from Python 3.12).
Buffer = bytes | bytearray | memoryview

log = logging.getLogger("genops.storage.spool")

MAGIC = b"GSP1"
# Payload kind of each record magic (``json``: the default, and the only kind before GSP2).
KIND_BY_MAGIC = {MAGIC: "json", b"GSP2": "otlp-span-rows", b"GSP3": "genops-spans"}
MAGIC_BY_KIND = {kind: magic for magic, kind in KIND_BY_MAGIC.items()}
HEADER = struct.Struct(">4sIII32s")
CURSOR = "cursor"
SUFFIX = ".seg"


#: Most buffers one ``writev`` takes (Linux's IOV_MAX).
_IOV_MAX = 1024


def _write_all(fd: int, parts: list[Buffer]) -> None:
    """Write ``parts`` in order, in as few ``writev`` calls as the OS allows, resuming after short writes."""
    while parts:
        group = parts[:_IOV_MAX]
        written = os.writev(fd, group)
        for i, part in enumerate(group):
            n = len(part)
            if written < n:
                parts = [memoryview(part)[written:], *group[i + 1:], *parts[len(group):]]
                break
            written -= n
        else:
            parts = parts[len(group):]


@dataclass(frozen=True)
class FileRegion:
    """A spooled payload left on disk: ``length`` bytes of ``path`` from ``offset`` (for ``sendfile``)."""

    path: Path
    offset: int
    length: int

    def __len__(self) -> int:
        return self.length

    def read(self) -> bytes:
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            return handle.read(self.length)


class SpoolLocked(RuntimeError):
    """Another process holds this spool."""


@dataclass
class Record:
    """One batch in the spool."""

    segment: int
    offset: int
    length: int  # header + payload bytes
    spans: int
    token: str
    payload: bytes | None  # kept in memory while the cache allows; else read back from disk
    replay: bool = False  # found on disk at start (not written by this process)
    kind: str = "json"  # what the payload is (KIND_BY_MAGIC)
    tried: bool = False  # handed out for an insert (peek): it may be stored, so never dropped
    detached: bool = False  # its segment was dropped: it lives in memory only (payload) until acknowledged


class Spool:
    """Append batches, read the oldest unacknowledged one, acknowledge it. Thread-safe."""

    def __init__(self, directory: Path, *, max_bytes: int, segment_bytes: int = 16 << 20,
                 cache_bytes: int = 64 << 20, fsync: bool = False) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = max(1 << 16, min(segment_bytes, max(max_bytes // 4, 1 << 16)))
        self.cache_bytes = cache_bytes
        self.fsync = fsync
        self._lock = threading.Lock()
        self._lock_file = open(self.directory / "lock", "a+")  # noqa: SIM115 - held for the spool's life
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise SpoolLocked(f"the spool {self.directory} is in use by another GenOps process") from None
        self._pending: deque[Record] = deque()
        self._segment_sizes: dict[int, int] = {}
        self._cached = 0
        #: Spans dropped because the spool was full: spans that are never stored (see the module doc).
        self.dropped_spans = 0
        self._write_fd: int | None = None
        #: Closed: the lock is released (another process may own the spool now); nothing is read,
        #: acknowledged or written through this object any more.
        self.closed = False
        self._write_segment = 0
        self._recover()

    # -- startup ----------------------------------------------------------------------------

    def _segments(self) -> list[int]:
        found = []
        for path in self.directory.glob("*" + SUFFIX):
            try:
                found.append(int(path.stem))
            except ValueError:
                continue
        return sorted(found)

    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:016d}{SUFFIX}"

    def _recover(self) -> None:
        """Index every record after the cursor; drop fully acknowledged segments."""
        cursor_segment, cursor_offset = self._read_cursor()
        segments = self._segments()
        for segment in segments:
            path = self._path(segment)
            if segment < cursor_segment:
                path.unlink(missing_ok=True)
                continue
            data = path.read_bytes()
            self._segment_sizes[segment] = len(data)
            offset = cursor_offset if segment == cursor_segment else 0
            while offset + HEADER.size <= len(data):
                magic, length, spans, crc, token = HEADER.unpack_from(data, offset)
                end = offset + HEADER.size + length
                if magic not in KIND_BY_MAGIC or end > len(data):
                    log.warning("spool: torn record ignored", extra={"segment": segment, "offset": offset})
                    break
                payload = data[offset + HEADER.size:end]
                if zlib.crc32(payload) != crc:
                    log.warning("spool: corrupt record ignored", extra={"segment": segment, "offset": offset})
                    break
                self._pending.append(Record(segment, offset, end - offset, spans, token.decode(), None, replay=True,
                                            kind=KIND_BY_MAGIC[magic]))
                offset = end
        self._write_segment = (segments[-1] + 1) if segments else max(cursor_segment, 1)
        for segment in list(self._segment_sizes):
            if not any(r.segment == segment for r in self._pending):
                self._path(segment).unlink(missing_ok=True)
                del self._segment_sizes[segment]
        if self._pending:
            log.info("spool: batches to replay", extra={"batches": len(self._pending), "spans": self.pending_spans})

    def _read_cursor(self) -> tuple[int, int]:
        try:
            segment, offset = (self.directory / CURSOR).read_text().split()
            return int(segment), int(offset)
        except (OSError, ValueError):
            return 0, 0

    def _write_cursor(self, segment: int, offset: int) -> None:
        tmp = self.directory / (CURSOR + ".tmp")
        tmp.write_text(f"{segment} {offset}\n")
        os.replace(tmp, self.directory / CURSOR)

    # -- writing ----------------------------------------------------------------------------

    def append(self, payload: bytes | Sequence[Buffer], spans: int, kind: str = "json", *,
               token: str | None = None) -> Record:
        """Write one batch of ``kind`` durably (to the OS; ``fsync`` too when configured) and index it.

        ``payload`` is the batch's bytes, or its consecutive parts (buffers the caller reuses
        once this returns: such a batch is read back from disk when sent, never kept here).
        The checksum and the write run with the GIL released, however big the batch.
        ``token`` is the batch's deduplication token when it already has one (a new one otherwise).
        """
        token = token or uuid.uuid4().hex
        whole = isinstance(payload, bytes)
        parts: Sequence[Buffer] = (payload,) if whole else payload  # type: ignore[assignment]
        length = crc = 0
        for part in parts:
            length += len(part)
            crc = zlib.crc32(part, crc)
        header = HEADER.pack(MAGIC_BY_KIND[kind], length, spans, crc, token.encode())
        size = HEADER.size + length
        with self._lock:
            if self.closed:
                raise OSError("the spool is closed")
            self._make_room(size)
            if self._write_fd is None or self._segment_sizes.get(self._write_segment, 0) + size > self.segment_bytes:
                self._rotate()
            offset = self._segment_sizes[self._write_segment]
            assert self._write_fd is not None  # opened by _rotate()
            # no copy of a big payload; one write when it fits one call: a crash leaves a whole or a torn record
            _write_all(self._write_fd, [header, *parts])
            if self.fsync:
                os.fsync(self._write_fd)
            self._segment_sizes[self._write_segment] = offset + size
            keep = whole and self._cached + length <= self.cache_bytes
            if keep:
                self._cached += length
            record = Record(self._write_segment, offset, size, spans, token,
                            payload if keep else None, kind=kind)  # type: ignore[arg-type]
            self._pending.append(record)
            return record

    def _rotate(self) -> None:
        if self._write_fd is not None:
            if self.fsync:
                os.fsync(self._write_fd)
            os.close(self._write_fd)
            self._write_segment += 1
        path = self._path(self._write_segment)
        self._write_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._segment_sizes[self._write_segment] = os.fstat(self._write_fd).st_size

    def _make_room(self, size: int) -> None:
        """Drop whole oldest segments until ``size`` more bytes fit under the limit (the oldest batch
        stays if its insert was tried: see the module doc)."""
        while self._segment_sizes and sum(self._segment_sizes.values()) + size > self.max_bytes:
            oldest = min(self._segment_sizes)
            if oldest == self._write_segment:
                if self._write_fd is None:
                    break
                self._rotate()  # never drop the segment being written: start a new one first
            dropped = 0
            kept = self._pending.popleft() if self._pending and self._pending[0].detached else None
            while self._pending and self._pending[0].segment == oldest:
                record = self._pending.popleft()
                if kept is None and record.tried:
                    # Being inserted, or its insert failed: it may have landed. Kept, in memory, for its retry.
                    if record.payload is None:
                        with open(self._path(oldest), "rb") as handle:
                            handle.seek(record.offset + HEADER.size)
                            record.payload = handle.read(record.length - HEADER.size)
                        self._cached += len(record.payload)
                    record.detached = True
                    kept = record
                    continue
                dropped += record.spans
                if record.payload is not None:
                    self._cached -= len(record.payload)
            if kept is not None:
                self._pending.appendleft(kept)
            self.dropped_spans += dropped
            self._path(oldest).unlink(missing_ok=True)
            del self._segment_sizes[oldest]
            log.warning("spool full: oldest batches dropped", extra={"spans": dropped, "segment": oldest})

    # -- reading ----------------------------------------------------------------------------

    def peek(self, regions: bool = False) -> tuple[Record, bytes | FileRegion] | None:
        """The oldest unacknowledged batch and its payload, or None (also once closed).

        With ``regions``, a payload not held in memory comes as the :class:`FileRegion` it
        occupies, not read: a sink that sends it with ``sendfile`` copies nothing into the process.
        """
        while True:
            with self._lock:
                if self.closed or not self._pending:
                    return None
                record = self._pending[0]
                record.tried = True  # from now on it may be stored: a full spool keeps it (see _make_room)
                if record.payload is not None:
                    return record, record.payload
                region = FileRegion(self._path(record.segment), record.offset + HEADER.size,
                                    record.length - HEADER.size)
            if regions:
                return record, region
            try:
                return record, region.read()
            except OSError:
                if record.payload is None:  # not a segment dropped meanwhile (its record kept in memory)
                    raise

    def ack(self, record: Record) -> None:
        """Mark ``record`` stored; advance the cursor; delete segments left behind."""
        with self._lock:
            if self.closed or not self._pending or self._pending[0] is not record:
                return  # closed: replayed by the next start
            self._pending.popleft()
            if record.payload is not None:
                self._cached -= len(record.payload)
            self._write_cursor(record.segment, record.offset + record.length)
            for segment in [s for s in self._segment_sizes if s < record.segment or
                            (s == record.segment and s != self._write_segment and
                             not (self._pending and self._pending[0].segment == s))]:
                self._path(segment).unlink(missing_ok=True)
                del self._segment_sizes[segment]

    # -- state ------------------------------------------------------------------------------

    @property
    def pending_batches(self) -> int:
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        """Bytes of the batches not yet acknowledged (headers included)."""
        return sum(r.length for r in list(self._pending))

    @property
    def pending_spans(self) -> int:
        return sum(r.spans for r in list(self._pending))

    @property
    def bytes_on_disk(self) -> int:
        with self._lock:  # read from other threads (/metrics, worker reports) while batches are written
            return sum(self._segment_sizes.values())

    def _write_back(self, record: Record) -> None:
        """Put a kept batch whose segment was dropped back on disk, first in line for the next start:
        alone in a segment of its old number (older than every other), the cursor at its start."""
        assert record.payload is not None
        header = HEADER.pack(MAGIC_BY_KIND[record.kind], len(record.payload), record.spans,
                             zlib.crc32(record.payload), record.token.encode())
        try:
            fd = os.open(self._path(record.segment), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _write_all(fd, [header, record.payload])
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            self._write_cursor(record.segment, 0)
        except OSError as exc:
            log.error("spool: the batch kept for its retry could not be written back; it is lost",
                      extra={"spans": record.spans, "error": str(exc)})

    def close(self) -> None:
        """Close the segment being written and release the lock (pending batches stay on disk)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self._write_fd is not None:
                os.close(self._write_fd)
                self._write_fd = None
            if self._pending and self._pending[0].detached:
                self._write_back(self._pending[0])
            try:
                fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            finally:
                self._lock_file.close()
