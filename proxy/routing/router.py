"""The gateway router: one per proxy process, shared by every route's chain. It knows the routes
in force (:class:`~genops.proxy.routing.live.LiveRoutes`), the rollouts in force
(:class:`~genops.proxy.routing.rollout_view.RolloutView`), each target's measured latency, and every
adapter by name; the route stage asks it for a call's plan, the forward stage runs the plan
through :class:`~genops.proxy.routing.attempts.Attempts`."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

from multidict import MultiMapping

from genops.proxy.providers.base import ProviderAdapter, RequestError, RequestFacts
from genops.proxy.routing.attempts import Attempts, Send, wire_format
from genops.proxy.routing.latency import LatencyStats
from genops.proxy.routing.live import LiveRoutes
from genops.proxy.routing.rollout_view import RolloutView
from genops.proxy.routing.select import CompiledRoute, Plan

#: Where a sticky route finds the user or session a call is for (headers first; GenOps's, then Helicone's).
_STICKY_HEADERS = {
    "user": ("GenOps-User-Id", "Helicone-User-Id"),
    "session": ("GenOps-Session-Id", "Helicone-Session-Id"),
}
_STICKY_BODY_KEY = {"user": "user-id", "session": "session-id"}


class Router:
    """Plans routed calls; see the module docstring."""

    def __init__(self, live: LiveRoutes, adapters: Iterable[ProviderAdapter], rollouts: RolloutView | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.live = live
        self.adapters = {adapter.name: adapter for adapter in adapters}
        self.rollouts = rollouts or RolloutView()
        self.latency = LatencyStats()
        self.env = env
        self._compiled: dict[str, CompiledRoute] = {}
        self._compiled_from: object = None  # the route table they were compiled from
        self._draw = random.random

    def attempts_for(self, client_adapter: ProviderAdapter, send: Send, tracer: Any) -> Attempts:
        """The attempt runner of one route's chain (its client adapter, its forward stage's ``send``)."""
        return Attempts(client_adapter, self.adapters, send, tracer, self.latency, self.env)

    def plan(self, adapter: ProviderAdapter, facts: RequestFacts, headers: MultiMapping[str]) -> Plan:
        """The targets a call naming a route tries, in order. Raises a 400 :class:`RequestError` for a
        call the route cannot serve (an endpoint other than chat completions or messages)."""
        table = self.live.table
        if table is not self._compiled_from:  # the file was read again: compile its routes once
            self._compiled = {name: CompiledRoute(route) for name, route in table.routes.items()}
            self._compiled_from = table
        compiled = self._compiled[facts.model or ""]
        route = compiled.route
        if wire_format(adapter, facts.operation) is None or not isinstance(facts.request_json, dict):
            raise RequestError(400, f"The model {route.name!r} is a GenOps route; routes serve OpenAI-format "
                               "calls (chat completions, embeddings...) and Anthropic messages, not this endpoint.",
                               "invalid_request_error", "route_endpoint_unsupported")
        key = None
        if route.sticky != "none":
            key = _sticky_key(route.sticky, adapter, facts, headers)
        return compiled.plan(key, self.latency, self.rollouts.routes.get(route.name), self._draw)


def _sticky_key(kind: str, adapter: ProviderAdapter, facts: RequestFacts, headers: MultiMapping[str]) -> str | None:
    """The user (or session) id of a call: the ``GenOps-*`` / ``Helicone-*`` header, else the body's
    (OpenAI ``user``, Anthropic ``metadata.user_id``...); None when the call names none."""
    for name in _STICKY_HEADERS[kind]:
        value = headers.get(name)
        if value:
            return value
    value = adapter.request_context(facts).get(_STICKY_BODY_KEY[kind])
    return str(value) if value else None
