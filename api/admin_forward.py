"""A proxy worker's admin paths (``/genops/...``, ``/readyz``, ``/metrics``), answered by its supervisor.

The supervisor owns the store, so SQL, feedback and metrics are its to answer; a worker relays
them over loopback and answers readiness itself only while it drains.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web

from genops.api.admin import ClientGone, draining_response, until_answered
from genops.proxy.headers import downstream_headers, relayed_request_headers


class AdminForwarder:
    """A worker's admin paths, answered by the supervisor."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    def register(self, app: web.Application) -> None:
        app.router.add_route("*", "/genops/{tail:.*}", self.forward)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.forward)
        app.on_cleanup.append(self._close)

    async def readyz(self, request: web.Request) -> web.Response:
        """The supervisor's readiness, unless this worker drains: then it answers 503 itself."""
        return draining_response(request) or await self.forward(request)

    async def forward(self, request: web.Request) -> web.Response:
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        headers = relayed_request_headers(request.headers)
        try:
            # A client that leaves closes the hand-on too, so the supervisor cancels its SQL query.
            return await until_answered(request, self._relay(request, headers))
        except ClientGone:
            return web.Response(status=499)
        except (TimeoutError, aiohttp.ClientError) as exc:
            return web.json_response({"error": {"message": f"the GenOps supervisor is unreachable: {type(exc).__name__}",
                                                "type": "genops_error", "code": "supervisor_unreachable"}}, status=503)

    async def _relay(self, request: web.Request, headers: Any) -> web.Response:
        assert self._session is not None
        async with self._session.request(request.method, self.admin_url + request.path_qs,
                                         data=await request.read(), headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=300)) as upstream:
            body = await upstream.read()
            return web.Response(status=upstream.status, body=body, headers=downstream_headers(upstream.headers))

    async def _close(self, _: web.Application) -> None:
        if self._session is not None:
            await self._session.close()
