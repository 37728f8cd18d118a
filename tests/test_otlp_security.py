"""Security of the OTLP/HTTP receiver: its token, who may claim provenance, and gzip bombs.

Every test runs real ``genops serve`` processes on embedded chDB (or calls the receiver's own
functions); nothing mocks ClickHouse, and nothing asserts on wall-clock timings.
"""

from __future__ import annotations

import gzip
import os
import threading
import time
import tracemalloc
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from conftest import FakeUpstream, Proxy, start_proxy, upstream_env
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from genops.collectors.receiver import BodyTooLarge, gunzip_capped, token_notice, wire_limit
from genops.config import Settings
from genops.storage.otlp_rows import received_scope_name

pytestmark = pytest.mark.e2e

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


# -- helpers ---------------------------------------------------------------------------------


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url + "/v1/traces", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def error_message(headers: dict[str, str], body: bytes) -> tuple[int, str]:
    """(google.rpc code, message) of an OTLP error response, protobuf or JSON."""
    if headers.get("Content-Type") == PROTOBUF:
        status = Status.FromString(body)
        return status.code, status.message
    data = orjson.loads(body)
    return data["code"], data["message"]


def pb_request(service: str, scope: str = "agent.scope", **attributes: str | float) -> bytes:
    """One span (a chat call, so genops_calls gets a row) as a protobuf ExportTraceServiceRequest."""
    start = time.time_ns() - 10**9
    values = [KeyValue(key=k, value=AnyValue(double_value=v) if isinstance(v, float) else AnyValue(string_value=v))
              for k, v in {"gen_ai.operation.name": "chat", **attributes}.items()]
    span = Span(trace_id=os.urandom(16), span_id=os.urandom(8), name="chat gpt-4o", kind=Span.SPAN_KIND_CLIENT,
                start_time_unix_nano=start, end_time_unix_nano=start + 1000, attributes=values)
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))]),
        scope_spans=[ScopeSpans(scope=InstrumentationScope(name=scope, version="9.9"), spans=[span])],
    )]).SerializeToString()


def json_request(service: str, scope: str = "agent.scope", **attributes: str | float) -> bytes:
    """The same as :func:`pb_request`, in OTLP/JSON."""
    start = time.time_ns() - 10**9
    values = [{"key": k, "value": {"doubleValue": v} if isinstance(v, float) else {"stringValue": v}}
              for k, v in {"gen_ai.operation.name": "chat", **attributes}.items()]
    return orjson.dumps({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"scope": {"name": scope, "version": "9.9"}, "spans": [{
            "traceId": os.urandom(16).hex(), "spanId": os.urandom(8).hex(), "name": "chat gpt-4o", "kind": 3,
            "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 1000), "attributes": values}]}],
    }]})


def assert_nothing_stored(proxy: Proxy, service: str, headers: dict[str, str]) -> None:
    """A valid export sent after the refused one is stored, and nothing of ``service`` is."""
    marker = "after-" + uuid.uuid4().hex[:8]
    assert post(proxy.otlp_url, pb_request(marker), {"Content-Type": PROTOBUF, **headers})[0] == 200
    proxy.wait_rows(f"SELECT 1 FROM otel_traces WHERE ServiceName = '{marker}'", 1)
    assert proxy.sql(f"SELECT count() AS n FROM otel_traces WHERE ServiceName = '{service}'")[0]["n"] == 0


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, fake_upstream: FakeUpstream) -> Iterator[Proxy]:
    """A ``genops serve`` whose receiver listens beyond loopback (so it generates its token),
    decoding protobuf in Python (GENOPS_OTLP_DECODE=python)."""
    data_dir = tmp_path_factory.mktemp("genops-otlp-token")
    proc = start_proxy(data_dir, {**upstream_env(fake_upstream.url), "GENOPS_OTLP_HOST": "0.0.0.0",
                                  "GENOPS_OTLP_DECODE": "python"})
    yield proc
    proc.stop()


def otlp_token(proxy: Proxy) -> str:
    return (proxy.data_dir / "otlp_token").read_text().strip()


def bearer(proxy: Proxy) -> dict[str, str]:
    return {"Authorization": f"Bearer {otlp_token(proxy)}"}


# -- 1. the token ----------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Basic Zm9vOmJhcg==", "Bearer "])
def test_without_the_token_nothing_is_stored(guarded: Proxy, content_type: str, authorization: str | None) -> None:
    """Missing or wrong token: 401 in the OTLP error shape of the request's content type, naming GENOPS_OTLP_TOKEN."""
    service = "unauth-" + uuid.uuid4().hex[:8]
    body = pb_request(service) if content_type == PROTOBUF else json_request(service)
    headers = {"Content-Type": content_type, **({"Authorization": authorization} if authorization else {})}
    status, response_headers, answer = post(guarded.otlp_url, body, headers)
    assert status == 401, answer[:300]
    assert response_headers["Content-Type"] == content_type
    assert response_headers["WWW-Authenticate"].startswith("Bearer")
    code, message = error_message(response_headers, answer)
    assert code == 16  # google.rpc.Code.UNAUTHENTICATED
    assert "GENOPS_OTLP_TOKEN" in message
    assert otlp_token(guarded) not in message
    assert_nothing_stored(guarded, service, bearer(guarded))


def test_the_token_is_generated_and_only_its_location_is_logged(guarded: Proxy) -> None:
    token_file = guarded.data_dir / "otlp_token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = otlp_token(guarded)
    assert len(token) >= 24
    logs = guarded.logs()
    assert str(token_file) in logs  # where it is, once at start...
    assert token not in logs  # ...never what it is


def test_the_real_otlp_exporter_sends_the_token_from_its_environment(guarded: Proxy,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented setup: OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20<token>."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource as SdkResource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    def spans(service: str) -> list:
        memory = InMemorySpanExporter()
        provider = TracerProvider(resource=SdkResource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        with provider.get_tracer("agent").start_as_current_span("invoke_agent a"):
            pass
        provider.shutdown()
        return list(memory.get_finished_spans())

    endpoint = guarded.otlp_url + "/v1/traces"
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_HEADERS", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", raising=False)
    refused = "sdk-unauth-" + uuid.uuid4().hex[:8]
    assert OTLPSpanExporter(endpoint=endpoint).export(spans(refused)) == SpanExportResult.FAILURE

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"Authorization=Bearer%20{otlp_token(guarded)}")
    accepted = "sdk-auth-" + uuid.uuid4().hex[:8]
    for compression in ("none", "gzip"):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", compression)
        assert OTLPSpanExporter(endpoint=endpoint).export(spans(accepted)) == SpanExportResult.SUCCESS
    guarded.wait_rows(f"SELECT 1 FROM otel_traces WHERE ServiceName = '{accepted}'", 2)
    # The headers can also be given in code.
    coded = "sdk-code-" + uuid.uuid4().hex[:8]
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_HEADERS")
    assert OTLPSpanExporter(endpoint=endpoint, headers=bearer(guarded)).export(spans(coded)) == SpanExportResult.SUCCESS
    guarded.wait_rows(f"SELECT 1 FROM otel_traces WHERE ServiceName = '{coded}'", 1)
    assert guarded.sql(f"SELECT count() AS n FROM otel_traces WHERE ServiceName = '{refused}'")[0]["n"] == 0


def test_metrics_need_the_token_and_healthz_does_not(guarded: Proxy) -> None:
    assert get(guarded.otlp_url + "/healthz")[0] == 200
    assert get(guarded.otlp_url + "/metrics")[0] == 401
    assert get(guarded.otlp_url + "/metrics", {"Authorization": "Bearer nope"})[0] == 401
    status, text = get(guarded.otlp_url + "/metrics", bearer(guarded))
    assert status == 200 and b'genops_otlp_requests_total{code="401",encoding="protobuf"}' in text


def test_the_notice_names_the_setting_or_the_file_never_the_token(tmp_path: Path) -> None:
    assert token_notice(Settings(data_dir=str(tmp_path), otlp_host="127.0.0.1")) == ""
    configured = token_notice(Settings(data_dir=str(tmp_path), otlp_host="127.0.0.1", otlp_token="s3cret-value"))
    assert "GENOPS_OTLP_TOKEN" in configured and "s3cret-value" not in configured
    beyond = token_notice(Settings(data_dir=str(tmp_path), otlp_host="0.0.0.0"))
    assert str(tmp_path / "otlp_token") in beyond


# -- 2. provenance ---------------------------------------------------------------------------


def test_reserved_scope_names_are_renamed() -> None:
    assert received_scope_name("genops.proxy") == "otlp:genops.proxy"
    assert received_scope_name("genops.demo") == "otlp:genops.demo"
    assert received_scope_name("otlp:genops.proxy") == "otlp:genops.proxy"  # idempotent
    assert received_scope_name("opentelemetry.instrumentation.openai") == "opentelemetry.instrumentation.openai"
    assert received_scope_name("genops") == "genops" and received_scope_name("") == ""


@pytest.mark.parametrize("decoder", ["clickhouse", "python"])
@pytest.mark.parametrize("encoding", ["protobuf", "json", "protobuf+gzip"])
def test_a_forged_proxy_span_never_counts_as_recorded_by_the_proxy(proxy: Proxy, guarded: Proxy, decoder: str,
                                                                   encoding: str) -> None:
    """The finding: scope genops.proxy, a made-up cost and a victim's user id, sent over OTLP."""
    target = proxy if decoder == "clickhouse" else guarded
    auth = {} if target is proxy else bearer(guarded)
    service = f"forged-{decoder}-" + uuid.uuid4().hex[:8]
    request_id = "forged-" + uuid.uuid4().hex
    attributes = {"genops.cost.usd": 99999.5, "genops.request.id": request_id, "genops.user.id": "victim-user",
                  "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"}
    if encoding.startswith("protobuf"):
        body, headers = pb_request(service, "genops.proxy", **attributes), {"Content-Type": PROTOBUF}
    else:
        body, headers = json_request(service, "genops.proxy", **attributes), {"Content-Type": JSON}
    if encoding.endswith("gzip"):
        body, headers = gzip.compress(body), {**headers, "Content-Encoding": "gzip"}
    status, _headers, answer = post(target.otlp_url, body, {**headers, **auth})
    assert status == 200, answer[:300]
    calls = target.wait_rows(f"SELECT ScopeName, CostUsd, UserId FROM genops_calls WHERE RequestId = '{request_id}'")
    assert [c["ScopeName"] for c in calls] == ["otlp:genops.proxy"]  # stored, but not as the proxy's
    stored = target.wait_rows(f"SELECT ScopeName FROM otel_traces WHERE ServiceName = '{service}'")
    assert [r["ScopeName"] for r in stored] == ["otlp:genops.proxy"]
    forged = target.sql("SELECT count() AS n FROM genops_calls WHERE ScopeName = 'genops.proxy' "
                        f"AND (RequestId = '{request_id}' OR ServiceName = '{service}')")
    assert forged[0]["n"] == 0


def test_the_proxys_own_calls_keep_their_scope(proxy: Proxy, request_id: str) -> None:
    """The rename applies to what arrives over OTLP only: the proxy's own spans stay genops.proxy."""
    request = urllib.request.Request(
        proxy.url + "/v1/chat/completions",
        data=orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
        headers={"Content-Type": "application/json", "Authorization": "Bearer sk-test",
                 "GenOps-Request-Id": request_id},
        method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200
    assert proxy.span(request_id)["ScopeName"] == "genops.proxy"


# -- 3. gzip bombs ---------------------------------------------------------------------------


def zero_bomb(size: int) -> bytes:
    """``size`` zero bytes gzipped, built in 1 MiB pieces (never holding ``size`` bytes)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    piece = bytes(1 << 20)
    parts = [compressor.compress(piece) for _ in range(size // len(piece))]
    parts.append(compressor.flush())
    return b"".join(parts)


@pytest.fixture(scope="module")
def gib_bomb() -> bytes:
    return zero_bomb(1 << 30)  # ~1 MB on the wire


def test_the_decompressor_stops_at_the_limit(gib_bomb: bytes) -> None:
    """A 1 GiB bomb against a 1 MiB limit: refused, and never more than ~limit bytes inflated."""
    limit = 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(BodyTooLarge):
            gunzip_capped(gib_bomb, limit)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * limit, f"inflated {peak} bytes for a {limit}-byte limit"


def test_the_decompressor_output_never_exceeds_limit_plus_one() -> None:
    """Whatever it returns or holds is at most limit + 1 bytes (the +1 tells "too large" apart)."""
    import genops.collectors.receiver as receiver

    seen: list[int] = []
    real = zlib.decompressobj

    class Recording:
        def __init__(self, *args: int) -> None:
            self.inner = real(*args)

        def decompress(self, data: bytes, max_length: int = 0) -> bytes:
            out = self.inner.decompress(data, max_length)
            seen.append(len(out))
            return out

        def __getattr__(self, name: str) -> object:
            return getattr(self.inner, name)

    limit = 100_000
    bomb = zero_bomb(64 << 20)
    original = receiver.zlib.decompressobj
    receiver.zlib.decompressobj = Recording  # type: ignore[assignment]
    try:
        with pytest.raises(BodyTooLarge):
            receiver.gunzip_capped(bomb, limit)
    finally:
        receiver.zlib.decompressobj = original  # type: ignore[assignment]
    assert sum(seen) == limit + 1


@pytest.mark.parametrize("size", [0, 1, 99_999, 100_000])
def test_the_decompressor_keeps_bodies_up_to_the_limit(size: int) -> None:
    data = os.urandom(size)
    assert gunzip_capped(gzip.compress(data), 100_000) == data
    assert gunzip_capped(gzip.compress(data[:size // 2]) + gzip.compress(data[size // 2:]), 100_000) == data
    with pytest.raises(BodyTooLarge):
        gunzip_capped(gzip.compress(data + b"x"), size)


@pytest.mark.parametrize("size", [(1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3 << 20])
def test_the_decompressor_keeps_bodies_larger_than_its_slice(size: int) -> None:
    """Bodies are inflated 1 MiB at a time: sizes around and beyond a slice come out whole."""
    data = os.urandom(1024) * (size // 1024) + b"t" * (size % 1024)
    body = gzip.compress(data)
    assert gunzip_capped(body, size) == data
    assert gunzip_capped(body + gzip.compress(b"more"), size + 4) == data + b"more"
    with pytest.raises(BodyTooLarge):
        gunzip_capped(body, size - 1)
    with pytest.raises(zlib.error):
        gunzip_capped(body[:-9], size)  # the trailer cut off


# stable ids: pytest-xdist workers must collect the same names
@pytest.mark.parametrize("body", [b"not gzip", gzip.compress(b"x" * 1000, mtime=0)[:-12],
                                  gzip.compress(b"ok", mtime=0) + b"junk"],
                         ids=["not-gzip", "truncated", "trailing-junk"])
def test_the_decompressor_refuses_what_is_not_gzip(body: bytes) -> None:
    with pytest.raises(zlib.error):
        gunzip_capped(body, 1 << 20)


def test_concurrent_gzip_bombs_get_413_and_store_nothing(proxy: Proxy, gib_bomb: bytes) -> None:
    """Four 1 GiB bombs at once: each a 413 naming the limit; the receiver keeps serving and storing."""
    before = proxy.sql("SELECT count() AS n FROM otel_traces")[0]["n"]
    results: list[tuple[int, dict[str, str], bytes]] = []

    def send() -> None:
        results.append(post(proxy.otlp_url, gib_bomb, {"Content-Type": PROTOBUF, "Content-Encoding": "gzip"}))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    assert get(proxy.otlp_url + "/healthz")[0] == 200  # the receiver answers meanwhile
    for thread in threads:
        thread.join(120)
    assert [r[0] for r in results] == [413] * 4
    for _status, headers, body in results:
        assert "GENOPS_OTLP_MAX_BODY_BYTES" in error_message(headers, body)[1]
    assert_nothing_stored(proxy, "bomb-" + uuid.uuid4().hex[:8], {})
    # Only the marker span was added (other tests of this module do not run concurrently).
    assert proxy.sql("SELECT count() AS n FROM otel_traces")[0]["n"] == before + 1


def test_a_compressed_body_over_the_limit_gets_413(proxy: Proxy) -> None:
    """The wire size is capped too: incompressible data larger than the limit gets 413."""
    body = gzip.compress(os.urandom(21 * 1024 * 1024), compresslevel=1)  # the default limit is 20 MiB
    status, headers, answer = post(proxy.otlp_url, body, {"Content-Type": PROTOBUF, "Content-Encoding": "gzip"})
    assert status == 413 and "GENOPS_OTLP_MAX_BODY_BYTES" in error_message(headers, answer)[1]


@pytest.mark.parametrize("limit", [1024, 1 << 20, 20 * 1024 * 1024])
def test_incompressible_bodies_up_to_the_limit_fit_the_wire_limit(limit: int) -> None:
    """gzip of data that does not compress (stored blocks) is a little larger; it is still accepted."""
    data = os.urandom(limit)
    for level in (0, 9):
        body = gzip.compress(data, compresslevel=level)
        assert len(body) <= wire_limit(limit, True)
        assert gunzip_capped(body, limit) == data
    assert wire_limit(limit, False) == limit


def test_genops_collector_requires_its_configured_token(tmp_path: Path) -> None:
    """``genops collector`` (the same receiver, alone) with GENOPS_OTLP_TOKEN: 401 without it, 200 with it."""
    import subprocess
    import sys

    from conftest import free_port

    port, token = free_port(), "collector-" + uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENOPS_")}
    env.update({"GENOPS_DATA_DIR": str(tmp_path), "GENOPS_OTLP_PORT": str(port), "GENOPS_OTLP_TOKEN": token,
                "GENOPS_EXPORT_INTERVAL_MS": "100"})
    log_path = tmp_path / "collector.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "genops", "collector"], env=env, stdout=log_file,
                                   stderr=subprocess.STDOUT, cwd=str(tmp_path))
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if process.poll() is not None:
                raise AssertionError(log_path.read_text())
            try:
                if get(url + "/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        service = "collector-" + uuid.uuid4().hex[:8]
        status, headers, answer = post(url, pb_request(service), {"Content-Type": PROTOBUF})
        assert status == 401 and "GENOPS_OTLP_TOKEN" in error_message(headers, answer)[1]
        status, _headers, answer = post(url, pb_request(service), {"Content-Type": PROTOBUF,
                                                                   "Authorization": f"Bearer {token}"})
        assert status == 200, answer[:300]
        assert get(url + "/metrics")[0] == 401
        assert b'code="200"' in get(url + "/metrics", {"Authorization": f"Bearer {token}"})[1]
    finally:
        process.terminate()
        assert process.wait(60) == 0
    logs = log_path.read_text()
    assert "GENOPS_OTLP_TOKEN" in logs and token not in logs
