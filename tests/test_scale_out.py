"""Scale-out: several ``genops serve`` proxies export over OTLP to one ``genops collector`` that owns the store.

Real processes only: the proxies (``GENOPS_EXPORTER=otlp``, no store of their own) behind the
fake upstream, one collector on embedded chDB, which the test SIGKILLs under load and starts
again on the same data directory and port. What is stored is read with ``genops sql`` on the
collector's data directory once it has stopped. Nothing asserts on timings.
"""

from __future__ import annotations

import os
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
from aiohttp import web
from conftest import FakeUpstream, Proxy, free_port, serve_in_thread, start_proxy, upstream_env, wait_ready
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as PbResource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from genops.collectors.receiver import TRUSTED, UNTRUSTED, batch_token
from genops.config import ConfigError, load_settings
from genops.storage import otlp_encode, span_batch
from genops.storage.forward import TOKEN_HEADER
from genops.storage.otlp_rows import decode_protobuf
from genops.storage.otlp_sink import OtlpExportError, OtlpSink
from genops.storage.rows import json_rows_payload

pytestmark = pytest.mark.e2e

TRUSTED_TOKEN = "trusted-" + uuid.uuid4().hex
AGENT_TOKEN = "agent-" + uuid.uuid4().hex
PROTOBUF = "application/x-protobuf"


# -- the encoding: the collector stores what the proxy would have stored -------------------------


def tricky_sdk_spans() -> list:
    """Proxy-scoped SDK spans with every kind of attribute value, events, links and statuses."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "genops-proxy", "k8s.pod.name": "p-1"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("genops.proxy", "0.1.0")
    with tracer.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT) as root:
        root.set_attributes({
            "gen_ai.operation.name": "chat", "empty": "", "int": 42, "negative": -7, "float": 0.1, "whole": 3.0,
            "flag": False, "strings": ["a", "ü"], "ints": [1, -2], "floats": [1.0, 2.5], "bools": [True],
            "none": [], "mixed": [1, "a", 2.5], "u64": 2**63 + 5, "text": "line\u2028sep \U0001f600" * 50})
        root.add_event("gen_ai.choice", {"index": 0, "finish": "stop", "scores": [0.5]})
        with tracer.start_as_current_span("execute_tool search", kind=SpanKind.INTERNAL,
                                          links=[Link(root.get_span_context(), {"why": "follows"})]) as child:
            # values JSON cannot carry: the proxy's encoder stringifies this span's attributes itself
            child.set_attributes({"nan": float("nan"), "inf": float("-inf"), "int": 1})
            child.set_status(Status(StatusCode.ERROR, "tool timed out"))
        with tracer.start_as_current_span("ok", kind=SpanKind.SERVER) as ok:
            ok.set_status(Status(StatusCode.OK))
    provider.shutdown()
    return list(exporter.get_finished_spans())


def compact_batch(spans: list) -> bytes:
    encoder = span_batch.SpanEncoder()
    lines = [encoder.encode(span) for span in spans]
    return span_batch.batch_payload(encoder.header(), lines)


def test_the_otlp_export_stores_the_rows_the_local_store_would() -> None:
    payload = compact_batch(tricky_sdk_spans())
    local = [orjson.loads(line) for line in span_batch.json_rows(payload).split(b"\n")]
    requests = otlp_encode.encode_batch(payload, span_batch.KIND)
    assert len(requests) == 1
    body = requests[0]
    parsed = ExportTraceServiceRequest.FromString(body)
    assert parsed.ByteSize() == len(body) and parsed.SerializeToString() == body, "canonical protobuf"
    root = next(s for rs in parsed.resource_spans for ss in rs.scope_spans for s in ss.spans if s.name == "chat gpt-4o")
    typed = {kv.key: kv.value.WhichOneof("value") for kv in root.attributes}
    assert typed["int"] == "int_value" and typed["float"] == "double_value" and typed["flag"] == "bool_value"
    assert typed["strings"] == "array_value" and typed["none"] == "array_value"
    assert typed["u64"] == "string_value"  # beyond int64: sent as the string the store keeps
    remote = [orjson.loads(orjson.dumps(row)) for row in decode_protobuf(body, trusted=True).rows]
    assert remote == local, "a trusted collector stores exactly the proxy's own rows"
    untrusted = decode_protobuf(body).rows
    assert {row["ScopeName"] for row in untrusted} == {"otlp:genops.proxy"}


def test_receiver_rows_forwarded_by_a_proxy_keep_every_value() -> None:
    """JSONEachRow rows (spans a proxy's own OTLP receiver took) go on to the collector unchanged."""
    rows = decode_protobuf(otlp_encode.encode_batch(compact_batch(tricky_sdk_spans()), span_batch.KIND)[0]).rows
    again = otlp_encode.encode_batch(json_rows_payload(rows), "json")
    forwarded = [row for body in again for row in decode_protobuf(body, trusted=True).rows]
    assert orjson.loads(orjson.dumps(forwarded)) == orjson.loads(orjson.dumps(rows))
    assert {row["ScopeName"] for row in forwarded} == {"otlp:genops.proxy"}, "trust never upgrades a received span"


def test_a_batch_is_cut_into_the_same_requests_every_time() -> None:
    payload = compact_batch(tricky_sdk_spans() * 40)
    first = otlp_encode.encode_batch(payload, span_batch.KIND, max_bytes=8192)
    assert len(first) > 5
    assert otlp_encode.encode_batch(payload, span_batch.KIND, max_bytes=8192) == first
    span_ids = [s.span_id for body in first for rs in ExportTraceServiceRequest.FromString(body).resource_spans
                for ss in rs.scope_spans for s in ss.spans]
    assert len(span_ids) == 120
    origins, spans = otlp_encode.batch_spans(payload, span_batch.KIND)
    for chunk in otlp_encode.chunks(spans, 8192):
        assert chunk.size <= 8192 or len(chunk.spans) == 1
        first_half, second_half = chunk.halves()
        assert first_half.spans + second_half.spans == chunk.spans


def test_the_batch_token_depends_on_the_proven_sender() -> None:
    assert batch_token(TRUSTED, "abc") == batch_token(TRUSTED, "abc")
    assert batch_token(TRUSTED, "abc") != batch_token(UNTRUSTED, "abc")
    assert batch_token(TRUSTED, "abc") != batch_token(TRUSTED, "abd")
    assert len(batch_token(UNTRUSTED, "x")) == 32


class ScriptedCollector:
    """A stand-in OTLP endpoint (real HTTP, in a thread) that answers as told and records what it took."""

    def __init__(self, max_spans: int, fail_first: int = 0, status: int = 200, reject: int = 0) -> None:
        self.max_spans, self.fail_first, self.status, self.reject = max_spans, fail_first, status, reject
        self.taken: list[tuple[str, list[bytes]]] = []  # (token, span ids) of each 200
        self.requests = 0
        self.headers: list[dict[str, str]] = []

    def app(self) -> web.Application:
        import gzip

        async def traces(request: web.Request) -> web.Response:
            self.requests += 1
            self.headers.append(dict(request.headers))
            body = ExportTraceServiceRequest.FromString(gzip.decompress(await request.read()))
            span_ids = [s.span_id for rs in body.resource_spans for ss in rs.scope_spans for s in ss.spans]
            if self.requests <= self.fail_first:
                return web.Response(status=503, text="busy")
            if len(span_ids) > self.max_spans:
                return web.Response(status=413, text="too large")
            if self.status != 200:
                return web.Response(status=self.status, text="never")
            self.taken.append((request.headers[TOKEN_HEADER], span_ids))
            answer = ExportTraceServiceResponse()
            if self.reject:
                answer.partial_success.rejected_spans = self.reject
            return web.Response(body=answer.SerializeToString(), content_type=PROTOBUF)

        async def healthz(_: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        app = web.Application(client_max_size=1 << 26, handler_args={"auto_decompress": False})
        app.router.add_post("/v1/traces", traces)
        app.router.add_get("/healthz", healthz)
        return app


def test_the_sink_retries_splits_and_drops_by_the_collectors_answer() -> None:
    payload = compact_batch([span for _ in range(20) for span in tricky_sdk_spans()])
    dropped: list[int] = []
    runs = []
    for _ in range(2):  # the same batch, twice (a proxy restarted): the same requests, the same tokens
        collector = ScriptedCollector(max_spans=7, fail_first=1)
        with serve_in_thread(collector.app()) as url:
            sink = OtlpSink(url, token=TRUSTED_TOKEN, max_request_bytes=8192)
            sink.on_dropped = dropped.append
            assert sink.ping()
            with pytest.raises(OtlpExportError, match="503"):
                sink.insert(payload, "a" * 32, span_batch.KIND, 60)  # kept in the spool, retried
            sink.insert(payload, "a" * 32, span_batch.KIND, 60)
            sink.close()
        assert collector.headers[0]["Authorization"] == f"Bearer {TRUSTED_TOKEN}"
        assert collector.headers[0]["Content-Encoding"] == "gzip"
        ids = [span for _, spans in collector.taken for span in spans]
        assert len(ids) == 60 and len(set(ids)) == 60, "every span delivered once"
        tokens = [token for token, _ in collector.taken]
        assert len(set(tokens)) == len(tokens) > 8 and all(t.startswith("a" * 32 + ".") for t in tokens)
        assert any(t.endswith((".a", ".b")) for t in tokens), "413: cut in halves"
        runs.append(collector.taken)
    assert runs[0] == runs[1]
    assert not sink.ping(), "the collector is gone"
    assert dropped == []

    for status, reject, expected in ((400, 0, [3]), (200, 2, [2])):
        collector = ScriptedCollector(max_spans=100, status=status, reject=reject)
        with serve_in_thread(collector.app()) as url:
            sink = OtlpSink(url)
            sink.on_dropped = dropped.append
            sink.insert(compact_batch(tricky_sdk_spans()), "b" * 32, span_batch.KIND, 3)  # not retried
        assert dropped == expected and "Authorization" not in collector.headers[0]
        dropped.clear()


@pytest.mark.parametrize("env, message", [
    ({"GENOPS_EXPORTER": "otlp"}, "GENOPS_OTLP_ENDPOINT"),
    ({"GENOPS_OTLP_TRUSTED_TOKEN": "short"}, "16 characters"),
    ({"GENOPS_OTLP_TRUSTED_TOKEN": "same-token-0123456789", "GENOPS_OTLP_TOKEN": "same-token-0123456789"}, "differ"),
    ({"GENOPS_EXPORTER": "otlp", "GENOPS_OTLP_ENDPOINT": "http://c:4318", "GENOPS_JOBS_IN_SERVE": "on"}, "no store"),
])
def test_scale_out_settings_that_cannot_work_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env=env)


def test_the_trusted_token_can_live_in_the_data_directory(tmp_path: Path) -> None:
    assert load_settings(env={"GENOPS_DATA_DIR": str(tmp_path)}).resolved_otlp_trusted_token() == ""
    assert not (tmp_path / "otlp_trusted_token").exists(), "never generated: trust is handed out on purpose"
    (tmp_path / "otlp_trusted_token").write_text(TRUSTED_TOKEN + "\n")
    assert load_settings(env={"GENOPS_DATA_DIR": str(tmp_path)}).resolved_otlp_trusted_token() == TRUSTED_TOKEN


# -- real processes ----------------------------------------------------------------------------------


class Collector:
    """A ``genops collector`` on embedded chDB, on a fixed port and data directory (restartable)."""

    def __init__(self, data_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GENOPS_")}
        self.env.update({"GENOPS_DATA_DIR": str(data_dir), "GENOPS_OTLP_PORT": str(self.port),
                         "GENOPS_OTLP_TRUSTED_TOKEN": TRUSTED_TOKEN, "GENOPS_EXPORT_INTERVAL_MS": "200",
                         **(extra_env or {})})
        self.process: subprocess.Popen | None = None
        data_dir.mkdir(parents=True, exist_ok=True)

    def start(self, wait: bool = True) -> Collector:
        with open(self.data_dir / "collector.log", "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "genops", "collector"], env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, cwd=str(self.data_dir))
        return self.wait_ready() if wait else self

    def wait_ready(self) -> Collector:
        assert self.process is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.logs()
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2):
                    return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError("the collector did not start:\n" + self.logs())

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        """SIGTERM: everything it accepted is inserted (or left in its spool) before it exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            assert self.process.wait(60) == 0, self.logs()

    def logs(self) -> str:
        return (self.data_dir / "collector.log").read_text(errors="replace")

    def wait_stored(self, timeout: float = 90, token: str | None = None) -> None:
        """Until nothing it took waits for its insert (its spools and memory queue are empty)."""
        names = ("genops_spool_spans", "genops_export_queue_spans", "genops_otlp_idempotent_spool_spans")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(metric(self.url, name, token) == 0 for name in names):
                return
            time.sleep(0.2)
        raise AssertionError("the collector did not insert everything it took:\n" + self.logs()[-3000:])

    def sql(self, query: str) -> list[dict]:
        """Rows of a query on the collector's store (it must be stopped: chDB is one process's)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GENOPS_")}
        done = subprocess.run([sys.executable, "-m", "genops", "sql", "--data-dir", str(self.data_dir),
                               "--format", "json", "--max-rows", "1000000", query],
                              env=env, capture_output=True, timeout=120, cwd=str(self.data_dir))
        assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
        return orjson.loads(done.stdout)


def export_env(fake_upstream: FakeUpstream, collector: Collector, **extra: str) -> dict[str, str]:
    # A batch every 500 ms: a few dozen batches per proxy over the test, replayed after the outage.
    return {**upstream_env(fake_upstream.url), "GENOPS_EXPORTER": "otlp", "GENOPS_OTLP_ENDPOINT": collector.url,
            "GENOPS_OTLP_TRUSTED_TOKEN": TRUSTED_TOKEN, "GENOPS_EXPORT_INTERVAL_MS": "500", **extra}


@dataclass
class Load:
    """Chat calls from a few client threads until stopped; remembers each answered request id."""

    urls: list[str]
    prefix: str = field(default_factory=lambda: "so-" + uuid.uuid4().hex[:8])
    answered: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, per_url: int = 2) -> Load:
        for u, url in enumerate(self.urls):
            for n in range(per_url):
                thread = threading.Thread(target=self._run, args=(url, f"{u}-{n}"), daemon=True)
                thread.start()
                self.threads.append(thread)
        return self

    def _run(self, url: str, name: str) -> None:
        body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        i = 0
        while not self.stop_event.is_set():
            request_id = f"{self.prefix}-{name}-{i}"
            i += 1
            request = urllib.request.Request(url + "/v1/chat/completions", data=body, headers={
                "Content-Type": "application/json", "Authorization": "Bearer sk-test", "GenOps-Request-Id": request_id})
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    response.read()
                    self.answered.add(request_id)
            except (urllib.error.URLError, OSError) as exc:
                self.failures.append(f"{request_id}: {exc}")

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(60)


def metric(url: str, name: str, token: str | None = None) -> float:
    request = urllib.request.Request(url + "/metrics", headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def wait_exported(proxy: Proxy, timeout: float = 90) -> None:
    """Until the proxy (and its workers) hold no span: everything reached the collector."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric(proxy.url, "genops_spool_spans") == 0 and metric(proxy.url, "genops_export_queue_spans") == 0:
            return
        time.sleep(0.2)
    raise AssertionError("the proxy did not hand every span to the collector:\n" + proxy.logs()[-3000:])


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url + "/v1/traces", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def chat_span_request(service: str, request_id: str, scope: str = "genops.proxy") -> bytes:
    """One proxy-like chat span (a genops_calls row) with a made-up cost, as an OTLP request."""
    start = time.time_ns() - 10**9
    attributes = [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
        "genops.request.id": request_id, "genops.user.id": "victim-user"}.items()]
    attributes.append(KeyValue(key="genops.cost.usd", value=AnyValue(double_value=9999.5)))
    span = Span(trace_id=os.urandom(16), span_id=os.urandom(8), name="chat gpt-4o", kind=Span.SPAN_KIND_CLIENT,
                start_time_unix_nano=start, end_time_unix_nano=start + 1000, attributes=attributes)
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=PbResource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))]),
        scope_spans=[ScopeSpans(scope=InstrumentationScope(name=scope, version="1"), spans=[span])],
    )]).SerializeToString()


def stored_query(where: str) -> str:
    """Stored spans and genops_calls rows by request id and scope (``where`` uses ``{id}``), in one
    query: one ``genops sql`` process."""
    span_id = "SpanAttributes['genops.request.id']"
    return (f"SELECT 'span' AS kind, {span_id} AS id, ScopeName AS scope, count() AS n FROM otel_traces "
            f"WHERE {where.format(id=span_id)} GROUP BY id, scope UNION ALL "
            "SELECT 'call' AS kind, RequestId AS id, ScopeName AS scope, count() AS n FROM genops_calls "
            f"WHERE {where.format(id='RequestId')} GROUP BY id, scope")


def test_proxies_store_every_call_once_in_one_collector_across_its_crash(
        tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    """Two proxies (the proxy inline, and in a worker process) export to one collector on
    embedded chDB; it is SIGKILLed under load and started again on the same directory and port.
    Every answered call is stored exactly once, as the proxy's own call, and no proxy opened a store."""
    collector = Collector(tmp_path / "collector").start(wait=False)
    proxies: list[Proxy] = []
    try:
        for name, mode in (("inline", "inline"), ("separate", "separate")):  # they need no collector to start
            proxies.append(start_proxy(tmp_path / name, export_env(fake_upstream, collector,
                                                                   GENOPS_STORE_PROCESS=mode), wait=False))
        collector.wait_ready()
        for proxy in proxies:
            wait_ready(proxy)
        # An agent's span through a proxy's own OTLP receiver: forwarded, never upgraded by the proxy's trust.
        forged_id = "forged-" + uuid.uuid4().hex
        status, answer = post(proxies[0].otlp_url, chat_span_request("agent-svc", forged_id),
                              {"Content-Type": PROTOBUF})
        assert status == 200, answer[:300]
        load = Load([p.url for p in proxies]).start()
        time.sleep(1.5)
        collector.kill()  # mid-load: batches it took may be inserted or only spooled; answers may be lost
        time.sleep(1.0)
        collector.start()
        time.sleep(1.5)
        load.stop()
        assert not load.failures, load.failures[:3]  # the proxies serve whatever the collector does
        for proxy in proxies:
            wait_exported(proxy)
            assert metric(proxy.url, "genops_export_failures_total") > 0, "the collector's outage was seen"
            assert metric(proxy.url, 'genops_spans_dropped_total{reason="spool_full"}') == 0
        # A proxy without a store: SQL and feedback say where the data is; no chDB was ever opened.
        for proxy in proxies:
            request = urllib.request.Request(proxy.url + "/genops/v1/sql", data=b'{"query": "SELECT 1"}',
                                             headers={"Authorization": f"Bearer {proxy.token}"}, method="POST")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=30)
            assert refused.value.code == 503
            assert collector.url in orjson.loads(refused.value.read())["error"]["message"]
            assert not (proxy.data_dir / "clickhouse").exists()
        with urllib.request.urlopen(proxies[0].url + "/readyz", timeout=10) as response:
            ready = orjson.loads(response.read())
        assert ready["status"] == "ready" and ready["storage"] == "ok"
        collector.wait_stored()
    finally:
        for proxy in proxies:
            proxy.stop()
        collector.stop()
    assert len(load.answered) > 100
    rows = collector.sql(stored_query(f"startsWith({{id}}, '{load.prefix}') OR {{id}} = '{forged_id}'"))
    spans = {row["id"]: row for row in rows if row["kind"] == "span"}
    calls = {row["id"]: row for row in rows if row["kind"] == "call"}
    assert spans.pop(forged_id)["scope"] == calls.pop(forged_id)["scope"] == "otlp:genops.proxy"
    assert set(spans) == load.answered, "every answered call is stored"
    assert {int(row["n"]) for row in spans.values()} == {1}, "exactly once, across the crash"
    assert {row["scope"] for row in spans.values()} == {"genops.proxy"}, "as the proxy's own calls"
    assert set(calls) == load.answered and {int(row["n"]) for row in calls.values()} == {1}, "genops_calls: once"


def test_only_the_trusted_token_makes_spans_the_proxys(tmp_path: Path) -> None:
    """An agent with the ordinary token sending proxy-scoped spans keeps ``otlp:`` provenance, even
    reusing a proxy's batch token; the trusted token's retried batch is stored once."""
    collector = Collector(tmp_path / "collector", {"GENOPS_OTLP_TOKEN": AGENT_TOKEN}).start()
    ids = {name: f"{name}-{uuid.uuid4().hex}" for name in ("agent", "agent-retry", "proxy", "none", "wrong")}
    batch = uuid.uuid4().hex
    try:
        def send(name: str, token: str | None, dedup: str | None = None, service: str = "svc") -> tuple[int, bytes]:
            headers = {"Content-Type": PROTOBUF}
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            if dedup is not None:
                headers[TOKEN_HEADER] = dedup
            return post(collector.url, chat_span_request(service, ids[name]), headers)

        assert send("none", None, batch)[0] == 401
        assert send("wrong", "not-the-token", batch)[0] == 401
        assert send("agent", AGENT_TOKEN)[0] == 200
        assert send("agent-retry", AGENT_TOKEN, batch)[0] == 200  # the proxy's own batch token, from an agent
        body = chat_span_request("svc", ids["proxy"])
        headers = {"Content-Type": PROTOBUF, "Authorization": f"Bearer {TRUSTED_TOKEN}", TOKEN_HEADER: batch}
        for _ in range(3):  # a retried request (its answer lost): the same body and token
            status, answer = post(collector.url, body, headers)
            assert status == 200, answer[:300]
            assert ExportTraceServiceResponse.FromString(answer).partial_success.rejected_spans == 0
        assert post(collector.url, body, {**headers, TOKEN_HEADER: "bad token!"})[0] == 400
        assert metric(collector.url, 'genops_otlp_idempotent_requests_total{outcome="duplicate"}', AGENT_TOKEN) == 2
        collector.wait_stored(token=AGENT_TOKEN)
    finally:
        collector.stop()
    rows = collector.sql(stored_query("1"))
    stored = sorted((row["kind"], row["id"], row["scope"], int(row["n"])) for row in rows)
    expected = [(kind, ids[name], scope, 1) for kind in ("call", "span") for name, scope in (
        ("agent", "otlp:genops.proxy"),  # the ordinary token: never the proxy's, whatever the scope says
        ("agent-retry", "otlp:genops.proxy"),  # with a proxy's batch token: stored, never shadowing that batch
        ("proxy", "genops.proxy"))]  # the trusted token: the proxy's, once however often it was sent
    assert stored == sorted(expected)
