"""How the relay reads an upstream's answer and names what went wrong while reading it: shared by
the byte-for-byte relay (relay.py) and the translated one (relay_translated.py)."""

from __future__ import annotations

import asyncio

import aiohttp

from genops.proxy.client_side import ClientGone
from genops.proxy.providers.base import RequestError
from genops.proxy.stages.base import Exchange
from genops.proxy.upstream import UpstreamResponseLike

#: A stream cut short: by the upstream (nothing more can be sent: the client has part of an answer) ...
UPSTREAM_STREAM_FAILURES = (TimeoutError, aiohttp.ClientPayloadError)
#: ... or by the client (every server raises a ConnectionResetError: aiohttp's ClientConnectionResetError is one).
CLIENT_GONE = (ClientGone, asyncio.CancelledError)


async def read_whole(upstream_response: UpstreamResponseLike) -> bytes:
    """A whole answer's body; a timeout or a broken connection is a proxy-made 504 / 502 (nothing was sent yet)."""
    try:
        return await upstream_response.read()
    except TimeoutError:
        raise RequestError(504, "The upstream timed out while sending its response.",
                           "upstream_timeout", "upstream_timeout") from None
    except aiohttp.ClientError as exc:
        raise RequestError(502, f"The upstream connection failed mid-response: {type(exc).__name__}.",
                           "upstream_unreachable", "upstream_unreachable") from None


def upstream_stream_failed(exchange: Exchange, exc: BaseException) -> None:
    """Record a stream the upstream cut short (one of :data:`UPSTREAM_STREAM_FAILURES`)."""
    if isinstance(exc, TimeoutError):
        exchange.error_type = "upstream_timeout"
        exchange.error_message = "The upstream timed out mid-stream."
    else:
        exchange.error_type = "upstream_stream_broken"
        exchange.error_message = f"The upstream stream ended abnormally: {exc}"[:300]


def client_left(exchange: Exchange, upstream_response: UpstreamResponseLike, exc: BaseException) -> None:
    """The client went away mid-stream (one of :data:`CLIENT_GONE`): stop reading upstream (closing
    cancels the upstream request) and record it; a cancellation is raised again by the caller."""
    upstream_response.close()
    exchange.error_type = "client_disconnected"
    exchange.error_message = "The client disconnected before the stream ended."
    exchange.client_disconnected = True
