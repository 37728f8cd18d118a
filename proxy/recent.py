"""The calls this proxy served recently: request id -> (trace id, span id).

Feedback usually arrives seconds after the answer, and the call's span may still sit in
the export batch then (``GENOPS_EXPORT_INTERVAL_MS``, longer under load). The feedback
endpoint checks this memory first, so a score for a call the proxy just served is
accepted at once; older ids are looked up in storage. It is a span processor, so the
request path does nothing extra: ``on_end`` runs when the handler ends the span, after
the client has its response.

When the proxy runs in worker processes (store in its own process, ``--workers N``), the
feedback endpoint lives in the supervisor: each worker's :class:`RecentCallsPublisher`
sends the ids it served there every few milliseconds (:func:`recent_route` receives them).
"""

from __future__ import annotations

import asyncio
import logging
import threading

import aiohttp
import orjson
from aiohttp import web
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from genops import semconv as sc
from genops.storage.forward import internal_secret_ok
from genops.storage.scores import SpanRef

DEFAULT_CAPACITY = 50_000  # ~10 MB; at 1,000 calls/s that is 50 s, far beyond the export delay
RECENT_PATH = "/genops/internal/recent"
PUBLISH_INTERVAL_S = 0.02

log = logging.getLogger("genops.proxy.recent")


def _ref_of(span: ReadableSpan) -> tuple[str, SpanRef] | None:
    request_id = (span.attributes or {}).get(sc.GENOPS_REQUEST_ID)
    if not isinstance(request_id, str):
        return None
    ctx = span.get_span_context()
    return request_id, SpanRef(f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")


class RecentCalls(SpanProcessor):
    """A bounded, insertion-ordered memory of the request ids (and trace ids) of ended spans."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._requests: dict[str, SpanRef] = {}
        self._traces: dict[str, None] = {}
        self._lock = threading.Lock()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        found = _ref_of(span)
        if found is not None:
            self.add(*found)

    def add(self, request_id: str, ref: SpanRef) -> None:
        """Remember one served call."""
        with self._lock:
            self._requests.pop(request_id, None)
            self._requests[request_id] = ref
            self._traces[ref.trace_id] = None
            while len(self._requests) > self.capacity:
                del self._requests[next(iter(self._requests))]
            while len(self._traces) > self.capacity:
                del self._traces[next(iter(self._traces))]

    def request(self, request_id: str) -> SpanRef | None:
        """The span of a recently served request id, or None."""
        with self._lock:
            return self._requests.get(request_id)

    def has_trace(self, trace_id: str) -> bool:
        """True when a recently served call belongs to ``trace_id``."""
        with self._lock:
            return trace_id in self._traces

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class RecentCallsPublisher(SpanProcessor):
    """A worker's side: collects the ids it served and sends them to the supervisor in small batches.

    ``on_end`` only appends to a list; a task of the worker's event loop posts the list every
    :data:`PUBLISH_INTERVAL_S` while there is something to send (lost ids only mean feedback
    waits for the span's export instead).
    """

    def __init__(self, url: str, secret: str) -> None:
        self.url = url.rstrip("/") + RECENT_PATH
        self.secret = secret
        self._pending: list[tuple[str, str, str]] = []
        self._task: asyncio.Task | None = None

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        found = _ref_of(span)
        if found is not None:
            request_id, ref = found
            self._pending.append((request_id, ref.trace_id, ref.span_id))

    def attach(self, app: web.Application) -> None:
        """Run the publishing task for the life of ``app``."""

        async def start(_: web.Application) -> None:
            self._task = asyncio.get_running_loop().create_task(self._run())

        async def stop(_: web.Application) -> None:
            if self._task is not None:
                self._task.cancel()

        app.on_startup.append(start)
        app.on_cleanup.append(stop)

    async def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.secret}", "Content-Type": "application/json"}
        async with aiohttp.ClientSession() as session:
            while True:
                await asyncio.sleep(PUBLISH_INTERVAL_S)
                if not self._pending:
                    continue
                batch, self._pending = self._pending, []
                try:
                    async with session.post(self.url, data=orjson.dumps(batch), headers=headers,
                                            timeout=aiohttp.ClientTimeout(total=5)) as response:
                        await response.read()
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    log.debug("recent calls not published", extra={"error": type(exc).__name__})

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def recent_route(app: web.Application, recent: RecentCalls, secret: str) -> None:
    """The supervisor's side: remember the calls its workers report (internal, needs the secret)."""

    async def receive(request: web.Request) -> web.Response:
        if not internal_secret_ok(request.headers, secret):
            return web.json_response({"error": "forbidden"}, status=403)
        try:
            for request_id, trace_id, span_id in orjson.loads(await request.read()):
                recent.add(str(request_id), SpanRef(str(trace_id), str(span_id)))
        except (orjson.JSONDecodeError, TypeError, ValueError):
            return web.json_response({"error": "expected [[request_id, trace_id, span_id], ...]"}, status=400)
        return web.Response(status=204)

    app.router.add_post(RECENT_PATH, receive)
