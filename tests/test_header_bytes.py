"""Issue #18 part 6: header values with bytes that are not UTF-8 (0x80-0xff) never cost a 500 or
a span.

Sent over a raw socket (no client library would send such bytes): in a header forwarded upstream,
and in each header the proxy reads itself (identity, request id, target, safety policy). Each call
is answered (200, or a clear 400 in the provider's shape) and recorded by exactly one span, whose
values carry the bytes as backslash escapes (``\\xff``).
"""

from __future__ import annotations

import socket
import threading
import uuid

import orjson
import pytest

pytestmark = pytest.mark.e2e

# Valid UTF-8 ("é") is kept; every byte that is not UTF-8 becomes a backslash escape.
RAW = b"caf\xc3\xa9-" + bytes(range(0x80, 0x100, 9))
ESCAPED = "café-" + "".join(f"\\x{b:02x}" for b in range(0x80, 0x100, 9))
FULL = bytes(range(0x80, 0x100))  # every byte 0x80-0xff
BODY = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello bytes"}]})


def raw_call(url: str, headers: list[tuple[bytes, bytes]], path: bytes = b"/v1/chat/completions",
             body: bytes = BODY) -> tuple[int, dict[str, bytes], bytes]:
    host, port = url.rsplit("//", 1)[1].split(":")
    head = [b"POST " + path + b" HTTP/1.1", b"Host: " + host.encode(), b"Content-Type: application/json",
            b"Authorization: Bearer sk-bytes", b"Connection: close", b"Content-Length: " + str(len(body)).encode()]
    head += [name + b": " + value for name, value in headers]
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
        data = b""
        while True:
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    lines = head_bytes.split(b"\r\n")
    status = int(lines[0].split()[1])
    response_headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        response_headers[name.strip().lower().decode()] = value.strip()
    return status, response_headers, payload


# header -> the span attribute that keeps its value (None: the header is not stored)
CASES = {
    b"X-Custom-Forwarded": None,
    b"GenOps-User-Id": "genops.user.id",
    b"GenOps-Session-Id": "gen_ai.conversation.id",
    b"GenOps-Property-Team": "genops.property.team",
    b"Helicone-User-Id": "genops.user.id",
    b"Helicone-Property-Env": "genops.property.env",
    b"GenOps-Prompt-Version": "genops.prompt.version",
    b"GenOps-Target-Url": None,
    b"GenOps-Safety-Policy": None,
    b"x-portkey-metadata": None,
}


@pytest.mark.parametrize("header", list(CASES), ids=[h.decode() for h in CASES])
def test_header_bytes_answered_and_traced(proxy, header):
    marker = "bytes-" + uuid.uuid4().hex
    status, _, payload = raw_call(proxy.url, [(b"GenOps-Agent-Name", marker.encode()), (header, RAW)])
    assert status in (200, 400), (status, payload)
    full_marker = marker + "-full"
    full_status, _, _ = raw_call(proxy.url, [(b"GenOps-Agent-Name", full_marker.encode()), (header, FULL)])
    assert full_status == status
    proxy.wait_rows(f"SELECT 1 FROM otel_traces WHERE SpanAttributes['gen_ai.agent.name'] = '{full_marker}'")
    body = orjson.loads(payload)
    if status == 400:  # a clear refusal in OpenAI's shape, never the proxy's 500
        assert body["error"]["code"] and body["error"]["message"]
    else:
        assert body["object"] == "chat.completion"
    rows = proxy.wait_rows(f"SELECT SpanAttributes FROM otel_traces WHERE SpanAttributes['gen_ai.agent.name'] = '{marker}'")
    assert len(rows) == 1
    attribute = CASES[header]
    if attribute:
        assert status == 200
        assert rows[0]["SpanAttributes"][attribute] == ESCAPED


@pytest.mark.parametrize("header", [b"GenOps-Request-Id", b"Helicone-Request-Id"])
def test_request_id_bytes(proxy, header):
    marker = "bytes-" + uuid.uuid4().hex
    status, response_headers, _ = raw_call(proxy.url, [(b"GenOps-Agent-Name", marker.encode()),
                                                       (header, RAW + marker.encode())])
    assert status == 200
    request_id = ESCAPED + marker
    assert response_headers["genops-request-id"] == request_id.encode()  # escaped, ASCII: usable for feedback
    rows = proxy.wait_rows(f"SELECT SpanAttributes FROM otel_traces WHERE SpanAttributes['gen_ai.agent.name'] = '{marker}'")
    assert len(rows) == 1
    assert rows[0]["SpanAttributes"]["genops.request.id"] == request_id


def test_many_calls_each_traced(proxy):
    """50 calls with bytes in identity headers: 50 spans (the issue found 50 of 50 untraced)."""
    marker = "bytes-many-" + uuid.uuid4().hex
    for i in range(50):
        status, _, _ = raw_call(proxy.url, [(b"GenOps-Agent-Name", marker.encode()), (b"GenOps-User-Id", RAW),
                                            (b"GenOps-Session-Id", RAW + str(i).encode())])
        assert status == 200
    rows = proxy.wait_rows(
        f"SELECT count() AS n FROM otel_traces WHERE SpanAttributes['gen_ai.agent.name'] = '{marker}' HAVING n >= 50")
    assert int(rows[0]["n"]) == 50



class RawUpstream:
    """An upstream that keeps the raw bytes of each request head and answers a tiny chat completion."""

    REPLY = orjson.dumps({"id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
                          "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                       "finish_reason": "stop"}],
                          "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}})

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    piece = conn.recv(65536)
                    if not piece:
                        break
                    data += piece
                head, _, rest = data.partition(b"\r\n\r\n")
                self.heads.append(head)
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(rest) < length:
                    rest += conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                             b"Content-Length: " + str(len(self.REPLY)).encode() + b"\r\n\r\n" + self.REPLY)


@pytest.mark.parametrize("client", ["native", "aiohttp"])
def test_forwarded_header_bytes_never_altered(tmp_path_factory, client):
    """A forwarded header with bytes 0x80-0xff, with either upstream client: forwarded byte for byte,
    or refused with a clear 400 (never sent with its bytes dropped); one span per call either way."""
    from conftest import start_proxy

    upstream = RawUpstream()
    proc = start_proxy(tmp_path_factory.mktemp("genops-bytes-" + client),
                       {"GENOPS_OPENAI_BASE_URL": upstream.url, "GENOPS_UPSTREAM_CLIENT": client})
    try:
        marker = "bytes-fwd-" + uuid.uuid4().hex
        status, _, payload = raw_call(proc.url, [(b"GenOps-Agent-Name", marker.encode()),
                                                 (b"X-Custom-Forwarded", FULL)])
        if client == "native":  # GenOps's own client sends the bytes as received
            assert status == 200
        if status == 200:
            assert any(b"X-Custom-Forwarded: " + FULL + b"\r\n" in head + b"\r\n" for head in upstream.heads)
        else:
            assert status == 400 and orjson.loads(payload)["error"]["code"] == "invalid_header_bytes"
            assert not upstream.heads  # nothing was sent
        proc.wait_rows(f"SELECT 1 FROM otel_traces WHERE SpanAttributes['gen_ai.agent.name'] = '{marker}'")
    finally:
        proc.stop()
        upstream.sock.close()


def test_fake_upstream_log_survives_forwarded_header_bytes(proxy, fake_upstream):
    """The fake upstream's request log (other tests read it) shows forwarded header bytes escaped instead of failing."""
    marker = "log-" + uuid.uuid4().hex
    status, _, _ = raw_call(proxy.url, [(b"X-Log-Marker", marker.encode()), (b"X-Custom-Forwarded", FULL)])
    assert status == 200
    logged = [r for r in fake_upstream.requests() if r["headers"].get("X-Log-Marker") == marker]
    assert len(logged) == 1
    assert logged[0]["headers"]["X-Custom-Forwarded"] == "".join(f"\\x{b:02x}" for b in FULL)
