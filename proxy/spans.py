"""A finished call as span attributes: GenAI semantic conventions plus ``genops.*``."""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from genops import semconv as sc
from genops.proxy.providers.base import Call, ProviderAdapter, Upstream


@lru_cache(maxsize=1024)
def _server(url: str) -> tuple[str, int] | None:
    """``(server.address, server.port)`` of an upstream URL (a few distinct URLs serve every call)."""
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def call_attributes(adapter: ProviderAdapter, call: Call, upstream: Upstream | None, status: int,
                    request_id: str, started_perf: int, ended_perf: int) -> dict[str, Any]:
    """Every attribute the proxy records for one call (the cost is added by the caller)."""
    attrs: dict[str, Any] = {
        sc.GENOPS_REQUEST_ID: request_id,
        sc.GENOPS_ROUTE: adapter.name,
    }
    if status:
        attrs[sc.HTTP_RESPONSE_STATUS_CODE] = status
    if upstream is not None:
        attrs[sc.GENOPS_UPSTREAM_URL] = upstream.stored_url
        server = _server(upstream.stored_url)
        if server is not None:
            attrs[sc.SERVER_ADDRESS], attrs[sc.SERVER_PORT] = server
    if call.error_type:
        attrs[sc.ERROR_TYPE] = call.error_type
    elif status >= 400:
        attrs[sc.ERROR_TYPE] = str(status)
    attrs.update(call.extra_attributes)
    if not call.operation:
        return attrs

    attrs[sc.GEN_AI_OPERATION_NAME] = call.operation
    attrs[sc.GEN_AI_PROVIDER_NAME] = adapter.provider_name
    if call.model:
        attrs[sc.GEN_AI_REQUEST_MODEL] = call.model
    attrs[sc.GEN_AI_REQUEST_STREAM] = call.stream
    attrs.update(call.request_attributes)
    if call.response_id:
        attrs[sc.GEN_AI_RESPONSE_ID] = str(call.response_id)
    if call.response_model:
        attrs[sc.GEN_AI_RESPONSE_MODEL] = str(call.response_model)
    if call.finish_reasons:
        attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] = call.finish_reasons
    if call.tool_calls:
        attrs[sc.GENOPS_RESPONSE_TOOL_CALLS] = len(call.tool_calls)
        attrs[sc.GENOPS_RESPONSE_TOOL_NAMES] = call.tool_calls

    usage = call.usage
    for attribute, value in (
        (sc.GEN_AI_USAGE_INPUT_TOKENS, usage.input_tokens),
        (sc.GEN_AI_USAGE_OUTPUT_TOKENS, usage.output_tokens),
        (sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, usage.cache_read_tokens),
        (sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, usage.cache_write_tokens),
        (sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, usage.reasoning_tokens),
    ):
        if value is not None:
            attrs[attribute] = value
    if usage.estimated:
        attrs[sc.GENOPS_USAGE_ESTIMATED] = True
    if call.usage_injected:
        attrs[sc.GENOPS_STREAM_USAGE_INJECTED] = True

    total_ms = (ended_perf - started_perf) / 1e6
    output = usage.output_tokens
    if call.first_token_perf_ns is not None:
        ttft_ms = (call.first_token_perf_ns - started_perf) / 1e6
        attrs[sc.GENOPS_LATENCY_TTFT_MS] = round(ttft_ms, 3)
        generating_s = (ended_perf - call.first_token_perf_ns) / 1e9
        if output and generating_s > 0:
            attrs[sc.GENOPS_LATENCY_OUTPUT_TOKENS_PER_SECOND] = round(output / generating_s, 3)
    elif output and total_ms > 0 and not call.stream:
        attrs[sc.GENOPS_LATENCY_OUTPUT_TOKENS_PER_SECOND] = round(output / (total_ms / 1000), 3)
    return attrs
