"""One client connection of the native server: httptools parses (llhttp, as in uvicorn), requests
are answered one at a time in their order (pipelined ones wait, reading paused), and the limits
and timers are aiohttp.web's as GenOps configures it:

- the request line at most :data:`MAX_LINE` bytes, a header field at most :data:`MAX_FIELD`
  bytes (``max_field_size=65536``), at most :data:`MAX_HEADERS` fields: else 400, closed;
- a request's head due within the header timeout from the connection's start or the previous
  answer (``GENOPS_CLIENT_HEADER_TIMEOUT_S``), else the connection is closed;
- an unread body is kept up to the body limit and dropped beyond it (the handler refuses it);
- ``Expect: 100-continue`` is answered ``100 Continue`` before the handler runs;
- a client that leaves does not cancel its handler: the handler's next write raises
  ``ConnectionResetError`` (aiohttp's ``handler_cancellation=False``);
- once the server drains, each answer says ``Connection: close`` (runtime/drain.py).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import httptools
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from genops.runtime.http1 import wire
from genops.runtime.http1.exchange import Http1Exchange

log = logging.getLogger("genops.http1")

#: aiohttp's limits (its defaults, and ``max_field_size`` as runtime/app.py sets it).
MAX_LINE = 8190
MAX_FIELD = 65536
MAX_HEADERS = 128
#: A head larger than this in all is refused before it is all in memory (httptools keeps a field
#: until it is complete, so the per-field check alone comes too late for a field that never ends).
MAX_HEAD = 1024 * 1024
#: Pipelined requests parsed ahead of the one being answered, at most (then reading pauses).
MAX_QUEUED = 8
#: After an answer that closes the connection before its request's body was all read (a 413),
#: the rest is read and dropped for up to this long before closing (aiohttp's ``lingering_time``):
#: closing a socket with unread data resets it, and the client might lose the answer.
LINGER_S = 10.0

Dispatch = Callable[[Http1Exchange], Awaitable[None]]


class _Refused(Exception):
    """A request the parser accepted that breaks one of the limits: a 400 (as aiohttp's LineTooLong)."""


class Http1Connection(asyncio.Protocol):
    """One connection's protocol; its server (:class:`~genops.runtime.http1.server.Http1Server`) keeps it
    while open, for the drain."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.lost = False
        self.paused = False  # the transport's buffer is full: writers wait (drain)
        self._drained: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._closing = False  # close once the request in flight is answered (drain, Connection: close)
        # the request being parsed
        self._url = bytearray()
        self._fields: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._parsing: Http1Exchange | None = None
        # requests answered in order
        self._queue: deque[Http1Exchange] = deque()
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._upgrade_body: int | None = None  # bytes still due of an ignored upgrade request's body
        self._refusal: bytes | None = None  # a 400 to send once the answers before it are sent

    # -- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.server.connections.append(self)
        self._start_timer()

    def data_received(self, data: bytes) -> None:
        if self._closing and self._task is None:
            return
        if self._upgrade_body is not None:
            data = self._take_upgrade_body(data)
            if not data:
                return
        self._head_bytes += len(data) if self._parsing is None else 0
        try:
            if self._head_bytes > MAX_HEAD:
                raise _Refused("Got more than the limit of bytes when reading the request's head.")
            self.parser.feed_data(data)
        except _Refused as exc:
            self._refuse(str(exc))
        except httptools.HttpParserUpgrade as exc:
            self._ignore_upgrade(data[exc.args[0]:] if exc.args else b"")
        except httptools.HttpParserError as exc:
            self._refuse(_parser_message(exc))
        # Handlers start once what arrived is parsed: a request whose own bytes break the framing
        # is answered by the server (400) before any handler sees it, as aiohttp does.
        if self._task is None and self._queue and not self.lost:
            self._task = self.loop.create_task(self._serve())

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._cancel_timer()
        try:
            self.server.connections.remove(self)
        except ValueError:
            pass
        for exchange in self._queue:
            exchange.broken = not exchange.complete
            exchange.wake()
        if self._parsing is not None:
            self._parsing.broken = True
            self._parsing.wake()
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    # -- httptools callbacks ----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url.clear()
        self._fields = []

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_LINE:
            raise _Refused(f"Got more than {MAX_LINE} bytes when reading Status line is too long.")

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) + len(value) > MAX_FIELD:
            raise _Refused(f"Got more than {MAX_FIELD} bytes when reading Header value is too long.")
        self._fields.append((name, value))
        if len(self._fields) > MAX_HEADERS:
            raise _Refused("Too many headers received")

    def on_headers_complete(self) -> None:
        self._cancel_timer()
        parser = self.parser
        version = parser.get_http_version()
        if version == "1.1" and not any(name.lower() == b"host" for name, _ in self._fields):
            raise _Refused("Missing 'Host' header.")
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in self._fields:
            # surrogateescape: bytes that are not UTF-8 stay recoverable (as aiohttp decodes them)
            headers.add(name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
        self._fields = []
        path, query, target = _target(bytes(self._url))
        exchange = Http1Exchange(self, parser.get_method().decode("ascii", "replace"), path, query, target,
                                 CIMultiDictProxy(headers), version, parser.should_keep_alive())
        self._parsing = exchange
        self._head_bytes = 0
        self._queue.append(exchange)
        if len(self._queue) > MAX_QUEUED:
            self._pause_reading()

    def on_body(self, body: bytes) -> None:
        exchange = self._parsing
        if exchange is None:
            return
        if len(exchange.body) + len(body) > self.server.max_body_bytes or exchange.done:
            exchange.overflow += len(body)  # nobody will read it: counted, not kept
        else:
            exchange.body += body
        exchange.wake()

    def on_message_complete(self) -> None:
        exchange = self._parsing
        if exchange is not None:
            exchange.complete = True
            exchange.wake()
            self._parsing = None
            if self._task is None and not self._queue:  # an answered request's unread body ended: idle now
                self._start_timer()

    def _ignore_upgrade(self, rest: bytes) -> None:
        """A request asking to switch protocols (``Upgrade: h2c``...) is served as HTTP/1.1, as aiohttp.web
        does: llhttp stops at its head, so its body (by ``Content-Length``) is taken here and what
        follows goes to a new parser."""
        exchange = self._queue[-1] if self._queue else None
        if exchange is None or "chunked" in exchange.headers.get("Transfer-Encoding", "").lower():
            self._refuse("A chunked body with Upgrade is not supported.")
            return
        length = exchange.headers.get("Content-Length", "0")
        self.parser = httptools.HttpRequestParser(self)
        if length.isdigit() and int(length) > 0:
            exchange.complete = False
            self._parsing = exchange
            self._upgrade_body = int(length)
        if rest:
            self.data_received(rest)

    def _take_upgrade_body(self, data: bytes) -> bytes:
        """The part of ``data`` that is the ignored upgrade request's body; returns what follows it."""
        due = self._upgrade_body or 0
        body, rest = data[:due], data[due:]
        self._upgrade_body = due - len(body)
        if body:
            self.on_body(body)
        if self._upgrade_body == 0:
            self._upgrade_body = None
            self.on_message_complete()
        return rest

    # -- answering ------------------------------------------------------------------------------
    async def _serve(self) -> None:
        """Answer the queued requests in order; then wait for the next one (the header timer runs)."""
        try:
            while self._queue and not self.lost:
                exchange = self._queue[0]
                await self._answer(exchange)
                self._queue.popleft()
                if self._refusal is not None and exchange.done and not self.lost:
                    self._send_refusal()  # the unreadable request after this one
                    return
                if not exchange.keep_alive or self._closing or not exchange.done:
                    if exchange.done and not exchange.complete and not self.lost:
                        await self._linger(exchange)
                    self._close_after_answer()
                    return
                # A body nobody read goes on arriving: on_body drops it (the answer is done), and the
                # next request starts after it.
                self._resume_reading()
        finally:
            self._task = None
        if not self.lost and not self._queue:
            self._start_timer()

    async def _answer(self, exchange: Http1Exchange) -> None:
        expect = exchange.headers.get("Expect") if exchange.version == "1.1" else None
        if expect is not None:  # as aiohttp.web's default expect handler, before any handler runs
            if expect.lower() != "100-continue":
                headers = CIMultiDict({"Content-Type": "text/plain; charset=utf-8"})
                await exchange.send(417, headers, f"Unknown Expect: {expect}".encode("utf-8", "surrogateescape"))
                return
            self.write(wire.CONTINUE)
        try:
            await self.server.dispatch(exchange)
        except Exception:  # noqa: BLE001 - the server answers for a handler that failed, as aiohttp does
            log.exception("Error handling request")
            if not exchange.started and not self.lost:
                exchange.started = True
                self.write(wire.plain_error(exchange.version, 500))
            exchange.keep_alive = False
        finally:
            exchange.abandon()
        if not exchange.started and not self.lost:  # a handler that answered nothing
            self.write(wire.plain_error(exchange.version, 500))
            exchange.keep_alive = False

    async def _linger(self, exchange: Http1Exchange) -> None:
        """Read and drop the rest of an answered request's body (up to :data:`LINGER_S`)."""
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        deadline = self.loop.time() + LINGER_S
        while not exchange.complete and not exchange.broken and not self.lost:
            left = deadline - self.loop.time()
            if left <= 0:
                return
            waiter = self.loop.create_future()
            exchange.waiter = waiter
            try:
                await asyncio.wait_for(waiter, left)
            except TimeoutError:
                return

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or self.lost or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        transport.write(data)

    async def drain(self) -> None:
        """Wait while the client is slow to read (the transport's buffer is over its high mark)."""
        if self.lost:
            raise ConnectionResetError("Connection lost")
        while self.paused:
            self._drained = self.loop.create_future()
            await self._drained
            if self.lost:
                raise ConnectionResetError("Connection lost")

    def want_body(self) -> None:
        """A handler waits for the body: reading must go on (it may have paused for pipelining)."""
        self._resume_reading()

    def closing(self) -> bool:
        """Whether answers must close their connection now (the server drains, or this connection closes)."""
        return self._closing or self.server.closing()

    # -- the drain's side (as aiohttp's RequestHandler: close, then shutdown) ----------------------------
    def close(self) -> None:
        """Close now if idle, else once the request in flight is answered."""
        self._closing = True
        if self._task is None:
            self._close_transport()

    async def shutdown(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the request in flight, cancel it then, and close."""
        task = self._task
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                task.cancel()
                await asyncio.wait({task}, timeout=2.0)
        self._close_transport()

    # -- pieces -----------------------------------------------------------------------------------
    def _refuse(self, message: str) -> None:
        """A request the server cannot read: 400 (aiohttp's: HTTP/1.0, plain text), then the connection
        closes. A request whose handler has not started yet is dropped (the 400 answers it); one
        whose handler reads its body hears that the body cannot be read (its own 400); requests
        answered before it are answered first."""
        self._closing = True
        self._pause_reading()
        parsing, self._parsing = self._parsing, None
        if parsing is not None:
            if self._task is None or (self._queue and self._queue[0] is not parsing):
                if parsing in self._queue:
                    self._queue.remove(parsing)  # never dispatched: the 400 is its answer
            else:
                parsing.broken = True
                parsing.wake()
                return
        self._refusal = wire.plain_error("1.0", 400, message)
        if self._task is None:
            # Requests parsed in the same bytes before it are not answered either (as aiohttp: the
            # parser's error replaces what it had parsed of them).
            self._queue.clear()
            self._send_refusal()

    def _send_refusal(self) -> None:
        refusal, self._refusal = self._refusal, None
        if refusal is not None and not self.lost:
            try:
                self.write(refusal)
            except ConnectionResetError:
                pass
        self._close_transport()

    def _close_after_answer(self) -> None:
        self._closing = True
        self._close_transport()

    def _close_transport(self) -> None:
        self._cancel_timer()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()  # what was written still leaves

    def _start_timer(self) -> None:
        timeout = self.server.header_timeout_s
        if timeout > 0 and self._timer is None:
            self._timer = self.loop.call_later(timeout, self._header_timeout)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _header_timeout(self) -> None:
        self._timer = None
        if self._task is None and self._parsing is None:  # idle, or a head still arriving
            self._close_transport()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and not self.lost:
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self.lost and not self._closing:
            self._reading_paused = False
            self.transport.resume_reading()


def _target(url: bytes) -> tuple[str, str, str]:
    """The request target's path and query string, percent-decoded (aiohttp's ``request.path`` and
    ``request.query_string``), and the path with its query as sent (aiohttp's ``request.path_qs``)."""
    text = url.decode("utf-8", "surrogateescape")
    if text.startswith("/") and "%" not in text and "#" not in text and "+" not in text:
        path, _, query = text.partition("?")
        return path, query, text
    if text.startswith("/"):
        raw_path, _, raw_query = text.partition("?")
        parsed = URL.build(path=raw_path, query_string=raw_query.partition("#")[0], encoded=True)
    else:  # absolute-form, authority-form (CONNECT) or nonsense: yarl decides
        parsed = URL(text)
    return parsed.path, parsed.query_string, parsed.raw_path_qs


def _parser_message(exc: Exception) -> str:
    """aiohttp's wording for a malformed request: its parser's message (llhttp's, as here)."""
    return f"Bad HTTP request: {exc}" if str(exc) else "Bad HTTP request"
