"""Storage side of canary rollouts: the ``genops_rollouts`` decisions (migration 0080) and the
numbers the gates compare, read from ``genops_calls`` and ``genops_scores``.

A rollout's state is nothing but its decision rows: rows are only ever appended, and
:func:`current_rollouts` folds them into a :class:`Rollout` at read time. So the state survives
restarts and every proxy (and every worker asking its supervisor) sees the same one. The fold
does not depend on the order in which two evaluators wrote, so two of them deciding at once
cannot move a rollout backwards:

- a route's rollout is its latest ``start``;
- within it, a decision outranks another by (action, step): ``rollback`` > ``promote`` >
  ``advance`` > ``start``, then the higher step. A rollback is final, a rollout never goes back
  to an earlier step, and two evaluators writing the same advance write the same state (the
  earlier row of the two dates the step).

The queries are in ``rollouts.sql`` beside this module.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, NamedTuple

import orjson

ROLLOUTS_TABLE = "genops_rollouts"
ACTIONS = ("start", "advance", "promote", "rollback")
STATES = ("running", "promoted", "rolled_back")
ACTORS = ("cli", "api", "auto")
VARIANTS = ("canary", "baseline")
#: Which decision wins when two disagree (see the module doc).
_RANK = {"start": 0, "advance": 1, "promote": 2, "rollback": 3}
_STATE = {"start": "running", "advance": "running", "promote": "promoted", "rollback": "rolled_back"}
COLUMNS = ("Timestamp", "RolloutId", "Route", "Action", "Step", "Percent", "Steps", "Target", "Baseline",
           "IntervalS", "MinCalls", "Policy", "Reason", "Gates", "Actor", "Host")
#: Decisions returned by :func:`history` at most.
HISTORY_LIMIT = 1000


@dataclass(frozen=True)
class Decision:
    """One row of ``genops_rollouts``: what was decided about a rollout, when, by whom and why."""

    timestamp: dt.datetime  # aware, UTC
    rollout_id: str
    route: str
    action: str  # start | advance | promote | rollback
    step: int  # 0-based index into steps
    percent: int  # the canary's share after this decision
    steps: tuple[int, ...]
    target: str  # the canary, "provider:model"
    baseline: str = ""  # the route's configured targets at the start, for the record
    interval_s: int = 0
    min_calls: int = 0
    policy: Mapping[str, Any] = field(default_factory=dict)
    reason: str = ""
    gates: Sequence[Mapping[str, Any]] = ()
    actor: str = "auto"
    host: str = ""

    def __post_init__(self) -> None:
        # as stored: UTC, whole milliseconds (DateTime64(3)), so a decision equals its row read back
        stamp = utc(self.timestamp)
        object.__setattr__(self, "timestamp", stamp.replace(microsecond=stamp.microsecond // 1000 * 1000))

    def row(self) -> list[Any]:
        return [self.timestamp, self.rollout_id, self.route, self.action, self.step, self.percent, list(self.steps),
                self.target, self.baseline, self.interval_s, self.min_calls, orjson.dumps(dict(self.policy)).decode(),
                _one_line(self.reason), orjson.dumps(list(self.gates)).decode(), self.actor, self.host]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the admin API's form)."""
        return {"timestamp": iso(self.timestamp), "rollout_id": self.rollout_id, "route": self.route,
                "action": self.action, "step": self.step, "percent": self.percent, "steps": list(self.steps),
                "target": self.target, "baseline": self.baseline, "interval_s": self.interval_s,
                "min_calls": self.min_calls, "policy": dict(self.policy), "reason": self.reason,
                "gates": [dict(g) for g in self.gates], "actor": self.actor, "host": self.host}


@dataclass(frozen=True)
class Rollout:
    """A route's rollout as its decisions add up (see the module doc)."""

    rollout_id: str
    route: str
    target: str
    steps: tuple[int, ...]
    step: int
    percent: int
    state: str  # running | promoted | rolled_back
    interval_s: int
    min_calls: int
    policy: Mapping[str, Any]
    started_at: dt.datetime
    step_started_at: dt.datetime
    reason: str
    baseline: str = ""
    #: The decision that set this state (the last one that counts).
    last: Decision | None = None

    @property
    def last_step(self) -> bool:
        """Whether the current step is the last one."""
        return self.step >= len(self.steps) - 1

    @property
    def promotes_next(self) -> bool:
        """Whether passing this step promotes: it is the last, or the next gives the canary 100%. A 100%
        step has no baseline of its own time to compare with (only older calls, made under another
        load), so reaching it is the promotion."""
        return self.last_step or self.steps[self.step + 1] >= 100

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the admin API's form)."""
        return {"rollout_id": self.rollout_id, "route": self.route, "target": self.target, "steps": list(self.steps),
                "step": self.step, "percent": self.percent, "state": self.state, "interval_s": self.interval_s,
                "min_calls": self.min_calls, "policy": dict(self.policy), "started_at": iso(self.started_at),
                "step_started_at": iso(self.step_started_at), "reason": self.reason, "baseline": self.baseline,
                "last_decision": self.last.as_dict() if self.last else None}


class ArmNumbers(NamedTuple):
    """What the gates compare for one arm (the fields of ``collectors.rollouts.gates.ArmStats``)."""

    calls: int = 0
    errors: int = 0
    p95_ms: float = 0.0
    over_baseline_p95: int = 0
    cost_n: int = 0
    cost_mean: float = 0.0
    cost_var: float = 0.0
    score_n: int = 0
    score_mean: float = 0.0
    score_var: float = 0.0
    flagged: int = 0


# -- times -----------------------------------------------------------------------------------

def utc(value: dt.datetime) -> dt.datetime:
    """``value`` as an aware UTC datetime (a naive one is taken as UTC)."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def millis(value: dt.datetime) -> int:
    """Unix milliseconds of ``value`` (naive = UTC)."""
    return round(utc(value).timestamp() * 1000)


def from_millis(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def iso(value: dt.datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z``."""
    return utc(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:1000]


# -- SQL -------------------------------------------------------------------------------------

_SECTION = re.compile(r"^-- name: (\w+)\s*$", re.M)


@cache
def _queries() -> dict[str, str]:
    text = resources.files("genops.storage").joinpath("rollouts.sql").read_text()
    parts = _SECTION.split(text)
    queries = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
        queries[name] = "\n".join(lines).strip()
    return queries


def _sql(name: str, database: str | None) -> str:
    # Without a database, names resolve in the client's default database (the server's sql_client).
    return _queries()[name].replace("{database}.", f"{database}." if database else "")


def _rows(client: Any, name: str, database: str | None, **parameters: Any) -> list[dict[str, Any]]:
    result = client.query(_sql(name, database), parameters=parameters)
    columns = list(result.column_names)
    return [dict(zip(columns, row, strict=True)) for row in result.result_rows]


# -- decisions -------------------------------------------------------------------------------

def record_decision(client: Any, decision: Decision, database: str | None = None) -> None:
    """Append ``decision`` to ``genops_rollouts``."""
    table = f"{database}.{ROLLOUTS_TABLE}" if database else ROLLOUTS_TABLE
    client.insert(table, [decision.row()], column_names=list(COLUMNS))


def _loads(text: str, default: Any) -> Any:
    try:
        return orjson.loads(text) if text else default
    except orjson.JSONDecodeError:
        return default


def _decision(row: Mapping[str, Any]) -> Decision:
    return Decision(
        timestamp=from_millis(int(row["ts"])), rollout_id=row["RolloutId"], route=row["Route"], action=row["Action"],
        step=int(row["Step"]), percent=int(row["Percent"]), steps=tuple(int(s) for s in row["Steps"]),
        target=row["Target"], baseline=row["Baseline"], interval_s=int(row["IntervalS"]),
        min_calls=int(row["MinCalls"]), policy=_loads(row["Policy"], {}), reason=row["Reason"],
        gates=tuple(_loads(row["Gates"], [])), actor=row["Actor"], host=row["Host"])


def fold(decisions: Iterable[Decision]) -> Rollout | None:
    """The state the decisions of one rollout add up to (None without its ``start``)."""
    rows = [d for d in decisions if d.action in _RANK]
    starts = [d for d in rows if d.action == "start"]
    if not starts:
        return None
    start = min(starts, key=lambda d: d.timestamp)
    # the highest-ranked decision wins; of two alike (two evaluators), the first dates it
    top = max(rows, key=lambda d: (_RANK[d.action], d.step, -d.timestamp.timestamp()))
    return Rollout(
        rollout_id=start.rollout_id, route=start.route, target=start.target, steps=start.steps,
        step=top.step, percent=top.percent, state=_STATE[top.action], interval_s=start.interval_s,
        min_calls=start.min_calls, policy=start.policy, started_at=start.timestamp,
        step_started_at=top.timestamp, reason=top.reason, baseline=start.baseline, last=top)


def current_rollouts(client: Any, database: str | None = None, route: str = "") -> dict[str, Rollout]:
    """Route -> its latest rollout (running, promoted or rolled back); only ``route`` when given."""
    by_route: dict[str, list[Decision]] = {}
    for row in _rows(client, "decisions", database, route=route):
        by_route.setdefault(row["Route"], []).append(_decision(row))
    found = {}
    for name, decisions in by_route.items():
        rollout = fold(decisions)
        if rollout is not None:
            found[name] = rollout
    return found


def history(client: Any, route: str, database: str | None = None, limit: int = HISTORY_LIMIT) -> list[Decision]:
    """The decisions about ``route``'s rollouts, oldest first (the latest ``limit``)."""
    return [_decision(row) for row in reversed(_rows(client, "history", database, route=route, limit=limit))]


# -- the arms' numbers -----------------------------------------------------------------------

def _number(value: Any) -> float:
    """A ClickHouse aggregate as a float; the NaN of an empty or one-row average/variance is 0."""
    number = float(value or 0)
    return 0.0 if math.isnan(number) or math.isinf(number) else number


def arm_stats(client: Any, rollout: Rollout, since: dt.datetime, *, until: dt.datetime | None = None,
              baseline_since: dt.datetime | None = None,
              database: str | None = None) -> tuple[ArmNumbers, ArmNumbers]:
    """(canary, baseline) numbers of ``rollout``'s calls from ``since`` (the baseline's from
    ``baseline_since`` when given) to ``until`` (default now): calls, errors (StatusCode Error), p95 latency,
    calls slower than the baseline's p95 (in both arms: the baseline's own is about 5%), cost per priced call, calls with a safety
    finding, and the numeric scores of their calls."""
    params = {"rollout_id": rollout.rollout_id, "canary_since": millis(since),
              "baseline_since": millis(baseline_since or since), "until": millis(until or dt.datetime.now(dt.UTC))}
    arms: dict[str, dict[str, Any]] = {v: {} for v in VARIANTS}
    for row in _rows(client, "arm_calls", database, **params):
        if row["variant"] in arms:
            arms[row["variant"]].update(row)
    for row in _rows(client, "arm_scores", database, **params):
        if row["variant"] in arms:
            arms[row["variant"]].update(row)
    numbers = []
    for variant in VARIANTS:
        row = arms[variant]
        numbers.append(ArmNumbers(
            calls=int(row.get("calls", 0)), errors=int(row.get("errors", 0)), p95_ms=_number(row.get("p95_ms")),
            over_baseline_p95=int(row.get("over_baseline_p95", 0)),  # the baseline's own: about 5%
            cost_n=int(row.get("cost_n", 0)), cost_mean=_number(row.get("cost_mean")),
            cost_var=_number(row.get("cost_var")), score_n=int(row.get("score_n", 0)),
            score_mean=_number(row.get("score_mean")), score_var=_number(row.get("score_var")),
            flagged=int(row.get("flagged", 0))))
    return numbers[0], numbers[1]
