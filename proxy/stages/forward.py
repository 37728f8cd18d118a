"""Stage 4, forward: send the request upstream with the client's headers (hop-by-hop ones
dropped, the route's added, ``traceparent`` set) and the adapter's body, and map a failure to
send into the provider's error shape (timeout 504, unreachable 502, unsendable header 400)."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from opentelemetry import trace

from genops.config import Settings
from genops.proxy import after_response
from genops.proxy.context import escape_header
from genops.proxy.headers import HeaderBytesError, upstream_headers
from genops.proxy.providers.base import ProviderAdapter, RequestError, RequestFacts, Upstream
from genops.proxy.routing.attempts import Attempts
from genops.proxy.stages.base import Exchange
from genops.proxy.upstream import UpstreamClientLike, UpstreamResponseLike
from genops.proxy.upstream_client import UpstreamConnectError


class ForwardStage:
    """Sets ``exchange.forwarding``, ``exchange.request_body_bytes``, ``exchange.usage_injected``
    and ``exchange.upstream_response`` (which the relay stage releases). A routed call (the route
    stage left a plan) is sent by its :class:`~genops.proxy.routing.attempts.Attempts` instead:
    target by target, with retries, through :meth:`send`."""

    def __init__(self, adapter: ProviderAdapter, settings: Settings, client: UpstreamClientLike,
                 attempts: Attempts | None = None) -> None:
        self.adapter = adapter
        self.client = client
        self.total_timeout = settings.upstream_timeout_s
        self.connect_timeout = settings.connect_timeout_s
        self.attempts = attempts
        # Whether the upstream client sends header bytes that are not UTF-8 as received (it re-encodes
        # aiohttp's surrogate escapes); otherwise such a header gets a 400 rather than being altered.
        self.raw_bytes_ok = bool(getattr(client, "preserves_header_bytes", False))

    async def run(self, exchange: Exchange) -> None:
        exchange.forwarding = True  # from here on a response may have started
        facts, upstream = exchange.request_facts, exchange.upstream
        assert facts is not None  # parse ran
        body = exchange.body
        exchange.request_body_bytes = len(body)
        headers = self._headers(exchange, facts)
        if exchange.plan is not None and self.attempts is not None:
            exchange.base_headers = headers
            after_response.kick()
            await self.attempts.run(exchange)
            return
        assert upstream is not None  # route ran
        send_body, exchange.usage_injected = self.adapter.prepare_body(facts, body)
        for name in upstream.drop_headers:
            headers.popall(name, None)
        headers.update(upstream.set_headers)
        after_response.kick()  # earlier calls' bookkeeping runs while this one waits for the model
        exchange.upstream_response = await self.send(exchange, upstream, send_body, headers, None)

    def _headers(self, exchange: Exchange, facts: RequestFacts) -> Any:
        """The client's headers as they go upstream (hop-by-hop ones dropped), with the trace context."""
        try:
            headers = upstream_headers(exchange.request.headers, streaming=facts.stream, raw_bytes_ok=self.raw_bytes_ok)
        except HeaderBytesError as exc:
            raise RequestError(400, f"The request header {escape_header(exc.name)} has bytes that are not UTF-8; "
                               "GenOps cannot forward it unchanged.", "invalid_request_error",
                               "invalid_header_bytes") from None
        _trace_context_headers(headers, exchange.span.get_span_context(), exchange.traceparent)
        return headers

    async def send(self, exchange: Exchange, upstream: Upstream, body: bytes, headers: Any,
                   headers_timeout: float | None) -> UpstreamResponseLike:
        """Send one request upstream; a failure to send becomes a :class:`RequestError` in the provider's
        terms (timeout 504, unreachable 502, unsendable header 400). ``headers_timeout``: a route's limit
        on the wait for the response headers (the total timeout still bounds the whole answer)."""
        exchange.upstream_sent_perf = time.perf_counter_ns()  # a routed call: its last attempt's, the one answering
        try:
            request = self.client.request(
                exchange.request.method, upstream.url, data=body if body else None, headers=headers,
                total_timeout=self.total_timeout, connect_timeout=self.connect_timeout,
            )
            if headers_timeout is None:
                return await request
            async with asyncio.timeout(headers_timeout):
                return await request
        except TimeoutError:
            raise RequestError(504, f"The upstream {_host(upstream)} did not answer within the timeout.",
                               "upstream_timeout", "upstream_timeout") from None
        except aiohttp.ClientError as exc:
            # The connect error's cause names what failed (refused, DNS, certificate...).
            reason = exc.__cause__ if isinstance(exc, UpstreamConnectError) and exc.__cause__ else exc
            raise RequestError(502, f"The upstream {_host(upstream)} is unreachable: {type(reason).__name__}.",
                               "upstream_unreachable", "upstream_unreachable") from None
        except UnicodeEncodeError:
            # A header value with bytes that are not UTF-8 (aiohttp keeps them as surrogate escapes)
            # that a client claiming preserves_header_bytes still could not write: refused, nothing sent.
            raise RequestError(400, f"The request header {_non_utf8_header(headers)} has bytes that are not "
                               "UTF-8; GenOps cannot forward it unchanged.", "invalid_request_error",
                               "invalid_header_bytes") from None
        except ValueError as exc:  # a URL or header the client cannot send; its message may quote the URL
            raise RequestError(502, f"The request to the upstream {_host(upstream)} could not be made: "
                               f"{type(exc).__name__}.", "upstream_unreachable", "invalid_upstream_request") from None


def _host(upstream: Upstream) -> str:
    return urlsplit(upstream.stored_url).netloc


def _trace_context_headers(headers: Any, ctx: trace.SpanContext, traceparent: str) -> None:
    """Set ``traceparent`` (and ``tracestate``) exactly as ``TraceContextTextMapPropagator.inject`` would."""
    if not ctx.is_valid:
        return
    headers["traceparent"] = traceparent
    if ctx.trace_state:
        headers["tracestate"] = ctx.trace_state.to_header()


def _non_utf8_header(headers: Any) -> str:
    """The name of the first header whose value has bytes that are not UTF-8 (escaped, for messages)."""
    for name, value in headers.items():
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return escape_header(name)
    return "(unknown)"
