"""Hits to anomalies: consecutive hits of one (detector, entity) form ONE anomaly row that is
updated while it lasts and closed (``resolved``) after a quiet spell.

The anomaly starts one step before its first firing window's end, its ``end`` is the last
window end that fired, and it resolves when ``resolve_after_minutes`` pass with no hit.
``observed``/``expected``/``score`` hold the peak (highest score) so far; ``details``
also keeps the latest values and the number of firing windows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from genops.collectors.anomaly.detectors.base import Hit

EPOCH = dt.datetime(1970, 1, 1)
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


@dataclass
class Anomaly:
    """One row of ``genops_anomalies`` (its latest version)."""

    detector: str
    entity: str
    start: dt.datetime
    end: dt.datetime
    observed: float
    expected: float
    score: float
    severity: str
    status: str  # open | resolved
    metric: str = ""
    unit: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    notified_at: dt.datetime = EPOCH
    resolved_notified_at: dt.datetime = EPOCH

    @property
    def key(self) -> tuple[str, str]:
        return self.detector, self.entity


class EpisodeTracker:
    """Folds hits, evaluation point by evaluation point, into open and resolved anomalies."""

    def __init__(self, open_anomalies: Iterable[Anomaly] = (), *, step_minutes: int = 5,
                 resolve_after_minutes: int = 15) -> None:
        self.open: dict[tuple[str, str], Anomaly] = {a.key: a for a in open_anomalies if a.status == "open"}
        self.step = dt.timedelta(minutes=step_minutes)
        self.resolve_after = dt.timedelta(minutes=resolve_after_minutes)
        self.changed: dict[tuple[str, str, dt.datetime], Anomaly] = {}
        self.opened = 0
        self.resolved = 0

    def _touch(self, anomaly: Anomaly) -> None:
        self.changed[(anomaly.detector, anomaly.entity, anomaly.start)] = anomaly

    def advance(self, t: dt.datetime, hits: Iterable[Hit]) -> None:
        """Apply the hits of evaluation point ``t`` (all detectors), then resolve stale anomalies."""
        for hit in hits:
            key = (hit.detector, hit.entity)
            anomaly = self.open.get(key)
            if anomaly is None:
                anomaly = Anomaly(hit.detector, hit.entity, t - self.step, t, hit.observed, hit.expected,
                                  hit.score, hit.severity, "open", hit.metric, hit.unit,
                                  {**hit.details, "windows": 0})
                self.open[key] = anomaly
                self.opened += 1
            elif hit.score > anomaly.score:
                anomaly.observed, anomaly.expected, anomaly.score = hit.observed, hit.expected, hit.score
                anomaly.metric, anomaly.unit = hit.metric, hit.unit
            if SEVERITY_RANK.get(hit.severity, 0) > SEVERITY_RANK.get(anomaly.severity, 0):
                anomaly.severity = hit.severity
            anomaly.end = max(anomaly.end, t)
            anomaly.details.update(hit.details)
            anomaly.details["windows"] = int(anomaly.details.get("windows", 0)) + 1
            anomaly.details["last"] = {"observed": hit.observed, "expected": hit.expected, "score": hit.score,
                                       "metric": hit.metric}
            self._touch(anomaly)
        for key, anomaly in list(self.open.items()):
            if t - anomaly.end >= self.resolve_after:
                anomaly.status = "resolved"
                del self.open[key]
                self.resolved += 1
                self._touch(anomaly)

    def run(self, times: Iterable[dt.datetime], hits: Iterable[Hit]) -> list[Anomaly]:
        """Advance through every evaluation time in order; returns the anomalies that changed."""
        by_time: dict[dt.datetime, list[Hit]] = {}
        for hit in hits:
            by_time.setdefault(hit.t, []).append(hit)
        for t in sorted(set(times) | set(by_time)):
            self.advance(t, by_time.get(t, ()))
        return self.take_changed()

    def take_changed(self) -> list[Anomaly]:
        changed = list(self.changed.values())
        self.changed = {}
        return changed
