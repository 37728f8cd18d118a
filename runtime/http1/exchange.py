"""One request on a native connection, as the proxy's client side (:mod:`genops.proxy.client_side`):
the request as parsed, its body as it arrives, and its answer (whole, or streamed with flow control)."""

from __future__ import annotations

import asyncio
import zlib
from typing import Any, Protocol

from multidict import CIMultiDict, CIMultiDictProxy

from genops.proxy.client_side import BodyPaused, BodyTooLarge, BodyUnreadable, ClientGone
from genops.runtime.http1 import wire

#: Request bodies decoded before the handler reads them, as aiohttp.web does (``auto_decompress``).
_DECODED = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class Http1Connection(Protocol):
    """What an exchange uses of its connection (:class:`genops.runtime.http1.connection.Http1Connection`)."""

    lost: bool
    paused: bool

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def want_body(self) -> None: ...

    def closing(self) -> bool: ...


class Http1Exchange:
    """A request and its answer. Written by its connection (the head, the body's parts); read and
    answered by the handler."""

    __slots__ = (
        "connection", "method", "path", "query_string", "target", "headers", "version", "keep_alive",
        "body", "complete", "broken", "overflow", "waiter", "started", "done", "chunked", "empty", "_held", "_flush",
    )

    def __init__(self, connection: Http1Connection, method: str, path: str, query_string: str, target: str,
                 headers: CIMultiDictProxy[str], version: str, keep_alive: bool) -> None:
        self.connection = connection
        self.method = method
        self.path = path  # percent-decoded
        self.query_string = query_string
        self.target = target  # the path and query as sent (percent-encoded)
        self.headers = headers
        self.version = version
        self.keep_alive = keep_alive
        self.body = bytearray()
        self.complete = False  # the whole body is in
        self.broken = False  # the connection ended before the body did
        self.overflow = 0  # bytes of body dropped: more than the connection keeps for an unread body
        self.waiter: asyncio.Future[None] | None = None
        self.started = False  # the answer's head is written (or held)
        self.done = False  # the answer is complete
        self.chunked = False
        self.empty = False  # the answer has no body (HEAD, 1xx, 204, 304)
        self._held: bytes | None = None
        self._flush: asyncio.TimerHandle | None = None

    # -- the connection's side -------------------------------------------------------------------
    def wake(self) -> None:
        """More of the body arrived, or all of it, or the connection ended."""
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- ClientRequest ----------------------------------------------------------------------------
    async def read_body(self, limit: int, pause_s: float) -> bytes:
        length = self.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise BodyTooLarge(limit, int(length))
        if not self.complete:
            await self._wait_body(limit, pause_s)
        if self.overflow or len(self.body) > limit:
            raise BodyTooLarge(limit, len(self.body) + self.overflow)
        body = bytes(self.body)
        encoding = self.headers.get("Content-Encoding")
        if encoding:
            body = _decoded(body, encoding.strip().lower(), limit)
        return body

    async def _wait_body(self, limit: int, pause_s: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(pause_s) as timer:
                while not self.complete:
                    if self.broken:
                        raise BodyUnreadable()
                    if self.overflow or len(self.body) > limit:
                        raise BodyTooLarge(limit, len(self.body) + self.overflow)
                    self.waiter = loop.create_future()
                    self.connection.want_body()
                    await self.waiter
                    self.waiter = None
                    timer.reschedule(loop.time() + pause_s)
        except TimeoutError:
            raise BodyPaused() from None

    # -- ClientReply ------------------------------------------------------------------------------
    async def send(self, status: int, headers: CIMultiDict[str], body: bytes, *, close: bool = False) -> None:
        connection = self._writable()
        head, _, keep = wire.head(self.version, status, headers, self.method, length=len(body),
                                  keep_alive=self._keeps_alive(close))
        self.started = True
        self.keep_alive = keep
        self.done = True
        connection.write(head if wire.must_be_empty(self.method, status) else head + body)
        await connection.drain()

    async def start(self, status: int, headers: CIMultiDict[str], *, hold_headers: float = 0.0) -> None:
        connection = self._writable()
        head, self.chunked, self.keep_alive = wire.head(self.version, status, headers, self.method, length=None,
                                                        keep_alive=self._keeps_alive(False))
        self.started = True
        self.empty = wire.must_be_empty(self.method, status)
        if hold_headers:
            self._held = head
            self._flush = asyncio.get_running_loop().call_later(hold_headers, self._send_held)
        else:
            connection.write(head)

    async def write(self, data: bytes) -> None:
        connection = self.connection
        if connection.lost:
            raise ClientGone("Cannot write to closing transport")
        if not data or self.done or self.empty:
            return
        frame = b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data
        if self._held is not None:
            frame = self._take_held() + frame
        connection.write(frame)
        if connection.paused:
            await connection.drain()

    async def end(self) -> None:
        connection = self.connection
        if self.done:
            return
        if connection.lost:
            raise ClientGone("Cannot write to closing transport")
        self.done = True
        tail = wire.LAST_CHUNK if self.chunked else b""
        if self._held is not None:
            tail = self._take_held() + tail
        if tail:
            connection.write(tail)
        await connection.drain()

    # -- pieces -----------------------------------------------------------------------------------
    def _writable(self) -> Http1Connection:
        """The connection, for an answer's head (raises if answered already, or the client is gone)."""
        if self.started:
            raise RuntimeError("the answer has started already")
        connection = self.connection
        if connection.lost:
            raise ClientGone("Cannot write to closing transport")
        return connection

    def _keeps_alive(self, close: bool) -> bool:
        return self.keep_alive and not close and not self.connection.closing()

    def _take_held(self) -> bytes:
        held, self._held = self._held, None
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        return held or b""

    def _send_held(self) -> None:
        """A stream slow to its first chunk: its head leaves alone, so the client sees the answer start."""
        self._flush = None
        if self._held is not None and not self.connection.lost:
            self.connection.write(self._take_held())

    def abandon(self) -> None:
        """The handler ended (or the connection did): a timer still pending goes."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None


def _decoded(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` decoded from its Content-Encoding (gzip, deflate), at most ``limit`` bytes of it;
    other encodings are left as they are (as aiohttp.web does without their libraries)."""
    wbits = _DECODED.get(encoding)
    if wbits is None:
        return body
    try:
        decoder: Any = zlib.decompressobj(wbits)
        out = decoder.decompress(body, limit + 1)
        if len(out) > limit:
            raise BodyTooLarge(limit, len(out))
        if not decoder.eof:
            raise BodyUnreadable()
        return out
    except zlib.error:
        raise BodyUnreadable() from None
