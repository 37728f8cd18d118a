"""The proxy's request path for one route: a short driver that runs the route's stages.

The stages (proxy/stages/, put together once in ``build_chain``) do the work in this order,
chosen to keep the client's latency low: parse just enough of the request (the adapter
decides what), route it, apply the safety policy, forward it, relay the response (streams
chunk by chunk as they arrive); only after the client has its last byte does record scan,
compute cost and finish the span, and even that waits until the loop has nothing more urgent
(:mod:`genops.proxy.after_response`): a client's next call on the connection is not kept
waiting for this one's bookkeeping.
"""

from __future__ import annotations

import logging
import time
import traceback

from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.trace import SpanKind

from genops.config import Settings
from genops.proxy.client_side import ClientGone, ClientReply, ClientRequest
from genops.proxy.context import escape_header, request_id_for
from genops.proxy.providers.base import ProviderAdapter, RequestError
from genops.proxy.recorder import SpanRecorder
from genops.proxy.routing.router import Router
from genops.proxy.stages import Exchange, build_chain
from genops.proxy.stages.reply import REQUEST_ID_HEADER, error_answer
from genops.proxy.targets import mask_userinfo
from genops.proxy.upstream import UpstreamClientLike

__all__ = ["REQUEST_ID_HEADER", "ProxyHandler"]

log = logging.getLogger("genops.proxy")


def _traceparent(ctx: trace.SpanContext) -> str:
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


class ProxyHandler:
    """Serves every route of one provider adapter."""

    def __init__(self, adapter: ProviderAdapter, settings: Settings, client: UpstreamClientLike,
                 tracer: SpanRecorder, router: Router | None = None) -> None:
        self.adapter = adapter
        self.settings = settings
        self.client = client
        self.tracer = tracer
        chain = build_chain(adapter, settings, client, router, tracer)  # once per route, never per request
        self.stages = chain.stages
        self.record = chain.record

    async def __call__(self, request: ClientRequest, reply: ClientReply, tail: str,
                       refuse: str | None = None) -> None:
        """Serve one request; answers through ``reply``. ``tail``: the path after the adapter's
        prefix; ``refuse``: the message of a 400 to answer instead of forwarding (another
        provider's request at the root). Both come from the routes (proxy/routes.py)."""
        started_ns = time.time_ns()
        started_perf = time.perf_counter_ns()
        headers = request.headers
        request_id = request_id_for(headers)
        parent = extract(headers) if "traceparent" in headers else None
        span = self.tracer.start_span(
            f"{request.method} {request.path}", context=parent, kind=SpanKind.CLIENT, start_time=started_ns
        )
        traceparent = _traceparent(span.get_span_context())  # sent upstream and returned to the client
        exchange = Exchange(request, reply, tail, request_id, started_ns, started_perf, span, traceparent)
        try:
            if refuse is not None:  # another provider's request at the root (proxy/providers/root.py)
                raise RequestError(400, refuse, "invalid_request_error", "wrong_base_url")
            for stage in self.stages:
                await stage.run(exchange)
                if exchange.answered:  # answered (relay, or a stage that answers itself)
                    break
        except RequestError as exc:
            message = exc.message if exc.message.isascii() else escape_header(exc.message)  # may quote a header
            exchange.error_type = exc.code or exc.error_type
            exchange.error_message = message
            exchange.status = exc.status
            # The body was not read (whole) on a 408 or 413: the connection cannot serve another request.
            await self._answer_error(exchange, exc.status, message, exc.error_type, exc.code,
                                     close=exc.status in (408, 413))
        except Exception as exc:
            if exchange.forwarding:
                raise  # the response may have started: nothing clean can be sent any more
            # Input nothing above foresaw: a clear 500 in the provider's shape and a span that says so,
            # instead of the server's bare text 500 and a span without a status.
            message = f"GenOps could not handle this request ({type(exc).__name__})."
            exchange.error_type = "internal_error"
            exchange.error_message = message
            exchange.status = 500
            _log_failure(exc, self.adapter.name, request_id)
            await self._answer_error(exchange, 500, message, "internal_error", "internal_error")
        finally:
            self.record.schedule(exchange)

    async def _answer_error(self, exchange: Exchange, status: int, message: str, error_type: str,
                            code: str | None, close: bool = False) -> None:
        """A proxy-made error answer, in the provider's shape (a client gone meanwhile is recorded)."""
        headers, body = error_answer(self.adapter, status, message, error_type, code, exchange.request_id,
                                     exchange.traceparent)
        exchange.answered = True
        try:
            await exchange.reply.send(status, headers, body, close=close)
        except ClientGone:
            exchange.client_disconnected = True


def _log_failure(exc: Exception, route: str, request_id: str) -> None:
    """Log a request that failed before forwarding. The traceback's frames, but its message only
    with URL user info masked: exception messages may quote a URL (``user:password@host``)."""
    log.error("request failed before forwarding", extra={
        "route": route, "request_id": request_id, "error": type(exc).__name__,
        "error_message": mask_userinfo(str(exc))[:300],
        "traceback": "".join(traceback.format_tb(exc.__traceback__)),
    })
