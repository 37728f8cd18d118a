"""The relay of a routed call whose target speaks another format than the client (proxy/translate/):
the client gets the answer translated into its own format, whole or event by event as it arrives,
while the target's own adapter reads the untranslated answer (exact tokens, the target's price)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
from multidict import CIMultiDict

from genops.proxy.client_side import ClientGone
from genops.proxy.providers.base import ProviderAdapter, RequestFacts
from genops.proxy.stages.base import Exchange
from genops.proxy.stages.reply import relayed_headers
from genops.proxy.stages.upstream_read import (
    CLIENT_GONE,
    UPSTREAM_STREAM_FAILURES,
    client_left,
    read_whole,
    upstream_stream_failed,
)
from genops.proxy.tokenizer import estimate_missing_usage
from genops.proxy.upstream import UpstreamResponseLike

#: The upstream's headers that describe its bytes, not the translated ones the client gets.
_BODY_HEADERS = ("Content-Type", "Content-Encoding", "Content-Length", "Transfer-Encoding")


def _headers(upstream_response: UpstreamResponseLike, exchange: Exchange, content_type: str) -> CIMultiDict[str]:
    headers = relayed_headers(upstream_response, exchange.request_id, exchange.traceparent)
    for name in _BODY_HEADERS:
        headers.popall(name, None)
    headers["Content-Type"] = content_type
    return headers


async def relay_translated(exchange: Exchange, adapter: ProviderAdapter, facts: RequestFacts,
                           upstream_response: UpstreamResponseLike, decode: Callable[[bytes], bytes]) -> None:
    """Relay ``upstream_response`` translated by ``exchange.translation``; sets what the relay stage sets."""
    translation = exchange.translation
    assert translation is not None
    status = upstream_response.status
    if facts.stream and status < 400:
        await _relay_stream(exchange, adapter, facts, upstream_response, decode)
        return
    raw = await read_whole(upstream_response)
    exchange.upstream_done_perf = time.perf_counter_ns()
    decoded = decode(raw)
    body = translation.response(status, decoded)
    exchange.stream = False
    exchange.answered = True
    try:
        await exchange.reply.send(status, _headers(upstream_response, exchange, "application/json"), body)
    except ClientGone:
        exchange.client_disconnected = True
    exchange.response_body_bytes = len(body)
    read = adapter.parse_response(facts, status, decoded)
    # The safety scan and content capture read the answer as the client got it (its own format).
    exchange.response_facts = read._replace(body_json=orjson.loads(body))
    if exchange.guard is not None:
        exchange.guard.observe_response(body)


async def _relay_stream(exchange: Exchange, adapter: ProviderAdapter, facts: RequestFacts,
                        upstream_response: UpstreamResponseLike, decode: Callable[[bytes], bytes]) -> None:
    translation = exchange.translation
    assert translation is not None
    client = exchange.client_facts.request_json if exchange.client_facts is not None else None
    options = client.get("stream_options") if isinstance(client, dict) else None
    translator = translation.stream(bool(isinstance(options, dict) and options.get("include_usage")))
    state = adapter.new_stream(facts, exchange.started_perf, False)
    exchange.stream = True
    exchange.answered = True
    response = exchange.reply
    sent = 0
    try:
        await response.start(upstream_response.status,
                             _headers(upstream_response, exchange, "text/event-stream; charset=utf-8"))
        try:
            async for chunk in upstream_response.content.iter_any():
                decoded = decode(chunk)
                state.observe(decoded)
                out = translator.feed(decoded)
                if out:
                    await response.write(out)
                    sent += len(out)
            out = translator.finish()
            if out:
                await response.write(out)
                sent += len(out)
            await response.end()
        except UPSTREAM_STREAM_FAILURES as exc:
            upstream_stream_failed(exchange, exc)
    except CLIENT_GONE as exc:
        client_left(exchange, upstream_response, exc)
        if isinstance(exc, asyncio.CancelledError):
            raise
    finally:
        exchange.stream_chunks = state.chunks
        exchange.response_body_bytes = sent
        exchange.first_token_perf_ns = state.first_token_ns
        read: Any = state.result()
        exchange.response_facts = read
    exchange.estimated_usage = await estimate_missing_usage(facts, read)
