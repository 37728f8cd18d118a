"""Stage 3, policy and safety: resolve the call's safety policy and, only when it can change
or stop the request (``mask-upstream``, ``block``), scan it before it leaves
(proxy/safety/guard.py). Everything else waits until the client has its response (record)."""

from __future__ import annotations

from genops.config import Settings
from genops.proxy.providers.base import ProviderAdapter
from genops.proxy.safety.guard import SafetyConfig
from genops.proxy.stages.base import Exchange


class SafetyStage:
    """Sets ``exchange.guard``; replaces ``exchange.body`` with the masked body when it masks,
    raises a 400 when the policy blocks the request."""

    def __init__(self, adapter: ProviderAdapter, settings: Settings) -> None:
        self.adapter = adapter
        self.safety = SafetyConfig(settings, adapter.name)

    async def run(self, exchange: Exchange) -> None:
        assert exchange.request_facts is not None  # parse ran
        guard = exchange.guard = self.safety.begin(self.adapter, exchange.request_facts, exchange.request.headers)
        exchange.body = await guard.before_forward(exchange.body)
