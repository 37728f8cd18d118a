"""Health, readiness and the read-only SQL endpoint (token-protected).

Each SQL request is checked by ClickHouse's parser and runs on a client of its own in a
small pool of its own (``GENOPS_SQL_MAX_CONCURRENT``; more at once get a 429), so neither
a slow query nor anything a query does reaches readiness, feedback or span export, which
use other clients and threads. A client that goes away cancels its query.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import orjson
from aiohttp import web

from genops.config import Settings
from genops.storage.client import StorageError, open_query_client
from genops.storage.pipeline import SpanPipeline
from genops.storage.sql import QueryError, QueryLimits, QueryRefused, QueryResult, cancel_query, new_query_id, run_readonly
from genops.storage.store_boot import StoreBoot, needs_storage, readiness

SQL_PATH = "/genops/v1/sql"
#: Longest a query waits for the spans spooled before it to be inserted (a store that does not
#: answer fails the query anyway).
SQL_FLUSH_WAIT_S = 2.0
#: How often a waiting handler looks whether its client is still there.
DISCONNECT_POLL_S = 0.1

log = logging.getLogger("genops.admin")

#: Why this process is not ready, or None: set by the process's drain (genops.runtime.drain), so
#: ``/readyz`` fails first on SIGTERM.
NOT_READY_KEY: web.AppKey[Callable[[], str | None]] = web.AppKey("genops.not_ready")


def draining_answer(not_ready: Callable[[], str | None] | None) -> bytes | None:
    """``/readyz``'s body while this process drains (with status 503), else None."""
    reason = not_ready() if not_ready is not None else None
    if reason is None:
        return None
    return orjson.dumps({"status": "draining", "proxy": "draining", "reason": f"shutting down ({reason})"})


def draining_response(request: web.Request) -> web.Response | None:
    """``/readyz``'s answer while this process drains (503 ``{"status": "draining"}``), else None."""
    body = draining_answer(request.app.get(NOT_READY_KEY))
    if body is None:
        return None
    return web.Response(status=503, body=body, content_type="application/json")


T = TypeVar("T")


class ClientGone(Exception):
    """The HTTP client closed its connection before the answer was ready."""


def client_gone(request: web.Request) -> bool:
    """True once the client of ``request`` has closed its connection."""
    transport = request.transport
    return transport is None or transport.is_closing()


async def until_answered(request: web.Request, work: Awaitable[T]) -> T:
    """Await ``work`` unless the client of ``request`` goes away first (:func:`until_answered_or_gone`)."""
    return await until_answered_or_gone(lambda: client_gone(request), work)


async def until_answered_or_gone(gone: Callable[[], bool], work: Awaitable[T]) -> T:
    """Await ``work`` unless the client goes away first (``gone()``); then cancel it and raise
    :class:`ClientGone`.

    Neither server cancels a handler whose client left, so a long wait looks itself.
    (Cancelling work that runs in a thread only stops it from starting; the caller stops the rest.)
    """
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if gone():
                raise ClientGone()
    finally:
        if not task.done():
            task.cancel()


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


def _error(status: int, message: str, code: str) -> web.Response:
    return _json({"error": {"message": message, "type": "genops_error", "code": code}}, status)


def check_token(request: web.Request, token: str) -> web.Response | None:
    """None when the request carries the admin token as a Bearer token, else a 401 response."""
    header = request.headers.get("Authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if not given or not hmac.compare_digest(given.encode(), token.encode()):
        return _error(401, "This endpoint needs the admin token: Authorization: Bearer <GENOPS_ADMIN_TOKEN>.", "unauthorized")
    return None


class AdminRoutes:
    """``/healthz``, ``/readyz`` and ``POST /genops/v1/sql``.

    ``client`` (shared) answers readiness and cancels queries; each user query gets its own
    client from ``open_query_client``.
    """

    def __init__(self, client: Any, settings: Settings, token: str,
                 open_query_client: Callable[[Settings], Any] = open_query_client) -> None:
        self.client = client
        self.settings = settings
        self.database = settings.database
        self.token = token
        self.limits = QueryLimits.from_settings(settings)
        self._open_query_client = open_query_client
        self._pool = ThreadPoolExecutor(settings.sql_max_concurrent, thread_name_prefix="genops-sql")
        self._running = 0  # queries submitted and not finished, on the event loop's thread only
        #: More readiness conditions: each returns why the server is not ready, or None.
        self.readiness_checks: list[Callable[[], str | None]] = []
        # The store this process owns and the pipeline inserting into it (watch_storage).
        self._store: Any = None
        self._pipeline: Any = None
        self._spooled_elsewhere: Callable[[], int] = lambda: 0

    def watch_storage(self, store: Any, pipeline: Any, spooled_elsewhere: Callable[[], int] | None = None) -> None:
        """Report ``store`` (a :class:`~genops.storage.store_boot.StoreBoot`) in ``/readyz``, and answer
        SQL with 503 until it is migrated. ``spooled_elsewhere()``: spans waiting in the workers' spools."""
        self._store = store
        self._pipeline = pipeline
        if spooled_elsewhere is not None:
            self._spooled_elsewhere = spooled_elsewhere

    def register(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_post(SQL_PATH, self.sql)
        app.on_cleanup.append(self._close)

    async def _close(self, _: web.Application) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        """200 when the proxy can serve calls, whether or not the store answers (calls do not need
        it: their spans wait in the spool); ``?storage=1`` also needs the store (503 until it answers).
        The body says which (docs/operations.md, "Storage outages")."""
        draining = draining_response(request)  # SIGTERM: fail readiness first (runtime/drain.py)
        if draining is not None:
            return draining
        for check in self.readiness_checks:
            reason = check()
            if reason:
                return _json({"status": "starting", "proxy": "starting", "reason": reason}, 503)
        need_storage = needs_storage(request.query)
        if self._store is None:  # no store of this process's own to report (an app built for a test)
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.client.query, "SELECT 1")
            except Exception as exc:  # any failure means "not ready"
                return _json({"status": "unavailable", "storage": str(exc).splitlines()[0][:300]}, 503)
            return _json({"status": "ready", "storage": "ok"})
        if need_storage:  # a live check, bounded: a hung store answers 503, never hangs the probe
            status = await asyncio.get_running_loop().run_in_executor(None, self._store.check, self._pipeline)
        else:  # no I/O: the proxy's readiness never waits on ClickHouse
            status = self._store.status(self._pipeline)
        code, body = readiness(status, self._pipeline.spool.pending_spans + self._spooled_elsewhere(), need_storage)
        return _json(body, code)

    async def sql(self, request: web.Request) -> web.Response:
        denied = check_token(request, self.token)
        if denied is not None:
            return denied
        try:
            payload = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, 'Send JSON: {"query": "SELECT ..."}.', "invalid_json")
        query = payload.get("query") if isinstance(payload, dict) else None
        if not isinstance(query, str) or not query.strip():
            return _error(400, 'Send JSON: {"query": "SELECT ..."}.', "missing_query")
        max_rows = payload.get("max_rows", 10_000)
        if not isinstance(max_rows, int) or isinstance(max_rows, bool) or not 1 <= max_rows <= 1_000_000:
            return _error(400, "max_rows must be an integer from 1 to 1000000.", "invalid_max_rows")
        if self._store is not None and not self._store.migrated:
            return _storage_unavailable(self._store.reason)
        if self._running >= self.settings.sql_max_concurrent:
            return _busy(self._running)
        query_id = new_query_id()
        self._running += 1
        future: Future[QueryResult] = self._pool.submit(self._run, query, max_rows, query_id)
        loop = asyncio.get_running_loop()
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._finished))
        try:
            result = await until_answered(request, asyncio.wrap_future(future))
        except ClientGone:
            await self._cancel(query_id)
            return _error(499, "The client closed the connection; the query was cancelled.", "client_closed")
        except asyncio.CancelledError:
            await asyncio.shield(self._cancel(query_id))
            raise
        except StorageError as exc:
            return _storage_unavailable(str(exc))
        except QueryRefused as exc:
            return _error(403, str(exc), "query_refused")
        except QueryError as exc:
            return _error(400, str(exc), "query_failed")
        return _json(result.as_dict())

    def _finished(self) -> None:
        self._running -= 1

    def _run(self, query: str, max_rows: int, query_id: str) -> QueryResult:
        """One user query on a client of its own (in the SQL pool's thread).

        It reads what was spooled before it: the store inserts every few seconds
        (``GENOPS_EXPORT_INSERT_INTERVAL_MS``), so the spans waiting in its spool are inserted
        first (for up to :data:`SQL_FLUSH_WAIT_S`); a call answered before the query is in what
        it reads, but for a worker's last ``GENOPS_EXPORT_INTERVAL_MS`` of spans still on their way.
        """
        if self._pipeline is not None and self._pipeline.spool.pending_batches:
            self._pipeline.flush(SQL_FLUSH_WAIT_S)
        try:
            client = self._open_query_client(self.settings)
        except StorageError:
            raise  # storage down: 503
        except Exception as exc:  # say so in one line
            raise QueryError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        try:
            return run_readonly(client, query, database=self.database, max_rows=max_rows, limits=self.limits,
                                query_id=query_id)
        finally:
            client.close()

    async def _cancel(self, query_id: str) -> None:
        """Stop a query whose client left (best effort: it also ends at GENOPS_SQL_TIMEOUT_S)."""
        try:
            await asyncio.get_running_loop().run_in_executor(None, cancel_query, self.client, query_id)
        except Exception as exc:  # the timeout still bounds it
            log.warning("could not cancel an abandoned SQL query", extra={"error": str(exc).splitlines()[0][:300]})
        else:
            log.info("SQL query cancelled: its client went away", extra={"query_id": query_id})


#: Retry-After of a 503 while the store is unavailable (the proxy retries its own inserts much sooner).
STORAGE_RETRY_AFTER_S = 5


def _storage_unavailable(reason: str) -> web.Response:
    first = (reason.strip().splitlines() or ["the store is not reachable"])[0][:300]
    body = {"error": {"message": f"The store is unavailable, so queries cannot run now ({first}). The proxy keeps "
                                 "serving and spooling spans; retry later.",
                      "type": "genops_error", "code": "storage_unavailable"}}
    return web.Response(status=503, body=orjson.dumps(body), content_type="application/json",
                        headers={"Retry-After": str(STORAGE_RETRY_AFTER_S)})


def _busy(running: int) -> web.Response:
    body = {"error": {"message": f"{running} SQL queries are running, the most GENOPS_SQL_MAX_CONCURRENT allows; "
                                 "retry when one has finished.", "type": "genops_error", "code": "too_many_queries"}}
    return web.Response(status=429, body=orjson.dumps(body), content_type="application/json",
                        headers={"Retry-After": "1"})


def collector_readyz_route(app: web.Application, store: StoreBoot, pipeline: SpanPipeline) -> None:
    """``GET /readyz``, the contract of ``genops serve``'s (docs/operations.md, "Storage outages"):
    200 while the receiver takes spans, store or not (they wait in the spool); ``?storage=1``
    also needs the store (503 until it answers)."""

    async def readyz(request: web.Request) -> web.Response:
        need_storage = needs_storage(request.query)
        if need_storage:  # a live check, bounded: a hung store answers 503, never hangs the probe
            status = await asyncio.get_running_loop().run_in_executor(None, store.check, pipeline)
        else:  # no I/O
            status = store.status(pipeline)
        code, body = readiness(status, pipeline.spool.pending_spans, need_storage)
        return web.json_response(body, status=code)

    app.router.add_get("/readyz", readyz)
