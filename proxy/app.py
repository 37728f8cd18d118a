"""The aiohttp application: admin routes plus every provider adapter's routes."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from genops.config import Settings
from genops.proxy.admin import AdminRoutes
from genops.proxy.after_response import drain_pending
from genops.proxy.feedback import FeedbackRoutes
from genops.proxy.context import request_id_for
from genops.proxy.handler import REQUEST_ID_HEADER, ProxyHandler
from genops.proxy.upstream_client import create_upstream_client
from genops.proxy.providers import build_adapters
from genops.proxy.recent import RecentCalls
from genops.proxy.telemetry import Telemetry
from genops.proxy.workers import AdminForwarder

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

# The storage client (default database = settings.database) and settings, for routes and
# background jobs that need them (admin SQL, feedback, anomaly jobs).
CLIENT_KEY = web.AppKey("genops.client", object)
SETTINGS_KEY = web.AppKey("genops.settings", Settings)
TELEMETRY_KEY = web.AppKey("genops.telemetry", Telemetry)
RECENT_KEY = web.AppKey("genops.recent", RecentCalls)
ADMIN_KEY = web.AppKey("genops.admin", AdminRoutes)  # the ids this process (or its workers) served


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


def create_app(settings: Settings, telemetry: Telemetry, sql_client: Any,
               admin_forward_url: str | None = None) -> web.Application:
    """Build the proxy app. ``sql_client`` serves readiness checks, read-only SQL and feedback.

    A worker of ``genops serve --workers N`` has no store: it passes ``admin_forward_url``
    and its admin paths are answered by the supervisor there.
    """
    app = web.Application(client_max_size=settings.max_body_bytes, handler_args={"max_field_size": 65536})
    upstream = create_upstream_client(settings)  # one per app: its connections belong to the app's event loop
    if admin_forward_url:
        AdminForwarder(admin_forward_url).register(app)
        app.router.add_get("/healthz", lambda _: web.json_response({"status": "ok"}))
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
    for adapter in build_adapters(settings):
        handler = ProxyHandler(adapter, settings, upstream, telemetry.tracer)
        for prefix in adapter.prefixes:
            known.append(prefix or "/")
            for method in METHODS:
                app.router.add_route(method, prefix + "/{tail:.*}", handler)
    app.router.add_route("*", "/{tail:.*}", _unknown_route(known))

    async def close_upstream(_: web.Application) -> None:
        await upstream.close()

    app.on_cleanup.append(close_upstream)
    app.on_cleanup.append(drain_pending)  # post-response work ends its spans before export stops
    app[TELEMETRY_KEY] = telemetry
    app[CLIENT_KEY] = sql_client
    app[SETTINGS_KEY] = settings
    return app
