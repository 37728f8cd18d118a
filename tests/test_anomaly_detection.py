"""Measured, not promised: every detector on a simulated week of traffic.

Two databases in the session's in-process chDB get the same week of realistic traffic
(daily cycle, weekend, noise, four models, four services, two dozen users, agent sessions)
from the same seed; one also gets anomalies of every kind injected at known times. The
jobs backfill both weeks, and the scorecard gives per-detector recall (target >= 0.9) and
false alerts per simulated day (target <= 1) on the clean week and outside the injected
anomalies of the other. The figures in docs/anomaly-detection.md come from this test (run with -s).
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import open_chdb

from genops.collectors.anomaly.detectors import DETECTOR_CLASSES
from genops.collectors.anomaly.runner import AnomalyJobs
from genops.collectors.anomaly.scoring import Scorecard, score
from genops.collectors.anomaly.synthetic import generate, schedule_injections
from genops.storage.migrate import migrate

pytestmark = pytest.mark.integration

START = dt.datetime(2026, 11, 2)  # a Monday: the week has a weekend
# The fixed weeks above must outlive the TTL (default 30 days), or merges drop their first days.
HISTORY_RETENTION_DAYS = 3650
DAYS = 7
CALLS_PER_MINUTE = 30
DETECTORS = [cls.name for cls in DETECTOR_CLASSES]


class Week:
    def __init__(self, client: Any, clean_db: str, injected_db: str) -> None:
        self.client = client
        self.clean_db = clean_db
        self.injected_db = injected_db
        self.injections = schedule_injections(START, DAYS)
        self.reports: dict[str, Any] = {}

    def card(self, database: str) -> Scorecard:
        injections = self.injections if database == self.injected_db else []
        return score(self.client, database, injections, DAYS, DETECTORS)


@pytest.fixture(scope="module")
def week(chdb_dir: Path) -> Iterator[Week]:
    client = open_chdb(chdb_dir)
    suffix = uuid.uuid4().hex[:8]
    w = Week(client, f"anomaly_clean_{suffix}", f"anomaly_injected_{suffix}")
    for database, injections in ((w.clean_db, []), (w.injected_db, w.injections)):
        migrate(client, database, retention_days=HISTORY_RETENTION_DAYS)
        generate(client, database, START, DAYS, calls_per_minute=CALLS_PER_MINUTE, seed=1, injections=injections)
        w.reports[database] = AnomalyJobs(client, database).backfill(START, START + dt.timedelta(days=DAYS))
    yield w
    for database in (w.clean_db, w.injected_db):
        client.command(f"DROP DATABASE IF EXISTS {database}")


def test_the_week_is_realistic_and_every_kind_is_injected(week: Week) -> None:
    rows = week.client.query(
        f"SELECT count(), uniqExact(ServiceName), uniqExact(RequestModel), uniqExact(UserId), uniqExact(SessionId) "
        f"FROM {week.clean_db}.genops_calls").result_rows[0]
    calls, services, models, users, sessions = rows
    assert calls > 100_000 and services == 4 and models == 4 and users >= 20 and sessions > 1000
    # the daily cycle: the busiest hour carries well over twice the quietest one
    hourly = [r[0] for r in week.client.query(
        f"SELECT sum(Calls) FROM {week.clean_db}.genops_rollup_model_1m GROUP BY toHour(Minute)").result_rows]
    assert max(hourly) > 2.5 * min(hourly)
    per_detector = {name: sum(1 for i in week.injections if i.detector == name) for name in DETECTORS}
    assert all(n >= 10 for n in per_detector.values()), per_detector


def test_recall_per_detector_is_at_least_0_9(week: Week) -> None:
    card = week.card(week.injected_db)
    _print_card("injected week", card)
    for name in DETECTORS:
        s = card.detectors[name]
        missed = [(m.kind, m.entity, str(m.start)) for m in card.missed if m.detector == name]
        assert s.recall is not None and s.recall >= 0.9, f"{name}: recall {s.caught}/{s.injected}, missed {missed}"


def test_false_alerts_per_simulated_day_on_clean_traffic_are_at_most_1(week: Week) -> None:
    card = week.card(week.clean_db)
    _print_card("clean week", card)
    for name in DETECTORS:
        assert card.false_per_day(name) <= 1.0, (name, [f for f in card.false if f[0] == name])


def test_false_alerts_outside_injected_anomalies_are_at_most_1_per_day(week: Week) -> None:
    card = week.card(week.injected_db)
    for name in DETECTORS:
        assert card.false_per_day(name) <= 1.0, (name, [f for f in card.false if f[0] == name])


def test_an_anomaly_is_one_row_not_one_per_window(week: Week) -> None:
    db = week.injected_db
    rows = week.client.query(
        f"SELECT detector, entity, toUnixTimestamp(`start`), toUnixTimestamp(`end`), status, observed, expected, score "
        f"FROM {db}.genops_anomalies FINAL ORDER BY detector, entity, `start`").result_rows
    assert rows
    windows = sum(week.reports[db].hits.values())
    assert len(rows) < windows / 2  # consecutive firing windows folded into one row each
    by_key: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for detector, entity, start, end, status, _observed, _expected, score_ in rows:
        assert end >= start and status in ("open", "resolved") and score_ > 0
        by_key.setdefault((detector, entity), []).append((start, end))
    for spans in by_key.values():  # episodes of one key never overlap
        for (_, e1), (s2, _) in itertools.pairwise(spans):
            assert s2 > e1
    latency = [r for r in rows if r[0] == "latency_p95"]
    assert all(r[5] > r[6] * 1.5 for r in latency)  # observed p95 well above the expected one


def test_live_passes_read_slices_but_find_the_same(week: Week) -> None:
    from genops.collectors.anomaly.detectors import CostSurge, PassContext, TrafficDrop

    compared = 0
    for detector in (CostSurge(), TrafficDrop()):
        for hours in range(100, 7 * 24, 11):
            t = START + dt.timedelta(hours=hours)
            end = t + dt.timedelta(minutes=30)
            assert detector.seasonal_slices(PassContext(week.client, week.injected_db), t, end)
            sliced = detector.detect(PassContext(week.client, week.injected_db), t, end)
            detector.seasonal_slices = lambda *a: None  # type: ignore[method-assign]  # read the whole week
            full = detector.detect(PassContext(week.client, week.injected_db), t, end)
            del detector.seasonal_slices
            assert [(h.entity, h.t, h.observed, h.expected) for h in sliced] == \
                   [(h.entity, h.t, h.observed, h.expected) for h in full]
            compared += len(full)
    assert compared > 0  # some of those passes did fire


def _print_card(title: str, card: Scorecard) -> None:
    print(f"\n{title}: detector | injected | caught | recall | alerts | false alerts | false per day")
    for name, s in card.as_dict().items():
        recall = "-" if s["recall"] is None else f"{s['recall']:.2f}"
        print(f"  {name:18s} | {s['injected']:3d} | {s['caught']:3d} | {recall} | {s['alerts']:4d} | "
              f"{s['false_alerts']:3d} | {s['false_per_day']:.2f}")
