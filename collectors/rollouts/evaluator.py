"""The rollout evaluator: one pass over the running canary rollouts, each rolled back, advanced,
promoted or left to wait, from the gates (gates.py) over the calls in ClickHouse.

For each running rollout:

- its canary calls of the current step are compared with the baseline calls of the same time
  (a step of 100% is never run: passing the step before it promotes, since at 100% there would be
  no baseline of the same time to compare with);
- any gate failing rolls it back at once, even before the step's interval is over. Looking
  every pass instead of once per step multiplies the chances of a false failure, so before the
  interval is over a gate fails only at ``alpha`` divided by the passes the step lasts
  (Bonferroni over the looks; ``check_interval_s``); at and after it, at ``alpha``;
- once the step's interval is over, with at least ``min_calls`` canary calls and every required
  gate passing, it moves to the next step, and after the last one below 100% it is promoted;
- otherwise it waits and nothing is written.

Each decision is one row in ``genops_rollouts`` (storage/rollouts.py), logged, and a rollback
posts to the alert webhook. Passes are idempotent: two evaluators (two proxies on one store)
reading the same calls make the same decision, the store's fold keeps one state whatever the
order of their rows, and each re-reads the rollout just before writing so a decision the other
already wrote is not written again.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from genops.collectors.anomaly.alerts import COLORS
from genops.collectors.rollouts.control import decision_for
from genops.collectors.rollouts.gates import ArmStats, GatePolicy, GateResult, evaluate_gates, verdict
from genops.storage.rollouts import Decision, Rollout, arm_stats, current_rollouts, iso, record_decision, utc

log = logging.getLogger("genops.collectors.rollouts")

Notify = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Assessment:
    """A running rollout's arms and gates now, and what they call for."""

    rollout: Rollout
    canary: ArmStats
    baseline: ArmStats
    results: list[GateResult]
    verdict: str  # pass | fail | wait (gates.verdict)
    due: bool  # the step's interval is over
    action: str | None  # rollback | advance | promote, or None (wait)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the admin API's ``live`` field)."""
        return {"canary": self.canary._asdict(), "baseline": self.baseline._asdict(),
                "gates": [r._asdict() for r in self.results], "verdict": self.verdict, "due": self.due,
                "next": self.action or "wait",
                "step_ends_at": iso(self.rollout.step_started_at + dt.timedelta(seconds=self.rollout.interval_s))}


def policy_of(rollout: Rollout) -> GatePolicy:
    """The gates' policy stored with the rollout (unknown keys ignored, missing ones default),
    with the rollout's own minimum sample."""
    known = {k: v for k, v in rollout.policy.items() if k in GatePolicy._fields}
    known["min_calls"] = rollout.min_calls
    return GatePolicy()._replace(**known)


def windows(rollout: Rollout) -> tuple[dt.datetime, dt.datetime]:
    """(canary since, baseline since): the current step; at a 100% step the baseline's whole rollout."""
    baseline_since = rollout.started_at if rollout.percent >= 100 else rollout.step_started_at
    return rollout.step_started_at, baseline_since


def assess(client: Any, rollout: Rollout, now: dt.datetime, *, check_interval_s: float | None = None,
           database: str | None = None) -> Assessment:
    """Read ``rollout``'s arms up to ``now``, run the gates, and say what they call for."""
    now = utc(now)
    canary_since, baseline_since = windows(rollout)
    canary_numbers, baseline_numbers = arm_stats(client, rollout, canary_since, until=now,
                                                 baseline_since=baseline_since, database=database)
    canary, baseline = (ArmStats(**{**numbers._asdict(), "p95_ms": numbers.p95_ms if numbers.calls else None})
                        for numbers in (canary_numbers, baseline_numbers))
    policy = policy_of(rollout)
    due = now >= rollout.step_started_at + dt.timedelta(seconds=rollout.interval_s)
    if not due and check_interval_s:
        looks = max(1.0, rollout.interval_s / check_interval_s)
        policy = policy._replace(alpha=policy.alpha / looks)
    results = evaluate_gates(canary, baseline, policy)
    outcome = verdict(results)
    action = None
    if outcome == "fail" and canary.calls >= rollout.min_calls:
        action = "rollback"
    elif outcome == "pass" and due and canary.calls >= rollout.min_calls:
        action = "promote" if rollout.promotes_next else "advance"
    return Assessment(rollout, canary, baseline, results, outcome, due, action)


def _reason(assessment: Assessment) -> str:
    failed = [r for r in assessment.results if r.verdict == "fail"]
    if assessment.action == "rollback":
        return f"{failed[0].name} failed: {failed[0].detail}" + (
            f" (also failed: {', '.join(r.name for r in failed[1:])})" if failed[1:] else "")
    rollout = assessment.rollout
    passed = ", ".join(r.name for r in assessment.results if r.verdict == "pass")
    if assessment.action == "promote":
        return f"all gates passed at the last step ({passed}; {assessment.canary.calls} canary calls): promoted"
    return (f"all gates passed at {rollout.percent}% ({passed}; {assessment.canary.calls} canary calls): "
            f"on to {rollout.steps[rollout.step + 1]}%")


def rollback_alert(assessment: Assessment, decision: Decision) -> dict[str, Any]:
    """The Slack incoming-webhook JSON of an automatic rollback (the anomaly alerts' layout): the
    route, the canary, and each failed gate with its numbers."""
    rollout = assessment.rollout
    failed = [r for r in assessment.results if r.verdict == "fail"]
    gate_lines = "; ".join(f"{r.name}: {r.detail}" for r in failed)
    summary = (f":rewind: *ROLLED BACK* canary `{rollout.target}` on route *{rollout.route}* at {rollout.percent}% "
               f"(step {rollout.step + 1} of {len(rollout.steps)}): {gate_lines}")
    fields = [{"title": "route", "value": rollout.route, "short": True},
              {"title": "canary", "value": rollout.target, "short": True},
              {"title": "step", "value": f"{rollout.step + 1} of {len(rollout.steps)} ({rollout.percent}%)", "short": True},
              {"title": "calls", "value": f"canary {assessment.canary.calls}, baseline {assessment.baseline.calls}",
               "short": True}]
    for result in failed:
        fields.append({"title": f"gate {result.name}", "value": result.detail, "short": False})
    return {
        "text": summary.replace("*", "").replace("`", ""),
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": summary}}],
        "attachments": [{"color": COLORS["critical"], "fallback": summary, "fields": fields,
                         "footer": f"GenOps rollouts ({decision.rollout_id})",
                         "ts": int(decision.timestamp.timestamp())}],
    }


def _unchanged(client: Any, rollout: Rollout, database: str | None) -> bool:
    """Whether ``rollout`` is still where it was read (no other evaluator or user moved it since)."""
    now = current_rollouts(client, database, rollout.route).get(rollout.route)
    return (now is not None and now.rollout_id == rollout.rollout_id and now.state == rollout.state
            and now.step == rollout.step)


def evaluate_once(client: Any, now: dt.datetime, notify: Notify | None = None, *, database: str | None = None,
                  check_interval_s: float | None = None, host: str | None = None,
                  rollouts: Mapping[str, Rollout] | None = None) -> list[Decision]:
    """One pass over the running rollouts; returns the decisions written (waits write nothing).

    ``notify`` gets the webhook body of each rollback (None: no alerts). A rollout whose
    evaluation fails is logged and skipped; the others go on.
    """
    now = utc(now)
    host = host or socket.gethostname()
    if rollouts is None:
        rollouts = current_rollouts(client, database)
    decisions = []
    for rollout in rollouts.values():
        if rollout.state != "running":
            continue
        try:
            assessment = assess(client, rollout, now, check_interval_s=check_interval_s, database=database)
            if assessment.action is None:
                log.debug("rollout waits", extra={"route": rollout.route, "rollout_id": rollout.rollout_id,
                                                  "verdict": assessment.verdict, "canary_calls": assessment.canary.calls})
                continue
            if not _unchanged(client, rollout, database):
                continue
            decision = decision_for(rollout, assessment.action, now=now, actor="auto", host=host,
                                    reason=_reason(assessment), gates=[r._asdict() for r in assessment.results])
            record_decision(client, decision, database)
        except Exception as exc:  # noqa: BLE001 - one rollout's failure must not stop the others
            log.warning("rollout evaluation failed", extra={"route": rollout.route, "rollout_id": rollout.rollout_id,
                                                             "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            continue
        decisions.append(decision)
        log.info("rollout decision", extra={
            "route": rollout.route, "rollout_id": rollout.rollout_id, "action": decision.action, "step": decision.step,
            "percent": decision.percent, "target": rollout.target, "actor": "auto", "reason": decision.reason,
            "canary_calls": assessment.canary.calls, "baseline_calls": assessment.baseline.calls})
        if decision.action == "rollback" and notify is not None:
            try:
                notify(rollback_alert(assessment, decision))
            except Exception as exc:  # noqa: BLE001 - the decision stands; the alert is best effort
                log.warning("rollback alert failed", extra={"route": rollout.route, "rollout_id": rollout.rollout_id,
                                                            "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
    return decisions
