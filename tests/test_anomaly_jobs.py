"""The anomaly jobs' mechanics on real chDB: rollups, the live loop folding an ongoing anomaly
into one updated-then-resolved row, webhook alerts with cooldown and a resolved message,
failure isolation, idempotent backfill and the Grafana annotation query."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import random
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from conftest import free_port, open_chdb

from genops.collectors.anomaly import queries, store
from genops.collectors.anomaly.alerts import Notifier, payload
from genops.collectors.anomaly.detectors import Detector, PassContext
from genops.collectors.anomaly.detectors.latency import LatencyRegression
from genops.collectors.anomaly.episodes import Anomaly
from genops.collectors.anomaly.runner import AnomalyJobs, loop
from genops.collectors.anomaly.synthetic import MODELS, Injection, generate
from genops.storage.migrate import migrate
from genops.storage.rows import insert_rows

pytestmark = pytest.mark.integration

START = dt.datetime(2026, 11, 2)
# The fixed weeks above must outlive the TTL (default 30 days), or merges drop their first days.
HISTORY_RETENTION_DAYS = 3650
MINI = MODELS.index(next(m for m in MODELS if m.name == "gpt-4o-mini"))
FIRST = Injection("latency", START + dt.timedelta(hours=20), 30, str(MINI), "latency_p95", "openai/gpt-4o-mini")
SECOND = Injection("latency", START + dt.timedelta(hours=21, minutes=30), 25, str(MINI), "latency_p95",
                   "openai/gpt-4o-mini")


@pytest.fixture(scope="module")
def client(chdb_dir: Path) -> Any:
    return open_chdb(chdb_dir)


@pytest.fixture(scope="module")
def day_db(client: Any) -> Iterator[str]:
    """A day and a half of traffic with two latency regressions of gpt-4o-mini at known times."""
    database = "anomaly_jobs_" + uuid.uuid4().hex[:8]
    migrate(client, database, retention_days=HISTORY_RETENTION_DAYS)
    generate(client, database, START, 1.5, calls_per_minute=30, seed=3, injections=[FIRST, SECOND])
    yield database
    client.command(f"DROP DATABASE IF EXISTS {database}")


class Webhook:
    """A loopback HTTP server that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks/slack"
        self.loop = asyncio.new_event_loop()

    async def handle(self, request: web.Request) -> web.Response:
        self.payloads.append(orjson.loads(await request.read()))
        return web.Response(text="ok")

    def start(self) -> None:
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            app = web.Application()
            app.router.add_post("/hooks/slack", self.handle)
            self.runner = web.AppRunner(app, access_log=None)
            self.loop.run_until_complete(self.runner.setup())
            self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
            started.set()
            self.loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        assert started.wait(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture()
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    hook.start()
    yield hook
    hook.stop()


def test_rollups_agree_with_the_raw_calls(client: Any, day_db: str) -> None:
    raw = client.query(
        f"SELECT count(), countIf(StatusCode = 'Error' AND HttpStatus != 429), countIf(HttpStatus = 429), "
        f"round(sum(ifNull(CostUsd, 0)), 6), sum(InputTokens + OutputTokens), "
        f"quantileExactIf(0.95)(Duration / 1e6, StatusCode != 'Error') "
        f"FROM {day_db}.genops_calls WHERE RequestModel = 'gpt-4o-mini'").result_rows[0]
    rolled = client.query(
        f"SELECT sum(Calls), sum(Errors), sum(RateLimited), round(sum(CostUsd), 6), sum(InputTokens + OutputTokens), "
        f"quantilesTDigestMerge(0.5, 0.95)(LatencyState)[2] "
        f"FROM {day_db}.genops_rollup_model_1m WHERE RequestModel = 'gpt-4o-mini'").result_rows[0]
    assert raw[:5] == rolled[:5]
    assert abs(rolled[5] - raw[5]) / raw[5] < 0.05  # t-digest p95 within 5% of the exact one
    dims = dict(client.query(
        f"SELECT Dimension, sum(Calls) FROM {day_db}.genops_rollup_dim_1m GROUP BY Dimension").result_rows)
    total = client.query(f"SELECT count() FROM {day_db}.genops_calls").result_rows[0][0]
    assert dims["service"] == total and dims["user"] == total and dims["property.team"] == total
    sessions = client.query(
        f"SELECT sum(Calls) FROM {day_db}.genops_rollup_session_1m").result_rows[0][0]
    assert sessions == client.query(f"SELECT count() FROM {day_db}.genops_calls WHERE SessionId != ''").result_rows[0][0]


def test_response_model_mismatch_ignores_dated_snapshots(client: Any) -> None:
    database = "anomaly_mismatch_" + uuid.uuid4().hex[:8]
    migrate(client, database, retention_days=HISTORY_RETENTION_DAYS)
    ts = int(dt.datetime(2026, 11, 2, 12, tzinfo=dt.UTC).timestamp()) * 10**9
    pairs = [("gpt-4o", "gpt-4o-2024-08-06"), ("gpt-4o", "gpt-4o-mini"), ("claude-sonnet-4", "claude-sonnet-4-20250514"),
             ("gemini-2.5-flash", "models/gemini-2.5-flash-001"), ("gemini-2.5-flash", "gemini-2.5-pro"),
             ("gpt-4o", "gpt-4o")]
    rows = [[ts, uuid.uuid4().hex, uuid.uuid4().hex[:16], "", "", f"chat {req}", "Client", "svc", {}, "t", "",
             {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "p", "gen_ai.request.model": req,
              "gen_ai.response.model": resp}, 1000, "Unset", "", [], [], [], [], [], [], []] for req, resp in pairs]
    insert_rows(client, database, rows)
    got = dict(client.query(f"SELECT RequestModel, sum(ModelMismatches) FROM {database}.genops_rollup_model_1m "
                            f"GROUP BY RequestModel").result_rows)
    assert got == {"gpt-4o": 1, "claude-sonnet-4": 0, "gemini-2.5-flash": 1}
    client.command(f"DROP DATABASE {database}")


def _key_rows(client: Any, database: str) -> list[tuple]:
    return client.query(
        f"SELECT toUnixTimestamp(`start`), toUnixTimestamp(`end`), status, toUnixTimestamp(notified_at), "
        f"toUnixTimestamp(resolved_notified_at), observed, expected FROM {database}.genops_anomalies "
        f"FINAL WHERE detector = 'latency_p95' AND entity = 'openai/gpt-4o-mini' "
        f"ORDER BY `start`").result_rows


def test_live_loop_keeps_one_row_per_anomaly_and_alerts_once_with_cooldown(client: Any, day_db: str,
                                                                            webhook: Webhook) -> None:
    database = "anomaly_live_" + uuid.uuid4().hex[:8]
    migrate(client, database, retention_days=HISTORY_RETENTION_DAYS)
    # the same traffic, copied so this test's anomaly rows start from nothing
    client.command(f"INSERT INTO {database}.otel_traces SELECT * FROM {day_db}.otel_traces")
    now = [START + dt.timedelta(hours=19)]
    notifier = Notifier(webhook.url, cooldown=dt.timedelta(hours=3))
    jobs = AnomalyJobs(client, database, detectors=[LatencyRegression()], notifier=notifier,
                       lag=dt.timedelta(0), clock=lambda: now[0])
    store.set_watermark(client, database, now[0])
    snapshots = []
    reports = []
    while now[0] < START + dt.timedelta(hours=23):
        now[0] += dt.timedelta(minutes=5)
        reports.append(jobs.run_once())
        snapshots.append(_key_rows(client, database))
    # the first regression: opened once, then updated in place (same start, later end), then resolved
    first_seen = next(i for i, rows in enumerate(snapshots) if rows)
    opened = snapshots[first_seen][0]
    assert opened[2] == "open" and queries.from_unix(opened[0]) >= FIRST.start - dt.timedelta(minutes=5)
    later = [rows[0] for rows in snapshots[first_seen:] if rows and rows[0][0] == opened[0]]
    assert any(r[1] > opened[1] for r in later)  # its end moved on while it lasted
    assert later[-1][2] == "resolved"
    assert queries.from_unix(later[-1][1]) <= FIRST.end + dt.timedelta(minutes=20)
    final = _key_rows(client, database)
    assert len(final) == 2 and all(r[2] == "resolved" for r in final)  # two incidents, two rows
    # alerts: one for the first incident and its resolved message; the second falls in the cooldown
    texts = [p["text"] for p in webhook.payloads]
    assert len(texts) == 2, texts
    assert "latency_p95" in texts[0] and "openai/gpt-4o-mini" in texts[0] and "RESOLVED" not in texts[0]
    assert texts[1].startswith(":white_check_mark: RESOLVED") and "openai/gpt-4o-mini" in texts[1]
    assert final[0][3] > 0 and final[0][4] > 0  # notified, then resolved-notified
    assert final[1][3] == 0 and final[1][4] == 0  # suppressed by the cooldown
    assert sum(r.alerts.suppressed for r in reports) >= 1
    slack = webhook.payloads[0]
    assert slack["blocks"][0]["type"] == "section" and slack["blocks"][0]["text"]["type"] == "mrkdwn"
    assert slack["attachments"][0]["color"].startswith("#")
    assert {f["title"] for f in slack["attachments"][0]["fields"]} >= {"detector", "entity", "observed", "expected"}
    client.command(f"DROP DATABASE {database}")


def test_alert_after_cooldown_and_failed_posts_are_retried(client: Any, webhook: Webhook) -> None:
    database = "anomaly_alerts_" + uuid.uuid4().hex[:8]
    migrate(client, database, retention_days=HISTORY_RETENTION_DAYS)
    t0 = dt.datetime(2026, 11, 2, 12)
    first = Anomaly("error_rate", "openai/gpt-4o", t0, t0 + dt.timedelta(minutes=10), 0.3, 0.01, 9.0, "critical", "open")
    store.write_anomalies(client, database, [first])
    dead = Notifier(f"http://127.0.0.1:{free_port()}/nothing", cooldown=dt.timedelta(minutes=30))
    assert dead.run(client, database, t0 + dt.timedelta(minutes=11)).failed == 1  # nobody listening
    live = Notifier(webhook.url, cooldown=dt.timedelta(minutes=30))
    assert live.run(client, database, t0 + dt.timedelta(minutes=12)).sent == 1  # retried on the next pass
    assert live.run(client, database, t0 + dt.timedelta(minutes=13)).sent == 0  # and sent only once
    # a new incident on the same key after the cooldown alerts again
    second = Anomaly("error_rate", "openai/gpt-4o", t0 + dt.timedelta(hours=1), t0 + dt.timedelta(hours=1, minutes=5),
                     0.2, 0.01, 6.0, "warning", "open")
    store.write_anomalies(client, database, [second])
    assert live.run(client, database, t0 + dt.timedelta(hours=1, minutes=6)).sent == 1
    assert len(webhook.payloads) == 2
    # warnings below the minimum severity are not sent
    third = Anomaly("cost_surge", "user=u1", t0 + dt.timedelta(hours=2), t0 + dt.timedelta(hours=2, minutes=5),
                    5.0, 1.0, 7.0, "warning", "open")
    store.write_anomalies(client, database, [third])
    critical_only = Notifier(webhook.url, min_severity="critical")
    assert critical_only.run(client, database, t0 + dt.timedelta(hours=2, minutes=6)).sent == 0
    client.command(f"DROP DATABASE {database}")


def test_resolved_payload_reads_well() -> None:
    t0 = dt.datetime(2026, 11, 2, 12)
    a = Anomaly("cost_surge", "user=alice", t0, t0 + dt.timedelta(minutes=40), 4.2, 0.5, 12.0, "critical", "resolved",
                "cost_usd", "USD")
    body = payload(a, resolved=True)
    assert "RESOLVED" in body["text"] and "$4.2000" in body["text"] and "12:00" in body["text"] and "12:40" in body["text"]
    opened = payload(a)
    assert opened["text"].startswith(":rotating_light: CRITICAL cost_surge on user=alice")


class Broken(Detector):
    name = "broken"

    def detect(self, ctx: PassContext, t_from: dt.datetime, t_to: dt.datetime) -> list:
        raise RuntimeError("boom")


def test_a_failing_detector_does_not_stop_the_others(client: Any, day_db: str) -> None:
    jobs = AnomalyJobs(client, day_db, detectors=[Broken(), LatencyRegression()])
    report = jobs.backfill(FIRST.start - dt.timedelta(hours=1), FIRST.end + dt.timedelta(minutes=30))
    assert report.failed_detectors == ["broken"]
    assert report.hits["latency_p95"] > 0 and report.written > 0


def test_backfill_is_idempotent(client: Any, day_db: str) -> None:
    jobs = AnomalyJobs(client, day_db)
    start, end = START + dt.timedelta(hours=6), START + dt.timedelta(hours=30)
    query = f"SELECT detector, entity, `start`, `end`, status, score FROM {day_db}.genops_anomalies FINAL ORDER BY ALL"
    jobs.backfill(start, end)
    once = client.query(query).result_rows
    jobs.backfill(start, end)
    assert client.query(query).result_rows == once
    assert ("latency_p95", "openai/gpt-4o-mini") in {(r[0], r[1]) for r in once}
    assert store.get_watermark(client, day_db) is None  # backfills never move the live watermark


def test_the_loop_survives_failing_passes() -> None:
    calls = []

    class Flaky:
        def run_once(self) -> Any:
            calls.append(1)
            if len(calls) < 3:
                raise RuntimeError("ClickHouse went away")
            raise KeyboardInterrupt  # leave the loop

    with pytest.raises(KeyboardInterrupt):
        loop(Flaky(), 0, stop=lambda: False, sleep=lambda s: None)  # type: ignore[arg-type]
    assert len(calls) == 3


async def test_the_serve_background_task_logs_failures_and_keeps_going(caplog: pytest.LogCaptureFixture) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from genops.collectors.anomaly.service import run_forever as _loop

    passes = []

    class Failing:
        def run_once(self) -> Any:
            passes.append(threading.current_thread().name)
            raise RuntimeError("store unavailable")

    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genops-jobs")
    task = asyncio.create_task(_loop(Failing(), executor, 0.01))  # type: ignore[arg-type]
    while len(passes) < 3:
        await asyncio.sleep(0.01)
    assert not task.done()  # still running after failures
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    executor.shutdown()
    assert all(name.startswith("genops-jobs") for name in passes)  # never on the event loop's thread
    assert "anomaly pass failed" in caplog.text


def test_annotation_query_runs_with_grafana_macros_expanded(client: Any, day_db: str, chdb_dir: Path) -> None:
    AnomalyJobs(client, day_db, detectors=[LatencyRegression()]).backfill(FIRST.start - dt.timedelta(hours=2),
                                                                         SECOND.end + dt.timedelta(hours=1))
    frm, to = queries.unix(START), queries.unix(START + dt.timedelta(days=2))
    sql = queries.load("annotations").replace("$__fromTime", f"toDateTime({frm})").replace("$__toTime", f"toDateTime({to})")
    result = open_chdb(chdb_dir, day_db).query(sql)  # unqualified names, as with Grafana's default database
    assert list(result.column_names) == ["time", "timeEnd", "text", "tags"]
    rows = result.result_rows
    assert any("latency_p95" in text and "openai/gpt-4o-mini" in text for _, _, text, _ in rows)
    assert all(end >= start for start, end, _, _ in rows)
    assert all("latency_p95" in tags or len(tags) == 3 for _, _, _, tags in rows)


def test_stl_decides_which_entities_get_a_seasonal_baseline(client: Any) -> None:
    from genops.collectors.anomaly.detectors.traffic_drop import TrafficDrop

    database = "anomaly_stl_" + uuid.uuid4().hex[:8]
    migrate(client, database, retention_days=HISTORY_RETENTION_DAYS)
    rng = random.Random(5)
    end = dt.datetime(2026, 11, 9)
    rows = []
    for minute in range(0, 7 * 24 * 60, 10):
        t = end - dt.timedelta(days=7) + dt.timedelta(minutes=minute)
        hour = t.hour + t.minute / 60
        cyclic = 20 * (1.2 + math.cos(2 * math.pi * (hour - 15) / 24))
        for value, calls in (("cyclic", cyclic), ("flat", 20.0)):
            rows.append([t.replace(tzinfo=dt.UTC), "service", value, max(0, int(rng.gauss(calls, 3))), 0, 0, 0.0, 0])
        if minute >= 5 * 24 * 60:  # a newcomer: two days of history only
            rows.append([t.replace(tzinfo=dt.UTC), "service", "young", max(0, int(rng.gauss(cyclic, 3))), 0, 0, 0.0, 0])
    client.insert(f"{database}.genops_rollup_dim_1m", rows,
                  column_names=["Minute", "Dimension", "Value", "Calls", "Errors", "Tokens", "CostUsd", "SafetyFindings"])
    strength = {r["entity"]: r["strength"] for r in queries.rows(
        client, "seasonality", database=database, from_ts=end - dt.timedelta(days=7), to_ts=end, hours=168,
        dimension_filter="Dimension = 'service'")}
    assert strength["service=cyclic"] > 0.8 > 0.3 > strength["service=flat"]
    ctx = PassContext(client, database)
    assert TrafficDrop().seasonal_entities(ctx, end, "Dimension = 'service'") == {"service=cyclic"}
    client.command(f"DROP DATABASE {database}")
