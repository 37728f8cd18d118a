"""``genops serve`` and ``genops collector`` with their ClickHouse server down at start.

The server (``fake_clickhouse.py``: ClickHouse's HTTP interface over a real chDB engine, in
its own process) is not running when the GenOps process starts: connections are refused.
The process must start, answer calls, report "proxy ready, storage unavailable", spool the
spans; once the server is started on that port it migrates it and stores every span once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import clickhouse_connect
import orjson
import pytest
from conftest import FakeUpstream, Proxy, free_port, start_proxy, upstream_env
from test_export_faults import FakeClickHouse

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


class LateClickHouse(FakeClickHouse):
    """The stand-in server on a port of its own, not started yet (connections are refused)."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.data_dir = data_dir
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def client(self) -> Any:
        return clickhouse_connect.get_client(host="127.0.0.1", port=self.port)

    def kill(self) -> None:
        if self.process is not None:
            super().kill()


@pytest.fixture()
def clickhouse(tmp_path: Path):
    server = LateClickHouse(tmp_path / "clickhouse")
    yield server
    server.kill()


def until(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll ``condition`` until it is truthy (the timeout only guards against a hang)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"never happened: {what}")


def get_json(url: str, token: str = "") -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def metrics(url: str) -> dict[str, float]:
    """``/metrics`` samples by name (labelled ones summed over their labels)."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            name = name.split("{", 1)[0]
            out[name] = out.get(name, 0.0) + float(value)
    return out


def call(proxy_url: str, request_id: str) -> int:
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    request = urllib.request.Request(proxy_url + "/v1/chat/completions", data=body, headers={
        "Content-Type": "application/json", "Authorization": "Bearer sk-test", "GenOps-Request-Id": request_id})
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()
        return response.status


def post_sql(proxy: Proxy, query: str) -> tuple[int, dict[str, Any]]:
    return post_json(proxy, "/genops/v1/sql", {"query": query})


def post_json(proxy: Proxy, path: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(proxy.url + path, data=orjson.dumps(payload),
                                     headers={"Authorization": f"Bearer {proxy.token}"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


@pytest.mark.parametrize("mode", ["inline", "workers"])
def test_serve_without_its_store_serves_spools_and_stores_every_span_once_when_it_answers(
        tmp_path: Path, fake_upstream: FakeUpstream, clickhouse: LateClickHouse, mode: str) -> None:
    env = {**upstream_env(fake_upstream.url), "GENOPS_CLICKHOUSE_URL": clickhouse.url,
           # workers: two proxy processes hand their spans to the supervisor, which owns the store
           **({"GENOPS_WORKERS": "2"} if mode == "workers" else {})}
    proxy = start_proxy(tmp_path / "genops", env)  # ready although nothing answers on the store's port
    try:
        prefix = f"outage-{uuid.uuid4().hex[:8]}"
        ids = [f"{prefix}-{i}" for i in range(40)]
        assert [call(proxy.url, request_id) for request_id in ids] == [200] * len(ids), "calls do not need the store"

        status, ready = get_json(proxy.url + "/readyz")
        assert status == 200 and ready["status"] == "ready" and ready["proxy"] == "ready"
        assert ready["storage"] == "unavailable: Connection refused" and ready["storage_migrated"] is False
        until(lambda: get_json(proxy.url + "/readyz")[1]["spooled_spans"] >= len(ids), "the spans are spooled")
        status, ready = get_json(proxy.url + "/readyz?storage=1")
        assert status == 503 and ready["status"] == "unavailable" and ready["proxy"] == "ready"
        before = metrics(proxy.url)
        assert before["genops_storage_up"] == 0 and before["genops_storage_migrated"] == 0
        assert before["genops_spool_spans"] >= len(ids) and before["genops_spans_exported_total"] == 0
        status, answer = post_sql(proxy, "SELECT 1")
        assert status == 503 and answer["error"]["code"] == "storage_unavailable"
        status, answer = post_json(proxy, "/genops/v1/feedback", {"request_id": ids[0], "name": "ok", "value": True})
        assert status == 503 and answer["error"]["code"] == "storage_unavailable"

        clickhouse.start()
        until(lambda: get_json(proxy.url + "/readyz?storage=1")[0] == 200, "the store is migrated and answers")
        until(lambda: metrics(proxy.url)["genops_spool_spans"] == 0, "the spool drained")
        rows = proxy.sql("SELECT SpanAttributes['genops.request.id'] AS id, count() AS n FROM otel_traces "
                         f"WHERE startsWith(id, '{prefix}') AND SpanAttributes['gen_ai.operation.name'] != '' "
                         "GROUP BY id")
        assert {r["id"]: int(r["n"]) for r in rows} == dict.fromkeys(ids, 1), "every span stored once"
        after = metrics(proxy.url)
        assert after["genops_storage_up"] == 1 and after["genops_storage_migrated"] == 1
        assert after["genops_spans_dropped_total"] == 0
        status, ready = get_json(proxy.url + "/readyz")
        assert status == 200 and ready["storage"] == "ok" and ready["spooled_spans"] == 0
    finally:
        assert proxy.stop() == 0
    logs = proxy.logs()
    assert logs.count("storage not ready; retrying in the background") == 1, "logged once, not once per attempt"
    assert "Unexpected Http Driver Exception" not in logs
    assert logs.count("storage ready: migrated") == 1


@pytest.mark.parametrize("mode", ["inline", "workers"])
def test_sigterm_during_an_outage_leaves_the_spans_in_the_spool_for_the_next_start(
        tmp_path: Path, fake_upstream: FakeUpstream, clickhouse: LateClickHouse, mode: str) -> None:
    """SIGTERM while the store is down: the process stops without waiting out its flush timeout
    (30 s, which once held the exit for 60 s while it retried every 200 ms), and the next start,
    with the store back, stores every span once."""
    env = {**upstream_env(fake_upstream.url), "GENOPS_CLICKHOUSE_URL": clickhouse.url,
           **({"GENOPS_WORKERS": "2"} if mode == "workers" else {})}
    proxy = start_proxy(tmp_path / "genops", env)
    prefix = f"down-{uuid.uuid4().hex[:8]}"
    ids = [f"{prefix}-{i}" for i in range(10)]
    try:
        assert [call(proxy.url, request_id) for request_id in ids] == [200] * len(ids)
        until(lambda: get_json(proxy.url + "/readyz")[1]["spooled_spans"] >= len(ids), "the spans are spooled")
    finally:
        # The harness's limit sits below the 30 s flush timeout: an exit that waited it out is killed (-9).
        assert proxy.stop(timeout=20) == 0
    logs = proxy.logs()
    shutdown = logs[logs.rindex("flushing spans"):]  # from the drain's end: the pipeline's shutdown
    assert shutdown.count("span export failed") <= 2, "a probe that finds the store down ends the retries"
    assert "spans left in the spool for the next start" in shutdown

    clickhouse.start()
    again = start_proxy(tmp_path / "genops", env)
    try:
        rows = until(lambda: again.sql(
            "SELECT SpanAttributes['genops.request.id'] AS id, count() AS n FROM otel_traces "
            f"WHERE startsWith(id, '{prefix}') AND SpanAttributes['gen_ai.operation.name'] != '' GROUP BY id"
        ) if get_json(again.url + "/readyz?storage=1")[0] == 200 else None, "the spooled spans are stored")
        until(lambda: len(again.sql(f"SELECT DISTINCT SpanAttributes['genops.request.id'] AS id FROM otel_traces "
                                    f"WHERE startsWith(id, '{prefix}')")) == len(ids), "every spooled span is stored")
        rows = again.sql("SELECT SpanAttributes['genops.request.id'] AS id, count() AS n FROM otel_traces "
                         f"WHERE startsWith(id, '{prefix}') AND SpanAttributes['gen_ai.operation.name'] != '' GROUP BY id")
        assert {r["id"]: int(r["n"]) for r in rows} == dict.fromkeys(ids, 1), "every span stored once"
    finally:
        assert again.stop() == 0


def otlp_export(service: str, span_ids: list[bytes]) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    now = time.time_ns()
    spans = [Span(trace_id=uuid.uuid4().bytes, span_id=span_id, name="chat gpt-4o", start_time_unix_nano=now,
                  end_time_unix_nano=now + 1000,
                  attributes=[KeyValue(key="gen_ai.operation.name", value=AnyValue(string_value="chat"))])
             for span_id in span_ids]
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource={"attributes": [KeyValue(key="service.name", value=AnyValue(string_value=service))]},
        scope_spans=[ScopeSpans(spans=spans)])]).SerializeToString()


def test_the_collector_without_its_store_receives_spools_and_stores_every_span_once(
        tmp_path: Path, clickhouse: LateClickHouse) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENOPS_")}
    env.update({"GENOPS_DATA_DIR": str(tmp_path / "collector"), "GENOPS_OTLP_PORT": str(port),
                "GENOPS_EXPORT_INTERVAL_MS": "100", "GENOPS_CLICKHOUSE_URL": clickhouse.url})
    log_path = tmp_path / "collector.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "genops", "collector"], env=env, stdout=log_file,
                                   stderr=subprocess.STDOUT, cwd=str(tmp_path))
    url = f"http://127.0.0.1:{port}"
    try:
        def started() -> bool:
            assert process.poll() is None, log_path.read_text()
            try:
                return get_json(url + "/readyz")[0] == 200
            except OSError:
                return False

        until(started, "the collector listens")
        service = "collector-outage-" + uuid.uuid4().hex[:8]
        sent: set[str] = set()
        for _ in range(10):
            span_ids = [uuid.uuid4().bytes[:8] for _ in range(10)]
            request = urllib.request.Request(url + "/v1/traces", data=otlp_export(service, span_ids),
                                             headers={"Content-Type": "application/x-protobuf"})
            with urllib.request.urlopen(request, timeout=30) as response:
                assert response.status == 200
            sent.update(span_id.hex() for span_id in span_ids)

        status, ready = get_json(url + "/readyz")
        assert status == 200 and ready["storage"] == "unavailable: Connection refused"
        until(lambda: get_json(url + "/readyz")[1]["spooled_spans"] == len(sent), "the spans are spooled")
        assert get_json(url + "/readyz?storage=1")[0] == 503
        before = metrics(url)
        assert before["genops_storage_up"] == 0 and before["genops_storage_migrated"] == 0
        assert before["genops_spool_spans"] == len(sent)

        clickhouse.start()
        until(lambda: get_json(url + "/readyz?storage=1")[0] == 200, "the store is migrated and answers")
        until(lambda: metrics(url)["genops_spool_spans"] == 0, "the spool drained")
        rows = clickhouse.client().query(
            "SELECT SpanId, count() FROM genops.otel_traces WHERE ServiceName = {s:String} GROUP BY SpanId",
            parameters={"s": service}).result_rows
        assert {span_id: int(n) for span_id, n in rows} == dict.fromkeys(sent, 1), "every span stored once"
        after = metrics(url)
        assert after["genops_storage_up"] == 1 and after["genops_spans_dropped_total"] == 0
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    assert log_path.read_text().count("storage not ready; retrying in the background") == 1
