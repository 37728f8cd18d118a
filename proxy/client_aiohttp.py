"""The client side (:mod:`genops.proxy.client_side`) on aiohttp.web: the reference server, kept as the
fallback of GenOps's own (``GENOPS_HTTP_SERVER=aiohttp``), and the store process's server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.http_writer import StreamWriter
from multidict import CIMultiDict

from genops.proxy.client_side import BodyPaused, BodyTooLarge, BodyUnreadable, ClientReply, ClientRequest

#: ``handler(request, reply)``: a front-independent handler (proxy/handler.py's ProxyHandler with its route).
Handler = Callable[[ClientRequest, ClientReply], Awaitable[None]]


class AiohttpClient:
    """One aiohttp request as a :class:`ClientRequest` and its :class:`ClientReply`; ``response`` is
    what the aiohttp handler returns once answered."""

    __slots__ = ("request", "method", "path", "query_string", "headers", "response", "_flush")

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.method = request.method
        self.path = request.path
        self.query_string = request.query_string
        self.headers = request.headers
        self.response: web.StreamResponse | None = None
        self._flush: asyncio.TimerHandle | None = None

    async def read_body(self, limit: int, pause_s: float) -> bytes:
        request = self.request
        try:  # a body already in (the usual small request) is read at once, without a timer
            if request.content.is_eof():
                return await request.read()
            return await self._read_arriving(limit, pause_s)
        except web.HTTPRequestEntityTooLarge:
            raise BodyTooLarge(limit, 0) from None  # aiohttp keeps no size on it
        except web.RequestPayloadError:  # e.g. "Content-Encoding: gzip" on a body that is not gzip
            raise BodyUnreadable() from None

    async def _read_arriving(self, limit: int, pause_s: float) -> bytes:
        """A body still arriving: refused at once when its ``Content-Length`` is over ``limit``, else
        read with a timer of ``pause_s`` that each arriving piece restarts."""
        request = self.request
        length = request.content_length
        if length is not None and length > limit:
            raise BodyTooLarge(limit, length)
        content = request.content
        loop = asyncio.get_running_loop()
        content.set_read_chunk_size(limit)  # as request.read() does
        body = bytearray()
        try:
            async with asyncio.timeout(pause_s) as timer:
                while True:
                    chunk = await content.readany()
                    if not chunk:
                        break
                    body += chunk
                    if len(body) > limit:
                        raise BodyTooLarge(limit, len(body))
                    timer.reschedule(loop.time() + pause_s)
        except TimeoutError:
            raise BodyPaused() from None
        return bytes(body)

    async def send(self, status: int, headers: CIMultiDict[str], body: bytes, *, close: bool = False) -> None:
        response = self.response = web.Response(status=status, body=body, headers=headers)
        if close:
            response.force_close()
        await response.prepare(self.request)
        await response.write_eof()

    async def start(self, status: int, headers: CIMultiDict[str], *, hold_headers: float = 0.0) -> None:
        response = self.response = (_HeldHeadersResponse if hold_headers else web.StreamResponse)(
            status=status, headers=headers)
        writer = await response.prepare(self.request)
        if hold_headers and not response._send_headers_immediately:  # our headers wait for the first chunk, briefly
            self._flush = asyncio.get_running_loop().call_later(hold_headers, _send_headers, writer)

    async def write(self, data: bytes) -> None:
        assert self.response is not None
        await self.response.write(data)

    async def end(self) -> None:
        assert self.response is not None
        await self.response.write_eof()
        self.close()

    def close(self) -> None:
        """Done with the answer (ended, or cut short): its held headers' timer goes."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None


def aiohttp_handler(handler: Handler, *, error: Callable[[], web.StreamResponse] | None = None
                    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """``handler`` as an aiohttp request handler. A handler that returned without answering gets
    ``error()`` (an exception escaping it propagates to aiohttp, as for any handler)."""

    async def serve(request: web.Request) -> web.StreamResponse:
        client = AiohttpClient(request)
        try:
            await handler(client, client)
        finally:
            client.close()
        if client.response is None:
            if error is None:
                raise RuntimeError("the handler did not answer")
            return error()
        return client.response

    return serve


class _HeldHeadersResponse(web.StreamResponse):
    """A streamed answer whose headers leave with its first chunk: one write instead of two, ~30 µs
    sooner to the first byte at one client. A model slow to its first token gets the headers sent
    alone after the hold (``AiohttpClient.start``), so clients and load balancers still see the
    response start.

    Why a private attribute: aiohttp (3.14) has no public way to hold a ``StreamResponse``'s
    headers back. ``_send_headers_immediately`` is the class attribute ``StreamResponse._write_headers``
    consults after ``prepare()`` buffers the status line and headers; the constructor takes no such
    option, and the one public class that turns it off, ``web.Response``, does so only for a body
    known before ``prepare()``. The timed flush uses the public ``AbstractStreamWriter.send_headers()``;
    where the writer lacks it, the switch stays on and nothing changes.
    """

    _send_headers_immediately = not hasattr(StreamWriter, "send_headers")


def _send_headers(writer: Any) -> None:
    try:
        writer.send_headers()  # a no-op once the first chunk took them along
    except (ConnectionResetError, aiohttp.ClientConnectionResetError, RuntimeError):
        pass  # the client left; the relay loop notices on its next write
