"""Span batches between processes: proxy workers hand their rows to the process that owns the store.

The embedded chDB engine can be opened by one process only. When the proxy runs in its own
process(es) (``genops serve`` with the store in a separate process, or ``--workers N``), each
proxy process keeps its own :class:`~genops.storage.pipeline.SpanPipeline` (conversion,
batching, its own disk spool) with a :class:`ForwardingSink`: a batch is the same payload
it would insert itself (of any pipeline kind: the proxy's spans are compact batches),
POSTed over loopback to the store process (:mod:`genops.api.ingest`), which writes it to its own spool with the
batch's deduplication token and answers once it is there; the store's sender inserts it
from there, in order (:meth:`~genops.storage.pipeline.SpanPipeline.accept_handoff`).
A failed or refused POST (the store is down, restarting, or its backlog is full) leaves the
batch in the worker's spool, retried with backoff, so the guarantees are the pipeline's
own: in order, exactly once, nothing lost. The proxy process pays for encoding its spans
only; spelling them as rows, parsing and writing them (and ClickHouse's merges) run in the
store process.
"""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

from genops.storage.sinks import JSON, PING_TIMEOUT_S, SPAN_ROWS, SPANS, Payload, Sink, StoreFull, http_answers
from genops.storage.spool import FileRegion

#: Path of the store process's internal endpoint (on its loopback-only internal port).
INGEST_PATH = "/genops/internal/rows"
TOKEN_HEADER = "GenOps-Dedup-Token"
#: The batch's pipeline kind (absent: JSONEachRow rows).
KIND_HEADER = "GenOps-Batch-Kind"
#: How many spans the batch holds.
SPANS_HEADER = "GenOps-Batch-Spans"
#: The batch kinds a worker may hand over.
KINDS = frozenset((JSON, SPAN_ROWS, SPANS))
#: Environment variable carrying the shared secret from the store process to its workers.
SECRET_ENV = "GENOPS_INTERNAL_SECRET"


class ForwardError(RuntimeError):
    """The store process did not store the batch (the pipeline keeps it and retries)."""


class StoreProcessFull(ForwardError, StoreFull):
    """The store process's backlog is full (429): its probe (``GET``) answers 204 once it has room."""


class ForwardingSink(Sink):
    """A pipeline sink that POSTs each batch to the store process (keep-alive, one connection).

    Used only from the pipeline's sender thread, so one ``http.client`` connection suffices.
    """

    #: A batch may come as its consecutive parts: sent as they are, never joined.
    accepts_parts = True
    #: A spooled batch may come as the file region it occupies: sent with ``sendfile``, never read.
    accepts_regions = True
    #: An acknowledged batch is handed on (in the store's spool), not yet inserted: the
    #: worker reports it as forwarded; the store counts it exported once inserted.
    forwards = True

    def __init__(self, url: str, secret: str, timeout_s: float = 30.0) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.secret = secret
        self.timeout_s = timeout_s
        self._connection: http.client.HTTPConnection | None = None

    def insert(self, payload: Payload, token: str, kind: str = JSON, spans: int = 0) -> None:
        """Hand one batch of ``kind`` and ``spans`` spans (bytes, or buffers in order) to the store
        process; raises :class:`ForwardError` (or ``OSError``) when it did not take it."""
        headers = {"Authorization": f"Bearer {self.secret}", TOKEN_HEADER: token, KIND_HEADER: kind,
                   SPANS_HEADER: str(spans), "Content-Type": "application/octet-stream"}
        if isinstance(payload, FileRegion):
            headers["Content-Length"] = str(payload.length)
        elif not isinstance(payload, bytes):  # http.client sends each part as it is, given the length
            headers["Content-Length"] = str(sum(len(part) for part in payload))
        for attempt in (1, 2):  # a keep-alive connection the server closed meanwhile gets one fresh retry
            connection = self._connection or http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            self._connection = connection
            try:
                if isinstance(payload, FileRegion):
                    _send_region(connection, headers, payload)
                else:
                    connection.request("POST", INGEST_PATH, body=payload, headers=headers)
                response = connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException):
                connection.close()
                self._connection = None
                if attempt == 2:
                    raise
                continue
            if response.status == 204:
                return
            if response.status == 429:
                raise StoreProcessFull(f"the store process is behind: {body[:300].decode(errors='replace')}")
            raise ForwardError(f"the store process answered {response.status}: {body[:300].decode(errors='replace')}")

    def ping(self) -> bool:
        """Whether the store process would take a batch now (``GET`` on the ingest path: 204 when its
        backlog has room), on a connection of its own with a short timeout."""
        return http_answers(http.client.HTTPConnection(self.host, self.port, timeout=PING_TIMEOUT_S), INGEST_PATH,
                            {"Authorization": f"Bearer {self.secret}"}, 204)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _send_region(connection: http.client.HTTPConnection, headers: dict[str, str], region: FileRegion) -> None:
    """POST the headers, then the region straight from the file to the socket (``sendfile``)."""
    connection.putrequest("POST", INGEST_PATH, skip_accept_encoding=True)
    for name, value in headers.items():
        connection.putheader(name, value)
    connection.endheaders()
    assert connection.sock is not None  # connected by endheaders()
    with open(region.path, "rb") as handle:
        sent = connection.sock.sendfile(handle, region.offset, region.length)
    if sent != region.length:
        raise OSError(f"the spool segment ended {region.length - sent} bytes early")
