"""Recall and false alerts of the detectors against known injected anomalies.

An injected anomaly counts as caught when an anomaly row of the expected detector and
entity overlaps its time span (extended by ``grace`` after its end, since a window that
ends later still contains it). An anomaly row that overlaps no injected anomaly at all
(any kind, any entity: one incident can legitimately trip a neighbour detector) is a
false alert.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from genops.collectors.anomaly import queries
from genops.collectors.anomaly.synthetic import Injection


@dataclass
class DetectorScore:
    injected: int = 0
    caught: int = 0
    alerts: int = 0
    false_alerts: int = 0

    @property
    def recall(self) -> float | None:
        return self.caught / self.injected if self.injected else None


@dataclass
class Scorecard:
    days: float
    detectors: dict[str, DetectorScore] = field(default_factory=dict)
    missed: list[Injection] = field(default_factory=list)
    false: list[tuple[str, str, dt.datetime, dt.datetime]] = field(default_factory=list)

    def false_per_day(self, detector: str) -> float:
        return self.detectors[detector].false_alerts / self.days

    def as_dict(self) -> dict[str, Any]:
        return {name: {"injected": s.injected, "caught": s.caught, "recall": s.recall, "alerts": s.alerts,
                       "false_alerts": s.false_alerts, "false_per_day": round(s.false_alerts / self.days, 3)}
                for name, s in sorted(self.detectors.items())}


def anomaly_spans(client: Any, database: str) -> list[tuple[str, str, dt.datetime, dt.datetime]]:
    return [(r["detector"], r["entity"], queries.from_unix(r["s"]), queries.from_unix(r["e"]))
            for r in queries.rows(client, "anomaly_spans", database=database)]


def score(client: Any, database: str, injections: list[Injection], days: float, detectors: list[str],
          grace: dt.timedelta = dt.timedelta(minutes=20)) -> Scorecard:
    """The scorecard of the anomalies stored in ``database`` against ``injections``."""
    card = Scorecard(days, {name: DetectorScore() for name in detectors})
    spans = anomaly_spans(client, database)
    for detector, entity, start, end in spans:
        card.detectors.setdefault(detector, DetectorScore()).alerts += 1
        if not any(start <= inj.end + grace and end >= inj.start for inj in injections):
            card.detectors[detector].false_alerts += 1
            card.false.append((detector, entity, start, end))
    for inj in injections:
        s = card.detectors.setdefault(inj.detector, DetectorScore())
        s.injected += 1
        if any(d == inj.detector and e == inj.entity and start <= inj.end + grace and end >= inj.start
               for d, e, start, end in spans):
            s.caught += 1
        else:
            card.missed.append(inj)
    return card
