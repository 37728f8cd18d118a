"""What the proxy adds to every answer (request id, ``traceparent``) and its own error answers."""

from __future__ import annotations

from typing import Any

from multidict import CIMultiDict

from genops.proxy.headers import downstream_headers
from genops.proxy.providers.base import ProviderAdapter
from genops.proxy.upstream import UpstreamResponseLike

REQUEST_ID_HEADER = "GenOps-Request-Id"


def response_headers(headers: Any, request_id: str, traceparent: str) -> None:
    """Add the proxy's own headers to a response's headers."""
    headers[REQUEST_ID_HEADER] = request_id
    headers["traceparent"] = traceparent


def relayed_headers(upstream_response: UpstreamResponseLike, request_id: str, traceparent: str) -> CIMultiDict[str]:
    """The upstream's end-to-end headers, then ours."""
    headers = downstream_headers(upstream_response.headers)
    response_headers(headers, request_id, traceparent)
    return headers


def error_answer(adapter: ProviderAdapter, status: int, message: str, error_type: str, code: str | None,
                 request_id: str, traceparent: str) -> tuple[CIMultiDict[str], bytes]:
    """A proxy-made error in the adapter's provider's own shape: its headers and body."""
    headers: CIMultiDict[str] = CIMultiDict()
    response_headers(headers, request_id, traceparent)
    headers["Content-Type"] = adapter.error_content_type()
    return headers, adapter.error_body(status, message, error_type, code)
