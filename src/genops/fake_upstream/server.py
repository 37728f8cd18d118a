"""The fake upstream app: every fake provider on one port, plus the request log."""

from __future__ import annotations

from aiohttp import web

from genops.fake_upstream import anthropic, azure, gemini, openai
from genops.fake_upstream.common import ERROR_COUNTS_KEY, REQUEST_LOG_KEY, dumps

# One line per fake provider module: module.register(app).
PROVIDERS = (openai, anthropic, gemini, azure)


async def _requests(request: web.Request) -> web.Response:
    return web.Response(body=dumps(request.app[REQUEST_LOG_KEY]), content_type="application/json")


async def _clear(request: web.Request) -> web.Response:
    request.app[REQUEST_LOG_KEY].clear()
    request.app[ERROR_COUNTS_KEY].clear()  # X-Fake-Error-Rate counts start again too
    return web.Response(status=204)


def create_app() -> web.Application:
    """The fake upstream as an aiohttp app."""
    app = web.Application(client_max_size=256 * 1024 * 1024)
    app[REQUEST_LOG_KEY] = []
    app[ERROR_COUNTS_KEY] = {}
    for provider in PROVIDERS:
        provider.register(app)
    app.router.add_get("/_fake/requests", _requests)
    app.router.add_delete("/_fake/requests", _clear)
    return app


def run(host: str = "127.0.0.1", port: int = 9100) -> None:
    """Serve the fake upstream until interrupted."""
    print(f"fake model APIs listening on http://{host}:{port}", flush=True)
    web.run_app(create_app(), host=host, port=port, print=None, access_log=None)
