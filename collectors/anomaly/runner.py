"""One pass of the anomaly jobs, a backfill over history, and the scheduling loop.

A live pass evaluates every window end (every ``step`` minutes) since the stored watermark
up to ``now - lag`` (late spans get ``lag`` to arrive), folds the hits into anomalies with
the open ones from the table, writes what changed, then sends the alerts owed. A failing
detector is logged and skipped; the rest of the pass goes on and the watermark still moves.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from genops.collectors.anomaly import store
from genops.collectors.anomaly.alerts import AlertReport, Notifier
from genops.collectors.anomaly.detectors import Detector, PassContext, build_detectors
from genops.collectors.anomaly.episodes import Anomaly, EpisodeTracker

log = logging.getLogger("genops.collectors.anomaly")

MAX_CATCH_UP = dt.timedelta(days=1)  # after a long outage the live loop resumes from here
CHUNK = dt.timedelta(days=1)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def floor_time(t: dt.datetime, step_minutes: int) -> dt.datetime:
    """``t`` rounded down to a multiple of ``step_minutes`` since midnight."""
    minutes = t.hour * 60 + t.minute
    return t.replace(hour=0, minute=0, second=0, microsecond=0) + dt.timedelta(
        minutes=minutes - minutes % step_minutes)


@dataclass
class PassReport:
    """What one pass or backfill did."""

    evaluated_from: dt.datetime | None = None
    evaluated_to: dt.datetime | None = None
    windows: int = 0
    hits: dict[str, int] = field(default_factory=dict)
    written: int = 0
    opened: int = 0
    resolved: int = 0
    failed_detectors: list[str] = field(default_factory=list)
    alerts: AlertReport = field(default_factory=AlertReport)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": self.evaluated_from.isoformat() if self.evaluated_from else None,
            "to": self.evaluated_to.isoformat() if self.evaluated_to else None,
            "windows": self.windows, "hits": self.hits, "anomaly_rows_written": self.written,
            "opened": self.opened, "resolved": self.resolved, "failed_detectors": self.failed_detectors,
            "alerts_sent": self.alerts.sent, "resolved_sent": self.alerts.resolved_sent,
            "alerts_suppressed": self.alerts.suppressed, "alerts_failed": self.alerts.failed,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class AnomalyJobs:
    """The anomaly jobs over one ClickHouse database."""

    client: Any
    database: str
    step_minutes: int = 5
    lag: dt.timedelta = dt.timedelta(minutes=2)
    resolve_after_minutes: int = 15
    notifier: Notifier | None = None
    detectors: list[Detector] = field(default_factory=build_detectors)
    clock: Callable[[], dt.datetime] = utcnow

    # -- evaluation ----------------------------------------------------------------------
    def _evaluate(self, t_from: dt.datetime, t_to: dt.datetime, tracker: EpisodeTracker,
                  report: PassReport) -> list[Anomaly]:
        """Hits of every detector for window ends in (t_from, t_to], folded by ``tracker``."""
        ctx = PassContext(self.client, self.database, self.step_minutes)
        hits = []
        for detector in self.detectors:
            try:
                found = detector.detect(ctx, t_from, t_to)
            except Exception as exc:  # one broken detector must not stop the others
                report.failed_detectors.append(detector.name)
                message = str(exc).strip()
                log.warning("detector failed", extra={"detector": detector.name,
                                                      "error": message.splitlines()[0][:300] if message else type(exc).__name__})
                continue
            report.hits[detector.name] = report.hits.get(detector.name, 0) + len(found)
            hits.extend(found)
        step = dt.timedelta(minutes=self.step_minutes)
        times = []
        t = t_from + step
        while t <= t_to:
            times.append(t)
            t += step
        report.windows += len(times)
        opened, resolved = tracker.opened, tracker.resolved
        changed = tracker.run(times, hits)
        report.opened += tracker.opened - opened
        report.resolved += tracker.resolved - resolved
        return changed

    def evaluate_range(self, start: dt.datetime, end: dt.datetime, *, open_anomalies: list[Anomaly] | None = None,
                       report: PassReport | None = None) -> PassReport:
        """Evaluate window ends in (start, end] in day-sized chunks and write the anomalies."""
        report = report or PassReport()
        start, end = floor_time(start, self.step_minutes), floor_time(end, self.step_minutes)
        report.evaluated_from, report.evaluated_to = start, end
        tracker = EpisodeTracker(open_anomalies or (), step_minutes=self.step_minutes,
                                 resolve_after_minutes=self.resolve_after_minutes)
        chunk_from = start
        while chunk_from < end:
            chunk_to = min(end, chunk_from + CHUNK)
            changed = self._evaluate(chunk_from, chunk_to, tracker, report)
            store.write_anomalies(self.client, self.database, changed)
            report.written += len(changed)
            chunk_from = chunk_to
        return report

    # -- entry points --------------------------------------------------------------------
    def run_once(self, *, notify: bool = True) -> PassReport:
        """One live pass: evaluate since the watermark, write anomalies, send alerts."""
        started = time.perf_counter()
        now = self.clock()
        report = PassReport()
        t_to = floor_time(now - self.lag, self.step_minutes)
        watermark = store.get_watermark(self.client, self.database)
        t_from = watermark if watermark is not None else t_to - dt.timedelta(minutes=self.step_minutes)
        t_from = max(t_from, t_to - MAX_CATCH_UP)
        if t_to > t_from:
            self.evaluate_range(t_from, t_to, open_anomalies=store.open_anomalies(self.client, self.database),
                                report=report)
            store.set_watermark(self.client, self.database, t_to)
        if notify and self.notifier is not None:
            report.alerts = self.notifier.run(self.client, self.database, now)
        report.seconds = time.perf_counter() - started
        return report

    def backfill(self, start: dt.datetime, end: dt.datetime) -> PassReport:
        """Evaluate history in (start, end]; never alerts and never moves the live watermark.

        Re-running over the same range rewrites the same rows (same detector, entity and
        start), so a backfill is idempotent.
        """
        started = time.perf_counter()
        report = self.evaluate_range(start, end)
        report.seconds = time.perf_counter() - started
        return report


def loop(jobs: AnomalyJobs, interval_s: float, stop: Callable[[], bool], sleep: Callable[[float], Any] = time.sleep
         ) -> None:
    """Run ``jobs.run_once`` every ``interval_s`` until ``stop()``; a failed pass is logged and retried."""
    while not stop():
        try:
            report = jobs.run_once()
            if report.windows or report.alerts.sent or report.alerts.resolved_sent:
                log.info("anomaly pass", extra=report.as_dict())
        except Exception as exc:  # the loop must survive anything a pass throws
            log.warning("anomaly pass failed; retrying next cycle",
                        extra={"error": (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]})
        sleep(interval_s)
