"""Health, readiness and the read-only SQL endpoint (token-protected)."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any, Callable

import orjson
from aiohttp import web

from genops.storage.sql import QueryError, run_readonly

SQL_PATH = "/genops/v1/sql"


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


def _error(status: int, message: str, code: str) -> web.Response:
    return _json({"error": {"message": message, "type": "genops_error", "code": code}}, status)


def check_token(request: web.Request, token: str) -> web.Response | None:
    """None when the request carries the admin token as a Bearer token, else a 401 response."""
    header = request.headers.get("Authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if not given or not hmac.compare_digest(given.encode(), token.encode()):
        return _error(401, "This endpoint needs the admin token: Authorization: Bearer <GENOPS_ADMIN_TOKEN>.", "unauthorized")
    return None


class AdminRoutes:
    """``/healthz``, ``/readyz`` and ``POST /genops/v1/sql``."""

    def __init__(self, client: Any, database: str, token: str) -> None:
        self.client = client
        self.database = database
        self.token = token
        #: More readiness conditions: each returns why the server is not ready, or None.
        self.readiness_checks: list[Callable[[], str | None]] = []

    def register(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_post(SQL_PATH, self.sql)

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        for check in self.readiness_checks:
            reason = check()
            if reason:
                return _json({"status": "starting", "reason": reason}, 503)
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.client.query, "SELECT 1")
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            return _json({"status": "unavailable", "storage": str(exc).splitlines()[0][:300]}, 503)
        return _json({"status": "ready", "storage": "ok"})

    async def sql(self, request: web.Request) -> web.Response:
        denied = check_token(request, self.token)
        if denied is not None:
            return denied
        try:
            payload = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, 'Send JSON: {"query": "SELECT ..."}.', "invalid_json")
        query = payload.get("query") if isinstance(payload, dict) else None
        if not isinstance(query, str) or not query.strip():
            return _error(400, 'Send JSON: {"query": "SELECT ..."}.', "missing_query")
        max_rows = payload.get("max_rows", 10_000)
        if not isinstance(max_rows, int) or max_rows < 1:
            return _error(400, "max_rows must be a positive integer.", "invalid_max_rows")
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(None, lambda: run_readonly(self.client, query, max_rows=max_rows))
        except QueryError as exc:
            return _error(400, str(exc), "query_failed")
        return _json(result.as_dict())
