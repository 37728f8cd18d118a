"""Outbound proxies (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``) and host name resolution for
the upstream clients, shared so ``native`` and ``aiohttp`` route every call the same way.

The proxy variables are read once per client (not per request: the hot path stays free of
environment lookups), with the standard library's parsing, the one aiohttp's ``trust_env``
uses (``urllib.request.getproxies`` and ``proxy_bypass_environment``): upper- and lower-case
names, lower case winning, ``NO_PROXY`` entries matching a host, a domain suffix
(``example.com`` and ``.example.com`` both match ``api.example.com``), ``host:port``, or ``*``.
Only ``http://`` proxy URLs are supported (as aiohttp); a proxy URL without a scheme is taken as
``http://``. Credentials in the URL (``http://user:pass@proxy:3128``) are sent as
``Proxy-Authorization: Basic``, never logged.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import unquote, urlsplit
from urllib.request import getproxies, proxy_bypass_environment  # type: ignore[attr-defined]  # not in typeshed

log = logging.getLogger(__name__)

#: ``resolver(host, port)`` -> the host's IP addresses, in the order to try them.
Resolver = Callable[[str, int], Awaitable[list[str]]]


class OutboundProxy:
    """One forward proxy: where it listens, and the ``Proxy-Authorization`` value if it needs one."""

    __slots__ = ("host", "port", "authorization", "username", "password")

    def __init__(self, host: str, port: int, username: str | None = None, password: str | None = None) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.authorization: str | None = None
        if username is not None:
            token = base64.b64encode(f"{username}:{password or ''}".encode("latin-1")).decode("ascii")
            self.authorization = f"Basic {token}"

    @property
    def url(self) -> str:
        """The proxy's URL without its credentials (safe to log, and what aiohttp is given)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def __repr__(self) -> str:  # never the credentials
        return f"OutboundProxy({self.url!r}, auth={'yes' if self.authorization else 'no'})"


def parse_proxy_url(value: str) -> OutboundProxy | None:
    """An ``http://[user:pass@]host[:port]`` proxy URL, or ``None`` (logged) for one we cannot use."""
    text = value.strip()
    if "://" not in text:
        text = "http://" + text  # "proxy:3128", as curl and httpx read it
    try:
        parts = urlsplit(text)
        port = parts.port or 80
    except ValueError:
        log.warning("Ignoring an outbound proxy URL that does not parse.")
        return None
    if parts.scheme != "http" or not parts.hostname:
        log.warning("Ignoring the outbound proxy %s://%s: only http:// proxies are supported.",
                    parts.scheme, parts.hostname or "?")
        return None
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return OutboundProxy(parts.hostname, port, username, password)


class ProxyEnv:
    """The proxy settings of one client, read once (``getproxies()`` unless given)."""

    def __init__(self, proxies: Mapping[str, str] | None = None) -> None:
        self._proxies = dict(getproxies() if proxies is None else proxies)
        self._by_scheme: dict[str, OutboundProxy] = {}
        for scheme in ("http", "https"):
            value = self._proxies.get(scheme)
            proxy = parse_proxy_url(value) if value else None
            if proxy is not None:
                self._by_scheme[scheme] = proxy
                log.info("Upstream %s calls go through the proxy %s.", scheme, proxy.url)

    def for_origin(self, scheme: str, host: str, port: int) -> OutboundProxy | None:
        """The proxy for ``scheme://host:port``, or ``None`` to connect directly (called once per origin)."""
        proxy = self._by_scheme.get(scheme)
        if proxy is None:
            return None
        bracketed = f"[{host}]" if ":" in host else host
        if proxy_bypass_environment(host, self._proxies) or proxy_bypass_environment(f"{bracketed}:{port}", self._proxies):
            return None
        return proxy


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver (``getaddrinfo`` in a thread), duplicates dropped."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class DnsCache:
    """Host name answers kept for ``ttl_s`` seconds (0: asked every time); lookups are one dict get."""

    def __init__(self, resolver: Resolver | None, ttl_s: float) -> None:
        self._resolver = resolver or system_resolver
        self._ttl = ttl_s
        self._answers: dict[tuple[str, int], tuple[float, list[str]]] = {}

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses for ``host`` (an IP address is its own answer, never looked up)."""
        key = (host, port)
        cached = self._answers.get(key)
        loop = asyncio.get_running_loop()
        if cached is not None and cached[0] > loop.time():
            return cached[1]
        addresses = await self._resolver(host, port)
        if not addresses:
            raise OSError(f"No address for {host}")
        if self._ttl > 0:
            self._answers[key] = (loop.time() + self._ttl, addresses)
        return addresses
