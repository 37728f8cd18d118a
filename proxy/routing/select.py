"""Which targets a routed call tries, in order: the route's strategy (weighted, fallback,
least-latency), stickiness (the same user or session keeps its target), a rollout's canary
share, then the route's fallback targets."""

from __future__ import annotations

import random
import zlib
from typing import NamedTuple

from genops.routes import Route, RouteTarget
from genops.proxy.routing.latency import LatencyStats
from genops.proxy.routing.rollout_view import RolloutRouting

#: A least-latency route sends this share of calls to a random target, so every target's latency stays known.
EXPLORE_SHARE = 0.05


class Step(NamedTuple):
    """One target of a plan and why it is tried."""

    entry: RouteTarget
    reason: str  # weighted | sticky | least-latency | fallback | canary | promoted


class Plan(NamedTuple):
    """A routed call's targets in the order they are tried, and the rollout it belongs to."""

    route: Route
    steps: tuple[Step, ...]
    variant: str | None = None  # baseline | canary while a rollout runs on the route
    rollout_id: str | None = None


def _unit(salt: str, key: str) -> float:
    """A stable point in [0, 1) for ``key``: the same user lands on the same target in every worker and proxy."""
    return zlib.crc32(f"{salt}\x00{key}".encode()) / 4294967296.0


def plan_route(route: Route, sticky_key: str | None, latency: LatencyStats, rollout: RolloutRouting | None,
               rng: random.Random | None = None) -> Plan:
    """The targets to try for one call of ``route``. ``sticky_key``: the user or session id when the route
    is sticky and the call has one (None: chosen at random)."""
    draw = (rng or random).random
    fallback = tuple(Step(entry, "fallback") for entry in route.fallback)
    if rollout is not None:
        canary = RouteTarget(rollout.target)
        if rollout.state == "promoted":
            return Plan(route, (Step(canary, "promoted"), *fallback), None, rollout.rollout_id)
        point = _unit("canary:" + route.name, sticky_key) if sticky_key is not None else draw()
        if point * 100.0 < rollout.percent:
            return Plan(route, (Step(canary, "canary"), *fallback), "canary", rollout.rollout_id)
        chosen = _choose(route, sticky_key, latency, draw)
        return Plan(route, (*chosen, *fallback), "baseline", rollout.rollout_id)
    return Plan(route, (*_choose(route, sticky_key, latency, draw), *fallback))


def _choose(route: Route, sticky_key: str | None, latency: LatencyStats, draw: object) -> tuple[Step, ...]:
    targets = route.targets
    if route.strategy == "fallback" or len(targets) == 1:
        return tuple(Step(entry, "weighted" if route.strategy == "weighted" else "fallback") for entry in targets)
    if route.strategy == "least-latency":
        ranked = sorted(targets, key=lambda entry: latency.expected_ms(str(entry.target)))
        if draw() < EXPLORE_SHARE:  # type: ignore[operator]
            first = ranked.pop(int(draw() * len(ranked)))  # type: ignore[operator]
            ranked.insert(0, first)
        return tuple(Step(entry, "least-latency") for entry in ranked)
    total = sum(entry.weight for entry in targets)
    point = _unit(route.name, sticky_key) if sticky_key is not None else draw()  # type: ignore[operator]
    mark = point * total
    reason = "sticky" if sticky_key is not None else "weighted"
    for entry in targets:
        if entry.weight <= 0:
            continue
        mark -= entry.weight
        if mark < 0:
            return (Step(entry, reason),)
    return (Step(next(entry for entry in reversed(targets) if entry.weight > 0), reason),)
