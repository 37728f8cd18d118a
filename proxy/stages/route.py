"""Stage 2, route: choose the upstream (the adapter's configured base URL, or an allowed
per-request target; proxy/targets.py). The gateway router of issue #21 replaces this stage."""

from __future__ import annotations

from genops.config import Settings
from genops.proxy.providers.base import ProviderAdapter
from genops.proxy.stages.base import Exchange
from genops.proxy.targets import TargetPolicy, route_upstream


class RouteStage:
    """Sets ``exchange.upstream``; a target the policy refuses is a 400."""

    def __init__(self, adapter: ProviderAdapter, settings: Settings) -> None:
        self.adapter = adapter
        self.targets = TargetPolicy.from_settings(settings)

    async def run(self, exchange: Exchange) -> None:
        request = exchange.request
        exchange.upstream = route_upstream(self.adapter, self.targets, exchange.tail, request.query_string,
                                           request.headers)
