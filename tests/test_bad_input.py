"""Bad input gets a clear error in the provider's own shape, and the span still says what happened."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import openai
import orjson
import pytest
from conftest import free_port, start_proxy

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def strict_proxy(tmp_path_factory, fake_upstream):
    """Small body limit and a 1 s upstream timeout."""
    proc = start_proxy(tmp_path_factory.mktemp("strict"), {
        "GENOPS_OPENAI_BASE_URL": fake_upstream.url,
        "GENOPS_MAX_BODY_BYTES": "4096",
        "GENOPS_UPSTREAM_TIMEOUT_S": "1",
    })
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def dead_upstream_proxy(tmp_path_factory):
    """An upstream nobody listens on."""
    proc = start_proxy(tmp_path_factory.mktemp("dead"), {"GENOPS_OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}"})
    yield proc
    proc.stop()


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer sk-x",
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def assert_openai_error(body: bytes, code: str) -> dict:
    error = orjson.loads(body)["error"]
    assert set(error) >= {"message", "type", "code"}
    assert error["code"] == code
    assert "Traceback" not in error["message"]
    return error


def test_malformed_json_is_400_in_openai_shape_and_traced(proxy, request_id):
    status, headers, body = post(proxy.url + "/v1/chat/completions", b'{"model": "gpt-4o", "messages": [',
                                 {"GenOps-Request-Id": request_id})
    assert status == 400
    error = assert_openai_error(body, "invalid_json")
    assert error["type"] == "invalid_request_error"
    assert headers["GenOps-Request-Id"] == request_id
    span = proxy.span(request_id)
    assert span["StatusCode"] == "Error"
    assert span["SpanAttributes"]["error.type"] == "invalid_json"
    assert span["SpanAttributes"]["http.response.status_code"] == "400"


def test_malformed_json_through_the_sdk_raises_bad_request(proxy):
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.post("/chat/completions", content=b"not json", cast_to=object)
    assert info.value.code == "invalid_json"


def test_oversized_body_is_413_and_traced(strict_proxy, request_id):
    big = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 10_000}]})
    status, _, body = post(strict_proxy.url + "/v1/chat/completions", big, {"GenOps-Request-Id": request_id})
    assert status == 413
    assert "4096" in assert_openai_error(body, "request_too_large")["message"]
    attrs = strict_proxy.span(request_id)["SpanAttributes"]
    assert attrs["error.type"] == "request_too_large"
    assert attrs["http.response.status_code"] == "413"


def test_upstream_timeout_is_504(strict_proxy, request_id):
    client = openai.OpenAI(base_url=strict_proxy.url + "/v1", api_key="sk-x", max_retries=0,
                           default_headers={"GenOps-Request-Id": request_id, "X-Fake-Delay-Ms": "3000"})
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 504
    assert info.value.code == "upstream_timeout"
    span = strict_proxy.span(request_id)
    assert span["StatusCode"] == "Error"
    assert span["SpanAttributes"]["error.type"] == "upstream_timeout"
    assert span["SpanAttributes"]["gen_ai.request.model"] == "gpt-4o-mini"


def test_upstream_unreachable_is_502(dead_upstream_proxy, request_id):
    client = openai.OpenAI(base_url=dead_upstream_proxy.url + "/v1", api_key="sk-x", max_retries=0,
                           default_headers={"GenOps-Request-Id": request_id})
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 502
    assert info.value.code == "upstream_unreachable"
    assert "unreachable: ConnectionRefusedError" in info.value.message  # what failed, not just "connect error"
    assert dead_upstream_proxy.span(request_id)["SpanAttributes"]["error.type"] == "upstream_unreachable"


@pytest.mark.parametrize("status,exc,code", [
    (429, openai.RateLimitError, "rate_limit_exceeded"),
    (401, openai.AuthenticationError, "invalid_api_key"),
    (500, openai.InternalServerError, None),
])
def test_upstream_errors_pass_through_verbatim(proxy, fake_upstream, request_id, status, exc, code):
    headers = {"X-Fake-Status": str(status)}
    direct = openai.OpenAI(base_url=fake_upstream.url + "/v1", api_key="sk-x", max_retries=0, default_headers=headers)
    via = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-x", max_retries=0,
                        default_headers={**headers, "GenOps-Request-Id": request_id})
    kwargs = dict(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(exc) as expected:
        direct.chat.completions.create(**kwargs)
    with pytest.raises(exc) as got:
        via.chat.completions.create(**kwargs)
    assert got.value.body == expected.value.body
    assert got.value.code == code
    if status == 429:
        assert got.value.response.headers["retry-after"] == "1"
        assert got.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    span = proxy.span(request_id)
    assert span["StatusCode"] == "Error"
    assert span["SpanAttributes"]["http.response.status_code"] == str(status)
    assert span["SpanAttributes"]["error.type"] == (code or "server_error")


def test_streamed_upstream_error_passes_through(proxy, fake_upstream):
    via = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-x", max_retries=0,
                        default_headers={"X-Fake-Status": "429"})
    with pytest.raises(openai.RateLimitError):
        list(via.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True))


def test_client_disconnect_mid_stream_is_recorded(proxy, request_id):
    body = orjson.dumps({"model": "gpt-4o-mini", "stream": True,
                         "messages": [{"role": "user", "content": "one two three four five six"}]})
    port = int(proxy.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer sk-x\r\nX-Fake-Chunk-Delay-Ms: 300\r\n"
            + f"GenOps-Request-Id: {request_id}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
        )
        received = b""
        while b"data:" not in received:
            received += sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 200")
    # The socket is closed after the first event; the proxy notices at its next write.
    span = proxy.span(request_id, timeout=20)
    attrs = span["SpanAttributes"]
    assert attrs["genops.client.disconnected"] == "true"
    assert attrs["error.type"] == "client_disconnected"
    assert span["StatusCode"] == "Error"
    # It stopped well before the ~3 s the full stream takes: the upstream read was cancelled.
    assert span["Duration"] < 2_500_000_000


def test_unknown_route_is_clear_404(proxy):
    status, _, body = post(proxy.url + "/nope/v9/chat", b"{}")
    assert status == 404
    error = assert_openai_error(body, "unknown_route")
    assert "/v1" in error["message"]


def test_health_and_readiness(proxy):
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(proxy.url + path) as response:
            assert response.status == 200
            assert orjson.loads(response.read())["status"] in {"ok", "ready"}
