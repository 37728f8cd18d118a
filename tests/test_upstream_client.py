"""The proxy's own upstream HTTP/1.1 client (proxy/upstream_client.py) against raw servers.

Each server here is a plain asyncio protocol that writes exactly the bytes a test needs:
body framings (length, chunked, until close), a stream arriving piece by piece, a keep-alive
connection the server drops, 100 Continue, HEAD, stalls for the timeouts, and TLS.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl

import aiohttp
import pytest
from multidict import CIMultiDict

from genops.proxy import upstream_client
from genops.proxy.upstream_client import UpstreamClient

pytestmark = pytest.mark.integration


class RawServer:
    """Answers each request with ``respond(index of the request, connection number, head)``;
    ``None`` closes the connection without answering."""

    def __init__(self, respond) -> None:
        self.respond = respond
        self.requests: list[bytes] = []
        self.connections = 0
        self.closed = 0
        self.server: asyncio.AbstractServer | None = None

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                self.requests.append(head + body)
                answer = self.respond(len(self.requests) - 1, number, head)
                if answer is None:
                    break
                if isinstance(answer, bytes):
                    writer.write(answer)
                else:
                    await answer(writer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client left, or the test is over
        finally:
            self.closed += 1
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def ok(body: bytes = b"hello", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def call(client: UpstreamClient, url: str, method: str = "POST", data: bytes | None = b"{}",
               timeout: float = 5.0):
    return await client.request(method, url, data=data, headers=CIMultiDict({"Content-Type": "application/json"}),
                                total_timeout=timeout, connect_timeout=timeout)


async def test_keep_alive_connection_is_reused_and_headers_and_body_arrive():
    server = RawServer(lambda i, conn, head: ok(b"reply %d" % i, b"X-Twice: a\r\nX-Twice: b\r\n"))
    port = await server.start()
    client = UpstreamClient()
    try:
        for i in range(3):
            response = await call(client, f"http://127.0.0.1:{port}/v1/chat/completions?x=1")
            assert response.status == 200
            assert response.headers.getall("x-twice") == ["a", "b"]
            assert await response.read() == b"reply %d" % i
            response.release()
        assert server.connections == 1
        assert server.requests[0].startswith(b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port)
        assert server.requests[0].endswith(b"\r\n\r\n{}")
    finally:
        await client.close()
        await server.stop()


async def test_chunked_body_is_relayed_piece_by_piece_as_it_arrives():
    second_may_go = asyncio.Event()

    async def stream(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"d\r\ndata: first\n\n\r\n")
        await writer.drain()
        await second_may_go.wait()  # only once the client has the first piece
        writer.write(b"e\r\ndata: second\n\n\r\n0\r\n\r\n")

    server = RawServer(lambda i, conn, head: stream)
    port = await server.start()
    client = UpstreamClient()
    try:
        response = await call(client, f"http://127.0.0.1:{port}/stream")
        pieces = []
        async for piece in response.content.iter_any():
            pieces.append(piece)
            second_may_go.set()
        response.release()
        assert pieces == [b"data: first\n\n", b"data: second\n\n"]
        again = await call(client, f"http://127.0.0.1:{port}/stream")  # the connection went back to the pool
        assert await again.read() == b"data: first\n\ndata: second\n\n"
        again.release()
        assert server.connections == 1
    finally:
        await client.close()
        await server.stop()


@pytest.mark.parametrize("raw, expected", [
    # no length, not chunked: the body is everything until the upstream closes
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\nall of it", b"all of it"),
    # a length the upstream does not deliver: truncated
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b", aiohttp.ClientPayloadError),
])
async def test_a_body_ended_by_the_upstream_closing(raw, expected):
    async def then_close(writer: asyncio.StreamWriter) -> None:
        writer.write(raw)
        await writer.drain()
        writer.close()

    server = RawServer(lambda i, conn, head: then_close)
    port = await server.start()
    client = UpstreamClient()
    try:
        response = await call(client, f"http://127.0.0.1:{port}/")
        if isinstance(expected, bytes):
            assert await response.read() == expected
        else:
            with pytest.raises(expected):
                await response.read()
        response.release()
    finally:
        await client.close()
        await server.stop()


@pytest.mark.parametrize("method, retried", [("GET", True), ("POST", False)])
async def test_a_kept_connection_the_upstream_dropped_is_retried_only_for_idempotent_methods(method, retried):
    # The first connection answers once, then closes on the next request without a byte: the
    # race of a keep-alive connection closed by the upstream just as it is reused.
    server = RawServer(lambda i, conn, head: None if (conn == 1 and i == 1) else ok(b"fine"))
    port = await server.start()
    client = UpstreamClient()
    url = f"http://127.0.0.1:{port}/v1/models"
    data = None if method == "GET" else b"{}"
    try:
        first = await call(client, url, method, data)
        assert await first.read() == b"fine"
        first.release()
        if retried:
            second = await call(client, url, method, data)
            assert await second.read() == b"fine"
            second.release()
            assert server.connections == 2 and len(server.requests) == 3
        else:  # a POST may have been acted on: never sent twice
            with pytest.raises(aiohttp.ServerDisconnectedError):
                await call(client, url, method, data)
            assert len(server.requests) == 2
    finally:
        await client.close()
        await server.stop()


async def test_informational_response_before_the_real_one_and_head_without_body():
    def respond(i: int, conn: int, head: bytes) -> bytes:
        if head.startswith(b"HEAD"):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"  # no body follows a HEAD
        return b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"after continue")

    server = RawServer(respond)
    port = await server.start()
    client = UpstreamClient()
    try:
        response = await call(client, f"http://127.0.0.1:{port}/")
        assert response.status == 200 and await response.read() == b"after continue"
        response.release()
        head = await call(client, f"http://127.0.0.1:{port}/", "HEAD", None)
        assert head.status == 200 and head.headers["Content-Length"] == "1234"
        assert await asyncio.wait_for(head.read(), 2) == b""
        head.release()
    finally:
        await client.close()
        await server.stop()


async def test_timeouts_before_the_headers_and_mid_body():
    async def never(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async def stalls(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await asyncio.sleep(30)

    server = RawServer(lambda i, conn, head: never if b"/never" in head else stalls)
    port = await server.start()
    client = UpstreamClient()
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(asyncio.TimeoutError):
            await call(client, f"http://127.0.0.1:{port}/never", timeout=0.3)
        assert loop.time() - started < 5
        response = await call(client, f"http://127.0.0.1:{port}/stalls", timeout=0.3)
        pieces = []
        with pytest.raises(asyncio.TimeoutError):
            async for piece in response.content.iter_any():
                pieces.append(piece)
        assert pieces == [b"first"]
        response.release()
    finally:
        await client.close()
        await server.stop()


async def test_unreachable_upstream_is_a_client_error():
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    client = UpstreamClient()
    with pytest.raises(aiohttp.ClientConnectionError):
        await call(client, f"http://127.0.0.1:{port}/")
    await client.close()


async def test_big_body_is_flow_controlled_and_arrives_whole(monkeypatch):
    monkeypatch.setattr(upstream_client, "HIGH_WATER", 64 * 1024)
    pauses = []
    pause = upstream_client._Connection.pause
    monkeypatch.setattr(upstream_client._Connection, "pause",
                        lambda conn: (pauses.append(conn), pause(conn)))
    body = bytes(range(256)) * (4 * 4096)  # 4 MiB
    server = RawServer(lambda i, conn, head: ok(body))
    port = await server.start()
    client = UpstreamClient()
    try:
        response = await call(client, f"http://127.0.0.1:{port}/big")
        received = bytearray()
        async for piece in response.content.iter_any():
            received += piece
            await asyncio.sleep(0.002)  # a slow client
        response.release()
        assert bytes(received) == body
        assert pauses, "reading from the upstream never paused for the slow client"
    finally:
        await client.close()
        await server.stop()


async def test_path_and_query_are_encoded_as_aiohttp_would():
    server = RawServer(lambda i, conn, head: ok())
    port = await server.start()
    client = UpstreamClient()
    try:
        for url in (f"http://127.0.0.1:{port}/v1/files/a file?q=x y", f"http://127.0.0.1:{port}/v1/é?a=%2F&b=c"):
            response = await call(client, url, "GET", None)
            await response.read()
            response.release()
            async with aiohttp.ClientSession() as stock:
                async with stock.get(url) as expected:
                    await expected.read()
            assert server.requests[-2].split(b"\r\n", 1)[0] == server.requests[-1].split(b"\r\n", 1)[0]
    finally:
        await client.close()
        await server.stop()


def _self_signed(tmp_path) -> tuple[str, str]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


async def test_https_upstream_verified_against_the_system_trust_store(tmp_path, monkeypatch):
    cert, key = _self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    server = RawServer(lambda i, conn, head: ok(b"secure"))
    port = await server.start(server_context)
    try:
        untrusted = UpstreamClient()
        with pytest.raises(aiohttp.ClientConnectionError):  # not in the trust store: refused
            await call(untrusted, f"https://127.0.0.1:{port}/")
        await untrusted.close()
        monkeypatch.setenv("SSL_CERT_FILE", cert)  # how a deployment adds its own CA
        client = UpstreamClient()
        response = await call(client, f"https://127.0.0.1:{port}/v1/chat/completions")
        assert await response.read() == b"secure"
        response.release()
        await client.close()
    finally:
        await server.stop()


async def test_connections_idle_past_the_keep_alive_time_are_closed(monkeypatch):
    monkeypatch.setattr(upstream_client, "KEEPALIVE_S", 0.2)
    server = RawServer(lambda i, conn, head: ok())
    port = await server.start()
    client = UpstreamClient()
    url = f"http://127.0.0.1:{port}/"
    try:
        burst = await asyncio.gather(call(client, url), call(client, url))  # two connections
        for response in burst:
            await response.read()
            response.release()
        assert server.connections == 2
        loop = asyncio.get_running_loop()
        until = loop.time() + 0.6
        while loop.time() < until:  # steady traffic reuses one; the other idles past the limit
            response = await call(client, url)
            await response.read()
            response.release()
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert server.connections == 2 and server.closed == 1
    finally:
        await client.close()
        await server.stop()


@pytest.mark.parametrize("size", [629 * 1024, 5 * 1024 * 1024, 64 * 1024 * 1024], ids=["629KB", "5MB", "64MB"])
@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
async def test_whole_body_read_past_the_high_water_mark_does_not_hang(framing, size):
    # Issue #18: read() of a body over HIGH_WATER (256 KiB) paused the transport and never
    # resumed it: a 629 KB embeddings answer waited for the total timeout, then 504.
    from aiohttp import web

    body = bytes(range(256)) * (size // 256)

    async def answer(request: web.Request) -> web.StreamResponse:
        if framing == "length":
            return web.Response(body=body)
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(body), 1 << 20):
            await response.write(body[start:start + (1 << 20)])
        await response.write_eof()
        return response

    async def until_close(writer: asyncio.StreamWriter) -> None:  # no length, not chunked
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    app = web.Application()
    app.router.add_get("/", answer)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    raw = RawServer(lambda i, conn, head: until_close)
    if framing == "close":
        port = await raw.start()
    client = UpstreamClient()
    try:
        response = await call(client, f"http://127.0.0.1:{port}/", "GET", None, timeout=15.0)
        if framing == "close":
            assert "Content-Length" not in response.headers and "Transfer-Encoding" not in response.headers
        assert await response.read() == body  # before the fix: asyncio.TimeoutError after 15 s
        response.release()
    finally:
        await client.close()
        await runner.cleanup()
        await raw.stop()
