"""The immutable record of one finished call: what the span builder (proxy/spans.py) consumes.

Built once per call by the record stage (proxy/stages/record.py), after the client has its
response and the safety scan has run: the request facts and response facts the adapter read
(``Call``), the transport facts the forward and relay stages measured (``Exchange``), the
call's context (user, session, properties) and its cost. Nothing writes it after that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from genops.proxy.pricing import Price, UnknownPrice, price_call
from genops.proxy.providers.base import Call, ProviderAdapter, Upstream, Usage

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


def call_cost(adapter: ProviderAdapter, call: Call) -> Price | UnknownPrice | None:
    """The price of a model call from its usage (None for pass-through requests)."""
    if not call.operation:
        return None
    model = call.response_model or call.model
    if model is not None and not isinstance(model, str):  # an upstream's "model": {...} must not cost the span
        model = str(model)
    return price_call(adapter.price_provider(call), model, call.usage)


def call_result(adapter: ProviderAdapter, call: Call, upstream: Upstream | None, status: int, request_id: str,
                started_perf: int, ended_perf: int, *, stream: bool | None = None, error_type: str | None = None,
                error_message: str | None = None, first_token_perf_ns: int | None = None,
                request_body_bytes: int | None = None, response_body_bytes: int | None = None,
                stream_chunks: int | None = None, client_disconnected: bool = False,
                context: Mapping[str, Any] | None = None, cost: Price | UnknownPrice | None = None) -> CallResult:
    """Freeze what is known of a finished call: the adapter's ``call`` plus what the stages measured.

    ``stream`` (None: the request's flag) and an ``error_type`` with its ``error_message`` (None:
    the error the adapter read, if any) are the relay's or the driver's word over the adapter's.
    """
    if error_type is None:
        error_type, error_message = call.error_type, call.error_message
    return CallResult(
        request_id, adapter.name, adapter.provider_name, upstream.stored_url if upstream is not None else None,
        call.operation, call.model, call.stream if stream is None else stream, call.request_attributes,
        call.usage_injected, request_body_bytes, status, call.response_id, call.response_model, call.finish_reasons,
        call.tool_calls, call.usage, error_type, error_message, first_token_perf_ns, response_body_bytes,
        stream_chunks, client_disconnected, started_perf, ended_perf,
        context if context is not None else _NO_CONTEXT, cost,
    )
