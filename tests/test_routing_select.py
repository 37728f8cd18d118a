"""The router's choices, without a network: weights, stickiness, least-latency, canary shares,
Retry-After and backoff. The same behaviours end to end: tests/test_routing.py."""

from __future__ import annotations

import datetime as dt
import email.utils
import math
import random

import pytest

from genops.proxy.routing.attempts import backoff_s, retry_after_s
from genops.proxy.routing.latency import LatencyStats
from genops.proxy.routing.rollout_view import RolloutRouting, RolloutView
from genops.proxy.routing.select import plan_route
from genops.routes import RetryPolicy, parse_routes, parse_target

pytestmark = pytest.mark.unit


def route(**extra):
    base = {"name": "bot", "targets": [{"target": "openai:a", "weight": 90}, {"target": "anthropic:b", "weight": 10}],
            "fallback": ["openai:c"]}
    base.update(extra)
    return parse_routes([base], "f")["bot"]


def within(count: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    """``count`` of ``n`` draws is within ``sigmas`` binomial standard deviations of ``n * p``."""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_weights_hold_over_2000_calls():
    r, stats, rng = route(), LatencyStats(), random.Random(7)
    firsts = [str(plan_route(r, None, stats, None, rng).steps[0].entry.target) for _ in range(2000)]
    assert within(firsts.count("anthropic:b"), 2000, 0.10)
    assert firsts.count("openai:a") + firsts.count("anthropic:b") == 2000


def test_every_plan_ends_with_the_fallback_targets():
    plan = plan_route(route(), None, LatencyStats(), None, random.Random(1))
    assert [str(s.entry.target) for s in plan.steps][-1] == "openai:c"
    assert plan.steps[-1].reason == "fallback"
    assert plan.variant is None and plan.rollout_id is None


def test_a_sticky_user_keeps_its_target_and_users_spread_by_weight():
    r, stats = route(sticky="user"), LatencyStats()
    for user in ("alice", "bob", "carol"):
        chosen = {str(plan_route(r, user, stats, None).steps[0].entry.target) for _ in range(50)}
        assert len(chosen) == 1, (user, chosen)
    firsts = [str(plan_route(r, f"user-{i}", stats, None).steps[0].entry.target) for i in range(2000)]
    assert within(firsts.count("anthropic:b"), 2000, 0.10)
    assert plan_route(r, "alice", stats, None).steps[0].reason == "sticky"


def test_the_fallback_strategy_tries_targets_in_order():
    plan = plan_route(route(strategy="fallback"), None, LatencyStats(), None)
    assert [str(s.entry.target) for s in plan.steps] == ["openai:a", "anthropic:b", "openai:c"]


def test_least_latency_prefers_the_fastest_and_a_failing_target_drops_behind():
    r, stats = route(strategy="least-latency"), LatencyStats()
    stats.observe("openai:a", 300.0)
    stats.observe("anthropic:b", 120.0)
    rng = random.Random(3)
    firsts = [str(plan_route(r, None, stats, None, rng).steps[0].entry.target) for _ in range(1000)]
    assert within(firsts.count("anthropic:b"), 1000, 0.975)  # 5% explore, half of it lands on b anyway
    stats.observe("anthropic:b", 120.0, failed=True)
    stats.observe("anthropic:b", 120.0, failed=True)
    plan = plan_route(r, None, stats, None, random.Random(11))
    assert [str(s.entry.target) for s in plan.steps[:2]] == ["openai:a", "anthropic:b"]


def test_a_canary_gets_its_share_and_the_rest_follow_the_route():
    r, stats, rng = route(), LatencyStats(), random.Random(5)
    rollout = RolloutRouting("ro-1", "bot", parse_target("gemini:g"), 10.0, "running")
    plans = [plan_route(r, None, stats, rollout, rng) for _ in range(2000)]
    canary = [p for p in plans if p.variant == "canary"]
    assert within(len(canary), 2000, 0.10)
    assert all(str(p.steps[0].entry.target) == "gemini:g" and p.steps[0].reason == "canary" for p in canary)
    assert all(str(p.steps[-1].entry.target) == "openai:c" for p in canary)  # the canary falls back too
    baseline = [p for p in plans if p.variant == "baseline"]
    assert all(str(p.steps[0].entry.target) in ("openai:a", "anthropic:b") for p in baseline)
    assert {p.rollout_id for p in plans} == {"ro-1"}


def test_a_sticky_user_stays_on_its_side_of_a_canary():
    r, stats = route(sticky="user"), LatencyStats()
    rollout = RolloutRouting("ro-1", "bot", parse_target("gemini:g"), 25.0, "running")
    sides = {user: plan_route(r, user, stats, rollout).variant for user in (f"u{i}" for i in range(400))}
    assert all(plan_route(r, user, stats, rollout).variant == side for user, side in sides.items())
    assert within(sum(side == "canary" for side in sides.values()), 400, 0.25)


def test_a_promoted_rollout_sends_everything_to_its_target():
    rollout = RolloutRouting("ro-1", "bot", parse_target("gemini:g"), 100.0, "promoted")
    plan = plan_route(route(), None, LatencyStats(), rollout)
    assert [str(s.entry.target) for s in plan.steps] == ["gemini:g", "openai:c"]
    assert plan.steps[0].reason == "promoted" and plan.variant is None


def test_the_rollout_view_takes_the_supervisors_payload_and_skips_bad_entries():
    view = RolloutView()
    view.update({"routes": {
        "bot": {"rollout_id": "ro-1", "target": "anthropic:claude-haiku-4-5", "percent": 5, "state": "running"},
        "old": {"rollout_id": "ro-0", "target": "openai:x", "percent": 0, "state": "rolled_back"},
        "bad": {"rollout_id": "ro-2", "target": "not a target", "percent": 5, "state": "running"},
    }})
    assert set(view.routes) == {"bot"}
    assert view.routes["bot"].target == parse_target("anthropic:claude-haiku-4-5")
    assert view.routes["bot"].percent == 5.0


def test_retry_after_in_seconds_milliseconds_and_as_a_date():
    assert retry_after_s({"Retry-After": "2"}) == 2.0
    assert retry_after_s({"retry-after-ms": "350", "Retry-After": "9"}) == 0.35
    assert retry_after_s({}) is None
    assert retry_after_s({"Retry-After": "soon"}) is None
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    assert 25 < (retry_after_s({"Retry-After": email.utils.format_datetime(when)}) or 0) <= 30


def test_backoff_doubles_and_is_capped():
    policy = RetryPolicy(attempts=5, backoff_ms=200)
    assert [backoff_s(policy, n) for n in (1, 2, 3)] == [0.2, 0.4, 0.8]
    assert backoff_s(RetryPolicy(backoff_ms=4000), 4) == 5.0
