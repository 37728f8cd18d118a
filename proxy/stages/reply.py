"""What the proxy adds to every answer (request id, ``traceparent``) and its own error answers."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from genops.proxy.headers import downstream_headers
from genops.proxy.providers.base import ProviderAdapter
from genops.proxy.upstream import UpstreamResponseLike

REQUEST_ID_HEADER = "GenOps-Request-Id"


def response_headers(headers: Any, request_id: str, traceparent: str) -> None:
    """Add the proxy's own headers to a response's headers."""
    headers[REQUEST_ID_HEADER] = request_id
    headers["traceparent"] = traceparent


def copy_headers(upstream_response: UpstreamResponseLike, response: web.StreamResponse, request_id: str,
                 traceparent: str) -> None:
    """The upstream's end-to-end headers, then ours, straight into the response's own headers
    (passing a multidict to the response's constructor would copy it once more)."""
    downstream_headers(upstream_response.headers, response.headers)
    response_headers(response.headers, request_id, traceparent)


def error_response(adapter: ProviderAdapter, status: int, message: str, error_type: str, code: str | None,
                   request_id: str, traceparent: str) -> web.Response:
    """A proxy-made error in the adapter's provider's own shape."""
    headers: dict[str, str] = {}
    response_headers(headers, request_id, traceparent)
    return web.Response(
        status=status,
        body=adapter.error_body(status, message, error_type, code),
        content_type=adapter.error_content_type(),
        headers=headers,
    )
