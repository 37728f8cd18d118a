"""Fault tests of the export pipeline: storage hung or down, SIGTERM and SIGKILL under load.

Storage faults use a ClickHouse server stand-in (``fake_clickhouse.py``: ClickHouse's HTTP
interface over a real chDB engine, in its own process) that the test pauses (SIGSTOP: a
hung server, inserts time out but may land later), kills (connection refused) and starts
again. Every check is "each answered request's span is in otel_traces exactly once".
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from conftest import FakeUpstream, Proxy, free_port, start_proxy, upstream_env

from genops.storage.spool import Spool

FAKE_CLICKHOUSE = Path(__file__).with_name("fake_clickhouse.py")
FLUSH_INTERVAL_MS = 200
# SIGKILL loses at most the spans that ended within one flush interval before the kill;
# the test allows that interval plus 1 s for thread scheduling on a busy 2-core machine.
SIGKILL_LOSS_BOUND_S = FLUSH_INTERVAL_MS / 1000 + 1.0

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


class FakeClickHouse:
    """The stand-in server process on a fixed port and data directory (restartable)."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        log = open(self.data_dir.parent / "fake_clickhouse.log", "ab")
        self.process = subprocess.Popen([sys.executable, str(FAKE_CLICKHOUSE), str(self.port), str(self.data_dir)],
                                        stdout=log, stderr=subprocess.STDOUT,
                                        cwd=self.data_dir.parent)  # chDB caches format schemas under the cwd
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/ping", timeout=1).read()
                return
            except OSError:
                assert self.process.poll() is None, "fake ClickHouse exited"
                time.sleep(0.1)
        raise AssertionError("fake ClickHouse did not start")

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGCONT)
        self.process.kill()
        self.process.wait()


@pytest.fixture()
def clickhouse(tmp_path: Path):
    server = FakeClickHouse(tmp_path / "clickhouse")
    yield server
    server.kill()


@dataclass
class Load:
    """Chat requests from two client threads until stopped; remembers each answered request."""

    url: str
    prefix: str = field(default_factory=lambda: "load-" + uuid.uuid4().hex[:8])
    answered: dict[str, float] = field(default_factory=dict)  # request id -> monotonic time of the answer
    failures: list[str] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    tolerate_errors: bool = False

    def start(self, threads: int = 2) -> Load:
        for n in range(threads):
            thread = threading.Thread(target=self._run, args=(n,), daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def _run(self, n: int) -> None:
        body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        i = 0
        while not self.stop_event.is_set():
            request_id = f"{self.prefix}-{n}-{i}"
            i += 1
            request = urllib.request.Request(self.url + "/v1/chat/completions", data=body, headers={
                "Content-Type": "application/json", "Authorization": "Bearer sk-test", "GenOps-Request-Id": request_id})
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    response.read()
                    if response.status == 200:
                        self.answered[request_id] = time.monotonic()
            except (urllib.error.URLError, OSError) as exc:
                if not self.tolerate_errors:
                    self.failures.append(f"{request_id}: {exc}")
                time.sleep(0.01)

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(30)


@dataclass
class OtlpLoad:
    """OTLP protobuf exports (10 GenAI spans each) posted to the receiver until stopped; remembers accepted span ids."""

    url: str
    service: str = field(default_factory=lambda: "otlp-load-" + uuid.uuid4().hex[:8])
    accepted: set[str] = field(default_factory=set)
    stop_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> OtlpLoad:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
        from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
        from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

        def kv(key: str, value: AnyValue) -> KeyValue:
            return KeyValue(key=key, value=value)

        while not self.stop_event.is_set():
            now = time.time_ns()
            spans = [Span(trace_id=uuid.uuid4().bytes, span_id=uuid.uuid4().bytes[:8], name="chat gpt-4o",
                          start_time_unix_nano=now, end_time_unix_nano=now + 1000,
                          attributes=[kv("gen_ai.operation.name", AnyValue(string_value="chat")),
                                      kv("gen_ai.usage.input_tokens", AnyValue(int_value=7)),
                                      kv("gen_ai.request.temperature", AnyValue(double_value=0.5))])
                     for _ in range(10)]
            body = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
                resource={"attributes": [kv("service.name", AnyValue(string_value=self.service))]},
                scope_spans=[ScopeSpans(spans=spans)])]).SerializeToString()
            request = urllib.request.Request(self.url + "/v1/traces", data=body,
                                             headers={"Content-Type": "application/x-protobuf"})
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    response.read()
                    self.accepted.update(s.span_id.hex() for s in spans)
            except (urllib.error.URLError, OSError):
                pass  # 503 under back-pressure: the client would retry; not counted as accepted
            time.sleep(0.05)

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(30)


def stored_counts(proxy: Proxy, prefix: str) -> tuple[dict[str, int], int]:
    """Per request id, how many otel_traces rows carry it; and how many genops_calls rows there are.

    genops_calls must mirror every stored span of a model call: a request the shutdown cut off
    before its body was read is stored too (as what happened), but is no model call, so it
    is left out of both sides of that comparison.
    """
    rows = proxy.sql(
        "SELECT SpanAttributes['genops.request.id'] AS id, count() AS n FROM otel_traces "
        f"WHERE startsWith(SpanAttributes['genops.request.id'], '{prefix}') "
        "AND SpanAttributes['gen_ai.operation.name'] != '' GROUP BY id")
    calls = proxy.sql(f"SELECT count() AS n FROM genops_calls WHERE startsWith(RequestId, '{prefix}')")[0]["n"]
    return {r["id"]: int(r["n"]) for r in rows}, int(calls)


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def wait_drained(proxy: Proxy, timeout: float = 60) -> None:
    """Until the pipeline has nothing queued or spooled."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric(proxy.url, "genops_spool_spans") == 0 and metric(proxy.url, "genops_export_queue_spans") == 0:
            return
        time.sleep(0.2)
    raise AssertionError("the spool did not drain")


def server_env(fake_upstream: FakeUpstream, clickhouse: FakeClickHouse) -> dict[str, str]:
    return {**upstream_env(fake_upstream.url), "GENOPS_CLICKHOUSE_URL": clickhouse.url,
            "GENOPS_EXPORT_TIMEOUT_S": "1", "GENOPS_EXPORT_INTERVAL_MS": str(FLUSH_INTERVAL_MS)}


def test_storage_hung_then_down_requests_succeed_and_spans_land_exactly_once(
        tmp_path: Path, fake_upstream: FakeUpstream, clickhouse: FakeClickHouse) -> None:
    proxy = start_proxy(tmp_path / "genops", server_env(fake_upstream, clickhouse))
    try:
        load = Load(proxy.url).start()
        otlp = OtlpLoad(proxy.otlp_url).start()  # OTLP protobuf that ClickHouse decodes (spooled SpanRows)
        time.sleep(1.0)
        clickhouse.pause()  # hung: inserts time out, and land when it wakes up
        time.sleep(2.5)
        clickhouse.resume()
        clickhouse.kill()  # down: connection refused
        time.sleep(2.0)
        clickhouse.start()
        time.sleep(1.0)
        load.stop()
        otlp.stop()
        assert not load.failures, load.failures[:3]
        wait_drained(proxy)
        stored, calls = stored_counts(proxy, load.prefix)
        assert len(load.answered) > 50
        assert set(stored) == set(load.answered), "every answered request's span is stored"
        assert set(stored.values()) == {1}, "and stored once"
        assert calls == len(load.answered), "genops_calls (materialized view) has no duplicates either"
        otlp_rows = proxy.sql(f"SELECT SpanId, count() AS n FROM otel_traces WHERE ServiceName = '{otlp.service}' "
                              "GROUP BY SpanId")
        assert len(otlp.accepted) > 50
        assert {r["SpanId"] for r in otlp_rows} == otlp.accepted, "every accepted OTLP span is stored"
        assert {int(r["n"]) for r in otlp_rows} == {1}, "and stored once"
        otlp_calls = proxy.sql(f"SELECT count() AS n FROM genops_calls WHERE ServiceName = '{otlp.service}'")[0]["n"]
        assert int(otlp_calls) == len(otlp.accepted), "through the view chain, once"
        assert metric(proxy.url, "genops_export_failures_total") > 0
        assert metric(proxy.url, "genops_spans_replayed_total") > 0
    finally:
        proxy.stop()


def test_sigterm_under_load_stores_every_span_before_exit(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    data_dir = tmp_path / "genops"
    proxy = start_proxy(data_dir, {**upstream_env(fake_upstream.url), "GENOPS_EXPORT_INTERVAL_MS": "5000"})
    load = Load(proxy.url, tolerate_errors=True).start()
    time.sleep(1.5)
    assert proxy.stop(signal.SIGTERM) == 0  # a 5 s flush interval: most spans are still queued in memory
    load.stop()
    assert len(load.answered) > 50
    spool = Spool(data_dir / "spool", max_bytes=1 << 30)
    assert spool.pending_batches == 0, "nothing left for a replay: all was inserted before exit"
    spool.close()
    restarted = start_proxy(data_dir, upstream_env(fake_upstream.url))
    try:
        stored, calls = stored_counts(restarted, load.prefix)
        assert set(load.answered) <= set(stored)
        assert set(stored.values()) == {1}
        assert calls == len(stored)
    finally:
        restarted.stop()


def test_sigkill_under_load_replays_the_spool_after_restart(
        tmp_path: Path, fake_upstream: FakeUpstream, clickhouse: FakeClickHouse) -> None:
    """Storage hangs, spans pile up in the spool, the proxy is SIGKILLed; the restart replays them."""
    data_dir = tmp_path / "genops"
    proxy = start_proxy(data_dir, server_env(fake_upstream, clickhouse))
    load = Load(proxy.url, tolerate_errors=True).start()
    time.sleep(1.0)
    clickhouse.pause()
    time.sleep(1.5)
    proxy.process.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    proxy.process.wait()
    load.stop()
    clickhouse.resume()  # the inserts that timed out now land (the replay must not duplicate them)
    spool = Spool(data_dir / "spool", max_bytes=1 << 30)
    spooled = spool.pending_spans
    spool.close()
    assert spooled > 0, "the kill found spans in the spool"

    restarted = start_proxy(data_dir, server_env(fake_upstream, clickhouse))
    try:
        wait_drained(restarted)
        assert metric(restarted.url, "genops_spans_replayed_total") == spooled
        stored, calls = stored_counts(restarted, load.prefix)
        must_have = {rid for rid, at in load.answered.items() if at < killed_at - SIGKILL_LOSS_BOUND_S}
        assert len(must_have) > 50
        missing = must_have - set(stored)
        assert not missing, f"{len(missing)} spans older than {SIGKILL_LOSS_BOUND_S}s before the kill were lost"
        lost = set(load.answered) - set(stored)
        assert len(lost) <= len(load.answered) - len(must_have)
        assert set(stored.values()) == {1}, "replayed exactly once"
        assert calls == len(stored)
    finally:
        restarted.stop()


def test_sigkill_under_load_on_the_embedded_store(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    """The default mode (chDB in the proxy process): SIGKILL mid-load, restart, nothing older than the bound lost."""
    data_dir = tmp_path / "genops"
    env = {**upstream_env(fake_upstream.url), "GENOPS_EXPORT_INTERVAL_MS": str(FLUSH_INTERVAL_MS)}
    proxy = start_proxy(data_dir, env)
    load = Load(proxy.url, tolerate_errors=True).start()
    time.sleep(2.0)
    proxy.process.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    proxy.process.wait()
    load.stop()
    restarted = start_proxy(data_dir, env)
    try:
        wait_drained(restarted)
        stored, calls = stored_counts(restarted, load.prefix)
        must_have = {rid for rid, at in load.answered.items() if at < killed_at - SIGKILL_LOSS_BOUND_S}
        assert len(must_have) > 50
        missing = must_have - set(stored)
        assert not missing, f"{len(missing)} spans older than {SIGKILL_LOSS_BOUND_S}s before the kill were lost"
        assert set(stored.values()) == {1}, "stored once, replay included"
        assert calls == len(stored)
    finally:
        restarted.stop()
