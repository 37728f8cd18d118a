"""The rollouts' storage on real chDB: migration 0080's route columns filled from span attributes,
decisions written and read back as a rollout's state (whatever the order two evaluators wrote
them in), the arms' numbers the gates compare, and the state surviving a reopened store."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import open_chdb
from rollout_data import call_row, insert_calls, insert_numeric_scores

from genops.storage.migrate import migrate
from genops.storage.rollouts import (
    Decision,
    Rollout,
    arm_stats,
    current_rollouts,
    fold,
    history,
    record_decision,
)
from genops.storage.rows import insert_rows

pytestmark = pytest.mark.integration

T0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=2)


@pytest.fixture(scope="module")
def client(chdb_dir: Path) -> Any:
    return open_chdb(chdb_dir)


@pytest.fixture()
def db(client: Any) -> Iterator[str]:
    database = "rollouts_store_" + uuid.uuid4().hex[:8]
    migrate(client, database)
    yield database
    client.command(f"DROP DATABASE IF EXISTS {database}")


def decision(action: str, step: int, at: dt.datetime, *, rollout_id: str = "r1", route: str = "support-bot",
             steps: tuple[int, ...] = (5, 50, 100), actor: str = "auto", reason: str = "") -> Decision:
    percent = {"rollback": 0, "promote": 100}.get(action, steps[step])
    return Decision(timestamp=at, rollout_id=rollout_id, route=route, action=action, step=step, percent=percent,
                    steps=steps, target="anthropic:claude-haiku-4-5", baseline="openai:gpt-4o-mini=1", interval_s=600,
                    min_calls=200, policy={"alpha": 0.01, "cost_margin": None}, reason=reason or f"{action} {step}",
                    gates=[{"name": "error_rate", "verdict": "pass"}], actor=actor, host="test-host")


def test_route_columns_are_filled_from_the_span_attributes(client: Any, db: str) -> None:
    routed = call_row(T0, {"genops.route.name": "support-bot", "genops.route.target": "anthropic:claude-haiku-4-5",
                           "genops.route.attempt": "2", "genops.route.reason": "fallback",
                           "genops.route.variant": "canary", "genops.rollout.id": "abc123", "genops.request.id": "routed"})
    plain = call_row(T0, {"genops.request.id": "plain"})
    insert_rows(client, db, [routed, plain])
    rows = client.query(f"SELECT RequestId, RouteName, RouteTarget, RouteAttempt, RouteVariant, RolloutId "
                        f"FROM {db}.genops_calls ORDER BY RequestId").result_rows
    assert rows == [("plain", "", "", 0, "", ""), ("routed", "support-bot", "anthropic:claude-haiku-4-5", 2, "canary", "abc123")]
    # the rest of the view is 0003's, unchanged
    assert client.query(f"SELECT Operation, Provider, RequestModel FROM {db}.genops_calls "
                        f"WHERE RequestId = 'routed'").result_rows == [("chat", "openai", "gpt-4o-mini")]


def test_migration_0080_runs_again_harmlessly(client: Any, db: str) -> None:
    """A migration interrupted before its ledger row runs again: every statement is idempotent."""
    from genops.storage.migrate import available_migrations

    (migration,) = [m for m in available_migrations() if m.version == 80]
    for statement in migration.statements(database=db, retention_days=30):
        client.command(statement)
    insert_rows(client, db, [call_row(T0, {"genops.route.name": "again", "genops.request.id": "x"})])
    assert client.query(f"SELECT RouteName FROM {db}.genops_calls").result_rows == [("again",)]


def test_decisions_are_read_back_as_the_rollout_state(client: Any, db: str) -> None:
    record_decision(client, decision("start", 0, T0, actor="cli"), db)
    record_decision(client, decision("advance", 1, T0 + dt.timedelta(minutes=10)), db)
    record_decision(client, decision("start", 0, T0, rollout_id="other", route="other-route"), db)
    state = current_rollouts(client, db)
    assert set(state) == {"support-bot", "other-route"}
    rollout = state["support-bot"]
    assert (rollout.rollout_id, rollout.state, rollout.step, rollout.percent, rollout.steps) == ("r1", "running", 1, 50,
                                                                                                  (5, 50, 100))
    assert rollout.started_at == T0 and rollout.step_started_at == T0 + dt.timedelta(minutes=10)
    assert (rollout.interval_s, rollout.min_calls, rollout.target) == (600, 200, "anthropic:claude-haiku-4-5")
    assert rollout.policy == {"alpha": 0.01, "cost_margin": None}
    assert rollout.last is not None and rollout.last.gates == ({"name": "error_rate", "verdict": "pass"},)
    assert current_rollouts(client, db, route="other-route").keys() == {"other-route"}

    record_decision(client, decision("promote", 2, T0 + dt.timedelta(minutes=30)), db)
    promoted = current_rollouts(client, db)["support-bot"]
    assert (promoted.state, promoted.percent) == ("promoted", 100)
    # a new rollout on the route supersedes the promoted one
    record_decision(client, decision("start", 0, T0 + dt.timedelta(hours=1), rollout_id="r2"), db)
    assert current_rollouts(client, db)["support-bot"].rollout_id == "r2"
    actions = [(d.rollout_id, d.action, d.actor) for d in history(client, "support-bot", db)]
    assert actions == [("r1", "start", "cli"), ("r1", "advance", "auto"), ("r1", "promote", "auto"), ("r2", "start", "auto")]


def test_the_state_does_not_depend_on_the_order_two_evaluators_wrote_in(client: Any, db: str) -> None:
    """Two evaluators writing the same advance keep one step (dated by the first); a rollback written
    before a stale evaluator's advance still wins; a rollout never moves back a step."""
    record_decision(client, decision("start", 0, T0), db)
    record_decision(client, decision("advance", 1, T0 + dt.timedelta(minutes=10, seconds=2)), db)
    record_decision(client, decision("advance", 1, T0 + dt.timedelta(minutes=10)), db)  # the other evaluator
    rollout = current_rollouts(client, db)["support-bot"]
    assert (rollout.step, rollout.step_started_at) == (1, T0 + dt.timedelta(minutes=10))

    record_decision(client, decision("rollback", 1, T0 + dt.timedelta(minutes=12), reason="error_rate failed"), db)
    record_decision(client, decision("advance", 2, T0 + dt.timedelta(minutes=13)), db)  # stale: read before the rollback
    rollout = current_rollouts(client, db)["support-bot"]
    assert (rollout.state, rollout.percent, rollout.reason) == ("rolled_back", 0, "error_rate failed")


def test_fold_ranks_decisions_whatever_their_order() -> None:
    rows = [decision("start", 0, T0), decision("advance", 2, T0 + dt.timedelta(minutes=20)),
            decision("advance", 1, T0 + dt.timedelta(minutes=30))]  # a late duplicate of an earlier step
    for ordering in (rows, rows[::-1]):
        rollout = fold(ordering)
        assert isinstance(rollout, Rollout) and (rollout.step, rollout.percent) == (2, 100)
    assert fold([decision("advance", 1, T0)]) is None  # no start: no rollout


def test_arm_numbers_are_what_the_calls_say(client: Any, db: str) -> None:
    record_decision(client, decision("start", 0, T0, rollout_id="arms"), db)
    rollout = current_rollouts(client, db)["support-bot"]
    canary_ids = insert_calls(client, db, "arms", "canary", 200, T0, error_rate=0.2, latency_ms=300, cost_usd=0.002,
                              flagged_rate=0.05, seed=1)
    baseline_ids = insert_calls(client, db, "arms", "baseline", 400, T0, error_rate=0.01, latency_ms=100, cost_usd=0.001,
                                seed=2)
    insert_calls(client, db, "other", "canary", 50, T0, seed=3)  # another rollout's calls are not counted
    insert_calls(client, db, "arms", "canary", 30, T0 - dt.timedelta(minutes=5), seconds=10, seed=4)  # before `since`
    insert_numeric_scores(client, db, canary_ids[:40], [0.2, 0.4])
    insert_numeric_scores(client, db, baseline_ids[:50], [0.8, 1.0], at=T0 + dt.timedelta(minutes=1))
    # a newer score of the same call and name wins
    insert_numeric_scores(client, db, baseline_ids[:50], [1.0], at=T0 + dt.timedelta(minutes=2))

    canary, baseline = arm_stats(client, rollout, T0, until=T0 + dt.timedelta(hours=1), database=db)
    assert (canary.calls, canary.errors, canary.flagged, canary.cost_n) == (200, 40, 10, 200)
    assert (baseline.calls, baseline.errors, baseline.flagged, baseline.cost_n) == (400, 4, 0, 400)
    assert 300 < canary.p95_ms <= 450 and 100 < baseline.p95_ms <= 150  # +-50% around the mean latency
    assert canary.over_baseline_p95 > 150  # most canary calls are slower than the baseline's p95
    assert 10 <= baseline.over_baseline_p95 <= 30  # about 5% of the baseline's own
    assert abs(canary.cost_mean - 0.002) < 0.0003 and abs(baseline.cost_mean - 0.001) < 0.0001
    assert canary.cost_var > 0 and baseline.cost_var > 0
    assert (canary.score_n, round(canary.score_mean, 6)) == (40, 0.3)
    assert (baseline.score_n, baseline.score_mean, baseline.score_var) == (50, 1.0, 0.0)

    later, _ = arm_stats(client, rollout, T0 + dt.timedelta(seconds=30), until=T0 + dt.timedelta(hours=1), database=db)
    assert later.calls == 100  # the window starts at `since`
    _, whole = arm_stats(client, rollout, T0 + dt.timedelta(seconds=30), baseline_since=T0,
                         until=T0 + dt.timedelta(hours=1), database=db)
    assert whole.calls == 400  # the baseline's own window


def test_no_calls_give_zero_numbers(client: Any, db: str) -> None:
    record_decision(client, decision("start", 0, T0, rollout_id="empty"), db)
    rollout = current_rollouts(client, db)["support-bot"]
    canary, baseline = arm_stats(client, rollout, T0, until=T0 + dt.timedelta(hours=1), database=db)
    assert canary.calls == baseline.calls == 0 and canary.cost_mean == 0.0 and canary.p95_ms == 0.0


_WRITE = """
import datetime as dt, sys, clickhouse_connect
from genops.storage.migrate import migrate
from genops.storage.rollouts import Decision, record_decision
client = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1])
migrate(client, "genops")
t0 = dt.datetime.fromisoformat(sys.argv[2])
for action, step, minutes in (("start", 0, 0), ("advance", 1, 10)):
    record_decision(client, Decision(timestamp=t0 + dt.timedelta(minutes=minutes), rollout_id="kept", route="support-bot",
                    action=action, step=step, percent=(5, 50, 100)[step], steps=(5, 50, 100),
                    target="anthropic:claude-haiku-4-5", interval_s=600, min_calls=200, actor="cli"), "genops")
"""
_READ = """
import json, sys, clickhouse_connect
from genops.storage.rollouts import current_rollouts
client = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1])
print(json.dumps({route: r.as_dict() for route, r in current_rollouts(client, "genops").items()}))
"""


def test_state_survives_reopening_the_store(tmp_path: Path) -> None:
    """Written by one process, read by the next one on the same data directory (chDB: one per process)."""
    store = tmp_path / "clickhouse"
    subprocess.run([sys.executable, "-c", _WRITE, str(store), T0.isoformat()], check=True, timeout=120)
    out = subprocess.run([sys.executable, "-c", _READ, str(store)], check=True, timeout=120, capture_output=True, text=True)
    state = json.loads(out.stdout.strip().splitlines()[-1])
    rollout = state["support-bot"]
    assert (rollout["rollout_id"], rollout["state"], rollout["step"], rollout["percent"]) == ("kept", "running", 1, 50)
    assert rollout["last_decision"]["action"] == "advance"
