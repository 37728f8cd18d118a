"""A proxy worker's admin paths (``/genops/...``, ``/readyz``, ``/metrics``), answered by its supervisor.

The supervisor owns the store, so SQL, feedback and metrics are its to answer; a worker relays
them over loopback and answers readiness itself only while it drains. :meth:`AdminForwarder.relay`
serves either server of the worker (aiohttp.web through :meth:`register`, the native one
through runtime/native_app.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict

from genops.api.admin import ClientGone, client_gone, draining_response, until_answered_or_gone
from genops.proxy.headers import downstream_headers, relayed_request_headers

#: The paths a worker forwards: under this prefix, and these exact ones (GET and HEAD).
FORWARDED_PREFIX = "/genops/"
FORWARDED_GETS = ("/readyz", "/metrics")


class AdminForwarder:
    """A worker's admin paths, answered by the supervisor."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    def register(self, app: web.Application) -> None:
        app.router.add_route("*", FORWARDED_PREFIX + "{tail:.*}", self.forward)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.forward)
        app.on_cleanup.append(self._close)

    async def readyz(self, request: web.Request) -> web.Response:
        """The supervisor's readiness, unless this worker drains: then it answers 503 itself."""
        return draining_response(request) or await self.forward(request)

    async def forward(self, request: web.Request) -> web.Response:
        status, headers, body = await self.relay(request.method, request.path_qs, request.headers,
                                                 await request.read(), lambda: client_gone(request))
        return web.Response(status=status, body=body, headers=headers)

    async def relay(self, method: str, path_qs: str, headers: Any, body: bytes,
                    gone: Callable[[], bool]) -> tuple[int, CIMultiDict[str], bytes]:
        """The supervisor's answer to a request (status, headers, body); 503 when it does not answer,
        499 when the client left first (a client that leaves closes the hand-on too, so the
        supervisor cancels its SQL query)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        try:
            return await until_answered_or_gone(gone, self._relay(method, path_qs, relayed_request_headers(headers),
                                                                  body))
        except ClientGone:
            return 499, CIMultiDict(), b""
        except (TimeoutError, aiohttp.ClientError) as exc:
            error = {"error": {"message": f"the GenOps supervisor is unreachable: {type(exc).__name__}",
                               "type": "genops_error", "code": "supervisor_unreachable"}}
            return 503, CIMultiDict({"Content-Type": "application/json; charset=utf-8"}), orjson.dumps(error)

    async def _relay(self, method: str, path_qs: str, headers: CIMultiDict[str],
                     body: bytes) -> tuple[int, CIMultiDict[str], bytes]:
        assert self._session is not None
        async with self._session.request(method, self.admin_url + path_qs, data=body, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=300)) as upstream:
            return upstream.status, downstream_headers(upstream.headers), await upstream.read()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _close(self, _: web.Application) -> None:
        await self.close()
