"""The immutable record of one finished call: what the span builder (proxy/spans.py) consumes.

Built once per call by the record stage (proxy/stages/record.py), after the client has its
response and the safety scan has run, by :func:`call_result` from: the request facts and the
response facts the adapter read (:class:`~genops.proxy.providers.base.RequestFacts`,
:class:`~genops.proxy.providers.base.ResponseFacts`, both frozen), the facts the stages measured
(``Exchange``: transport, a stream's estimated usage, whether the proxy asked for stream usage),
the call's context (user, session, properties) and its cost. Each fact has one writer, and
nothing writes any of them once the call is recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from genops.proxy.pricing import Price, UnknownPrice, price_call
from genops.proxy.providers.base import NO_RESPONSE, ProviderAdapter, RequestFacts, ResponseFacts, Upstream, Usage

_NO_CONTEXT: Mapping[str, Any] = {}


class CallResult(NamedTuple):
    """Request facts + response facts + transport facts + cost of one proxied call.

    A ``NamedTuple`` rather than a frozen dataclass: both are immutable, but a frozen dataclass's
    ``__init__`` sets each of these 26 fields through ``object.__setattr__`` (measured ~4-8 µs per
    call on the shared 2-core VM, against ~0.6-1 µs for the tuple), and this is built for every
    proxied call. The lists and the ``Usage`` it refers to are the adapter's, not copies (no
    per-call copying on the hot path); nothing changes them once the call is recorded.
    """

    # who served it
    request_id: str
    route: str  # genops.route: the adapter's name
    provider_name: str  # gen_ai.provider.name
    upstream_url: str | None  # stored URL (no query string), None when no upstream was chosen
    # request facts (parse, forward)
    operation: str | None
    model: str | None
    stream: bool
    request_attributes: Mapping[str, Any]
    usage_injected: bool
    request_body_bytes: int | None
    # response facts (relay and the adapter's response reader)
    status: int
    response_id: Any
    response_model: Any
    finish_reasons: Sequence[str]
    tool_calls: Sequence[str]
    usage: Usage
    error_type: str | None
    error_message: str | None
    first_token_perf_ns: int | None
    response_body_bytes: int | None
    stream_chunks: int | None
    client_disconnected: bool
    # timing (perf_counter_ns)
    started_perf: int
    ended_perf: int
    # who and what it was for (proxy/context.py), and what it cost (None: not a model call)
    context: Mapping[str, Any]
    cost: Price | UnknownPrice | None
    # from the request leaving for the upstream to the upstream's last byte (None: nothing was sent)
    upstream_ms: float | None = None


def call_cost(adapter: ProviderAdapter, request: RequestFacts, response: ResponseFacts | None,
              usage: Usage | None = None) -> Price | UnknownPrice | None:
    """The price of a model call from its usage (None for pass-through requests). ``usage``
    (None: the response's own) is the one the span records: a stream's estimate, if any."""
    if not request.operation:
        return None
    if response is None:
        response = NO_RESPONSE
    model = response.response_model or request.model
    if model is not None and not isinstance(model, str):  # an upstream's "model": {...} must not cost the span
        model = str(model)
    return price_call(adapter.price_provider(request), model, response.usage if usage is None else usage)


def call_result(adapter: ProviderAdapter, request: RequestFacts, response: ResponseFacts | None,
                upstream: Upstream | None, status: int, request_id: str, started_perf: int, ended_perf: int, *,
                stream: bool | None = None, error_type: str | None = None, error_message: str | None = None,
                usage: Usage | None = None, usage_injected: bool = False, first_token_perf_ns: int | None = None,
                request_body_bytes: int | None = None, response_body_bytes: int | None = None,
                stream_chunks: int | None = None, client_disconnected: bool = False,
                context: Mapping[str, Any] | None = None, cost: Price | UnknownPrice | None = None,
                upstream_ms: float | None = None) -> CallResult:
    """Freeze what is known of a finished call: the adapter's ``request`` and ``response`` facts
    (``response`` None: no response was read) plus what the stages measured.

    ``stream`` (None: the request's flag), an ``error_type`` with its ``error_message`` (None:
    the error the adapter read, if any) and ``usage`` (None: the usage the response reported;
    else a stream's estimate) are the stages' word over the adapter's.
    """
    if response is None:
        response = NO_RESPONSE
    if error_type is None:
        error_type, error_message = response.error_type, response.error_message
    return CallResult(
        request_id, adapter.name, adapter.provider_name, upstream.stored_url if upstream is not None else None,
        request.operation, request.model, request.stream if stream is None else stream, request.request_attributes,
        usage_injected, request_body_bytes, status, response.response_id, response.response_model,
        response.finish_reasons, response.tool_calls, response.usage if usage is None else usage, error_type,
        error_message, first_token_perf_ns, response_body_bytes, stream_chunks, client_disconnected, started_perf,
        ended_perf, context if context is not None else _NO_CONTEXT, cost, upstream_ms,
    )
