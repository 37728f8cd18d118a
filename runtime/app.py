"""The aiohttp application: admin routes plus every provider adapter's routes."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from genops.api.admin import AdminRoutes
from genops.api.admin_forward import AdminForwarder
from genops.api.feedback import FeedbackRoutes
from genops.config import Settings
from genops.proxy.after_response import drain_pending
from genops.proxy.client_aiohttp import aiohttp_handler
from genops.proxy.client_side import ClientReply
from genops.proxy.handler import ProxyHandler
from genops.proxy.providers import build_adapters
from genops.proxy.providers.root import GEMINI_VERSIONS
from genops.proxy.recent import RecentCalls
from genops.proxy.routes import METHODS, ROOT, ProxyRoutes, route_tail
from genops.proxy.routing.live import LiveRoutes
from genops.proxy.routing.rollout_view import RolloutView
from genops.proxy.routing.router import Router
from genops.proxy.upstream import create_upstream_client
from genops.runtime.routing import Fetch, attach_rollout_poll, attach_routes_watch
from genops.runtime.telemetry import Telemetry

# The storage client (default database = settings.database) and settings, for routes and
# background jobs that need them (admin SQL, feedback, anomaly jobs).
CLIENT_KEY = web.AppKey("genops.client", object)
SETTINGS_KEY = web.AppKey("genops.settings", Settings)
TELEMETRY_KEY = web.AppKey("genops.telemetry", Telemetry)
RECENT_KEY = web.AppKey("genops.recent", RecentCalls)
ADMIN_KEY = web.AppKey("genops.admin", AdminRoutes)  # the ids this process (or its workers) served
ROUTER_KEY = web.AppKey("genops.router", Router)  # the gateway routes and rollouts this process follows
ROUTES_KEY = web.AppKey("genops.proxy_routes", ProxyRoutes)  # the provider routes (the native server's table too)
FORWARDER_KEY = web.AppKey("genops.admin_forwarder", AdminForwarder)  # a worker's admin paths
#: How often a proxy process asks for the rollouts in force (a canary's share, a promotion, a rollback).
ROLLOUT_POLL_S = 2.0


async def _healthz(_: web.Request) -> web.Response:
    """Liveness of a worker whose admin paths the supervisor answers."""
    return web.json_response({"status": "ok"})


def _unknown_route(routes: ProxyRoutes):
    async def handler(request: web.Request) -> web.Response:
        status, headers, body = routes.unknown(request.path, request.headers)
        return web.Response(status=status, body=body, headers=headers)

    return handler


def _register_routes(app: web.Application, routes: ProxyRoutes) -> None:
    """The provider routes as aiohttp routes: each prefix, then the root (``/v1/...``, ``/v1beta/...``,
    ``/v1alpha/...``: see :class:`~genops.proxy.routes.ProxyRoutes`), then the unknown route."""

    def prefixed(handler: ProxyHandler) -> Any:
        async def serve(client: Any, reply: ClientReply) -> None:
            await handler(client, reply, route_tail(client.request.match_info.get("tail", "")))

        return aiohttp_handler(serve)

    async def v1(client: Any, reply: ClientReply) -> None:
        route = routes.root(client.request.match_info.get("tail", ""), client.headers)
        await route.handler(client, reply, route.tail, route.refuse)

    async def gemini_root(client: Any, reply: ClientReply) -> None:
        route = routes.gemini_root(client.path, client.headers)
        await route.handler(client, reply, route.tail, route.refuse)

    for prefix, handler in routes.prefixed:
        serve = prefixed(handler)
        for method in METHODS:
            app.router.add_route(method, prefix + "/{tail:.*}", serve)
    for method in METHODS:
        app.router.add_route(method, ROOT + "/{tail:.*}", aiohttp_handler(v1))
    for version in GEMINI_VERSIONS:
        for method in METHODS:
            app.router.add_route(method, version + "/{tail:.*}", aiohttp_handler(gemini_root))
    app.router.add_route("*", "/{tail:.*}", _unknown_route(routes))


def create_app(settings: Settings, telemetry: Telemetry, sql_client: Any,
               admin_forward_url: str | None = None, routes: LiveRoutes | None = None,
               rollout_fetch: Fetch | None = None) -> web.Application:
    """Build the proxy app. ``sql_client`` serves readiness checks, read-only SQL and feedback.

    A worker of ``genops serve --workers N`` has no store: it passes ``admin_forward_url``
    and its admin paths are answered by the supervisor there.

    ``routes``: the gateway routes (default: read from the config file now; a bad file raises
    ``ConfigError``); ``rollout_fetch``: how this process learns the rollouts in force (None: it
    routes without canaries).
    """
    app = web.Application(client_max_size=settings.max_body_bytes, handler_args={"max_field_size": 65536})
    upstream = create_upstream_client(settings)  # one per app: its connections belong to the app's event loop
    if admin_forward_url:
        forwarder = app[FORWARDER_KEY] = AdminForwarder(admin_forward_url)
        forwarder.register(app)
        app.router.add_get("/healthz", _healthz)
    else:
        admin = AdminRoutes(sql_client, settings, settings.resolved_admin_token())
        admin.register(app)
        app[ADMIN_KEY] = admin
        recent = RecentCalls()  # request ids just served, for feedback that beats the span export
        telemetry.add_span_processor(recent)
        app[RECENT_KEY] = recent
        # Feedback takes its own scoped token (or the admin one), rate-limited per token.
        FeedbackRoutes(sql_client, settings.database, settings.resolved_admin_token(), recent,
                       feedback_token=settings.resolved_feedback_token(), rate=settings.feedback_rate).register(app)
    adapters = build_adapters(settings)
    live = routes if routes is not None else LiveRoutes.load()
    rollouts = RolloutView()
    router = Router(live, adapters, rollouts)
    attach_routes_watch(app, live)
    if rollout_fetch is not None:
        attach_rollout_poll(app, rollouts, rollout_fetch, ROLLOUT_POLL_S)
    app[ROUTER_KEY] = router
    handlers = {adapter.name: ProxyHandler(adapter, settings, upstream, telemetry.tracer, router)
                for adapter in adapters}
    proxy_routes = app[ROUTES_KEY] = ProxyRoutes(handlers, adapters)
    _register_routes(app, proxy_routes)

    async def close_upstream(_: web.Application) -> None:
        await upstream.close()

    app.on_cleanup.append(close_upstream)
    app.on_cleanup.append(drain_pending)  # post-response work ends its spans before export stops
    app[TELEMETRY_KEY] = telemetry
    app[CLIENT_KEY] = sql_client
    app[SETTINGS_KEY] = settings
    return app
