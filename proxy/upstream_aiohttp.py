"""``GENOPS_UPSTREAM_CLIENT=aiohttp``: upstream calls through ``aiohttp.ClientSession``, behind
the interface of the native client (proxy/upstream_client.py), so proxy/handler.py is unchanged.

The reference for behaviour (tests/test_upstream_conformance.py runs both): a fallback should
the native client misbehave with some upstream, at ~100 µs more CPU per call. Configured as the
native client is: raw bodies (``auto_decompress=False``), no ``User-Agent`` of its own, no
redirects followed, no cookies kept (a proxy must not carry one client's cookies to another),
the settings' DNS cache and per-origin connection limit, and the same outbound proxy decision
(proxy/upstream_env.py: the environment's proxies, parsed as ``trust_env`` parses them, read once).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from genops.proxy.upstream_client import KEEPALIVE_S, MAX_FIELD_SIZE, MAX_HEADERS, UpstreamConnectError
from genops.proxy.upstream_env import OutboundProxy, ProxyEnv, Resolver


class _ResolverAdapter(AbstractResolver):
    """An ``async (host, port) -> [addresses]`` resolver as aiohttp's ``AbstractResolver``."""

    def __init__(self, resolve: Resolver) -> None:
        self._resolve = resolve

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        return [{"hostname": host, "host": address, "port": port,
                 "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST} for address in await self._resolve(host, port)]

    async def close(self) -> None:
        return None


class AiohttpUpstreamResponse:
    """An ``aiohttp.ClientResponse`` as an ``UpstreamResponse``: ``status``, ``headers``,
    :meth:`read`, ``content.iter_any()``, :meth:`release`, :meth:`close`."""

    __slots__ = ("status", "headers", "_response")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.status: int = response.status
        self.headers: CIMultiDictProxy[str] = response.headers
        self._response = response

    @property
    def content(self) -> AiohttpUpstreamResponse:
        return self

    async def read(self) -> bytes:
        """The whole body (raw bytes, as sent)."""
        return await self._response.read()

    def iter_any(self) -> AsyncIterator[bytes]:
        """The body as it arrives."""
        return self._response.content.iter_any()

    def release(self) -> None:
        """Done: a completely read body frees its connection for reuse, else it is closed."""
        self._response.release()

    def close(self) -> None:
        """Abandon the response and its connection."""
        self._response.close()


class AiohttpUpstreamClient:
    """The native ``UpstreamClient``'s interface on an ``aiohttp.ClientSession`` (opened lazily,
    in the app's event loop)."""

    def __init__(self, *, dns_cache_ttl_s: float = 10.0, max_connections: int = 0, resolver: Resolver | None = None,
                 proxies: Mapping[str, str] | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        self._dns_cache_ttl_s = dns_cache_ttl_s
        self._max_connections = max_connections
        self._resolver = resolver
        self._proxies = ProxyEnv(proxies)
        self._by_origin: dict[str, OutboundProxy | None] = {}  # the proxy decision, once per origin
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _open_session(self) -> aiohttp.ClientSession:
        if self._ssl is True:
            # Our own default context, made now: aiohttp's is made at import, before a test or
            # a deployment's SSL_CERT_FILE / SSL_CERT_DIR could matter (the native client reads them here too).
            self._ssl = ssl.create_default_context()
        connector = aiohttp.TCPConnector(
            limit=0,  # the native client has no overall limit either
            limit_per_host=self._max_connections,
            use_dns_cache=self._dns_cache_ttl_s > 0,
            ttl_dns_cache=max(1, round(self._dns_cache_ttl_s)) if self._dns_cache_ttl_s > 0 else None,  # whole seconds
            resolver=_ResolverAdapter(self._resolver) if self._resolver is not None else None,
            keepalive_timeout=KEEPALIVE_S,
        )
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",),
            cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,  # proxies: decided by ProxyEnv, as natively
            max_line_size=MAX_FIELD_SIZE, max_field_size=MAX_FIELD_SIZE, max_headers=MAX_HEADERS,
        )
        return self._session

    def _proxy_for(self, url: str) -> OutboundProxy | None:
        scheme, _, rest = url.partition("://")
        key = scheme + "://" + rest.split("/", 1)[0].split("?", 1)[0]
        try:
            return self._by_origin[key]
        except KeyError:
            parsed = URL(key)
            proxy = None
            if parsed.host is not None:
                proxy = self._proxies.for_origin(parsed.scheme, parsed.host, parsed.port or 0)
            self._by_origin[key] = proxy
            return proxy

    async def request(self, method: str, url: str, *, data: bytes | None, headers: CIMultiDict[str],
                      total_timeout: float | None, connect_timeout: float | None) -> AiohttpUpstreamResponse:
        """Send one request and return once the response's headers are in (its body follows);
        errors as the native client's (``asyncio.TimeoutError``, ``aiohttp.ClientError``)."""
        if self._closed:
            raise aiohttp.ClientConnectionError("The proxy is shutting down.")
        session = self._session or self._open_session()
        proxy = self._proxy_for(url)
        options: dict[str, Any] = {}
        if proxy is not None:
            options["proxy"] = proxy.url
            if proxy.authorization is not None:
                # aiohttp sends proxy_headers with CONNECT only; a plain http request carries them itself
                # (aiohttp's proxy_auth would do both, but is deprecated).
                options["proxy_headers"] = {"Proxy-Authorization": proxy.authorization}
                if url.startswith("http:"):
                    headers = headers.copy()
                    headers["Proxy-Authorization"] = proxy.authorization
        try:
            response = await session.request(
                method, url, data=data, headers=headers, allow_redirects=False, ssl=self._ssl,
                timeout=aiohttp.ClientTimeout(total=total_timeout, connect=connect_timeout), **options,
            )
        except aiohttp.ClientConnectorError as exc:
            # As the native client: the cause names what failed (refused, DNS, certificate...).
            cause = getattr(exc, "certificate_error", None) or exc.os_error
            raise UpstreamConnectError(f"{type(cause).__name__}: {cause}") from cause
        return AiohttpUpstreamResponse(response)

    async def close(self) -> None:
        """Close the session's connections; later requests fail."""
        self._closed = True
        if self._session is not None:
            await self._session.close()
