"""The rollouts in force, as the router needs them: per route, the canary target and its share
(``running``) or the promoted target (``promoted``). The state itself lives in ClickHouse's
``genops_rollouts`` (collectors/rollouts, api/rollouts); this is the proxy's copy, refreshed by a
poll the composition root sets up (runtime/), so every worker and every proxy follows one state."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from genops.config import ConfigError
from genops.routes import Target, parse_target

log = logging.getLogger("genops.proxy.routing")


class RolloutRouting(NamedTuple):
    rollout_id: str
    route: str
    target: Target
    percent: float  # share of the route's calls the canary gets (running)
    state: str  # "running" | "promoted"


class RolloutView:
    """The latest rollout routing known to this process (empty until the first poll answers)."""

    def __init__(self) -> None:
        self.routes: Mapping[str, RolloutRouting] = MappingProxyType({})

    def update(self, payload: Mapping[str, Any]) -> None:
        """Take ``{"routes": {route: {rollout_id, target, percent, state}}}`` (GET /genops/v1/rollouts/routing);
        an entry that cannot be read is skipped and logged, the others apply."""
        routes: dict[str, RolloutRouting] = {}
        for route, entry in (payload.get("routes") or {}).items():
            try:
                state = entry["state"]
                if state not in ("running", "promoted"):
                    continue
                percent = float(entry.get("percent", 100 if state == "promoted" else 0))
                routes[route] = RolloutRouting(str(entry["rollout_id"]), route, parse_target(entry["target"]),
                                               max(0.0, min(100.0, percent)), state)
            except (KeyError, TypeError, ValueError, ConfigError) as exc:
                log.warning("rollout routing entry skipped", extra={"route": route, "error": str(exc)[:200]})
        self.routes = MappingProxyType(routes)
