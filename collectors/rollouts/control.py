"""Starting, promoting and rolling back a canary rollout by hand, checked; and the routing table
the proxies follow.

Shared by the admin API (api/rollouts.py) and ``genops rollout`` when it reaches the store
directly. Every action is one appended decision (storage/rollouts.py); a refused one raises a
:class:`RolloutError` whose ``status`` is the HTTP status the API answers with.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from genops.collectors.rollouts.gates import GatePolicy
from genops.config import ConfigError, named_upstreams
from genops.routes import Route, parse_target
from genops.storage.rollouts import Decision, Rollout, current_rollouts, fold, record_decision

log = logging.getLogger("genops.collectors.rollouts")

DEFAULT_STEPS = (1, 5, 25, 50, 100)
DEFAULT_INTERVAL_S = 600
DEFAULT_MIN_CALLS = GatePolicy().min_calls
DEFAULT_MAX_COST_INCREASE = GatePolicy().cost_margin
MAX_INTERVAL_S = 30 * 86400
MAX_MIN_CALLS = 10**9


class RolloutError(ValueError):
    """A rollout action refused; ``status`` is the admin API's answer (400, 404, 409)."""

    status = 400
    code = "invalid_rollout"


class NoRollout(RolloutError):
    status = 404
    code = "no_rollout"


class RolloutConflict(RolloutError):
    status = 409
    code = "rollout_conflict"


@dataclass(frozen=True)
class StartRequest:
    """What ``genops rollout start`` / ``POST /genops/v1/rollouts`` asks for, checked by :func:`parse_start`."""

    route: str
    target: str
    steps: tuple[int, ...] = DEFAULT_STEPS
    interval_s: int = DEFAULT_INTERVAL_S
    min_calls: int = DEFAULT_MIN_CALLS
    max_cost_increase: float | None = DEFAULT_MAX_COST_INCREASE

    def policy(self) -> GatePolicy:
        """The gates' policy: the defaults, with this rollout's minimum sample and cost margin."""
        return GatePolicy()._replace(min_calls=self.min_calls, cost_margin=self.max_cost_increase)


def check_steps(steps: Sequence[int]) -> tuple[int, ...]:
    """The canary's percentages: strictly increasing, within 1..100, ending at 100, at least one below
    100 (a step where the baseline still gets calls to compare with)."""
    if not steps or any(isinstance(s, bool) or not isinstance(s, int) for s in steps):
        raise RolloutError("steps: expected a list of whole percentages, e.g. [1, 5, 25, 50, 100]")
    if any(not 1 <= s <= 100 for s in steps):
        raise RolloutError(f"steps: every step must be a percentage from 1 to 100, got {list(steps)}")
    if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise RolloutError(f"steps: must increase, got {list(steps)}")
    if steps[-1] != 100:
        raise RolloutError(f"steps: the last step must be 100 (all traffic on the canary), got {list(steps)}")
    if len(steps) < 2:
        raise RolloutError("steps: at least one step below 100 is needed, so the canary is compared with a baseline")
    return tuple(steps)


def _integer(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RolloutError(f"{name}: expected a whole number from {low} to {high}, got {value!r}")
    return value


def parse_start(body: Mapping[str, Any]) -> StartRequest:
    """A start request from JSON ``{route, target, steps?, interval_s?, min_calls?, max_cost_increase?}``."""
    if not isinstance(body, Mapping):
        raise RolloutError("expected a JSON object {route, target, steps, interval_s, min_calls}")
    unknown = set(body) - {"route", "target", "steps", "interval_s", "min_calls", "max_cost_increase"}
    if unknown:
        raise RolloutError(f"unknown field {sorted(unknown)[0]!r}")
    route, target = body.get("route"), body.get("target")
    if not isinstance(route, str) or not route.strip():
        raise RolloutError("route: the name of a route of the config file ([[routes]] name)")
    if not isinstance(target, str):
        raise RolloutError("target: expected \"provider:model\", e.g. \"anthropic:claude-haiku-4-5\"")
    steps = body.get("steps", list(DEFAULT_STEPS))
    if isinstance(steps, str):
        try:
            steps = [int(s) for s in steps.split(",")]
        except ValueError:
            raise RolloutError(f"steps: expected percentages like 1,5,25,50,100, got {steps!r}") from None
    if not isinstance(steps, (list, tuple)):
        raise RolloutError("steps: expected a list of percentages, e.g. [1, 5, 25, 50, 100]")
    cost = body.get("max_cost_increase", DEFAULT_MAX_COST_INCREASE)
    if cost is not None and (isinstance(cost, bool) or not isinstance(cost, (int, float)) or not 0 <= cost <= 100):
        raise RolloutError(f"max_cost_increase: expected a fraction such as 0.25 (+25%), or null for no cost gate, got {cost!r}")
    return StartRequest(
        route=route.strip(), target=target.strip(), steps=check_steps(list(steps)),
        interval_s=_integer(body.get("interval_s", DEFAULT_INTERVAL_S), "interval_s", 1, MAX_INTERVAL_S),
        min_calls=_integer(body.get("min_calls", DEFAULT_MIN_CALLS), "min_calls", 1, MAX_MIN_CALLS),
        max_cost_increase=None if cost is None else float(cost))


def describe_targets(route: Route) -> str:
    """The route's configured targets and weights, for the record: ``openai:gpt-4o-mini=90, ...``."""
    return ", ".join(f"{t.target}={t.weight:g}" for t in route.targets)


def start(client: Any, request: StartRequest, routes: Mapping[str, Route], *, now: dt.datetime, actor: str,
          host: str, env: Mapping[str, str] | None = None, database: str | None = None) -> Rollout:
    """Start a rollout of ``request.target`` on ``request.route`` at its first step.

    Refused (400) for a route the config does not have or a malformed target, (409) while another
    rollout runs on the route. A promoted or rolled-back one may be followed by a new one.
    """
    route = routes.get(request.route)
    if route is None:
        known = ", ".join(sorted(routes)) or "none: add [[routes]] to the config file (docs/routing.md)"
        raise RolloutError(f"route {request.route!r} is not in the config file (routes: {known})")
    try:
        target = parse_target(request.target, "target")
        if target.provider.startswith("u/") and target.provider[2:] not in named_upstreams(env):
            raise ConfigError(f"target: {str(target)!r} names the upstream {target.provider[2:]!r}, "
                              f"but GENOPS_UPSTREAM_{target.provider[2:].upper()} is not set")
    except ConfigError as exc:
        raise RolloutError(str(exc)) from None
    running = current_rollouts(client, database, request.route).get(request.route)
    if running is not None and running.state == "running":
        raise RolloutConflict(f"a rollout of {running.target} is already running on {request.route} "
                              f"(step {running.step + 1} of {len(running.steps)}, {running.percent}%); "
                              "promote or roll it back first")
    decision = Decision(
        timestamp=now, rollout_id=uuid.uuid4().hex, route=request.route, action="start", step=0,
        percent=request.steps[0], steps=request.steps, target=str(target), baseline=describe_targets(route),
        interval_s=request.interval_s, min_calls=request.min_calls, policy=request.policy()._asdict(),
        reason=f"started by {actor}", actor=actor, host=host)
    record_decision(client, decision, database)
    _log(decision)
    rollout = fold([decision])
    assert rollout is not None
    return rollout


def _running(client: Any, route: str, database: str | None) -> Rollout:
    rollout = current_rollouts(client, database, route).get(route)
    if rollout is None:
        raise NoRollout(f"no rollout on route {route!r}")
    if rollout.state != "running" and rollout.state != "promoted":
        raise RolloutConflict(f"the rollout on {route} is {rollout.state.replace('_', ' ')}, nothing to change")
    return rollout


def promote(client: Any, route: str, *, now: dt.datetime, actor: str, host: str,
            database: str | None = None) -> Rollout:
    """Send all of ``route``'s traffic to the running rollout's canary now (409 unless running)."""
    rollout = _running(client, route, database)
    if rollout.state != "running":
        raise RolloutConflict(f"the rollout on {route} is already promoted")
    return _decide(client, rollout, "promote", now, actor, host, f"promoted by {actor}", database)


def rollback(client: Any, route: str, *, now: dt.datetime, actor: str, host: str, reason: str = "",
             database: str | None = None) -> Rollout:
    """Give ``route`` back to its config: the running (or promoted) rollout ends, the canary gets nothing."""
    rollout = _running(client, route, database)
    return _decide(client, rollout, "rollback", now, actor, host, reason or f"rolled back by {actor}", database)


def _decide(client: Any, rollout: Rollout, action: str, now: dt.datetime, actor: str, host: str, reason: str,
            database: str | None) -> Rollout:
    decision = decision_for(rollout, action, now=now, actor=actor, host=host, reason=reason)
    record_decision(client, decision, database)
    _log(decision)
    state = fold([_start_of(rollout), decision])  # the new decision outranks every earlier one
    assert state is not None
    return state


def decision_for(rollout: Rollout, action: str, *, now: dt.datetime, actor: str, host: str, reason: str,
                 gates: Sequence[Mapping[str, Any]] = ()) -> Decision:
    """The decision row that moves ``rollout`` by ``action`` (advance: to the next step)."""
    step = rollout.step + 1 if action == "advance" else rollout.step
    percent = {"advance": rollout.steps[min(step, len(rollout.steps) - 1)], "promote": 100, "rollback": 0}[action]
    return Decision(
        timestamp=now, rollout_id=rollout.rollout_id, route=rollout.route, action=action, step=step, percent=percent,
        steps=rollout.steps, target=rollout.target, baseline=rollout.baseline, interval_s=rollout.interval_s,
        min_calls=rollout.min_calls, policy=rollout.policy, reason=reason, gates=tuple(gates), actor=actor, host=host)


def _start_of(rollout: Rollout) -> Decision:
    """The start decision ``rollout`` was folded from (its settings and start time)."""
    return Decision(
        timestamp=rollout.started_at, rollout_id=rollout.rollout_id, route=rollout.route, action="start", step=0,
        percent=rollout.steps[0], steps=rollout.steps, target=rollout.target, baseline=rollout.baseline,
        interval_s=rollout.interval_s, min_calls=rollout.min_calls, policy=rollout.policy)


def _log(decision: Decision) -> None:
    log.info("rollout decision", extra={
        "route": decision.route, "rollout_id": decision.rollout_id, "action": decision.action,
        "step": decision.step, "percent": decision.percent, "target": decision.target, "actor": decision.actor,
        "reason": decision.reason})


def routing_table(rollouts: Mapping[str, Rollout], routes: Mapping[str, Route] | None) -> dict[str, dict[str, Any]]:
    """What the proxies follow: per route, its running rollout (the canary gets ``percent``%) or its
    promoted one (everything goes to the canary) until the config names the canary among the route's
    targets; then the config applies again. ``routes`` None (the file cannot be read): promoted
    rollouts stay."""
    table = {}
    for name, rollout in rollouts.items():
        if rollout.state == "promoted" and routes is not None:
            route = routes.get(name)
            if route is not None and any(str(t.target) == rollout.target for t in route.targets):
                continue
        if rollout.state in ("running", "promoted"):
            table[name] = {"rollout_id": rollout.rollout_id, "target": rollout.target, "percent": rollout.percent,
                           "state": rollout.state}
    return table
