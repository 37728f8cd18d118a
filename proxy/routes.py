"""Which provider adapter serves a path: each adapter's prefixes, and the root (``/v1/...``,
``/v1beta/...``, ``/v1alpha/...``), where each request goes to the adapter of its wire format
(:mod:`genops.proxy.providers.root`), so an SDK given the bare proxy URL reaches its own
provider and a provider's key never reaches another one.

One table for both servers: aiohttp.web registers a route per entry (runtime/app.py), the
native server looks a path up in it (runtime/native_app.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import orjson
from multidict import CIMultiDict

from genops.proxy.context import request_id_for
from genops.proxy.handler import REQUEST_ID_HEADER, ProxyHandler
from genops.proxy.providers.base import ProviderAdapter
from genops.proxy.providers.root import GEMINI_VERSIONS, OPENAI, gemini_root_route, root_route

#: The methods a provider route serves (others get the unknown-route 404).
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
#: OpenAI's own prefix is the root's.
ROOT = "/v1"


class Route(NamedTuple):
    """The handler of a request, the path after its prefix, and the 400 to answer instead (or None)."""

    handler: ProxyHandler
    tail: str
    refuse: str | None = None


def route_tail(rest: str) -> str:
    """The path after ``prefix/``, as the handler wants it: with a leading slash unless empty."""
    return "/" + rest if rest and rest[0] != "/" else rest


class ProxyRoutes:
    """The provider routes of one process: one :class:`ProxyHandler` per adapter."""

    def __init__(self, handlers: Mapping[str, ProxyHandler], adapters: Sequence[ProviderAdapter]) -> None:
        self.handlers = handlers
        #: (prefix, handler) of every adapter prefix but the root, in the adapters' order.
        self.prefixed: list[tuple[str, ProxyHandler]] = []
        #: Every prefix served, for the unknown route's message.
        self.known: list[str] = []
        for adapter in adapters:
            for prefix in adapter.prefixes:
                self.known.append(prefix or "/")
                if adapter.name == OPENAI and prefix == ROOT:
                    continue  # the root: see root()
                self.prefixed.append((prefix, handlers[adapter.name]))
        self.known.extend(GEMINI_VERSIONS)
        # Looked up longest first (as aiohttp's router tries the most specific resource first).
        self._lookup = sorted(((prefix + "/", handler) for prefix, handler in self.prefixed),
                              key=lambda entry: -len(entry[0]))
        self._gemini_roots = tuple(version + "/" for version in GEMINI_VERSIONS)

    def root(self, rest: str, headers: Mapping[str, str]) -> Route:
        """``/v1/{rest}``: OpenAI's, unless the path or the headers are another provider's."""
        tail = route_tail(rest)
        route = root_route(tail, headers)
        if route is None:
            return Route(self.handlers[OPENAI], tail)
        return Route(self.handlers[route.adapter], route.tail, route.refuse)

    def gemini_root(self, path: str, headers: Mapping[str, str]) -> Route:
        """``/v1beta/...`` or ``/v1alpha/...`` (``path``: the whole path)."""
        route = gemini_root_route(path, headers)
        return Route(self.handlers[route.adapter], route.tail, route.refuse)

    def resolve(self, method: str, path: str, headers: Mapping[str, str]) -> Route | None:
        """The route of a request, or None (the unknown route)."""
        if method not in METHODS:
            return None
        if path.startswith("/v1/"):
            return self.root(path[4:], headers)
        for prefix, handler in self._lookup:
            if path.startswith(prefix):
                return Route(handler, route_tail(path[len(prefix):]))
        if path.startswith(self._gemini_roots):
            return self.gemini_root(path, headers)
        return None

    def unknown(self, path: str, headers: Mapping[str, str]) -> tuple[int, CIMultiDict[str], bytes]:
        """The 404 of a path no adapter serves (status, headers, body); no span is recorded."""
        body = {
            "error": {
                "message": f"GenOps has no provider route for {path}. Known prefixes: {', '.join(self.known)}.",
                "type": "invalid_request_error",
                "param": None,
                "code": "unknown_route",
            }
        }
        # Every response carries a request id, even one no adapter served.
        answer: CIMultiDict[str] = CIMultiDict({REQUEST_ID_HEADER: request_id_for(headers),
                                                "Content-Type": "application/json"})
        return 404, answer, orjson.dumps(body)
