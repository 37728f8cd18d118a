"""The proxy's request path: forward one call through a provider adapter and record its span.

Order of work, chosen to keep the client's latency low:
1. read and parse just enough of the request (the adapter decides what);
2. forward it and relay the response (streams chunk by chunk as they arrive);
3. only after the client has its last byte, scan, compute cost and finish the span, and even
   that waits until the loop has nothing more urgent (:mod:`genops.proxy.after_response`):
   a client's next call on the connection is not kept waiting for this one's bookkeeping.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
import zlib
from typing import Any, Callable
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from aiohttp.http_writer import StreamWriter
from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.trace import SpanKind, Status, StatusCode

from genops import semconv as sc
from genops.config import Settings
from genops.proxy import after_response
from genops.proxy.context import call_context, escape_header, request_id_for
from genops.proxy.headers import HeaderBytesError, downstream_headers, upstream_headers
from genops.proxy.pricing import Price, price_call
from genops.proxy.providers.base import Call, ProviderAdapter, RequestError, Upstream
from genops.proxy.safety.guard import CallGuard, SafetyConfig
from genops.proxy.spans import call_attributes
from genops.proxy.targets import TargetPolicy, mask_userinfo, route_upstream
from genops.proxy.tokenizer import estimate_missing_usage
from genops.proxy.upstream_client import UpstreamClient, UpstreamConnectError, UpstreamResponse

log = logging.getLogger("genops.proxy")

REQUEST_ID_HEADER = "GenOps-Request-Id"
SAFETY_KEY = "genops.safety"  # the call's CallGuard, kept on the aiohttp request


class _Decoder:
    """Decodes a gzip/deflate body copy for reading usage; the client still gets the raw bytes."""

    def __init__(self, encoding: str) -> None:
        encoding = encoding.lower().strip()
        if encoding == "gzip":
            self._z: Any = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._z = zlib.decompressobj()
        else:
            self._z = None

    def __call__(self, data: bytes) -> bytes:
        if self._z is None:
            return data
        try:
            return self._z.decompress(data)
        except zlib.error:
            self._z = None
            return b""


def _identity(data: bytes) -> bytes:
    return data


def _traceparent(ctx: trace.SpanContext) -> str:
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def _trace_context_headers(headers: Any, ctx: trace.SpanContext, traceparent: str) -> None:
    """Set ``traceparent`` (and ``tracestate``) exactly as ``TraceContextTextMapPropagator.inject`` would."""
    if not ctx.is_valid:
        return
    headers["traceparent"] = traceparent
    if ctx.trace_state:
        headers["tracestate"] = ctx.trace_state.to_header()


class ProxyHandler:
    """Serves every route of one provider adapter."""

    def __init__(self, adapter: ProviderAdapter, settings: Settings, client: UpstreamClient,
                 tracer: trace.Tracer) -> None:
        self.adapter = adapter
        self.settings = settings
        self.client = client
        self.tracer = tracer
        self.safety = SafetyConfig(settings, adapter.name)
        self.targets = TargetPolicy.from_settings(settings)
        # Whether the upstream client sends header bytes that are not UTF-8 as received (it re-encodes
        # aiohttp's surrogate escapes); otherwise such a header gets a 400 rather than being altered.
        self.raw_bytes_ok = bool(getattr(client, "preserves_header_bytes", False))

    async def __call__(self, request: web.Request, tail: str | None = None,
                       refuse: str | None = None) -> web.StreamResponse:
        """Serve one request. ``tail`` (the path after the adapter's prefix) and ``refuse`` (the
        message of a 400 to answer instead of forwarding) come from the root dispatcher
        (runtime/app.py); a route of the adapter's own prefix passes neither."""
        started_ns = time.time_ns()
        started_perf = time.perf_counter_ns()
        adapter = self.adapter
        request_id = request_id_for(request.headers)
        if tail is None:
            tail = request.match_info.get("tail", "")
            tail = "/" + tail if tail and not tail.startswith("/") else tail
        call: Call | None = None  # the adapter's, once the request is parsed
        forwarding = False  # from here on a response may have started
        upstream: Upstream | None = None
        status = 0
        response: web.StreamResponse | None = None
        parent = extract(request.headers) if "traceparent" in request.headers else None

        span = self.tracer.start_span(
            f"{request.method} {request.path}", context=parent, kind=SpanKind.CLIENT, start_time=started_ns
        )
        traceparent = _traceparent(span.get_span_context())  # sent upstream and returned to the client
        try:
            if refuse is not None:  # another provider's request at the root (proxy/providers/root.py)
                raise RequestError(400, refuse, "invalid_request_error", "wrong_base_url")
            try:  # a body already in (the usual small request) is read at once, without a timer
                body = await request.read() if request.content.is_eof() else await self._read_arriving_body(request)
            except web.HTTPRequestEntityTooLarge:
                raise RequestError(
                    413,
                    f"The request body exceeds the proxy's limit of {self.settings.max_body_bytes} bytes "
                    "(GENOPS_MAX_BODY_BYTES).",
                    "invalid_request_error",
                    "request_too_large",
                ) from None
            except web.RequestPayloadError:  # e.g. "Content-Encoding: gzip" on a body that is not gzip
                raise RequestError(400, "The request body cannot be read (its Content-Encoding does not match "
                                   "it, or it is cut short).", "invalid_request_error", "unreadable_body") from None
            call = adapter.parse_request(request.method, tail, body, request.headers)
            if call.operation:
                span.update_name(f"{call.operation} {call.model}" if call.model else call.operation)
            upstream = route_upstream(adapter, self.targets, tail, request.query_string, request.headers)
            body = await self._safety_before(request, call, body)
            forwarding = True
            response, status = await self._forward(request, call, upstream, body, span, traceparent, request_id,
                                                   started_perf)
        except RequestError as exc:
            if call is None:
                call = Call()
            message = exc.message if exc.message.isascii() else escape_header(exc.message)  # may quote a header
            call.error_type = exc.code or exc.error_type
            call.error_message = message
            status = exc.status
            response = self._error(exc.status, message, exc.error_type, exc.code, request_id, traceparent)
            if status in (408, 413):  # the body was not read (whole): this connection cannot serve another request
                response.force_close()
        except Exception as exc:
            if forwarding:
                raise  # the response may have started: nothing clean can be sent any more
            # Input nothing above foresaw: a clear 500 in the provider's shape and a span that says so,
            # instead of aiohttp's bare text 500 and a span without a status.
            if call is None:
                call = Call()
            call.error_type = "internal_error"
            call.error_message = f"GenOps could not handle this request ({type(exc).__name__})."
            status = 500
            response = self._error(500, call.error_message, "internal_error", "internal_error", request_id,
                                   traceparent)
            _log_failure(exc, adapter.name, request_id)
        finally:
            if call is None:
                call = Call()
            self._after_response(request, span, call, upstream, status, request_id, started_perf)
        return response

    # -- forwarding ---------------------------------------------------------------------

    async def _forward(self, request: web.Request, call: Call, upstream: Upstream, body: bytes,
                       span: trace.Span, traceparent: str, request_id: str, started_perf: int) -> tuple[web.StreamResponse, int]:
        call.extra_attributes[sc.GENOPS_REQUEST_BODY_BYTES] = len(body)
        send_body = self.adapter.prepare_body(call, body)
        try:
            headers = upstream_headers(request.headers, streaming=call.stream, raw_bytes_ok=self.raw_bytes_ok)
        except HeaderBytesError as exc:
            raise RequestError(400, f"The request header {escape_header(exc.name)} has bytes that are not UTF-8; "
                               "GenOps cannot forward it unchanged.", "invalid_request_error",
                               "invalid_header_bytes") from None
        for name in upstream.drop_headers:
            headers.popall(name, None)
        headers.update(upstream.set_headers)
        _trace_context_headers(headers, span.get_span_context(), traceparent)
        after_response.kick()  # earlier calls' bookkeeping runs while this one waits for the model
        try:
            upstream_response = await self.client.request(
                request.method, upstream.url, data=send_body if send_body else None, headers=headers,
                total_timeout=self.settings.upstream_timeout_s, connect_timeout=self.settings.connect_timeout_s,
            )
        except asyncio.TimeoutError:
            raise RequestError(504, f"The upstream {self._host(upstream)} did not answer within the timeout.",
                               "upstream_timeout", "upstream_timeout") from None
        except aiohttp.ClientError as exc:
            # The connect error's cause names what failed (refused, DNS, certificate...).
            reason = exc.__cause__ if isinstance(exc, UpstreamConnectError) and exc.__cause__ else exc
            raise RequestError(502, f"The upstream {self._host(upstream)} is unreachable: {type(reason).__name__}.",
                               "upstream_unreachable", "upstream_unreachable") from None
        except UnicodeEncodeError:
            # A header value with bytes that are not UTF-8 (aiohttp keeps them as surrogate escapes)
            # that a client claiming preserves_header_bytes still could not write: refused, nothing sent.
            raise RequestError(400, f"The request header {_non_utf8_header(headers)} has bytes that are not "
                               "UTF-8; GenOps cannot forward it unchanged.", "invalid_request_error",
                               "invalid_header_bytes") from None
        except ValueError as exc:  # a URL or header the client cannot send; its message may quote the URL
            raise RequestError(502, f"The request to the upstream {self._host(upstream)} could not be made: "
                               f"{type(exc).__name__}.", "upstream_unreachable", "invalid_upstream_request") from None

        status = upstream_response.status
        try:
            encoding = upstream_response.headers.get("Content-Encoding")
            decode = _Decoder(encoding) if encoding else _identity
            content_type = upstream_response.headers.get("Content-Type", "")
            if self.adapter.streams_response(call, status, content_type):
                response = _RelayStreamResponse(status=status)
                self._copy_headers(upstream_response, response, request_id, traceparent)
                response = await self._relay_stream(request, call, upstream_response, response, decode, started_perf)
            else:
                try:
                    raw = await upstream_response.read()
                except asyncio.TimeoutError:
                    raise RequestError(504, "The upstream timed out while sending its response.",
                                       "upstream_timeout", "upstream_timeout") from None
                except aiohttp.ClientError as exc:
                    raise RequestError(502, f"The upstream connection failed mid-response: {type(exc).__name__}.",
                                       "upstream_unreachable", "upstream_unreachable") from None
                call.stream = call.stream and status < 400
                response = web.Response(status=status, body=raw)
                self._copy_headers(upstream_response, response, request_id, traceparent)
                try:
                    await response.prepare(request)
                    await response.write_eof()
                except (ConnectionResetError, aiohttp.ClientConnectionResetError):
                    call.extra_attributes[sc.GENOPS_CLIENT_DISCONNECTED] = True
                call.extra_attributes[sc.GENOPS_RESPONSE_BODY_BYTES] = len(raw)
                if call.operation is not None or status >= 400:
                    decoded = decode(raw)
                    self.adapter.parse_response(call, status, decoded)
                    self._safety_response(request, decoded)
        finally:
            upstream_response.release()
        return response, status

    async def _relay_stream(self, request: web.Request, call: Call, upstream_response: UpstreamResponse,
                            response: web.StreamResponse, decode: Callable[[bytes], bytes],
                            started_perf: int) -> web.StreamResponse:
        """Relay a stream as it arrives; read a copy of each chunk for telemetry."""
        state = self.adapter.new_stream(call, started_perf)
        rewrite = call.usage_injected
        sent = 0
        headers_due = None
        try:
            writer = await response.prepare(request)
            if not response._send_headers_immediately:  # our headers wait for the first chunk, briefly
                headers_due = asyncio.get_running_loop().call_later(HEADERS_WAIT_S, _send_headers, writer)
            try:
                async for chunk in upstream_response.content.iter_any():
                    if rewrite:
                        events = state.rewrite_events(decode(chunk))
                        if not sent:  # the stream's first bytes leave as soon as they are ready
                            for first in events:
                                if first:
                                    await response.write(first)
                                    sent += len(first)
                                    break
                        out = b"".join(events)  # the rest of this chunk, in one write
                        if out:
                            await response.write(out)
                            sent += len(out)
                    else:
                        await response.write(chunk)
                        sent += len(chunk)
                        state.observe(decode(chunk))
                rest = state.finish()
                if rewrite and rest:
                    await response.write(rest)
                await response.write_eof()
            except asyncio.TimeoutError:
                call.error_type = "upstream_timeout"
                call.error_message = "The upstream timed out mid-stream."
            except aiohttp.ClientPayloadError as exc:
                call.error_type = "upstream_stream_broken"
                call.error_message = f"The upstream stream ended abnormally: {exc}"[:300]
        except (ConnectionResetError, aiohttp.ClientConnectionResetError, asyncio.CancelledError) as exc:
            # The client went away: stop reading upstream (closing cancels the upstream request).
            upstream_response.close()
            call.error_type = "client_disconnected"
            call.error_message = "The client disconnected before the stream ended."
            call.extra_attributes[sc.GENOPS_CLIENT_DISCONNECTED] = True
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            if headers_due is not None:
                headers_due.cancel()
            call.extra_attributes[sc.GENOPS_STREAM_CHUNKS] = state.chunks
            call.extra_attributes[sc.GENOPS_RESPONSE_BODY_BYTES] = sent
            call.first_token_perf_ns = state.first_token_ns
        await estimate_missing_usage(call)  # after the client's last byte; only when usage was not reported
        return response

    async def _read_arriving_body(self, request: web.Request) -> bytes:
        """A body still arriving: refused at once when its ``Content-Length`` is over
        ``GENOPS_MAX_BODY_BYTES`` (413, nothing read), else read with a timer of
        ``GENOPS_CLIENT_BODY_TIMEOUT_S`` that each arriving piece restarts (408 when the client
        pauses longer). Raises ``HTTPRequestEntityTooLarge`` like ``request.read()``."""
        limit = self.settings.max_body_bytes
        length = request.content_length
        if length is not None and length > limit:
            raise web.HTTPRequestEntityTooLarge(limit, length)
        content = request.content
        pause = self.settings.client_body_timeout_s
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

    # -- safety (proxy/safety/): scan, mask or block the request; annotate after the response --

    async def _safety_before(self, request: web.Request, call: Call, body: bytes) -> bytes:
        guard = request[SAFETY_KEY] = self.safety.begin(self.adapter, call, request.headers)
        return await guard.before_forward(body)

    @staticmethod
    def _safety_response(request: web.Request, decoded: bytes) -> None:
        guard: CallGuard | None = request.get(SAFETY_KEY)
        if guard is not None:
            guard.observe_response(decoded)

    def _after_response(self, request: web.Request, span: trace.Span, call: Call, upstream: Upstream | None,
                        status: int, request_id: str, started_perf: int) -> None:
        """Leave the safety scan and the span's end for later, with the span's end time fixed now.

        An aiohttp connection serves its next keep-alive request only after this handler
        returns, so none of it is awaited here: small scans are deferred to the loop's next
        pause, big ones go to a thread (:mod:`genops.proxy.after_response`).
        """
        guard: CallGuard | None = request.get(SAFETY_KEY)
        ended_perf = time.perf_counter_ns()
        headers = request.headers
        if guard is not None and guard.needs_thread():
            async def later() -> None:
                call.extra_attributes.update(call_context(headers, self.adapter, call))
                await guard.finish(span)
                self._finish_span(span, call, upstream, status, request_id, started_perf, ended_perf)

            after_response.run_in_background(later())
            return
        after_response.defer(self._finish_later, headers, guard, span, call, upstream, status, request_id,
                             started_perf, ended_perf)

    def _finish_later(self, headers: Any, guard: CallGuard | None, span: trace.Span, call: Call,
                      upstream: Upstream | None, status: int, request_id: str, started_perf: int,
                      ended_perf: int) -> None:
        call.extra_attributes.update(call_context(headers, self.adapter, call))
        if guard is not None:
            guard.finish_inline(span)
        self._finish_span(span, call, upstream, status, request_id, started_perf, ended_perf)

    # -- spans --------------------------------------------------------------------------

    def _finish_span(self, span: trace.Span, call: Call, upstream: Upstream | None, status: int, request_id: str,
                     started_perf: int, ended_perf: int | None = None) -> None:
        now_perf = time.perf_counter_ns()
        ended_perf = ended_perf or now_perf
        attributes = call_attributes(self.adapter, call, upstream, status, request_id, started_perf, ended_perf)
        if call.operation:
            model = call.response_model or call.model
            if model is not None and not isinstance(model, str):  # an upstream's "model": {...} must not cost the span
                call.response_model = model = str(model)
            price = price_call(self.adapter.price_provider(call), model, call.usage)
            if isinstance(price, Price):
                attributes[sc.GENOPS_COST_USD] = price.total_usd
                attributes[sc.GENOPS_COST_INPUT_USD] = price.input_usd
                attributes[sc.GENOPS_COST_OUTPUT_USD] = price.output_usd
                if price.cache_savings_usd > 0:
                    attributes[sc.GENOPS_COST_CACHE_SAVINGS_USD] = price.cache_savings_usd
            else:
                attributes[sc.GENOPS_COST_UNKNOWN] = True
                attributes[sc.GENOPS_COST_UNKNOWN_REASON] = price.reason
        span.set_attributes(attributes)
        if call.error_type or status >= 400:
            span.set_status(Status(StatusCode.ERROR, call.error_message or f"HTTP {status}"))
        span.end(end_time=time.time_ns() - (now_perf - ended_perf))

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def _host(upstream: Upstream) -> str:
        return urlsplit(upstream.stored_url).netloc

    @classmethod
    def _copy_headers(cls, upstream_response: UpstreamResponse, response: web.StreamResponse,
                      request_id: str, traceparent: str) -> None:
        """The upstream's end-to-end headers, then ours, straight into the response's own headers
        (passing a multidict to the response's constructor would copy it once more)."""
        downstream_headers(upstream_response.headers, response.headers)
        cls._response_headers(response.headers, request_id, traceparent)

    @staticmethod
    def _response_headers(headers: Any, request_id: str, traceparent: str) -> None:
        headers[REQUEST_ID_HEADER] = request_id
        headers["traceparent"] = traceparent

    def _error(self, status: int, message: str, error_type: str, code: str | None, request_id: str,
               traceparent: str) -> web.Response:
        headers: dict[str, str] = {}
        self._response_headers(headers, request_id, traceparent)
        return web.Response(
            status=status,
            body=self.adapter.error_body(status, message, error_type, code),
            content_type=self.adapter.error_content_type(),
            headers=headers,
        )


def _log_failure(exc: Exception, route: str, request_id: str) -> None:
    """Log a request that failed before forwarding. The traceback's frames, but its message only
    with URL user info masked: exception messages may quote a URL (``user:password@host``)."""
    log.error("request failed before forwarding", extra={
        "route": route, "request_id": request_id, "error": type(exc).__name__,
        "error_message": mask_userinfo(str(exc))[:300],
        "traceback": "".join(traceback.format_tb(exc.__traceback__)),
    })


def _non_utf8_header(headers: Any) -> str:
    """The name of the first header whose value has bytes that are not UTF-8 (escaped, for messages)."""
    for name, value in headers.items():
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return escape_header(name)
    return "(unknown)"


#: How long a stream's response headers wait for its first chunk, to leave in one write with it.
HEADERS_WAIT_S = 0.005


class _RelayStreamResponse(web.StreamResponse):
    """A relayed stream whose headers leave with its first chunk: one write instead of two, ~30 µs
    sooner to the first byte at one client. A model slow to its first token gets the headers sent
    alone after :data:`HEADERS_WAIT_S`, so clients and load balancers still see the response start.

    ``_send_headers_immediately`` is aiohttp's own switch (``web.Response`` turns it off the same
    way); it needs ``StreamWriter.send_headers`` for the timed flush, so without it nothing changes.
    """

    _send_headers_immediately = not hasattr(StreamWriter, "send_headers")


def _send_headers(writer: Any) -> None:
    try:
        writer.send_headers()  # a no-op once the first chunk took them along
    except (ConnectionResetError, aiohttp.ClientConnectionResetError, RuntimeError):
        pass  # the client left; the relay loop notices on its next write
