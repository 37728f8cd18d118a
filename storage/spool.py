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
- ``cursor``: ``<segment> <offset>`` of the first record not yet acknowledged (atomic rename),
  followed by ``<records>`` while a group of that many records is being inserted as one (below);
- ``acked``: the tokens of the batches acknowledged last (only when the spool remembers them,
  ``remember_tokens``), one per line, so a batch handed in again is recognised after a restart;
- ``lock``: held with ``flock`` so two processes never share a spool.

Consecutive batches may be inserted as one group (:meth:`Spool.peek_group`): ClickHouse's cost
of an insert is mostly fixed (its views, a part per table), so a store inserts a few seconds of
batches at once. The group's deduplication token is derived from its members' tokens
(:func:`group_token`), and the number of records in it is written to the cursor before its
first insert: a retry or a replay after a crash inserts exactly the same records with the
same token, so a group whose insert landed unacknowledged is dropped by ClickHouse as a
duplicate. Without that count in the cursor the first record is inserted alone (a single
batch keeps its own token).

When the spool would exceed its size limit, the oldest segment is dropped (oldest first:
the newest spans are kept) and its spans are counted in ``dropped_spans``, exactly the
spans that are never stored. One batch is kept however full the spool is: the oldest, once
its insert was tried (it is being sent, or its insert failed; a group's records all are). That insert may have landed
(a timeout, a store killed mid-insert): only its retry, with the same deduplication token,
can tell, so it stays (its payload in memory once its segment is gone) until it is
acknowledged; the next ones are dropped instead. A torn record at the end of a segment (a
crash in the middle of a write) ends that segment's readable data.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import logging
import os
import struct
import threading
import time
import uuid
import zlib
from collections import OrderedDict, deque
from collections.abc import Collection, Sequence
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
ACKED = "acked"
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
    appended: float = 0.0  # time.monotonic() when it was written (0: found on disk at start)


def group_token(records: Sequence[Record]) -> str:
    """The deduplication token of ``records`` inserted as one: a single record's own token, else
    32 hex digits derived from every member's token in order (the same group, the same token)."""
    if len(records) == 1:
        return records[0].token
    return hashlib.blake2b("".join(r.token for r in records).encode(), digest_size=16).hexdigest()


class Spool:
    """Append batches, read the oldest unacknowledged one, acknowledge it. Thread-safe."""

    def __init__(self, directory: Path, *, max_bytes: int, segment_bytes: int = 16 << 20,
                 cache_bytes: int = 64 << 20, fsync: bool = False, remember_tokens: int = 0) -> None:
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
        #: The head's first this many records were handed out as one group (:meth:`peek_group`) and
        #: must be inserted as that group again until acknowledged; 0: the next group is free to form.
        self._fixed = 0
        #: How many acknowledged tokens :meth:`knows` remembers (0: none, nothing written to ``acked``).
        self.remember_tokens = remember_tokens
        self._acked: OrderedDict[str, None] = OrderedDict()
        self._acked_lines = 0
        self._recover()
        if remember_tokens:
            self._load_acked()

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
        """Index every record after the cursor; drop fully acknowledged segments; fix the group the
        cursor names (or the first record alone: it may have been inserted so)."""
        cursor_segment, cursor_offset, group = self._read_cursor()
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
            if group > len(self._pending):
                log.warning("spool: records of the group being inserted are missing; the rest is inserted as a group",
                            extra={"group": group, "found": len(self._pending)})
            self._fixed = min(group, len(self._pending))
            log.info("spool: batches to replay", extra={"batches": len(self._pending), "spans": self.pending_spans})

    def _read_cursor(self) -> tuple[int, int, int]:
        """``(segment, offset, records of the group being inserted)``; the group is 1 when not given."""
        try:
            fields = (self.directory / CURSOR).read_text().split()
            segment, offset = int(fields[0]), int(fields[1])
            return segment, offset, int(fields[2]) if len(fields) > 2 else 1
        except (OSError, ValueError, IndexError):
            return 0, 0, 1

    def _write_cursor(self, segment: int, offset: int, group: int = 1) -> None:
        tmp = self.directory / (CURSOR + ".tmp")
        tmp.write_text(f"{segment} {offset} {group}\n" if group > 1 else f"{segment} {offset}\n")
        if self.fsync and group > 1:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, self.directory / CURSOR)

    # -- tokens already taken -----------------------------------------------------------------

    def _load_acked(self) -> None:
        path = self.directory / ACKED
        try:
            lines = path.read_text(errors="replace").split()
        except OSError:
            lines = []
        for token in lines[-self.remember_tokens:]:
            if len(token) == 32:
                self._acked[token] = None
        self._acked_lines = len(lines)

    def _remember_acked(self, records: Sequence[Record]) -> None:
        """Remember ``records``' tokens (in memory and in ``acked``, compacted once it holds twice
        what is remembered); a failed write only makes a restarted store forget them."""
        for record in records:
            self._acked[record.token] = None
        while len(self._acked) > self.remember_tokens:
            self._acked.popitem(last=False)
        path = self.directory / ACKED
        try:
            if self._acked_lines + len(records) > 2 * self.remember_tokens:
                tmp = self.directory / (ACKED + ".tmp")
                tmp.write_text("".join(f"{token}\n" for token in self._acked))
                os.replace(tmp, path)
                self._acked_lines = len(self._acked)
            else:
                with open(path, "a") as handle:
                    handle.write("".join(f"{r.token}\n" for r in records))
                self._acked_lines += len(records)
        except OSError as exc:
            log.warning("spool: acknowledged tokens not written", extra={"error": str(exc)})

    def knows(self, token: str) -> bool:
        """Whether a batch with ``token`` is in the spool, or was acknowledged among the last
        ``remember_tokens`` (a batch handed in again after its first hand-off did land)."""
        with self._lock:
            # Asked once per hand-off (a second per worker): a pass over the pending batches is cheap.
            return token in self._acked or any(record.token == token for record in self._pending)

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
                            payload if keep else None, kind=kind, appended=time.monotonic())  # type: ignore[arg-type]
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
                if self._write_fd is None or not self._segment_sizes[oldest]:
                    break  # nothing left to drop: a batch bigger than the whole spool is still written
                self._rotate()  # never drop the segment being written: start a new one first
            dropped = 0
            kept: list[Record] = []
            while self._pending and self._pending[0].detached:
                kept.append(self._pending.popleft())
            while self._pending and self._pending[0].segment == oldest:
                record = self._pending.popleft()
                if record.tried:
                    # Being inserted, or its insert failed (it, or its group): it may have landed.
                    # Kept, in memory, for its retry.
                    if record.payload is None:
                        with open(self._path(oldest), "rb") as handle:
                            handle.seek(record.offset + HEADER.size)
                            record.payload = handle.read(record.length - HEADER.size)
                        self._cached += len(record.payload)
                    record.detached = True
                    kept.append(record)
                    continue
                dropped += record.spans
                if record.payload is not None:
                    self._cached -= len(record.payload)
            self._pending.extendleft(reversed(kept))
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
        head = self.peek_group(1, (), regions)
        return None if head is None else (head[0][0], head[1][0])

    def peek_group(self, max_spans: int, kinds: Collection[str], regions: bool = False,
                   max_bytes: int = 16 << 20) -> tuple[list[Record], list[bytes | FileRegion]] | None:
        """The oldest unacknowledged batches to insert as one, with their payloads, or None.

        The group is the oldest batch and those after it of the same kind, while that kind is
        one of ``kinds`` and the group holds at most ``max_spans`` spans and ``max_bytes`` bytes
        of records; or, once a group was
        handed out and not acknowledged, exactly that group again (see the module doc: its size
        is in the cursor before this returns). Its records are acknowledged with :meth:`ack`.
        """
        with self._lock:
            if self.closed or not self._pending:
                return None
            pending = self._pending
            if self._fixed:
                # The group again; to a caller that takes no groups (the spool changed hands:
                # a collector's sink now), its batches one by one, each under its own token.
                size = min(self._fixed, len(pending)) if kinds else 1
            else:
                head = pending[0]
                size, spans, length = 1, head.spans, head.length
                if head.kind in kinds:
                    for record in itertools.islice(pending, 1, None):
                        if (record.kind != head.kind or spans + record.spans > max_spans
                                or length + record.length > max_bytes):
                            break
                        size += 1
                        spans += record.spans
                        length += record.length
                if size > 1:  # before its first insert: a replay re-forms exactly this group
                    try:
                        self._write_cursor(head.segment, head.offset, size)
                    except OSError as exc:  # unrecorded, a group could be replayed differently: one batch
                        log.warning("spool: cursor not written; inserting one batch", extra={"error": str(exc)})
                        size = 1
                self._fixed = size
            group = list(itertools.islice(pending, size))
            payloads: list[bytes | FileRegion] = []
            for record in group:
                record.tried = True  # from now on it may be stored: a full spool keeps it (see _make_room)
                payloads.append(record.payload if record.payload is not None else
                                FileRegion(self._path(record.segment), record.offset + HEADER.size,
                                           record.length - HEADER.size))
        if regions:
            return group, payloads
        read: list[bytes | FileRegion] = []
        for record, payload in zip(group, payloads, strict=True):
            if isinstance(payload, FileRegion):
                try:
                    payload = payload.read()
                except OSError:
                    if record.payload is None:
                        raise
                    payload = record.payload  # its segment was dropped meanwhile: kept in memory (_make_room)
            read.append(payload)
        return group, read

    def group_wait(self, kinds: Collection[str], max_spans: int, linger_s: float,
                   max_bytes: int = 16 << 20) -> float | None:
        """Seconds until the next group is due: None when the spool is empty; 0 when it is due now
        (a group handed out before, a batch found at start, one not of ``kinds``, another kind
        behind it, ``max_spans`` or ``max_bytes`` reached, or a quarter of the spool's limit or of
        its memory cache: lingering never makes the spool drop a batch or refuse a hand-off);
        else what is left of ``linger_s`` since the oldest batch was written."""
        with self._lock:
            if not self._pending:
                return None
            head = self._pending[0]
            if self._fixed or head.replay or head.kind not in kinds or not linger_s:
                return 0.0
            spans = length = 0
            most = min(max_bytes, self.max_bytes // 4, self.cache_bytes // 4)
            for record in self._pending:
                spans += record.spans
                length += record.length
                if record.kind != head.kind or spans >= max_spans or length >= most:
                    return 0.0
            return max(0.0, head.appended + linger_s - time.monotonic())

    def ack(self, record: Record | Sequence[Record]) -> None:
        """Mark ``record`` (or a group's records, from :meth:`peek_group`) stored; advance the
        cursor; delete segments left behind."""
        records = [record] if isinstance(record, Record) else list(record)
        with self._lock:
            if self.closed or len(self._pending) < len(records) or any(
                    self._pending[i] is not r for i, r in enumerate(records)):
                return  # closed: replayed by the next start
            for _ in records:
                self._pending.popleft()
            self._fixed = max(0, self._fixed - len(records))
            for acked in records:
                if acked.payload is not None:
                    self._cached -= len(acked.payload)
            last = records[-1]
            self._write_cursor(last.segment, last.offset + last.length)
            if self.remember_tokens:
                self._remember_acked(records)
            for segment in [s for s in self._segment_sizes if s < last.segment or
                            (s == last.segment and s != self._write_segment and
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

    def _write_back(self, records: list[Record]) -> None:
        """Put kept batches whose segments were dropped back on disk, first in line for the next
        start: alone in a segment of the first one's old number (older than every other), the
        cursor at its start (with the group they belong to)."""
        parts: list[Buffer] = []
        for record in records:
            assert record.payload is not None
            parts += [HEADER.pack(MAGIC_BY_KIND[record.kind], len(record.payload), record.spans,
                                  zlib.crc32(record.payload), record.token.encode()), record.payload]
        try:
            fd = os.open(self._path(records[0].segment), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _write_all(fd, parts)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            self._write_cursor(records[0].segment, 0, self._fixed)
        except OSError as exc:
            log.error("spool: the batches kept for their retry could not be written back; they are lost",
                      extra={"spans": sum(r.spans for r in records), "error": str(exc)})

    def close(self) -> None:
        """Close the segment being written and release the lock (pending batches stay on disk)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self._write_fd is not None:
                os.close(self._write_fd)
                self._write_fd = None
            detached = list(itertools.takewhile(lambda r: r.detached, self._pending))
            if detached:
                self._write_back(detached)
            try:
                fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            finally:
                self._lock_file.close()
