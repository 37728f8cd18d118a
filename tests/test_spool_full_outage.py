"""A store outage that overflows the spool, under load: the drop counter is exact.

``genops serve`` exports to a ClickHouse server stand-in (``fake_clickhouse.py``: real chDB
behind ClickHouse's HTTP interface) that is killed under load until the 1 MiB spool has
dropped its oldest spans, then started again while the load goes on (so the spool keeps
dropping while the sender catches up). Afterwards: spans received - rows stored ==
``genops_spans_dropped_total``, and no span is stored twice.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import orjson
import pytest
from conftest import FakeUpstream, start_proxy, upstream_env
from test_export_faults import FakeClickHouse
from test_storage_outage import get_json, metrics, until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROMPT = "tell me about spools " * 800  # ~16 KB captured per span: the 1 MiB spool holds ~60 of them


def labelled(url: str, sample: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(sample + " "):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{sample} not in /metrics")


def test_a_spool_overflowing_through_an_outage_counts_exactly_the_spans_it_lost(
        tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    clickhouse = FakeClickHouse(tmp_path / "clickhouse")
    proxy = start_proxy(tmp_path / "genops", {
        **upstream_env(fake_upstream.url), "GENOPS_CLICKHOUSE_URL": clickhouse.url,
        "GENOPS_SPOOL_MAX_BYTES": str(1 << 20), "GENOPS_CAPTURE": "full", "GENOPS_EXPORT_INTERVAL_MS": "100"})
    stop = threading.Event()
    failures: list[str] = []
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}]})

    def load() -> None:
        while not stop.is_set():
            request = urllib.request.Request(proxy.url + "/v1/chat/completions", data=body, headers={
                "Content-Type": "application/json", "Authorization": "Bearer sk-test",
                "GenOps-Request-Id": "drop-" + uuid.uuid4().hex})
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    response.read()
            except (urllib.error.URLError, OSError) as exc:
                failures.append(str(exc))

    threads = [threading.Thread(target=load, daemon=True) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        until(lambda: metrics(proxy.url)["genops_spans_exported_total"] > 0, "spans are stored")
        clickhouse.kill()
        until(lambda: labelled(proxy.url, 'genops_spans_dropped_total{reason="spool_full"}') > 0,
              "the spool overflowed")
        clickhouse.start()
        until(lambda: get_json(proxy.url + "/readyz?storage=1")[0] == 200, "the store answers again")
        exported = metrics(proxy.url)["genops_spans_exported_total"]
        until(lambda: metrics(proxy.url)["genops_spans_exported_total"] > exported + 100,
              "the sender catches up while the load goes on")
        stop.set()
        for thread in threads:
            thread.join(30)
        assert not failures, failures[:3]
        until(lambda: (m := metrics(proxy.url))["genops_spool_spans"] == 0 and m["genops_export_queue_spans"] == 0,
              "the spool drained")
        m = metrics(proxy.url)
        row = proxy.sql("SELECT count() AS n, uniqExact(SpanId) AS spans FROM otel_traces")[0]
        stored = int(row["n"])
        assert stored == int(row["spans"]), "no span stored twice"
        assert labelled(proxy.url, 'genops_spans_dropped_total{reason="spool_full"}') > 0
        assert m["genops_spans_received_total"] - stored == m["genops_spans_dropped_total"], \
            "the drop counter counts exactly the spans that were not stored"
    finally:
        stop.set()
        proxy.stop()
        clickhouse.kill()
