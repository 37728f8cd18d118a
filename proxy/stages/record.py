"""Stage 6, record: after the client has its response, the call's context, the rest of the
safety scan, the cost and the span's end, none of it awaited by the request.

An aiohttp connection serves its next keep-alive request only after the handler returns, so
the driver only schedules this work: small scans are deferred to the loop's next pause, big
ones go to a thread (:mod:`genops.proxy.after_response`). The span's end time is fixed when
the response ended, not when the work runs. Unlike the stages before it, record runs for every
request, whatever happened before (a proxy-made error included).
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry.trace import Status, StatusCode

from genops.proxy import after_response
from genops.proxy.call_result import call_cost, call_result
from genops.proxy.context import call_context
from genops.proxy.providers.base import Call, ProviderAdapter
from genops.proxy.safety.guard import CallGuard
from genops.proxy.spans import call_attributes
from genops.proxy.stages.base import Exchange


class RecordStage:
    """Ends the exchange's span with the attributes of its frozen :class:`~genops.proxy.call_result.CallResult`."""

    def __init__(self, adapter: ProviderAdapter) -> None:
        self.adapter = adapter

    def schedule(self, exchange: Exchange) -> None:
        """Leave the recording for later, with the span's end time fixed now."""
        ended_perf = time.perf_counter_ns()
        call = exchange.call
        if call is None:  # nothing was parsed: the span records the HTTP exchange only
            call = Call()
        guard = exchange.guard
        if guard is not None and guard.needs_thread():
            after_response.run_in_background(self._record_big(exchange, call, guard, ended_perf))
            return
        after_response.defer(self._record, exchange, call, guard, ended_perf)

    async def _record_big(self, exchange: Exchange, call: Call, guard: CallGuard, ended_perf: int) -> None:
        context = call_context(exchange.request.headers, self.adapter, call)
        await guard.finish(exchange.span)
        self._end_span(exchange, call, guard, context, ended_perf)

    def _record(self, exchange: Exchange, call: Call, guard: CallGuard | None, ended_perf: int) -> None:
        context = call_context(exchange.request.headers, self.adapter, call)
        if guard is not None:
            guard.finish_inline(exchange.span)
        self._end_span(exchange, call, guard, context, ended_perf)

    def _end_span(self, exchange: Exchange, call: Call, guard: CallGuard | None, context: dict[str, Any],
                  ended_perf: int) -> None:
        now_perf = time.perf_counter_ns()
        adapter, span = self.adapter, exchange.span
        error_message = exchange.error_message
        if error_message and guard is not None:  # it may quote the request, like an upstream's error
            error_message = guard.redacted(error_message)
        result = call_result(
            adapter, call, exchange.upstream, exchange.status, exchange.request_id, exchange.started_perf,
            ended_perf, stream=exchange.stream, error_type=exchange.error_type, error_message=error_message,
            first_token_perf_ns=exchange.first_token_perf_ns, request_body_bytes=exchange.request_body_bytes,
            response_body_bytes=exchange.response_body_bytes, stream_chunks=exchange.stream_chunks,
            client_disconnected=exchange.client_disconnected, context=context, cost=call_cost(adapter, call),
        )
        span.set_attributes(call_attributes(result))
        if result.error_type or result.status >= 400:
            span.set_status(Status(StatusCode.ERROR, result.error_message or f"HTTP {result.status}"))
        span.end(end_time=time.time_ns() - (now_perf - ended_perf))
