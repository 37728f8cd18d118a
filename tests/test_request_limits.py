"""Issue #18 part 7: an oversized Content-Length gets an early 413, a stalled body a 408, and a
half-sent request head a closed connection; the first two are recorded as spans.

Raw sockets, so the test controls exactly what the client sends and when it stops. Responses are
awaited with a socket timeout (a hang fails the test); how fast they come is never asserted.
"""

from __future__ import annotations

import socket
import uuid

import orjson
import pytest
from conftest import start_proxy, upstream_env

pytestmark = pytest.mark.e2e

WAIT_S = 30  # socket timeout: the proxy's own timeouts below are 1 s


@pytest.fixture(scope="module")
def limits_proxy(tmp_path_factory, fake_upstream):
    env = upstream_env(fake_upstream.url)
    env.update({"GENOPS_CLIENT_HEADER_TIMEOUT_S": "1", "GENOPS_CLIENT_BODY_TIMEOUT_S": "1"})
    proc = start_proxy(tmp_path_factory.mktemp("genops-limits"), env)
    yield proc
    proc.stop()


def _connect(proxy) -> socket.socket:
    host, port = proxy.url.rsplit("//", 1)[1].split(":")
    sock = socket.create_connection((host, int(port)), timeout=WAIT_S)
    return sock


def _head(path: str, request_id: str, length: int, extra: str = "") -> bytes:
    auth = ("x-api-key: sk-ant-limits\r\nanthropic-version: 2023-06-01\r\n" if path.startswith("/anthropic")
            else "Authorization: Bearer sk-limits\r\n")
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{auth}"
            f"GenOps-Request-Id: {request_id}\r\nContent-Length: {length}\r\n{extra}\r\n").encode()


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response: its head, then a body of its Content-Length (the connection may stay open)."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        assert piece, f"connection closed before a response: {data!r}"
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        piece = sock.recv(65536)
        assert piece
        rest += piece
    return int(lines[0].split()[1]), headers, rest[:length]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/anthropic/v1/messages"])
def test_oversized_content_length_gets_early_413(limits_proxy, path):
    request_id = "limits-" + uuid.uuid4().hex
    with _connect(limits_proxy) as sock:
        sock.sendall(_head(path, request_id, 40 * 1024 * 1024))  # 40 MB declared, nothing sent
        status, headers, body = _read_response(sock)
    assert status == 413
    assert headers.get("connection", "").lower() == "close"
    error = orjson.loads(body)
    if path.startswith("/anthropic"):
        assert error["type"] == "error" and error["error"]["type"] == "request_too_large"
    else:
        assert error["error"]["code"] == "request_too_large"
    assert "GENOPS_MAX_BODY_BYTES" in body.decode()
    attrs = limits_proxy.span(request_id)["SpanAttributes"]
    assert attrs["http.response.status_code"] == "413" and attrs["error.type"] == "request_too_large"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/anthropic/v1/messages"])
def test_stalled_body_gets_408(limits_proxy, path):
    request_id = "limits-" + uuid.uuid4().hex
    with _connect(limits_proxy) as sock:
        sock.sendall(_head(path, request_id, 200) + b'{"model": "gpt-4o-mini", "mess')  # then nothing
        status, headers, body = _read_response(sock)
    assert status == 408
    assert headers.get("connection", "").lower() == "close"
    assert "GENOPS_CLIENT_BODY_TIMEOUT_S" in body.decode()
    attrs = limits_proxy.span(request_id)["SpanAttributes"]
    assert attrs["http.response.status_code"] == "408" and attrs["error.type"] == "request_timeout"


def test_body_sent_slowly_but_steadily_is_served(limits_proxy, fake_upstream):
    """Pauses shorter than the body timeout, many times over: the body timer restarts with each piece."""
    import time

    request_id = "limits-" + uuid.uuid4().hex
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 40}]})
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer sk-t\r\nGenOps-Request-Id: {request_id}\r\nContent-Length: {len(body)}\r\n\r\n")
    with _connect(limits_proxy) as sock:
        sock.sendall(head.encode())
        for start in range(0, len(body), len(body) // 4 + 1):
            time.sleep(0.4)  # 4 pauses of 0.4 s: 1.6 s in all, over the 1 s timeout, each under it
            sock.sendall(body[start : start + len(body) // 4 + 1])
        status, _, payload = _read_response(sock)
    assert status == 200, payload
    assert limits_proxy.span(request_id)["SpanAttributes"]["http.response.status_code"] == "200"


def test_half_sent_head_is_closed(limits_proxy):
    with _connect(limits_proxy) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: abc")  # then nothing
        assert sock.recv(65536) == b""  # closed by the server (a hang would raise socket.timeout)


def test_idle_connection_is_closed(limits_proxy):
    with _connect(limits_proxy) as sock:
        assert sock.recv(65536) == b""  # no request at all within the header timeout


def test_a_small_client_body_limit_does_not_limit_the_workers_span_batches(tmp_path, fake_upstream):
    """GENOPS_MAX_BODY_BYTES limits clients' model calls, not the span batches a worker hands to the
    store process (before, a limit below a batch's size refused every batch: no span was stored)."""
    env = upstream_env(fake_upstream.url)
    env.update({"GENOPS_MAX_BODY_BYTES": "2048", "GENOPS_STORE_PROCESS": "separate",
                "GENOPS_EXPORT_INTERVAL_MS": "1000"})  # a few calls' spans in one batch, over 2048 bytes
    proc = start_proxy(tmp_path / "small-limit", env)
    try:
        ids = [uuid.uuid4().hex for _ in range(4)]
        for request_id in ids:
            body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 600}]})
            with _connect(proc) as sock:
                sock.sendall(_head("/v1/chat/completions", request_id, len(body)) + body)
                status, _, _ = _read_response(sock)
            assert status == 200
        quoted = ", ".join(f"'{i}'" for i in ids)
        rows = proc.wait_rows(f"SELECT count() AS n FROM otel_traces WHERE SpanAttributes['genops.request.id'] "
                              f"IN ({quoted}) HAVING n = {len(ids)}")
        assert rows[0]["n"] == len(ids)
    finally:
        proc.stop()
