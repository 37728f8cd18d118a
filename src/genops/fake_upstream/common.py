"""Shared pieces of the fake providers: request log, controls, deterministic text and tokens."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

REQUEST_LOG_KEY = web.AppKey("fake_request_log", list)


@dataclass
class Controls:
    """Per-request behaviour from ``X-Fake-*`` headers."""

    status: int = 200
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    drop_usage: bool = False

    @classmethod
    def from_request(cls, request: web.Request) -> "Controls":
        h = request.headers
        return cls(
            status=int(h.get("X-Fake-Status", "200")),
            delay_s=int(h.get("X-Fake-Delay-Ms", "0")) / 1000,
            chunk_delay_s=int(h.get("X-Fake-Chunk-Delay-Ms", "0")) / 1000,
            cached_tokens=int(h.get("X-Fake-Cached-Tokens", "0")),
            cache_write_tokens=int(h.get("X-Fake-Cache-Write-Tokens", "0")),
            reasoning_tokens=int(h.get("X-Fake-Reasoning-Tokens", "0")),
            drop_usage=h.get("X-Fake-Drop-Usage", "") == "1",
        )

    async def wait(self) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)

    async def between_chunks(self) -> None:
        if self.chunk_delay_s:
            await asyncio.sleep(self.chunk_delay_s)


async def record(request: web.Request) -> bytes:
    """Read the body and remember the request for ``GET /_fake/requests``."""
    body = await request.read()
    log = request.app[REQUEST_LOG_KEY]
    log.append(
        {
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "headers": {str(k): v for k, v in request.headers.items()},
            "body": body.decode("utf-8", "replace"),
        }
    )
    del log[:-200]
    return body


def count_tokens(text: str) -> int:
    """A deterministic stand-in tokenizer: one token per word, at least one."""
    return max(1, len(text.split()))


def reply_pieces(prompt: str) -> list[str]:
    """The deterministic reply, split into the pieces a stream sends."""
    words = prompt.split()[:6]
    text = "Hello! This is a fake reply about: " + " ".join(words) if words else "Hello! This is a fake reply."
    parts = text.split(" ")
    return [parts[0]] + [" " + p for p in parts[1:]]


def dumps(data: Any) -> bytes:
    """Compact JSON, keys in insertion order, as the real APIs send it."""
    return orjson.dumps(data)


def sse(data: bytes, event: str | None = None) -> bytes:
    """One Server-Sent Event."""
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + data + b"\n\n"
