"""Stage 2, route: choose the upstream. A call whose model names a gateway route (genops.toml
``[[routes]]``) gets a plan of targets from the router (proxy/routing/), which the forward stage
then tries in turn; any other call goes to the adapter's configured base URL, or an allowed
per-request target (proxy/targets.py), as before routes existed."""

from __future__ import annotations

from genops.config import Settings
from genops.proxy.providers.base import ProviderAdapter
from genops.proxy.routing.router import Router
from genops.proxy.stages.base import Exchange
from genops.proxy.targets import TargetPolicy, route_upstream


class RouteStage:
    """Sets ``exchange.upstream``, or for a routed call ``exchange.plan`` and ``exchange.client_facts``;
    a target the policy refuses is a 400."""

    def __init__(self, adapter: ProviderAdapter, settings: Settings, router: Router | None = None) -> None:
        self.adapter = adapter
        self.targets = TargetPolicy.from_settings(settings)
        self.router = router

    async def run(self, exchange: Exchange) -> None:
        request = exchange.request
        router = self.router
        # A call that names no route pays one set lookup here.
        if router is not None and exchange.request_facts is not None and exchange.request_facts.model in router.live.names:
            exchange.client_facts = exchange.request_facts
            exchange.plan = router.plan(self.adapter, exchange.request_facts, request.headers)
            return
        exchange.upstream = route_upstream(self.adapter, self.targets, exchange.tail, request.query_string,
                                           request.headers)
