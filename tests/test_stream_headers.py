"""A relayed stream's headers leave with its first chunk, or alone when the model is slow to start."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from genops.config import load_settings
from genops.proxy.stages.relay import HEADERS_WAIT_S
from genops.runtime.app import create_app
from genops.runtime.telemetry import build_telemetry

pytestmark = pytest.mark.integration

FIRST_TOKEN_S = 0.5
EVENT = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
         "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}


async def slow_model(request: web.Request) -> web.StreamResponse:
    """Headers at once, the first token half a second later (a reasoning model, a cold vLLM)."""
    await request.read()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await asyncio.sleep(FIRST_TOKEN_S)
    await response.write(b"data: " + json.dumps(EVENT).encode() + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def test_headers_of_a_slow_stream_are_not_held_until_its_first_token() -> None:
    upstream_app = web.Application()
    upstream_app.router.add_post("/v1/chat/completions", slow_model)
    async with TestServer(upstream_app) as upstream:
        settings = load_settings(env={"GENOPS_OPENAI_BASE_URL": str(upstream.make_url("")).rstrip("/"),
                                      "GENOPS_DATA_DIR": "/nonexistent"})
        app = create_app(settings, build_telemetry(settings, None), None)
        async with TestServer(app) as proxy, aiohttp.ClientSession() as client:
            body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
            started = time.monotonic()
            async with client.post(str(proxy.make_url("/v1/chat/completions")), json=body,
                                   headers={"Authorization": "Bearer sk-test"}) as response:
                headers_after = time.monotonic() - started
                assert response.status == 200
                assert response.headers["Content-Type"] == "text/event-stream"
                text = (await response.read()).decode()
                total = time.monotonic() - started
    assert HEADERS_WAIT_S <= headers_after < FIRST_TOKEN_S / 2  # the headers went ahead, after the short wait
    assert total >= FIRST_TOKEN_S and '"content":"hi"' in text.replace(" ", "") and "[DONE]" in text
