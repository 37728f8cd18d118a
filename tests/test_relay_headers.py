"""The upstream session adds exactly the headers aiohttp's ``skip_auto_headers=("User-Agent",)`` adds.

The proxy's ``_RelayRequest`` reimplements that option without its per-request header copy; an
in-process server records what arrives from both, for requests with and without the client's
own User-Agent, Accept and Content-Type.
"""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from genops.proxy.handler import SessionHolder


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
async def test_relay_session_sends_the_headers_of_stock_skip_auto_headers(recorder, method, body):
    url, seen = recorder
    holder = SessionHolder()
    stock = aiohttp.ClientSession(auto_decompress=False, skip_auto_headers=("User-Agent",),
                                  cookie_jar=aiohttp.DummyCookieJar())
    try:
        for case in CASES:
            for session in (stock, holder.get()):
                async with session.request(method, url, data=body if body else None, headers=CIMultiDict(case),
                                           allow_redirects=False) as response:
                    await response.read()
            stock_headers, relay_headers = seen[-2], seen[-1]
            assert relay_headers == stock_headers, case
            names = {k.lower() for k, _ in relay_headers}
            assert ("user-agent" in names) == any(k.lower() == "user-agent" for k in case)
    finally:
        await stock.close()
        await holder.close()
