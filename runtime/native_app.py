"""A proxy process's public port on the native server (``GENOPS_HTTP_SERVER=native``), from the
pieces :func:`~genops.runtime.app.create_app` registers on aiohttp:

- the provider routes (:class:`~genops.proxy.routes.ProxyRoutes`), served here;
- ``/healthz`` (this process is alive);
- the admin paths (``/genops/...``, ``/readyz``, ``/metrics``), handed to aiohttp.web over
  loopback by :class:`~genops.api.admin_forward.AdminForwarder`: a worker's go to its supervisor,
  the store's process's (the store inline) to its own application on a loopback port;
  ``/readyz`` is answered here while the process drains;
- the unknown route's 404 for anything else.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from multidict import CIMultiDict

from genops.api.admin import draining_answer
from genops.api.admin_forward import FORWARDED_GETS, FORWARDED_PREFIX, AdminForwarder
from genops.config import Settings
from genops.proxy.client_side import BodyPaused, BodyTooLarge, BodyUnreadable
from genops.proxy.routes import ProxyRoutes
from genops.runtime.app import ROUTES_KEY
from genops.runtime.drain import Drain
from genops.runtime.http1.exchange import Http1Exchange
from genops.runtime.http1.server import Http1Server

_GETS = ("GET", "HEAD")
_HEALTHY = b'{"status": "ok"}'  # as aiohttp's json_response spells it


class NativeApp:
    """Dispatches one request of a native server."""

    def __init__(self, routes: ProxyRoutes, forwarder: AdminForwarder, not_ready: Callable[[], str | None], *,
                 max_body_bytes: int, body_timeout_s: float) -> None:
        self.routes = routes
        self.forwarder = forwarder
        self.not_ready = not_ready
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, exchange: Http1Exchange) -> None:
        method, path, headers = exchange.method, exchange.path, exchange.headers
        route = self.routes.resolve(method, path, headers)
        if route is not None:
            await route.handler(exchange, exchange, route.tail, route.refuse)
        elif not path.startswith("/"):  # CONNECT's host:port: no route of any kind (aiohttp's bare 404)
            await exchange.send(404, CIMultiDict({"Content-Type": "text/plain; charset=utf-8"}), b"404: Not Found")
        elif path.startswith(FORWARDED_PREFIX) or (path in FORWARDED_GETS and method in _GETS):
            await self._forward(exchange)
        elif path == "/healthz" and method in _GETS:
            await exchange.send(200, CIMultiDict({"Content-Type": "application/json; charset=utf-8"}), _HEALTHY)
        else:
            status, answer, body = self.routes.unknown(path, headers)
            await exchange.send(status, answer, body)

    async def _forward(self, exchange: Http1Exchange) -> None:
        if exchange.path == "/readyz":
            draining = draining_answer(self.not_ready)
            if draining is not None:
                await exchange.send(503, CIMultiDict({"Content-Type": "application/json"}), draining)
                return
        try:
            body = await exchange.read_body(self.max_body_bytes, self.body_timeout_s)
        except BodyTooLarge as exc:  # aiohttp's own answer to a body over client_max_size
            text = f"Maximum request body size {exc.limit} exceeded, actual body size {exc.length}"
            await exchange.send(413, CIMultiDict({"Content-Type": "text/plain; charset=utf-8"}), text.encode(),
                                close=True)
            return
        except (BodyPaused, BodyUnreadable):
            await exchange.send(400, CIMultiDict({"Content-Type": "text/plain; charset=utf-8"}),
                                b"The request body could not be read.", close=True)
            return
        connection = exchange.connection
        status, answer, data = await self.forwarder.relay(exchange.method, exchange.target, exchange.headers, body,
                                                          lambda: connection.lost)
        await exchange.send(status, answer, data)


def native_server(settings: Settings, drain: Drain,
                  forwarder: Callable[[web.Application], AdminForwarder]) -> Callable[[web.Application], Http1Server]:
    """How a process's native server is made from its started application: its provider routes
    and the forwarder of its admin paths (``forwarder(app)``)."""

    def make(app: web.Application) -> Http1Server:
        dispatch = NativeApp(app[ROUTES_KEY], forwarder(app), drain.not_ready,
                             max_body_bytes=settings.max_body_bytes, body_timeout_s=settings.client_body_timeout_s)
        return Http1Server(dispatch, header_timeout_s=settings.client_header_timeout_s,
                           max_body_bytes=settings.max_body_bytes, closing=lambda: drain.closing)

    return make
