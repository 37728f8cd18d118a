"""The request path against hostile targets, paths and secrets.

- URL user info (``user:password@``) never reaches the client's error, a stored span, the
  spool or the logs, whether a client sent it in ``GenOps-Target-Url`` or the operator put it
  in a configured upstream URL;
- ``.`` / ``..`` segments (raw, percent-encoded in any case, twice, with backslashes) never reach
  an upstream on any provider route: 400 in the provider's own error shape, and a span;
- provider hosts are allowed on their standard port only, allowlist entries on the port they
  name; malformed target URLs get a 400 ``invalid_target_url`` (never a bare 500).

A catch-all recorder stands in for every provider's upstream so that any request that does get
through is seen, whatever its path (the fake upstream only logs the routes it knows).
"""

from __future__ import annotations

import http.client
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import openai
import orjson
import pytest
from aiohttp import web
from conftest import FakeUpstream, Proxy, free_port, serve_in_thread, start_proxy

from genops.config import Settings
from genops.proxy.targets import TargetPolicy, has_dot_segment, mask_userinfo

pytestmark = pytest.mark.e2e

TARGET_SECRET = "TARGET-SECRET-7f3c91"  # a password a client puts in GenOps-Target-Url
CONFIG_SECRET = "CONFIG-SECRET-2b8e44"  # a password in a configured upstream URL
DEAD_SECRET = "DEAD-SECRET-5a1d07"  # the same, for an upstream nobody listens on
SECRETS = (TARGET_SECRET, CONFIG_SECRET, DEAD_SECRET)
SECRET_PARTS = (TARGET_SECRET, TARGET_SECRET[:10], TARGET_SECRET[10:])  # the halves: see the raw '/' probe
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
CHAT = orjson.dumps({"model": "gpt-4o-mini", "messages": MESSAGES})


@dataclass
class Recorder:
    """A catch-all upstream: answers every request with ``{}`` and keeps its raw request line."""

    url: str
    seen: list[tuple[str, str]] = field(default_factory=list)


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    box = Recorder("")

    async def record(request: web.Request) -> web.Response:
        await request.read()
        box.seen.append((request.method, request.raw_path))
        answer = request.headers.get("X-Recorder-Answer")  # a test's chosen response body
        return web.Response(body=answer or "{}", content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    with serve_in_thread(app) as url:
        box.url = url
        yield box


@pytest.fixture(scope="module")
def sec_proxy(tmp_path_factory: pytest.TempPathFactory, fake_upstream: FakeUpstream,
              recorder: Recorder) -> Iterator[Proxy]:
    """Every provider route on the recorder; named upstreams on the fake upstream (one with
    credentials in its URL, one with credentials and nobody listening)."""
    fake_host_port = fake_upstream.url.split("://", 1)[1]
    proc = start_proxy(tmp_path_factory.mktemp("security"), {
        "GENOPS_OPENAI_BASE_URL": recorder.url,
        "GENOPS_ANTHROPIC_BASE_URL": recorder.url,
        "GENOPS_GEMINI_BASE_URL": recorder.url,
        "GENOPS_VERTEX_BASE_URL": recorder.url + "/vertex/{location}",
        "GENOPS_AZURE_BASE_URL": recorder.url + "/azure/{resource}",
        "GENOPS_UPSTREAM_BASED": recorder.url + "/base/v1",  # a named upstream with a base path
        "GENOPS_UPSTREAM_FAKE": fake_upstream.url,
        "GENOPS_UPSTREAM_CREDS": f"http://creds-user:{CONFIG_SECRET}@{fake_host_port}",
        "GENOPS_UPSTREAM_DEADCREDS": f"http://dead-user:{DEAD_SECRET}@127.0.0.1:{free_port()}",
        # localhost on the fake upstream's own port; 127.0.0.2 without a port: port 80 only.
        "GENOPS_ALLOWED_TARGETS": f"localhost:{fake_host_port.rsplit(':', 1)[1]},127.0.0.2",
        "GENOPS_CONNECT_TIMEOUT_S": "2",  # the old code tried api.openai.com:22
    })
    yield proc
    proc.stop()


def raw(proxy: Proxy, method: str, path: str, headers: dict[str, str] | None = None,
        body: bytes = b"") -> tuple[int, bytes]:
    """Send ``path`` exactly as given (no client-side normalisation or re-encoding)."""
    host, port = proxy.url.split("://", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in {"Content-Type": "application/json", "Authorization": "Bearer sk-x",
                            "Content-Length": str(len(body)), **(headers or {})}.items():
            conn.putheader(name, value)
        conn.endheaders(body or None)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def error_of(shape: str, body: bytes) -> tuple[str, str]:
    """(code or type, message) of a proxy-made error, checking it has the provider's own shape."""
    data = orjson.loads(body)
    if shape == "anthropic":
        assert data["type"] == "error" and set(data["error"]) == {"type", "message"}, data
        return data["error"]["type"], data["error"]["message"]
    if shape == "google":
        assert set(data["error"]) == {"code", "message", "status"}, data
        return data["error"]["status"], data["error"]["message"]
    assert set(data["error"]) == {"message", "type", "param", "code"}, data
    return data["error"]["code"], data["error"]["message"]


def new_id() -> str:
    return "sec-" + uuid.uuid4().hex


# -- 2. dot-segments never reach an upstream -------------------------------------------------------

DOT_PROBES = [
    # (method, path, error shape)
    ("GET", "/u/based/v1/..%2F..%2Fadmin%2Fsecret", "openai"),  # the reviewed finding
    ("GET", "/u/based/v1/../../admin/secret", "openai"),
    ("GET", "/u/based/v1/%2e%2e/%2E%2E/admin", "openai"),
    ("GET", "/u/based/v1/%2E./admin", "openai"),
    ("GET", "/u/based/v1/..%5c..%5cadmin", "openai"),
    ("GET", "/u/based/v1/..%5C..%5Cadmin", "openai"),
    ("GET", "/u/based/v1/%252e%252e/%252e%252e/admin", "openai"),  # encoded twice: the upstream decodes once more
    ("GET", "/u/based/v1/./models", "openai"),
    ("GET", "/u/based/v1/models/..", "openai"),
    ("POST", "/u/based/v1/chat/completions/..%2F..%2F..%2Fadmin", "openai"),
    ("GET", "/v1/..%2F..%2Fadmin", "openai"),
    ("POST", "/v1/chat/completions/%2e%2e", "openai"),
    ("GET", "/azure/res/openai/..%2F..%2Fadmin", "openai"),
    ("GET", "/anthropic/v1/..%2F..%2Fadmin", "anthropic"),
    ("POST", "/anthropic/v1/messages/..%2f..%2f..%2fadmin", "anthropic"),
    ("GET", "/gemini/v1beta/..%2F..%2Fadmin", "google"),
    ("POST", "/gemini/v1beta/models/..%2F..%2Fx:generateContent", "google"),
    ("GET", "/vertex/v1/projects/p/locations/us-central1/..%2F..%2F..%2Fadmin", "google"),
]


@pytest.mark.parametrize("method,path,shape", DOT_PROBES)
def test_dot_segments_are_refused_in_the_providers_shape_and_traced(sec_proxy, recorder, method, path, shape):
    request_id = new_id()
    recorder.seen.clear()
    body = orjson.dumps({"model": "m", "messages": MESSAGES, "contents": []}) if method == "POST" else b""
    status, answer = raw(sec_proxy, method, path, {"GenOps-Request-Id": request_id}, body)
    assert status == 400, answer
    code, message = error_of(shape, answer)
    assert code in ("invalid_path", "invalid_request_error", "INVALID_ARGUMENT")
    assert "'..'" in message
    assert recorder.seen == []  # nothing forwarded
    span = sec_proxy.span(request_id)
    assert span["StatusCode"] == "Error"
    assert span["SpanAttributes"]["error.type"] == "invalid_path"
    assert span["SpanAttributes"]["http.response.status_code"] == "400"
    assert "genops.upstream.url" not in span["SpanAttributes"]


@pytest.mark.parametrize("path,received", [
    ("/u/based/v1/models", "/base/v1/models"),
    ("/u/based/v1/files/a.b/...", "/base/v1/files/a.b/..."),  # dots inside names are not segments
    ("/v1/models/ft:gpt-4o-mini:org.name", "/v1/models/ft:gpt-4o-mini:org.name"),
    ("/gemini/v1beta/models/gemini-2.0-flash", "/v1beta/models/gemini-2.0-flash"),
    ("/anthropic/v1/models/.hidden", "/v1/models/.hidden"),
])
def test_paths_without_dot_segments_still_reach_the_upstream(sec_proxy, recorder, path, received):
    """The control for the probes above: the recorder does see what the proxy forwards."""
    recorder.seen.clear()
    status, _ = raw(sec_proxy, "GET", path)
    assert status == 200
    assert recorder.seen == [("GET", received)]


def test_dot_segment_detection_rules():
    refused = ["/..", "/.", "/a/../b", "/a/./b", "..", "/a/..%2Fb", "/a/%2e%2e/b", "/a/%2E%2e", "/a/.%2E/b",
               "/a/..\\b", "/a\\..\\b", "/a/%5c..%5cb", "/a/%252E%252E/b", "/a/%25252e%25252e/b"]
    allowed = ["", "/", "/chat/completions", "/v1beta/models/gemini-2.0-flash:generateContent", "/a/.b",
               "/a/b./c", "/a/.../b", "/a/%2e%2e%2e/b", "/a/%20/b", "/publishers/anthropic/models/claude@2024"]
    assert [p for p in refused if not has_dot_segment(p)] == []
    assert [p for p in allowed if has_dot_segment(p)] == []


# -- 3. ports and malformed targets ----------------------------------------------------------------

MALFORMED_TARGETS = [
    "http://[127.0.0.1]:1",
    "http://[",
    "http://[::1",
    "http://127.0.0.1:99999",
    "http://127.0.0.1:abc",
    "http://127.0.0.1:0",
    "http://:80",
    "http://",
    "http://a b.example",
    "http://x.example/\tpath",
    "ftp://api.openai.com",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "api.openai.com",
    "https://api.openai.com/v1/../../admin",
    "https://api.openai.com/%2e%2e/admin",
]


@pytest.mark.parametrize("route,path,shape", [
    ("openai", "/v1/chat/completions", "openai"),
    ("anthropic", "/anthropic/v1/messages", "anthropic"),
    ("gemini", "/gemini/v1beta/models/gemini-2.0-flash:generateContent", "google"),
])
def test_malformed_target_urls_are_a_clear_400(sec_proxy, recorder, route, path, shape):
    recorder.seen.clear()
    for target in MALFORMED_TARGETS:
        request_id = new_id()
        status, answer = raw(sec_proxy, "POST", path, {"GenOps-Target-Url": target, "GenOps-Request-Id": request_id},
                             orjson.dumps({"model": "m", "messages": MESSAGES, "max_tokens": 5, "contents": []}))
        assert status == 400, (target, answer)
        code, message = error_of(shape, answer)
        assert code in ("invalid_target_url", "invalid_request_error", "INVALID_ARGUMENT"), (target, answer)
        assert message.startswith("The target URL "), (target, message)
        assert "Traceback" not in message
        attrs = sec_proxy.span(request_id)["SpanAttributes"]
        assert attrs["error.type"] == "invalid_target_url" and attrs["http.response.status_code"] == "400", target
    assert recorder.seen == []


def test_malformed_target_names_the_problem(sec_proxy):
    for target, problem in [("http://127.0.0.1:99999", "Port out of range"), ("http://[", "Invalid IPv6 URL"),
                            ("ftp://x.example", "http:// or https://"), ("http://:80", "no host"),
                            ("http://a b.example", "spaces")]:
        status, answer = raw(sec_proxy, "POST", "/v1/chat/completions", {"GenOps-Target-Url": target}, CHAT)
        assert status == 400 and problem in error_of("openai", answer)[1], (target, answer)


@pytest.mark.parametrize("target", ["https://api.openai.com:22", "https://api.anthropic.com:8443",
                                    "https://myres.openai.azure.com:6379", "http://127.0.0.2:8080"])
def test_allowed_hosts_only_on_their_own_port(sec_proxy, recorder, target):
    request_id = new_id()
    recorder.seen.clear()
    status, answer = raw(sec_proxy, "POST", "/v1/chat/completions",
                         {"GenOps-Target-Url": target, "GenOps-Request-Id": request_id}, CHAT)
    assert status == 403, answer
    assert error_of("openai", answer)[0] == "target_not_allowed"
    assert recorder.seen == []
    attrs = sec_proxy.span(request_id)["SpanAttributes"]
    assert attrs["error.type"] == "target_not_allowed" and "genops.upstream.url" not in attrs


def test_allowlist_entry_with_a_port_allows_that_port(sec_proxy, fake_upstream):
    port = fake_upstream.url.rsplit(":", 1)[1]
    request_id = new_id()
    via = openai.OpenAI(base_url=sec_proxy.url + "/u/fake/v1", api_key="sk-x", max_retries=0,
                        default_headers={"GenOps-Request-Id": request_id,
                                         "GenOps-Target-Url": f"http://localhost:{port}"})
    assert via.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices
    attrs = sec_proxy.span(request_id)["SpanAttributes"]
    assert attrs["genops.upstream.url"] == f"http://localhost:{port}/v1/chat/completions"
    with pytest.raises(openai.PermissionDeniedError):  # the same host on another port
        via.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                    extra_headers={"GenOps-Target-Url": f"http://localhost:{free_port()}"})


def test_target_policy_ports():
    settings = Settings(openai_base_url="http://127.0.0.1:9999", anthropic_base_url="https://claude.internal",
                        allowed_targets="llm.internal.example, *.corp.example:8443 ,[fd00::2]:7000,bad:port")
    policy = TargetPolicy.from_settings(settings, env={"GENOPS_UPSTREAM_V6": "http://[fd00::1]:8000/v1"})
    allowed = ["https://api.openai.com", "https://api.openai.com:443", "https://claude.internal:443",
               "http://127.0.0.1:9999", "https://llm.internal.example", "http://llm.internal.example:80",
               "https://a.corp.example:8443", "http://[fd00::1]:8000", "http://[fd00::2]:7000"]
    refused = ["https://api.openai.com:22", "https://api.openai.com:80", "https://claude.internal:8443",
               "https://llm.internal.example:8443", "http://llm.internal.example:22", "http://[fd00::1]:8001",
               "https://a.corp.example", "http://bad", "http://bad:80", "https://user:pw@api.openai.com"]
    assert [u for u in allowed if not policy.allowed(u)] == []
    assert [u for u in refused if policy.allowed(u)] == []


# -- other hostile input: a clear answer and a span, never a bare 500 -----------------------------


def test_body_not_matching_its_content_encoding_is_a_400_and_traced(sec_proxy, recorder):
    request_id = new_id()
    recorder.seen.clear()
    status, answer = raw(sec_proxy, "POST", "/v1/chat/completions",
                         {"Content-Encoding": "gzip", "GenOps-Request-Id": request_id}, CHAT)
    assert status == 400, answer
    assert error_of("openai", answer)[0] == "unreadable_body"
    assert recorder.seen == []
    attrs = sec_proxy.span(request_id)["SpanAttributes"]
    assert attrs["error.type"] == "unreadable_body" and attrs["http.response.status_code"] == "400"


def test_upstream_model_that_is_no_string_still_gives_a_span(sec_proxy):
    request_id = new_id()
    answer = orjson.dumps({"id": "x", "model": {"name": "gpt-4o-mini"}, "choices": [],
                           "usage": {"prompt_tokens": 3, "completion_tokens": 2}}).decode()
    status, body = raw(sec_proxy, "POST", "/v1/chat/completions",
                       {"X-Recorder-Answer": answer, "GenOps-Request-Id": request_id}, CHAT)
    assert status == 200 and orjson.loads(body)["model"] == {"name": "gpt-4o-mini"}  # relayed untouched
    attrs = sec_proxy.span(request_id)["SpanAttributes"]
    assert attrs["http.response.status_code"] == "200" and attrs["gen_ai.usage.input_tokens"] == "3"


# -- 1. user info is never echoed, stored or logged ------------------------------------------------


def test_mask_userinfo():
    assert mask_userinfo("http://user:KEY@host:1/p?q") == "http://***@host:1/p?q"
    assert mask_userinfo("http://user:KEY@host/a@b", "") == "http://host/a@b"
    assert mask_userinfo("https://host/models/claude@2024:rawPredict") == "https://host/models/claude@2024:rawPredict"
    assert mask_userinfo("user:KEY@host") == "***@host"
    assert mask_userinfo("http://[") == "http://["


@pytest.mark.parametrize("header", ["GenOps-Target-Url", "Helicone-Target-URL"])
@pytest.mark.parametrize("target", [
    f"http://user:{TARGET_SECRET}@127.0.0.1:1",
    f"https://user:{TARGET_SECRET}@api.openai.com",
    f"http://{TARGET_SECRET}@127.0.0.1:1/v1",
    f"http://user:{TARGET_SECRET}@[127.0.0.1]:1",  # malformed too
    f"http://user:{TARGET_SECRET}@127.0.0.1:99999",
    f"http://user:{TARGET_SECRET[:10]}/{TARGET_SECRET[10:]}@127.0.0.1:1",  # a raw '/' inside the password
])
def test_target_url_userinfo_is_never_echoed(sec_proxy, recorder, header, target):
    request_id = new_id()
    recorder.seen.clear()
    via = openai.OpenAI(base_url=sec_proxy.url + "/v1", api_key="sk-x", max_retries=0,
                        default_headers={"GenOps-Request-Id": request_id, header: target})
    with pytest.raises(openai.APIStatusError) as info:
        via.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert info.value.status_code == 400 and info.value.code == "invalid_target_url"
    answer = info.value.response.text
    assert [part for part in SECRET_PARTS if part in answer] == []
    assert "***@" in answer
    assert recorder.seen == []
    span = sec_proxy.span(request_id)
    assert span["SpanAttributes"]["error.type"] == "invalid_target_url"
    assert "***@" in span["StatusMessage"] and TARGET_SECRET not in str(span)


def test_configured_upstream_credentials_never_stored_or_shown(sec_proxy, fake_upstream):
    ok_id, dead_id = new_id(), new_id()
    fake_upstream.clear()
    via = openai.OpenAI(base_url=sec_proxy.url + "/u/creds/v1", api_key="sk-x", max_retries=0,
                        default_headers={"GenOps-Request-Id": ok_id})
    assert via.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices
    assert fake_upstream.requests()[-1]["path"] == "/v1/chat/completions"
    attrs = sec_proxy.span(ok_id)["SpanAttributes"]
    assert attrs["genops.upstream.url"].startswith("http://127.0.0.1:") and "@" not in attrs["genops.upstream.url"]

    dead = openai.OpenAI(base_url=sec_proxy.url + "/u/deadcreds/v1", api_key="sk-x", max_retries=0,
                         default_headers={"GenOps-Request-Id": dead_id})
    with pytest.raises(openai.APIStatusError) as info:
        dead.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert info.value.status_code == 502
    assert DEAD_SECRET not in info.value.response.text and "dead-user" not in info.value.response.text
    assert sec_proxy.span(dead_id)["SpanAttributes"]["error.type"] == "upstream_unreachable"


def _read_if_still_there(path: Path) -> bytes:
    """A spool segment can be removed once its batch is stored, between the walk and the read."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def test_no_secret_anywhere_in_storage_spool_or_logs(sec_proxy):
    """Every call of this module, plus its own, stored and spooled: no secret in any column of any
    span, in any spool file, or in the server's logs. Runs last in the module."""
    for target in (f"http://user:{TARGET_SECRET}@127.0.0.1:1", f"http://user:{TARGET_SECRET}@[127.0.0.1]:1"):
        raw(sec_proxy, "POST", "/v1/chat/completions", {"GenOps-Target-Url": target}, CHAT)
    raw(sec_proxy, "POST", "/u/deadcreds/v1/chat/completions", {}, CHAT)
    raw(sec_proxy, "POST", "/u/creds/v1/chat/completions", {}, CHAT)
    sentinel = new_id()  # spans are exported in order: once this one is in, so are the calls before it
    raw(sec_proxy, "GET", "/u/fake/v1/models", {"GenOps-Request-Id": sentinel})
    sec_proxy.span(sentinel)
    rows = sec_proxy.sql("SELECT * FROM otel_traces")
    stored = orjson.dumps(rows, default=str).decode()
    # ClickHouse's own directory is skipped: its parts are compressed (read through SQL above), and
    # its background merges create and remove temporary parts while the walk runs.
    files = []
    for folder, subfolders, names in os.walk(sec_proxy.data_dir):
        subfolders[:] = [name for name in subfolders if name != "clickhouse"]
        files += [Path(folder, name) for name in names]
    assert any("spool" in path.parts for path in files), "the spool should hold the exported batches"
    assert any(path.name == "serve.log" for path in files)  # the server's stdout and stderr
    for secret in (*SECRETS, *SECRET_PARTS):
        assert secret not in stored
        leaked = [str(p) for p in files if secret.encode() in _read_if_still_there(p)]
        assert leaked == [], (secret, leaked)
    assert "Error handling request" not in sec_proxy.logs()  # no hostile input made an unhandled 500
