"""Stage 1, parse: read the request body (within the size and pause limits) and let the
adapter read just enough of it (operation, model, parameters, stream flag) into its frozen
``RequestFacts``."""

from __future__ import annotations

import asyncio

from aiohttp import web

from genops.config import Settings
from genops.proxy.providers.base import ProviderAdapter, RequestError
from genops.proxy.stages.base import Exchange


class ParseStage:
    """Sets ``exchange.body`` and ``exchange.request_facts``; names the span after the operation."""

    def __init__(self, adapter: ProviderAdapter, settings: Settings) -> None:
        self.adapter = adapter
        self.max_body_bytes = settings.max_body_bytes
        self.client_body_timeout_s = settings.client_body_timeout_s

    async def run(self, exchange: Exchange) -> None:
        request = exchange.request
        try:  # a body already in (the usual small request) is read at once, without a timer
            body = await request.read() if request.content.is_eof() else await self._read_arriving_body(request)
        except web.HTTPRequestEntityTooLarge:
            raise RequestError(
                413,
                f"The request body exceeds the proxy's limit of {self.max_body_bytes} bytes "
                "(GENOPS_MAX_BODY_BYTES).",
                "invalid_request_error",
                "request_too_large",
            ) from None
        except web.RequestPayloadError:  # e.g. "Content-Encoding: gzip" on a body that is not gzip
            raise RequestError(400, "The request body cannot be read (its Content-Encoding does not match "
                               "it, or it is cut short).", "invalid_request_error", "unreadable_body") from None
        exchange.body = body
        facts = exchange.request_facts = self.adapter.parse_request(request.method, exchange.tail, body,
                                                                    request.headers)
        if facts.operation:
            exchange.span.update_name(f"{facts.operation} {facts.model}" if facts.model else facts.operation)

    async def _read_arriving_body(self, request: web.Request) -> bytes:
        """A body still arriving: refused at once when its ``Content-Length`` is over
        ``GENOPS_MAX_BODY_BYTES`` (413, nothing read), else read with a timer of
        ``GENOPS_CLIENT_BODY_TIMEOUT_S`` that each arriving piece restarts (408 when the client
        pauses longer). Raises ``HTTPRequestEntityTooLarge`` like ``request.read()``."""
        limit = self.max_body_bytes
        length = request.content_length
        if length is not None and length > limit:
            raise web.HTTPRequestEntityTooLarge(limit, length)
        content = request.content
        pause = self.client_body_timeout_s
        loop = asyncio.get_running_loop()
        content.set_read_chunk_size(limit)  # as request.read() does
        body = bytearray()
        try:
            async with asyncio.timeout(pause) as timer:
                while True:
                    chunk = await content.readany()
                    if not chunk:
                        break
                    body += chunk
                    if len(body) > limit:
                        raise web.HTTPRequestEntityTooLarge(limit, len(body))
                    timer.reschedule(loop.time() + pause)
        except TimeoutError:
            raise RequestError(408, f"The client sent no part of the request body for {pause:g} s "
                               "(GENOPS_CLIENT_BODY_TIMEOUT_S).", "invalid_request_error",
                               "request_timeout") from None
        return bytes(body)
