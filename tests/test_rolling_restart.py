"""SIGHUP to ``genops serve --workers 2`` under load: a rolling restart drops no call (runtime/workers.py),
and what the supervisor reports of replaced workers (runtime/worker_report.py).

The load, the checks and the one-worker case are in tests/test_graceful_drain.py; this file
holds the two-worker case apart so the two files run in parallel (each starts real processes).
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from conftest import FakeUpstream, serve_in_thread
from test_graceful_drain import rolling_restart_then_sigterm

from genops.proxy.recent import RecentCalls
from genops.runtime.worker_report import WorkerReports

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_rolling_restart_of_two_workers_then_sigterm_drop_no_call(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    """Both workers replaced one by one while calls keep coming; pids change, readiness never fails,
    no call is refused or reset, and every completed call is stored once after the final SIGTERM."""
    rolling_restart_then_sigterm(tmp_path, fake_upstream, "2")


def test_a_replaced_workers_counters_stay_in_the_totals_and_what_it_held_goes() -> None:
    """After a rolling restart the supervisor's /metrics still counts what the old worker did (its
    counters never go back) but no longer what it held (queued, spooled: it exited), and the
    retirement does not make the server look unready."""
    reports = WorkerReports(RecentCalls(), "s3cret", workers=1)
    app = web.Application()
    reports.register(app)

    def report(worker: int, pipeline: dict) -> None:
        body = orjson.dumps({"worker": worker, "pipeline": pipeline, "served": []})
        request = urllib.request.Request(url + "/genops/internal/report", data=body, method="POST",
                                         headers={"Authorization": "Bearer s3cret"})
        urllib.request.urlopen(request, timeout=10).read()

    with serve_in_thread(app) as url:
        report(0, {"received": {"proxy": 10}, "forwarded": 9, "queued": 1, "spool_spans": 5, "spool_bytes": 700})
        report(1, {"received": {"proxy": 4}, "forwarded": 4, "queued": 0, "spool_spans": 0, "spool_bytes": 0})
        reports.retire(0)  # worker 0 was replaced by worker 1 and exited
        assert reports.not_ready() is None

        def total(key: str) -> int:
            return sum(p.get(key, 0) for p in reports.pipelines())

        assert sum(p.get("received", {}).get("proxy", 0) for p in reports.pipelines()) == 14
        assert (total("forwarded"), total("queued"), total("spool_spans"), total("spool_bytes")) == (13, 0, 0, 0)
        report(0, {"received": {"proxy": 2}, "forwarded": 2, "queued": 0, "spool_spans": 0, "spool_bytes": 0})
        assert total("forwarded") == 15, "a later worker of the same index adds to the totals"
