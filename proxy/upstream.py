"""Which upstream client a proxy uses: GenOps's own HTTP/1.1 client, or aiohttp's as the reference.

Both have the same interface and pass one conformance suite (tests/test_upstream_conformance.py);
``GENOPS_UPSTREAM_CLIENT=aiohttp`` is the supported fallback.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

from genops.config import Settings
from genops.proxy.upstream_aiohttp import AiohttpUpstreamClient, AiohttpUpstreamResponse
from genops.proxy.upstream_client import UpstreamClient, UpstreamResponse
from genops.proxy.upstream_env import Resolver

UpstreamClientLike = UpstreamClient | AiohttpUpstreamClient
UpstreamResponseLike = UpstreamResponse | AiohttpUpstreamResponse


def create_upstream_client(settings: Settings, *, resolver: Resolver | None = None,
                           proxies: Mapping[str, str] | None = None,
                           ssl_context: ssl.SSLContext | None = None) -> UpstreamClientLike:
    """The upstream client ``settings.upstream_client`` names ("native" or "aiohttp"), configured
    from the settings (DNS cache, connection limit); both have the same interface."""
    options: dict[str, Any] = dict(dns_cache_ttl_s=settings.dns_cache_ttl_s,
                                   max_connections=settings.upstream_max_connections,
                                   resolver=resolver, proxies=proxies, ssl_context=ssl_context)
    if settings.upstream_client == "aiohttp":
        return AiohttpUpstreamClient(**options)
    return UpstreamClient(**options)
