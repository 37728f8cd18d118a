"""Which targets a routed call tries, in order: the route's strategy (weighted, fallback,
least-latency), stickiness (the same user or session keeps its target), a rollout's canary
share, then the route's fallback targets.

A route is compiled once per reading of the config file (:class:`CompiledRoute`): its steps,
cumulative weights and hash salts are made then, so a call's plan is a hash, a bisect and a
prebuilt tuple (a few µs; bench/routing_micro.py)."""

from __future__ import annotations

import hashlib
import random
from bisect import bisect_right
from collections.abc import Callable
from itertools import accumulate
from typing import NamedTuple

from genops.proxy.routing.latency import LatencyStats
from genops.proxy.routing.rollout_view import RolloutRouting
from genops.routes import Route, RouteTarget

#: A least-latency route sends this share of calls to a random target, so every target's latency stays known.
EXPLORE_SHARE = 0.05
_SCALE = 1.0 / 18446744073709551616.0  # a 64-bit hash to [0, 1)


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


def _unit(salt: bytes, key: str) -> float:
    """A stable point in [0, 1) for ``key``: the same user lands on the same target in every worker and proxy.

    BLAKE2b, not CRC32: a CRC is linear, so ids that differ only in their last characters
    (``user-17``, ``user-18``) land in clusters and the shares drift from the weights."""
    digest = hashlib.blake2b(salt + key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") * _SCALE


class CompiledRoute:
    """A route with everything a plan needs made ahead: see the module docstring."""

    __slots__ = ("by_reason", "canary_salt", "cumulative", "fallback", "ordered", "route", "salt", "total")

    def __init__(self, route: Route) -> None:
        self.route = route
        self.salt = route.name.encode() + b"\x00"
        self.canary_salt = b"canary:" + self.salt
        self.fallback = tuple(Step(entry, "fallback") for entry in route.fallback)
        weighted = [entry for entry in route.targets if entry.weight > 0]
        self.cumulative = list(accumulate(entry.weight for entry in weighted))
        self.total = self.cumulative[-1] if self.cumulative else 0.0
        # each weighted target's whole plan, per reason: (the target, *fallback)
        self.by_reason = {reason: [(Step(entry, reason), *self.fallback) for entry in weighted]
                          for reason in ("weighted", "sticky")}
        reason = "weighted" if route.strategy == "weighted" else route.strategy
        self.ordered = (*(Step(entry, reason) for entry in route.targets), *self.fallback)

    def plan(self, sticky_key: str | None, latency: LatencyStats, rollout: RolloutRouting | None,
             draw: Callable[[], float]) -> Plan:
        route = self.route
        if rollout is not None:
            canary = RouteTarget(rollout.target)
            if rollout.state == "promoted":
                return Plan(route, (Step(canary, "promoted"), *self.fallback), None, rollout.rollout_id)
            point = _unit(self.canary_salt, sticky_key) if sticky_key is not None else draw()
            if point * 100.0 < rollout.percent:
                return Plan(route, (Step(canary, "canary"), *self.fallback), "canary", rollout.rollout_id)
            return Plan(route, self._choose(sticky_key, latency, draw), "baseline", rollout.rollout_id)
        return Plan(route, self._choose(sticky_key, latency, draw))

    def _choose(self, sticky_key: str | None, latency: LatencyStats, draw: Callable[[], float]) -> tuple[Step, ...]:
        strategy = self.route.strategy
        if strategy == "weighted" and len(self.cumulative) > 1:
            if sticky_key is not None:
                point, plans = _unit(self.salt, sticky_key), self.by_reason["sticky"]
            else:
                point, plans = draw(), self.by_reason["weighted"]
            return plans[min(bisect_right(self.cumulative, point * self.total), len(plans) - 1)]
        if strategy == "least-latency" and len(self.route.targets) > 1:
            ranked = sorted(self.route.targets, key=lambda entry: latency.expected_ms(str(entry.target)))
            if draw() < EXPLORE_SHARE:
                ranked.insert(0, ranked.pop(int(draw() * len(ranked))))
            return (*(Step(entry, "least-latency") for entry in ranked), *self.fallback)
        if strategy == "weighted":  # one target with weight: it, then the fallback
            return self.by_reason["weighted"][0] if self.cumulative else self.ordered
        return self.ordered


def plan_route(route: Route, sticky_key: str | None, latency: LatencyStats, rollout: RolloutRouting | None,
               rng: random.Random | None = None) -> Plan:
    """The targets to try for one call of ``route`` (compiling it first: the router keeps its compiled
    routes instead). ``sticky_key``: the user or session id when the route is sticky and the call has one
    (None: chosen at random)."""
    return CompiledRoute(route).plan(sticky_key, latency, rollout, (rng or random).random)
