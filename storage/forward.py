"""Span batches between processes: proxy workers hand their rows to the process that owns the store.

The embedded chDB engine can be opened by one process only. When the proxy runs in its own
process(es) (``genops serve`` with the store in a separate process, or ``--workers N``), each
proxy process keeps its own :class:`~genops.storage.pipeline.SpanPipeline` (conversion,
batching, its own disk spool) with a :class:`ForwardingSink`: a batch is the same payload
it would insert itself (of any pipeline kind: the proxy's spans are compact batches),
POSTed over loopback to the store process, which inserts it with the batch's
deduplication token and answers only once it is stored.
A failed or refused POST leaves the batch in the worker's spool, retried with backoff, so
the guarantees are the pipeline's own: in order, exactly once, nothing lost while the store
process is down or restarting. The proxy process pays for encoding its spans only; spelling
them as rows, parsing and writing them (and ClickHouse's merges) run in the store process.
"""

from __future__ import annotations

import asyncio
import http.client
import hmac
import time
from typing import Any, Sequence
from urllib.parse import urlsplit

from aiohttp import web

from genops.storage.pipeline import JSON, SPAN_ROWS, SPANS, SpanPipeline

#: Path of the store process's internal endpoint (on its loopback-only internal port).
INGEST_PATH = "/genops/internal/rows"
TOKEN_HEADER = "GenOps-Dedup-Token"
#: The batch's pipeline kind (absent: JSONEachRow rows).
KIND_HEADER = "GenOps-Batch-Kind"
_KINDS = frozenset((JSON, SPAN_ROWS, SPANS))
#: Environment variable carrying the shared secret from the store process to its workers.
SECRET_ENV = "GENOPS_INTERNAL_SECRET"


def internal_secret_ok(headers: Any, secret: str) -> bool:
    """Whether a request to an internal endpoint carries the supervisor's secret (constant-time check)."""
    given = headers.get("Authorization", "")
    return bool(secret) and hmac.compare_digest(given.encode(), f"Bearer {secret}".encode())


class ForwardError(RuntimeError):
    """The store process did not store the batch (the pipeline keeps it and retries)."""


class ForwardingSink:
    """A pipeline sink that POSTs each batch to the store process (keep-alive, one connection).

    Used only from the pipeline's sender thread, so one ``http.client`` connection suffices.
    """

    #: A batch may come as its consecutive parts: sent as they are, never joined.
    accepts_parts = True

    def __init__(self, url: str, secret: str, timeout_s: float = 30.0) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.secret = secret
        self.timeout_s = timeout_s
        self._connection: http.client.HTTPConnection | None = None

    def insert(self, payload: bytes | Sequence[Any], token: str, kind: str = JSON) -> None:
        """Store one batch of ``kind`` (bytes, or buffers in order); raises :class:`ForwardError`
        (or ``OSError``) when not stored."""
        headers = {"Authorization": f"Bearer {self.secret}", TOKEN_HEADER: token, KIND_HEADER: kind,
                   "Content-Type": "application/octet-stream"}
        if not isinstance(payload, bytes):  # http.client sends each part as it is, given the length
            headers["Content-Length"] = str(sum(len(part) for part in payload))
        for attempt in (1, 2):  # a keep-alive connection the server closed meanwhile gets one fresh retry
            connection = self._connection or http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            self._connection = connection
            try:
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
            raise ForwardError(f"the store process answered {response.status}: {body[:300].decode(errors='replace')}")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def ingest_route(app: web.Application, pipeline: SpanPipeline, secret: str) -> None:
    """Register the store process's side: insert a worker's batch with ``pipeline``'s sink, answer 204 once stored.

    Compact span batches are spelled as rows here, on the executor thread, not in the worker.

    The insert runs on a thread (ClickHouse parses in C++ with the GIL released); the batch's
    own token deduplicates a retry whose first attempt did land.
    """

    async def ingest(request: web.Request) -> web.Response:
        if not internal_secret_ok(request.headers, secret):
            return web.json_response({"error": "forbidden"}, status=403)
        token = request.headers.get(TOKEN_HEADER, "")
        if len(token) != 32:
            return web.json_response({"error": f"missing or malformed {TOKEN_HEADER}"}, status=400)
        kind = request.headers.get(KIND_HEADER, JSON)
        if kind not in _KINDS:
            return web.json_response({"error": f"unknown {KIND_HEADER}: {kind[:40]}"}, status=400)
        payload = await request.read()
        started = time.perf_counter()
        try:
            await asyncio.get_running_loop().run_in_executor(None, pipeline.sink.insert, payload, token, kind)
        except Exception as exc:  # noqa: BLE001 - the worker keeps the batch and retries (and counts the failure)
            message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            return web.json_response({"error": message}, status=503)
        # Span counts come from the workers' own reports (proxy/worker_report.py); the insert
        # latency is measured here, where the insert happens.
        pipeline.counters.latency.observe(time.perf_counter() - started)
        return web.Response(status=204)

    app.router.add_post(INGEST_PATH, ingest)
