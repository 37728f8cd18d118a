"""The aiohttp application: admin routes plus every provider adapter's routes."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from genops.api.admin import AdminRoutes
from genops.api.admin_forward import AdminForwarder
from genops.api.feedback import FeedbackRoutes
from genops.config import Settings
from genops.proxy.after_response import drain_pending
from genops.proxy.context import request_id_for
from genops.proxy.handler import REQUEST_ID_HEADER, ProxyHandler
from genops.proxy.providers import build_adapters
from genops.proxy.providers.root import ANTHROPIC, GEMINI, GEMINI_VERSIONS, OPENAI, gemini_root_route, root_route
from genops.proxy.recent import RecentCalls
from genops.proxy.routing.live import LiveRoutes
from genops.proxy.routing.rollout_view import RolloutView
from genops.proxy.routing.router import Router
from genops.proxy.upstream import create_upstream_client
from genops.runtime.routing import Fetch, attach_rollout_poll, attach_routes_watch
from genops.runtime.telemetry import Telemetry

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

# The storage client (default database = settings.database) and settings, for routes and
# background jobs that need them (admin SQL, feedback, anomaly jobs).
CLIENT_KEY = web.AppKey("genops.client", object)
SETTINGS_KEY = web.AppKey("genops.settings", Settings)
TELEMETRY_KEY = web.AppKey("genops.telemetry", Telemetry)
RECENT_KEY = web.AppKey("genops.recent", RecentCalls)
ADMIN_KEY = web.AppKey("genops.admin", AdminRoutes)  # the ids this process (or its workers) served
ROUTER_KEY = web.AppKey("genops.router", Router)  # the gateway routes and rollouts this process follows
#: How often a proxy process asks for the rollouts in force (a canary's share, a promotion, a rollback).
ROLLOUT_POLL_S = 2.0


async def _healthz(_: web.Request) -> web.Response:
    """Liveness of a worker whose admin paths the supervisor answers."""
    return web.json_response({"status": "ok"})


def _unknown_route(known: list[str]):
    async def handler(request: web.Request) -> web.Response:
        body = {
            "error": {
                "message": f"GenOps has no provider route for {request.path}. Known prefixes: {', '.join(known)}.",
                "type": "invalid_request_error",
                "param": None,
                "code": "unknown_route",
            }
        }
        # Every response carries a request id, even one no adapter served (no span is recorded).
        request_id = request_id_for(request.headers)
        return web.Response(status=404, body=orjson.dumps(body), content_type="application/json",
                            headers={REQUEST_ID_HEADER: request_id})

    return handler


def _root_routes(app: web.Application, handlers: dict[str, ProxyHandler], known: list[str]) -> None:
    """The root (``/v1/...``, ``/v1beta/...``, ``/v1alpha/...``): each request goes to the adapter of
    its wire format (:mod:`genops.proxy.providers.root`), so an SDK given the bare proxy URL
    (``ANTHROPIC_BASE_URL=http://127.0.0.1:8080``) reaches its own provider, and a provider's
    key never reaches another one."""
    openai, anthropic, gemini = handlers[OPENAI], handlers[ANTHROPIC], handlers[GEMINI]
    by_name = {ANTHROPIC: anthropic, GEMINI: gemini}

    async def v1(request: web.Request) -> web.StreamResponse:
        tail = request.match_info.get("tail", "")
        tail = "/" + tail if tail and tail[0] != "/" else tail
        route = root_route(tail, request.headers)
        if route is None:
            return await openai(request, tail)
        return await by_name[route.adapter](request, route.tail, route.refuse)

    def gemini_version(version: str) -> Any:
        async def gemini_root(request: web.Request) -> web.StreamResponse:
            route = gemini_root_route(f"{version}/{request.match_info.get('tail', '')}", request.headers)
            return await by_name[route.adapter](request, route.tail, route.refuse)

        return gemini_root

    for method in METHODS:
        app.router.add_route(method, "/v1/{tail:.*}", v1)
    for version in GEMINI_VERSIONS:
        gemini_root = gemini_version(version)
        for method in METHODS:
            app.router.add_route(method, version + "/{tail:.*}", gemini_root)
    known.extend(GEMINI_VERSIONS)


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
        AdminForwarder(admin_forward_url).register(app)
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
    known = []
    handlers = {}
    adapters = build_adapters(settings)
    live = routes if routes is not None else LiveRoutes.load()
    rollouts = RolloutView()
    router = Router(live, adapters, rollouts)
    attach_routes_watch(app, live)
    if rollout_fetch is not None:
        attach_rollout_poll(app, rollouts, rollout_fetch, ROLLOUT_POLL_S)
    app[ROUTER_KEY] = router
    for adapter in adapters:
        handler = handlers[adapter.name] = ProxyHandler(adapter, settings, upstream, telemetry.tracer, router)
        for prefix in adapter.prefixes:
            known.append(prefix or "/")
            if adapter.name == OPENAI and prefix == "/v1":
                continue  # the root: see _root_routes
            for method in METHODS:
                app.router.add_route(method, prefix + "/{tail:.*}", handler)
    _root_routes(app, handlers, known)
    app.router.add_route("*", "/{tail:.*}", _unknown_route(known))

    async def close_upstream(_: web.Application) -> None:
        await upstream.close()

    app.on_cleanup.append(close_upstream)
    app.on_cleanup.append(drain_pending)  # post-response work ends its spans before export stops
    app[TELEMETRY_KEY] = telemetry
    app[CLIENT_KEY] = sql_client
    app[SETTINGS_KEY] = settings
    return app
