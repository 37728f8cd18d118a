"""``genops demo-traffic`` and ``genops jobs`` as a user runs them, and the jobs inside a real
``genops serve`` (embedded chDB) that keeps proxying while they run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
from conftest import FakeUpstream, start_proxy, upstream_env

from genops.collectors.anomaly.service import jobs_enabled_in_serve
from genops.config import load_settings

pytestmark = pytest.mark.e2e


def genops(data_dir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENOPS_")}
    env["GENOPS_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "genops", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=str(data_dir))


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("demo")
    done = genops(data_dir, "demo-traffic", "--days", "2", "--calls-per-minute", "8", "--seed", "2")
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and "injected anomalies:" in done.stdout
    assert "anomaly jobs over the period" in done.stdout
    return data_dir


def test_demo_traffic_then_jobs_once_backfill_and_list(demo_dir: Path) -> None:
    done = genops(demo_dir, "jobs", "once", "--backfill", "1d", "now", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["windows"] == 288 and report["failed_detectors"] == [] and report["alerts_sent"] == 0
    assert report["anomaly_rows_written"] > 0
    listed = genops(demo_dir, "jobs", "list", "--format", "json", "--limit", "500")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert {"detector", "entity", "start", "end", "observed", "expected", "score", "severity", "status"} <= set(rows[0])
    assert len({r["detector"] for r in rows}) >= 5  # a day of demo traffic lights up most detectors
    once = genops(demo_dir, "jobs", "once", "--detectors", "latency_p95,traffic_drop")
    assert once.returncode == 0, once.stderr
    assert "evaluated" in once.stdout
    bad = genops(demo_dir, "jobs", "once", "--detectors", "nope")
    assert bad.returncode == 2 and "unknown detector" in bad.stderr
    assert "SELECT" in genops(demo_dir, "jobs", "annotation-query").stdout


def test_jobs_run_inside_serve_without_disturbing_the_proxy(demo_dir: Path, fake_upstream: FakeUpstream) -> None:
    env = upstream_env(fake_upstream.url)
    env.update({"GENOPS_JOBS_INTERVAL_S": "1", "GENOPS_JOBS_LAG_S": "0"})
    proxy = start_proxy(demo_dir, env)
    try:
        # the loop ran a pass in the server process: its watermark is in the store
        rows = proxy.wait_rows("SELECT value FROM genops_jobs_state FINAL WHERE name = 'anomaly.watermark'", 1, 30)
        assert int(rows[0]["value"]) > time.time() - 3600
        assert "anomaly jobs running in serve" in proxy.logs()
        # the proxy keeps serving while the jobs run
        request = urllib.request.Request(
            proxy.url + "/v1/chat/completions", method="POST",
            data=orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
            headers={"Authorization": "Bearer sk-test", "Content-Type": "application/json"})
        for _ in range(3):
            with urllib.request.urlopen(request, timeout=30) as response:
                assert response.status == 200
        # the embedded store belongs to serve: a by-hand pass or backfill goes through it
        done = genops(demo_dir, "jobs", "once", "--backfill", "6h", "now", "--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["windows"] == 72 and report["failed_detectors"] == []
        bad = genops(demo_dir, "jobs", "once", "--detectors", "nope")
        assert bad.returncode == 2 and "unknown detector" in bad.stderr
        busy = genops(demo_dir, "jobs", "run")  # a second loop on the same store: refused, with the reason
        assert busy.returncode == 1 and "runs the anomaly jobs itself" in busy.stderr
        unauthorized = urllib.request.Request(proxy.url + "/genops/v1/jobs/once", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(unauthorized, timeout=10)
        assert denied.value.code == 401
        listed = genops(demo_dir, "jobs", "list", "--format", "json")  # read-only, through the server
        assert listed.returncode == 0 and json.loads(listed.stdout)
    finally:
        assert proxy.stop() == 0


def test_jobs_in_serve_setting() -> None:
    assert jobs_enabled_in_serve(load_settings(env={}))  # auto + embedded
    assert not jobs_enabled_in_serve(load_settings(env={"GENOPS_CLICKHOUSE_URL": "http://ch:8123"}))
    assert jobs_enabled_in_serve(load_settings(env={"GENOPS_CLICKHOUSE_URL": "http://ch:8123", "GENOPS_JOBS_IN_SERVE": "on"}))
    assert not jobs_enabled_in_serve(load_settings(env={"GENOPS_JOBS_IN_SERVE": "off"}))
