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
from genops.proxy.providers.base import NO_RESPONSE, PASS_THROUGH, ProviderAdapter, RequestFacts
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
        facts = exchange.request_facts
        if facts is None:  # nothing was parsed: the span records the HTTP exchange only
            facts = PASS_THROUGH
        guard = exchange.guard
        if guard is not None and guard.needs_thread(exchange.response_facts):
            after_response.run_in_background(self._record_big(exchange, facts, guard, ended_perf))
            return
        after_response.defer(self._record, exchange, facts, guard, ended_perf)

    async def _record_big(self, exchange: Exchange, facts: RequestFacts, guard: CallGuard, ended_perf: int) -> None:
        context = call_context(exchange.request.headers, self.adapter, exchange.client_facts or facts)
        await guard.finish(exchange.span, exchange.response_facts)
        self._end_span(exchange, facts, guard, context, ended_perf)

    def _record(self, exchange: Exchange, facts: RequestFacts, guard: CallGuard | None, ended_perf: int) -> None:
        context = call_context(exchange.request.headers, self.adapter, exchange.client_facts or facts)
        if guard is not None:
            guard.finish_inline(exchange.span, exchange.response_facts)
        self._end_span(exchange, facts, guard, context, ended_perf)

    def _end_span(self, exchange: Exchange, facts: RequestFacts, guard: CallGuard | None, context: dict[str, Any],
                  ended_perf: int) -> None:
        now_perf = time.perf_counter_ns()
        adapter, span = exchange.adapter or self.adapter, exchange.span  # a routed call: the target's
        response = exchange.response_facts or NO_RESPONSE
        # The stages' error (relay, or a proxy-made answer) wins over the one the adapter read.
        error_type, error_message = exchange.error_type, exchange.error_message
        if error_type is None:
            error_type, error_message = response.error_type, response.error_message
        if error_message and guard is not None:  # it may quote the request, like an upstream's error
            error_message = guard.redacted(error_message)
        usage = exchange.estimated_usage
        result = call_result(
            adapter, facts, response, exchange.upstream, exchange.status, exchange.request_id, exchange.started_perf,
            ended_perf, stream=exchange.stream, error_type=error_type, error_message=error_message, usage=usage,
            usage_injected=exchange.usage_injected, first_token_perf_ns=exchange.first_token_perf_ns,
            request_body_bytes=exchange.request_body_bytes, response_body_bytes=exchange.response_body_bytes,
            stream_chunks=exchange.stream_chunks, client_disconnected=exchange.client_disconnected, context=context,
            cost=call_cost(adapter, facts, response, usage), upstream_ms=_upstream_ms(exchange),
        )
        span.set_attributes(call_attributes(result))
        if result.error_type or result.status >= 400:
            span.set_status(Status(StatusCode.ERROR, result.error_message or f"HTTP {result.status}"))
        span.end(end_time=time.time_ns() - (now_perf - ended_perf))


def _upstream_ms(exchange: Exchange) -> float | None:
    """The upstream's share of the call: from the request leaving to its answer's last byte (ms)."""
    sent, done = exchange.upstream_sent_perf, exchange.upstream_done_perf
    if sent is None or done is None or done < sent:
        return None
    return round((done - sent) / 1e6, 3)
