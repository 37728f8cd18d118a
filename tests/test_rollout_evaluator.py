"""The rollout evaluator on real chDB, over synthetic canary and baseline calls stored through the
span path: a canary with 20% errors is rolled back (error_rate named, the webhook called), a
healthy one advances step by step and is promoted, one below its minimum sample waits, and two
evaluators deciding the same step write one decision."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from conftest import open_chdb, serve_in_thread
from rollout_data import insert_calls

from genops.collectors.anomaly.alerts import post_json
from genops.collectors.rollouts import control
from genops.collectors.rollouts.evaluator import evaluate_once
from genops.routes import parse_routes
from genops.storage.migrate import migrate
from genops.storage.rollouts import Rollout, current_rollouts, history

pytestmark = pytest.mark.integration

ROUTES = parse_routes([{"name": "support-bot", "targets": [{"target": "openai:gpt-4o-mini", "weight": 100}]}], "test")
CANARY = "anthropic:claude-haiku-4-5"
INTERVAL = dt.timedelta(seconds=600)


@pytest.fixture(scope="module")
def client(chdb_dir: Path) -> Any:
    return open_chdb(chdb_dir)


@pytest.fixture()
def db(client: Any) -> Iterator[str]:
    database = "rollout_eval_" + uuid.uuid4().hex[:8]
    migrate(client, database)
    yield database
    client.command(f"DROP DATABASE IF EXISTS {database}")


class Hook:
    """A loopback Slack-style webhook that keeps the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def app(self) -> web.Application:
        async def receive(request: web.Request) -> web.Response:
            self.bodies.append(orjson.loads(await request.read()))
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/hooks/slack", receive)
        return app


@pytest.fixture()
def webhook() -> Iterator[tuple[Hook, str]]:
    hook = Hook()
    with serve_in_thread(hook.app()) as url:
        yield hook, url + "/hooks/slack"


def start(client: Any, db: str, at: dt.datetime, steps: tuple[int, ...] = (10, 50, 100), min_calls: int = 200) -> Rollout:
    request = control.parse_start({"route": "support-bot", "target": CANARY, "steps": list(steps),
                                   "interval_s": int(INTERVAL.total_seconds()), "min_calls": min_calls})
    return control.start(client, request, ROUTES, now=at, actor="cli", host="test", database=db)


def state(client: Any, db: str) -> Rollout:
    return current_rollouts(client, db)["support-bot"]


def test_a_canary_with_20_percent_errors_is_rolled_back_and_the_webhook_told(client: Any, db: str,
                                                                            webhook: tuple[Hook, str]) -> None:
    hook, url = webhook
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=3)
    rollout = start(client, db, t0)
    insert_calls(client, db, rollout.rollout_id, "canary", 250, t0, seconds=240, error_rate=0.2, seed=1)
    insert_calls(client, db, rollout.rollout_id, "baseline", 2250, t0, seconds=240, error_rate=0.01, seed=2)

    # half-way through the step's interval: a failed gate does not wait for the interval's end
    decisions = evaluate_once(client, t0 + dt.timedelta(seconds=300), lambda body: post_json(url, body), database=db,
                              check_interval_s=30, host="evaluator-1")
    assert [(d.action, d.percent, d.actor, d.host) for d in decisions] == [("rollback", 0, "auto", "evaluator-1")]
    assert decisions[0].reason.startswith("error_rate failed: error rate 20.0% vs 1.0%")
    failed = [g for g in decisions[0].gates if g["verdict"] == "fail"]
    assert [g["name"] for g in failed] == ["error_rate"] and failed[0]["p_value"] < 0.01 / 20  # alpha / looks per step
    after = state(client, db)
    assert (after.state, after.percent, after.reason) == ("rolled_back", 0, decisions[0].reason)
    assert control.routing_table(current_rollouts(client, db), ROUTES) == {}  # the route's config applies again

    assert len(hook.bodies) == 1
    body = hook.bodies[0]
    assert "ROLLED BACK" in body["text"] and "support-bot" in body["text"] and CANARY in body["text"]
    assert "error_rate: error rate 20.0% vs 1.0%" in body["text"]
    fields = {f["title"]: f["value"] for f in body["attachments"][0]["fields"]}
    assert fields["route"] == "support-bot" and fields["canary"] == CANARY
    assert fields["calls"] == "canary 250, baseline 2250" and "gate error_rate" in fields

    # rolled back is final: a later pass decides nothing and alerts no more
    assert evaluate_once(client, t0 + dt.timedelta(seconds=900), lambda body: post_json(url, body), database=db) == []
    assert len(hook.bodies) == 1


def test_a_canary_whose_failures_the_fallback_answered_is_still_rolled_back(client: Any, db: str) -> None:
    """The client got a 200 from the route's fallback, but the canary target failed first: an error of the canary."""
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=3)
    rollout = start(client, db, t0)
    insert_calls(client, db, rollout.rollout_id, "canary", 250, t0, seconds=240, error_rate=0.0, rescued_rate=0.2, seed=3)
    insert_calls(client, db, rollout.rollout_id, "baseline", 2250, t0, seconds=240, error_rate=0.01, seed=4)
    decisions = evaluate_once(client, t0 + dt.timedelta(seconds=300), None, database=db, check_interval_s=30)
    assert [d.action for d in decisions] == ["rollback"]
    assert decisions[0].reason.startswith("error_rate failed: error rate 20.0% vs 1.0%")


def test_a_healthy_canary_advances_step_by_step_and_is_promoted(client: Any, db: str) -> None:
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=3)
    rollout = start(client, db, t0)
    step_start = t0
    for step, percent in enumerate((10, 50)):
        canary = 300 if percent == 10 else 1000
        insert_calls(client, db, rollout.rollout_id, "canary", canary, step_start, seconds=500, seed=10 + step)
        insert_calls(client, db, rollout.rollout_id, "baseline", 2000 - canary if percent == 50 else 2700, step_start,
                     seconds=500, seed=20 + step)
        # every gate passes, but the step's interval is not over: wait, write nothing
        assert evaluate_once(client, step_start + dt.timedelta(seconds=540), None, database=db, check_interval_s=30) == []
        assert state(client, db).step == step
        decisions = evaluate_once(client, step_start + INTERVAL, None, database=db, check_interval_s=30)
        # passing the step before 100% promotes: a 100% step has no baseline of its own time
        expected = ("advance", step + 1) if percent == 10 else ("promote", step)
        assert [(d.action, d.step) for d in decisions] == [expected], decisions
        assert "all gates passed" in decisions[0].reason
        assert {g["name"]: g["verdict"] for g in decisions[0].gates} == {
            "error_rate": "pass", "p95_latency": "pass", "cost_per_call": "pass", "score": "insufficient",
            "safety_findings": "pass"}
        if percent == 10:
            step_start = state(client, db).step_started_at
            assert step_start == t0 + INTERVAL * (step + 1)

    final = state(client, db)
    assert (final.state, final.percent) == ("promoted", 100)
    assert [(d.action, d.percent, d.actor) for d in history(client, "support-bot", db)] == [
        ("start", 10, "cli"), ("advance", 50, "auto"), ("promote", 100, "auto")]
    routing = control.routing_table(current_rollouts(client, db), ROUTES)
    assert routing == {"support-bot": {"rollout_id": rollout.rollout_id, "target": CANARY, "percent": 100,
                                       "state": "promoted"}}
    # once the config names the canary, the config applies: the promotion has done its job
    named = parse_routes([{"name": "support-bot", "targets": [CANARY]}], "test")
    assert control.routing_table(current_rollouts(client, db), named) == {}
    assert evaluate_once(client, step_start + INTERVAL * 3, None, database=db) == []  # promoted: nothing to evaluate


def test_a_canary_below_its_minimum_sample_waits(client: Any, db: str) -> None:
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=3)
    rollout = start(client, db, t0)
    # even half of its calls failing does not roll back 150 calls of a rollout that asks for 200
    insert_calls(client, db, rollout.rollout_id, "canary", 150, t0, seconds=500, error_rate=0.5, seed=3)
    insert_calls(client, db, rollout.rollout_id, "baseline", 3000, t0, seconds=500, seed=4)
    assert evaluate_once(client, t0 + INTERVAL * 2, None, database=db, check_interval_s=30) == []
    after = state(client, db)
    assert (after.state, after.step, after.percent) == ("running", 0, 10)
    assert [d.action for d in history(client, "support-bot", db)] == ["start"]
    # its minimum reached (and passed the interval), the failure shows
    insert_calls(client, db, rollout.rollout_id, "canary", 100, t0 + dt.timedelta(seconds=500), seconds=50,
                 error_rate=0.5, seed=5)
    assert [d.action for d in evaluate_once(client, t0 + INTERVAL * 2, None, database=db)] == ["rollback"]


def test_two_evaluators_deciding_the_same_step_write_one_decision(client: Any, db: str) -> None:
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=3)
    rollout = start(client, db, t0)
    insert_calls(client, db, rollout.rollout_id, "canary", 300, t0, seconds=500, seed=6)
    insert_calls(client, db, rollout.rollout_id, "baseline", 2700, t0, seconds=500, seed=7)
    seen = current_rollouts(client, db)  # both read the state before either writes
    first = evaluate_once(client, t0 + INTERVAL, None, database=db, rollouts=seen, host="proxy-a")
    second = evaluate_once(client, t0 + INTERVAL + dt.timedelta(seconds=1), None, database=db, rollouts=seen,
                           host="proxy-b")
    assert [(d.action, d.step, d.host) for d in first] == [("advance", 1, "proxy-a")]
    assert second == []  # it saw the step move before writing
    assert [d.action for d in history(client, "support-bot", db)] == ["start", "advance"]
    assert (state(client, db).step, state(client, db).step_started_at) == (1, first[0].timestamp)
