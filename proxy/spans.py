"""A finished call (:class:`~genops.proxy.call_result.CallResult`) as span attributes: GenAI
semantic conventions plus ``genops.*``."""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from genops import semconv as sc
from genops.proxy.call_result import CallResult
from genops.proxy.pricing import Price


@lru_cache(maxsize=1024)
def _server(url: str) -> tuple[str, int] | None:
    """``(server.address, server.port)`` of an upstream URL (a few distinct URLs serve every call)."""
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def call_attributes(result: CallResult) -> dict[str, Any]:
    """Every attribute the proxy records for one call, cost included (the safety scan's are the guard's)."""
    status = result.status
    attrs: dict[str, Any] = {
        sc.GENOPS_REQUEST_ID: result.request_id,
        sc.GENOPS_ROUTE: result.route,
    }
    if status:
        attrs[sc.HTTP_RESPONSE_STATUS_CODE] = status
    upstream_url = result.upstream_url
    if upstream_url is not None:
        attrs[sc.GENOPS_UPSTREAM_URL] = upstream_url
        server = _server(upstream_url)
        if server is not None:
            attrs[sc.SERVER_ADDRESS], attrs[sc.SERVER_PORT] = server
    if result.upstream_ms is not None:
        attrs[sc.GENOPS_LATENCY_UPSTREAM_MS] = result.upstream_ms
    if result.error_type:
        attrs[sc.ERROR_TYPE] = result.error_type
    elif status >= 400:
        attrs[sc.ERROR_TYPE] = str(status)
    # Transport facts, in the order the stages learn them (forward, then relay), then the context.
    if result.request_body_bytes is not None:
        attrs[sc.GENOPS_REQUEST_BODY_BYTES] = result.request_body_bytes
    if result.client_disconnected:
        attrs[sc.GENOPS_CLIENT_DISCONNECTED] = True
    if result.stream_chunks is not None:
        attrs[sc.GENOPS_STREAM_CHUNKS] = result.stream_chunks
    if result.response_body_bytes is not None:
        attrs[sc.GENOPS_RESPONSE_BODY_BYTES] = result.response_body_bytes
    if result.context:
        attrs.update(result.context)
    if not result.operation:
        return attrs

    attrs[sc.GEN_AI_OPERATION_NAME] = result.operation
    attrs[sc.GEN_AI_PROVIDER_NAME] = result.provider_name
    if result.model:
        attrs[sc.GEN_AI_REQUEST_MODEL] = result.model
    attrs[sc.GEN_AI_REQUEST_STREAM] = result.stream
    attrs.update(result.request_attributes)
    if result.response_id:
        attrs[sc.GEN_AI_RESPONSE_ID] = str(result.response_id)
    if result.response_model:
        attrs[sc.GEN_AI_RESPONSE_MODEL] = str(result.response_model)
    if result.finish_reasons:
        attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] = result.finish_reasons
    if result.tool_calls:
        attrs[sc.GENOPS_RESPONSE_TOOL_CALLS] = len(result.tool_calls)
        attrs[sc.GENOPS_RESPONSE_TOOL_NAMES] = result.tool_calls

    usage = result.usage
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
    if result.usage_injected:
        attrs[sc.GENOPS_STREAM_USAGE_INJECTED] = True

    started_perf, ended_perf, first_token = result.started_perf, result.ended_perf, result.first_token_perf_ns
    total_ms = (ended_perf - started_perf) / 1e6
    output = usage.output_tokens
    if first_token is not None:
        ttft_ms = (first_token - started_perf) / 1e6
        attrs[sc.GENOPS_LATENCY_TTFT_MS] = round(ttft_ms, 3)
        generating_s = (ended_perf - first_token) / 1e9
        if output and generating_s > 0:
            attrs[sc.GENOPS_LATENCY_OUTPUT_TOKENS_PER_SECOND] = round(output / generating_s, 3)
    elif output and total_ms > 0 and not result.stream:
        attrs[sc.GENOPS_LATENCY_OUTPUT_TOKENS_PER_SECOND] = round(output / (total_ms / 1000), 3)

    price = result.cost
    if isinstance(price, Price):
        attrs[sc.GENOPS_COST_USD] = price.total_usd
        attrs[sc.GENOPS_COST_INPUT_USD] = price.input_usd
        attrs[sc.GENOPS_COST_OUTPUT_USD] = price.output_usd
        if price.cache_savings_usd > 0:
            attrs[sc.GENOPS_COST_CACHE_SAVINGS_USD] = price.cache_savings_usd
    elif price is not None:
        attrs[sc.GENOPS_COST_UNKNOWN] = True
        attrs[sc.GENOPS_COST_UNKNOWN_REASON] = price.reason
    return attrs
