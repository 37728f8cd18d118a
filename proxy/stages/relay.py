"""Stage 5, relay: give the client the upstream's response, byte for byte (a stream chunk by
chunk as it arrives), while the adapter reads a decoded copy for usage, ids and finish reasons.

Whole responses are read, sent, then parsed; streams are relayed as they arrive, each chunk
observed after it left (or rewritten, when the proxy asked the upstream for stream usage the
client did not ask for), and a stream that reported no usage is estimated once it ended.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable
from typing import Any

from genops.proxy.client_side import ClientGone
from genops.proxy.providers.base import ProviderAdapter, RequestFacts
from genops.proxy.stages.base import Exchange
from genops.proxy.stages.relay_translated import relay_translated
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

#: How long a stream's response headers wait for its first chunk, to leave in one write with it: one
#: write instead of two, ~30 µs sooner to the first byte at one client. A model slow to its first
#: token gets the headers sent alone after this, so clients and load balancers see the answer start.
HEADERS_WAIT_S = 0.005


class RelayStage:
    """Sets ``exchange.status``, ``exchange.answered`` and the relay facts (bytes sent, stream
    events, first token, client disconnect, a mid-stream error); releases
    ``exchange.upstream_response``. Sets ``exchange.response_facts`` to what the adapter's
    reader froze of the response (usage, ids, finish reasons), and ``exchange.estimated_usage``
    to the tokenizer's estimate of what a stream did not report."""

    def __init__(self, adapter: ProviderAdapter) -> None:
        self.adapter = adapter

    async def run(self, exchange: Exchange) -> None:
        upstream_response, facts = exchange.upstream_response, exchange.request_facts
        assert upstream_response is not None and facts is not None  # forward ran
        adapter, reply = exchange.adapter or self.adapter, exchange.reply
        status = upstream_response.status
        try:
            encoding = upstream_response.headers.get("Content-Encoding")
            decode = _Decoder(encoding) if encoding else _identity
            content_type = upstream_response.headers.get("Content-Type", "")
            if exchange.translation is not None:  # a routed call answered in another format
                await relay_translated(exchange, adapter, facts, upstream_response, decode)
            elif adapter.streams_response(facts, status, content_type):
                exchange.stream = facts.stream
                exchange.answered = True
                await self._relay_stream(exchange, adapter, facts, upstream_response, decode)
            else:
                raw = await read_whole(upstream_response)
                exchange.upstream_done_perf = time.perf_counter_ns()
                exchange.stream = facts.stream and status < 400
                exchange.answered = True
                try:
                    await reply.send(status, relayed_headers(upstream_response, exchange.request_id,
                                                             exchange.traceparent), raw)
                except ClientGone:
                    exchange.client_disconnected = True
                exchange.response_body_bytes = len(raw)
                if facts.operation is not None or status >= 400:
                    decoded = decode(raw)
                    exchange.response_facts = adapter.parse_response(facts, status, decoded)
                    if exchange.guard is not None:
                        exchange.guard.observe_response(decoded)
        finally:
            upstream_response.release()
            if exchange.upstream_done_perf is None:  # a stream's end (a whole body is timed as it is read)
                exchange.upstream_done_perf = time.perf_counter_ns()
        exchange.status = status  # only once relayed: a relay cut short by an exception records no status

    async def _relay_stream(self, exchange: Exchange, adapter: ProviderAdapter, facts: RequestFacts,
                            upstream_response: UpstreamResponseLike, decode: Callable[[bytes], bytes]) -> None:
        """Relay a stream as it arrives; read a copy of each chunk for telemetry."""
        rewrite = exchange.usage_injected
        state = adapter.new_stream(facts, exchange.started_perf, rewrite)
        sent = 0
        response = exchange.reply
        try:
            await response.start(upstream_response.status,
                                 relayed_headers(upstream_response, exchange.request_id, exchange.traceparent),
                                 hold_headers=HEADERS_WAIT_S)
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
            read = exchange.response_facts = state.result()  # what was read, even of a stream cut short
        # after the client's last byte; only when usage was not reported
        exchange.estimated_usage = await estimate_missing_usage(facts, read)


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
