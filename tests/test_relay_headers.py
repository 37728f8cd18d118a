"""The proxy's upstream client sends exactly the headers a stock aiohttp session sends.

:class:`~genops.proxy.upstream_client.UpstreamClient` replaces ``aiohttp.ClientSession(
skip_auto_headers=("User-Agent",))`` on the request path; an in-process server records what
arrives from both (names, values and order), for requests with and without the client's own
User-Agent, Accept and Content-Type, with and without a body.
"""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from genops.proxy.upstream_client import UpstreamClient

pytestmark = pytest.mark.integration


@pytest.fixture
async def recorder():
    seen: list[list[tuple[str, str]]] = []

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        seen.append([(k.decode(), v.decode()) for k, v in request.raw_headers])
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/v1/x", seen
    await runner.cleanup()


CASES = [
    {},
    {"User-Agent": "OpenAI/Python 1.0", "Accept": "application/json"},
    {"Content-Type": "application/json", "Accept-Encoding": "identity", "Authorization": "Bearer k"},
    {"accept": "text/event-stream", "x-stainless-lang": "python"},
]


@pytest.mark.parametrize("method, body", [("POST", b'{"a":1}'), ("GET", None), ("POST", b"")])
async def test_upstream_client_sends_the_headers_of_stock_skip_auto_headers(recorder, method, body):
    url, seen = recorder
    client = UpstreamClient()
    stock = aiohttp.ClientSession(auto_decompress=False, skip_auto_headers=("User-Agent",),
                                  cookie_jar=aiohttp.DummyCookieJar())
    try:
        for case in CASES:
            async with stock.request(method, url, data=body if body else None, headers=CIMultiDict(case),
                                     allow_redirects=False) as response:
                await response.read()
            relayed = await client.request(method, url, data=body if body else None, headers=CIMultiDict(case),
                                           total_timeout=10, connect_timeout=10)
            assert await relayed.read() == b"ok"
            relayed.release()
            stock_headers, relay_headers = seen[-2], seen[-1]
            assert relay_headers == stock_headers, case
            names = {k.lower() for k, _ in relay_headers}
            assert ("user-agent" in names) == any(k.lower() == "user-agent" for k in case)
    finally:
        await stock.close()
        await client.close()


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


@pytest.mark.parametrize("stream", [False, True])
async def test_client_gets_the_upstream_headers_in_order_less_hop_by_hop(stream):
    """Duplicates and order kept, Connection-listed and hop-by-hop fields dropped, ours appended."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from genops.config import load_settings
    from genops.proxy.client_aiohttp import aiohttp_handler
    from genops.proxy.handler import ProxyHandler
    from genops.proxy.providers.openai import OpenAIAdapter
    from genops.proxy.recorder import SpanRecorder

    sent = [("X-A", "1"), ("Connection", "keep-alive, X-Hop"), ("X-Hop", "drop me"), ("Keep-Alive", "timeout=5"),
            ("X-B", "2"), ("X-A", "3"), ("x-ratelimit-remaining-requests", "499")]

    async def upstream_handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        headers = CIMultiDict(sent)
        if stream:
            headers["Content-Type"] = "text/event-stream"
            response = web.StreamResponse(headers=headers)
            await response.prepare(request)
            await response.write(b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n')
            await response.write_eof()
            return response
        headers["Content-Type"] = "application/json"
        return web.Response(body=b'{"id":"x","choices":[]}', headers=headers)

    upstream_app = web.Application()
    upstream_app.router.add_route("*", "/{tail:.*}", upstream_handler)
    upstream_runner, upstream_url = await _serve(upstream_app)
    settings = load_settings(env={})
    client = UpstreamClient()
    handler = ProxyHandler(OpenAIAdapter(upstream_url, inject_stream_usage=False), settings, client,
                           SpanRecorder(Resource.create({}), InstrumentationScope("test"), []))
    async def serve(client, reply) -> None:
        await handler(client, reply, "/" + client.request.match_info["tail"])

    route = aiohttp_handler(serve)

    proxy_app = web.Application()
    proxy_app.router.add_route("*", "/v1/{tail:.*}", route)
    proxy_runner, proxy_url = await _serve(proxy_app)
    try:
        async with aiohttp.ClientSession() as client:
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
            async with client.post(proxy_url + "/v1/chat/completions", json=body) as response:
                await response.read()
                got = [(k.decode(), v.decode()) for k, v in response.raw_headers]
        names = [k.lower() for k, _ in got]
        relayed = [(k, v) for k, v in got if k.lower() in {"x-a", "x-b", "x-ratelimit-remaining-requests"}]
        assert relayed == [("X-A", "1"), ("X-B", "2"), ("X-A", "3"), ("x-ratelimit-remaining-requests", "499")]
        assert "x-hop" not in names and "keep-alive" not in names
        assert names.index("genops-request-id") > names.index("x-ratelimit-remaining-requests")
        assert names.index("traceparent") > names.index("genops-request-id")
    finally:
        await proxy_runner.cleanup()
        await upstream_runner.cleanup()
        await client.close()
