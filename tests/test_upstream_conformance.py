"""Both upstream clients, native (proxy/upstream_client.py) and aiohttp (proxy/upstream_aiohttp.py),
against the same real local servers: aiohttp is the reference, so every test here runs twice.

Servers are aiohttp.web apps on 127.0.0.1 (or ::1), or raw asyncio servers where a test needs
exact bytes (framings, a truncated body, oversized headers); a small forward proxy (CONNECT and
absolute-form) is written here too. No mocks. No wall-clock assertions.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import gzip
import hashlib
import socket
import ssl
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from genops.config import Settings
from genops.proxy.upstream import create_upstream_client
from genops.proxy.upstream_aiohttp import AiohttpUpstreamClient
from genops.proxy.upstream_client import UpstreamClient

pytestmark = pytest.mark.e2e

MB = 1024 * 1024
TIMEOUT = 20.0  # generous: the large-body bug made read() wait for the timeout instead of the body
SIZES = [0, 1, 503 * 1024, 629 * 1024, 5 * MB, 64 * MB]
SIZE_IDS = ["0B", "1B", "503KB", "629KB", "5MB", "64MB"]
NO_PROXIES: dict[str, str] = {}  # most tests must not depend on the machine's proxy variables


@pytest.fixture(params=["native", "aiohttp"])
def kind(request) -> str:
    return request.param


def make_client(kind: str, **options):
    options.setdefault("proxies", NO_PROXIES)
    return UpstreamClient(**options) if kind == "native" else AiohttpUpstreamClient(**options)


@contextlib.asynccontextmanager
async def client_for(kind: str, **options):
    client = make_client(kind, **options)
    try:
        yield client
    finally:
        await client.close()


async def call(client, url: str, method: str = "POST", data: bytes | None = b"{}", headers: dict | None = None,
               timeout: float = TIMEOUT):
    sent = CIMultiDict({"Content-Type": "application/json"} if headers is None else headers)
    return await client.request(method, url, data=data, headers=sent, total_timeout=timeout, connect_timeout=timeout)


def body_of(size: int) -> bytes:
    """``size`` bytes that are not all alike, so a byte out of place shows."""
    block = hashlib.sha256(str(size).encode()).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


@contextlib.asynccontextmanager
async def serve(app: web.Application, host: str = "127.0.0.1",
                ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """Serve ``app`` on ``host`` and a free port; yields the port."""
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, 0, ssl_context=ssl_context)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def raw_server(respond, host: str = "127.0.0.1") -> AsyncIterator[tuple[int, list[bytes]]]:
    """An asyncio server: reads each request (head and Content-Length body), records it, then
    ``await respond(request bytes, writer)``; a true return keeps the connection for another."""
    requests: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + (await reader.readexactly(length) if length else b"")
                requests.append(request)
                if not await respond(request, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, 0)
    try:
        yield server.sockets[0].getsockname()[1], requests
    finally:
        server.close()
        await server.wait_closed()


def sized_app() -> web.Application:
    """``/length/N``, ``/chunked/N``: N bytes (Content-Length / chunked); ``/echo``: the request
    body's length and SHA-256, and its method."""

    async def length(request: web.Request) -> web.Response:
        return web.Response(body=body_of(int(request.match_info["size"])), content_type="application/octet-stream")

    async def chunked(request: web.Request) -> web.StreamResponse:
        body = body_of(int(request.match_info["size"]))
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(body), MB):
            await response.write(body[start:start + MB])
        await response.write_eof()
        return response

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"method": request.method, "length": len(body),
                                  "sha256": hashlib.sha256(body).hexdigest(),
                                  "content_type": request.headers.get("Content-Type")})

    app = web.Application(client_max_size=128 * MB)
    app.router.add_get("/length/{size}", length)
    app.router.add_get("/chunked/{size}", chunked)
    app.router.add_route("*", "/echo", echo)
    return app


async def close_delimited(size: int):
    """A raw responder: ``size`` bytes ended by the connection closing (no length, not chunked)."""
    body = body_of(size)

    async def respond(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/octet-stream\r\n\r\n")
        for start in range(0, len(body), MB):
            writer.write(body[start:start + MB])
            await writer.drain()
        return False

    return respond


# -- bodies ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
async def test_whole_response_bodies_of_any_size_and_framing(kind, framing, size):
    # The large-body bug: a non-streamed body over HIGH_WATER (256 KiB) paused the transport and
    # read() never resumed it, so 629 KB waited for the total timeout.
    async with contextlib.AsyncExitStack() as stack:
        if framing == "close":
            port, _ = await stack.enter_async_context(raw_server(await close_delimited(size)))
        else:
            port = await stack.enter_async_context(serve(sized_app()))
        client = await stack.enter_async_context(client_for(kind))
        response = await call(client, f"http://127.0.0.1:{port}/{framing}/{size}", "GET", None)
        assert response.status == 200
        body = await response.read()
        response.release()
        assert len(body) == size and body == body_of(size)


@pytest.mark.parametrize("size", [0, 629 * 1024, 5 * MB, 64 * MB], ids=["0B", "629KB", "5MB", "64MB"])
@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
async def test_streamed_response_bodies(kind, framing, size):
    async with contextlib.AsyncExitStack() as stack:
        if framing == "close":
            port, _ = await stack.enter_async_context(raw_server(await close_delimited(size)))
        else:
            port = await stack.enter_async_context(serve(sized_app()))
        client = await stack.enter_async_context(client_for(kind))
        response = await call(client, f"http://127.0.0.1:{port}/{framing}/{size}", "GET", None)
        digest, total = hashlib.sha256(), 0
        async for piece in response.content.iter_any():
            digest.update(piece)
            total += len(piece)
        response.release()
        assert total == size and digest.digest() == hashlib.sha256(body_of(size)).digest()


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_request_bodies_of_any_size_arrive_whole(kind, size):
    async with serve(sized_app()) as port, client_for(kind) as client:
        body = body_of(size)
        response = await call(client, f"http://127.0.0.1:{port}/echo", "POST", body or None,
                              {"Content-Type": "application/octet-stream"})
        answer = await response.read()
        response.release()
        import json
        seen = json.loads(answer)
        assert seen["length"] == size and seen["sha256"] == hashlib.sha256(body).hexdigest()


async def test_compressed_responses_pass_through_raw(kind):
    text = b'{"data": [' + b'{"embedding": [0.1, 0.2]},' * 5000 + b"{}]}"
    packed = {"gzip": gzip.compress(text), "br": b"\x1b\xff\x00not-decoded-brotli\x00" + body_of(4096)}

    async def answer(request: web.Request) -> web.Response:
        encoding = request.match_info["encoding"]
        return web.Response(body=packed[encoding], headers={"Content-Encoding": encoding,
                                                            "Content-Type": "application/json"})

    app = web.Application()
    app.router.add_get("/{encoding}", answer)
    async with serve(app) as port, client_for(kind) as client:
        for encoding, raw in packed.items():
            response = await call(client, f"http://127.0.0.1:{port}/{encoding}", "GET", None)
            assert response.headers["Content-Encoding"] == encoding
            assert await response.read() == raw  # the client gets the upstream's bytes, not decoded
            response.release()
            streamed = await call(client, f"http://127.0.0.1:{port}/{encoding}", "GET", None)
            assert b"".join([piece async for piece in streamed.content.iter_any()]) == raw
            streamed.release()


async def test_multipart_upload_and_binary_answer_are_byte_identical(kind):
    audio = bytes(range(256)) * 4096 + b"\r\n--not-the-boundary\r\n"  # binary, CRLFs and all
    boundary = "----genops-test-boundary-7MA4YWxkTrZu0gW"
    upload = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
              f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
              f"Content-Type: audio/wav\r\n\r\n").encode() + audio + f"\r\n--{boundary}--\r\n".encode()
    received: dict[str, object] = {}

    async def transcriptions(request: web.Request) -> web.Response:
        received["raw"] = await request.read()
        received["type"] = request.headers["Content-Type"]
        return web.json_response({"text": "ok"})

    async def speech(request: web.Request) -> web.Response:
        return web.Response(body=audio, content_type="audio/mpeg")

    app = web.Application(client_max_size=16 * MB)
    app.router.add_post("/v1/audio/transcriptions", transcriptions)
    app.router.add_post("/v1/audio/speech", speech)
    async with serve(app) as port, client_for(kind) as client:
        response = await call(client, f"http://127.0.0.1:{port}/v1/audio/transcriptions", "POST", upload,
                              {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert response.status == 200
        await response.read()
        response.release()
        assert received["raw"] == upload and received["type"] == f"multipart/form-data; boundary={boundary}"
        response = await call(client, f"http://127.0.0.1:{port}/v1/audio/speech", "POST", b'{"input": "hi"}')
        assert response.headers["Content-Type"] == "audio/mpeg"
        assert await response.read() == audio
        response.release()


async def test_the_upstream_sees_the_same_request_bytes_from_both_clients():
    async def ok(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return True

    cases = [("GET", "/v1/models?limit=2", None), ("DELETE", "/v1/files/file-abc", None),
             ("POST", "/v1/chat/completions", b'{"model": "m"}'), ("POST", "/v1/files/a b?x=é", None),
             ("PUT", "/v1/thing", b"x" * 20000)]
    seen: dict[str, list[bytes]] = {}
    async with raw_server(ok) as (port, requests):
        for name in ("native", "aiohttp"):
            async with client_for(name) as client:
                for method, path, data in cases:
                    response = await call(client, f"http://127.0.0.1:{port}{path}", method, data,
                                          {"Authorization": "Bearer sk-test", "X-Twice": "1"})
                    assert await response.read() == b"ok"
                    response.release()
            seen[name] = requests[-len(cases):]
    assert seen["native"] == seen["aiohttp"]
    assert seen["native"][1].startswith(b"DELETE /v1/files/file-abc HTTP/1.1\r\n")


# -- broken upstreams ----------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 5000,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1388\r\n" + b"x" * 5000 + b"\r\n",
], ids=["length", "chunked"])
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_an_upstream_closing_mid_body_is_a_payload_error(kind, raw, streamed):
    # proxy/handler.py maps aiohttp.ClientPayloadError (a ClientError) to a 502, or to
    # "upstream_stream_broken" mid-stream.
    async def then_close(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(raw)
        await writer.drain()
        return False

    async with raw_server(then_close) as (port, _), client_for(kind) as client:
        response = await call(client, f"http://127.0.0.1:{port}/", "GET", None)
        with pytest.raises(aiohttp.ClientPayloadError):
            if streamed:
                async for _ in response.content.iter_any():
                    pass
            else:
                await response.read()
        response.release()


@pytest.mark.parametrize("head, fails", [
    (b"X-Big: " + b"a" * 8000 + b"\r\n", False),
    (b"X-Big: " + b"a" * 9000 + b"\r\n", True),
    (b"X-" + b"a" * 9000 + b": v\r\n", True),
    (b"".join(b"X-%d: v\r\n" % i for i in range(100)), False),
    (b"".join(b"X-%d: v\r\n" % i for i in range(200)), True),
    (b"X-Endless: " + b"a" * (3 * MB) + b"\r\n", True),
], ids=["8000B-value", "9000B-value", "9000B-name", "100-fields", "200-fields", "3MB-value"])
async def test_response_headers_over_aiohttps_limits_are_a_client_response_error(kind, head, fails):
    # aiohttp's defaults (max_field_size/max_line_size 8190, max_headers 128) for both clients;
    # a ClientResponseError is an aiohttp.ClientError: proxy/handler.py answers 502.
    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\n" + head + b"Content-Length: 2\r\n\r\nok")
        await writer.drain()
        return False

    async with raw_server(answer) as (port, _), client_for(kind) as client:
        if fails:
            with pytest.raises(aiohttp.ClientResponseError):
                await call(client, f"http://127.0.0.1:{port}/", "GET", None)
        else:
            response = await call(client, f"http://127.0.0.1:{port}/", "GET", None)
            assert await response.read() == b"ok"
            response.release()


# -- IPv6, TLS with SNI ----------------------------------------------------------------------------------

def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
async def test_ipv6_upstream(kind):
    async with serve(sized_app(), "::1") as port, client_for(kind) as client:
        response = await call(client, f"http://[::1]:{port}/echo", "POST", b"over v6")
        assert response.status == 200 and b'"length": 7' in await response.read()
        response.release()


def make_ca_and_server_cert(tmp_path, host: str) -> tuple[str, str, str]:
    """A test CA and a server certificate for ``host`` signed by it: (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "GenOps test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return tuple(str(path) for path in paths)  # type: ignore[return-value]


HOST = "api.test.genops"


class CountingResolver:
    """Resolves every name to 127.0.0.1 and counts the questions."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        return ["127.0.0.1"]


def tls_server_context(cert: str, key: str, server_names: list[str | None]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: server_names.append(name)  # type: ignore[assignment]
    return context


async def test_tls_with_sni_for_a_host_name_verified_through_ssl_cert_file(kind, tmp_path, monkeypatch):
    ca, cert, key = make_ca_and_server_cert(tmp_path, HOST)
    names: list[str | None] = []
    async with serve(sized_app(), ssl_context=tls_server_context(cert, key, names)) as port:
        url = f"https://{HOST}:{port}/echo"
        async with client_for(kind, resolver=CountingResolver()) as untrusted:
            with pytest.raises(aiohttp.ClientConnectionError):  # the test CA is not trusted yet
                await call(untrusted, url)
        monkeypatch.setenv("SSL_CERT_FILE", ca)
        async with client_for(kind, resolver=CountingResolver()) as client:
            response = await call(client, url, "POST", b"secret")
            assert response.status == 200 and b'"length": 6' in await response.read()
            response.release()
        assert names[-1] == HOST  # the name went in the handshake (SNI), and the certificate matched it
        wrong = ssl.create_default_context(cafile=ca)
        async with client_for(kind, resolver=CountingResolver(), ssl_context=wrong) as client:
            # the same server under a name its certificate does not carry: refused
            with pytest.raises(aiohttp.ClientConnectionError):
                await call(client, f"https://other.test.genops:{port}/echo")


# -- outbound proxies --------------------------------------------------------------------------------------

class ForwardProxy:
    """A tiny forward proxy: ``CONNECT host:port`` tunnels, absolute-form requests are re-sent in
    origin-form to their host (without ``Proxy-Authorization``). Every name resolves to 127.0.0.1."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []  # each request head the proxy got
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> ForwardProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        self.seen.append(head)
        method, target, version = head.split(b"\r\n", 1)[0].split(b" ")
        if method == b"CONNECT":
            port = int(target.rsplit(b":", 1)[1])
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:  # absolute-form: http://host:port/path
            rest = target.split(b"://", 1)[1]
            authority, _, path = rest.partition(b"/")
            port = int(authority.rsplit(b":", 1)[1]) if b":" in authority else 80
            lines = [line for line in head.split(b"\r\n")[1:] if not line.lower().startswith(b"proxy-authorization:")]
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            up_writer.write(b"%s /%s %s\r\n" % (method, path, version) + b"\r\n".join(lines))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))


def basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


async def test_http_upstream_through_a_proxy_in_absolute_form_with_credentials():
    async def ok(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nproxied")
        return True

    upstream_saw: dict[str, list[bytes]] = {}
    async with raw_server(ok) as (port, requests), ForwardProxy() as proxy:
        proxies = {"http": f"http://us%40er:p%3Ass@127.0.0.1:{proxy.port}"}
        for name in ("native", "aiohttp"):
            async with client_for(name, proxies=proxies) as client:
                before = len(proxy.seen)
                response = await call(client, f"http://127.0.0.1:{port}/v1/chat/completions?x=1", "POST", b"{}")
                assert await response.read() == b"proxied"
                response.release()
                head = proxy.seen[before]
                assert head.startswith(b"POST http://127.0.0.1:%d/v1/chat/completions?x=1 HTTP/1.1\r\n" % port)
                assert b"\r\nProxy-Authorization: " + basic("us@er", "p:ss") + b"\r\n" in head
                upstream_saw[name] = requests[-1]
    assert upstream_saw["native"] == upstream_saw["aiohttp"]


async def test_https_upstream_through_a_connect_tunnel_read_from_the_environment(kind, tmp_path, monkeypatch):
    ca, cert, key = make_ca_and_server_cert(tmp_path, HOST)
    names: list[str | None] = []
    async with serve(sized_app(), ssl_context=tls_server_context(cert, key, names)) as port, \
            ForwardProxy() as proxy:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTPS_PROXY", f"http://user:pw@127.0.0.1:{proxy.port}")
        monkeypatch.setenv("no_proxy", "localhost,.example.com")
        client = make_client(kind, proxies=None, ssl_context=ssl.create_default_context(cafile=ca))
        try:
            response = await call(client, f"https://{HOST}:{port}/echo", "POST", b"tunnelled")
            assert response.status == 200 and b'"length": 9' in await response.read()
            response.release()
        finally:
            await client.close()
        connect = proxy.seen[-1]
        assert connect.startswith(b"CONNECT %s:%d HTTP/1.1\r\n" % (HOST.encode(), port))
        assert b"\r\nProxy-Authorization: " + basic("user", "pw") + b"\r\n" in connect
        assert names[-1] == HOST  # TLS end to end, through the tunnel, with SNI


@pytest.mark.parametrize("no_proxy, host, proxied", [
    ("127.0.0.1", "127.0.0.1", False), ("localhost,127.0.0.1:{port}", "127.0.0.1", False),
    ("127.0.0.1:1", "127.0.0.1", True), ("*", HOST, False), (".test.genops", HOST, False),
    ("test.genops", HOST, False), ("genops.other", HOST, True), ("", HOST, True),
])
async def test_no_proxy_matching(kind, no_proxy, host, proxied):
    async def ok(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return True

    async with raw_server(ok) as (port, _), ForwardProxy() as proxy:
        proxies = {"http": f"127.0.0.1:{proxy.port}", "no": no_proxy.format(port=port)}  # no scheme: http://
        async with client_for(kind, proxies=proxies, resolver=CountingResolver()) as client:
            response = await call(client, f"http://{host}:{port}/", "GET", None)
            assert await response.read() == b"ok"
            response.release()
        assert bool(proxy.seen) == proxied


# -- DNS cache and connection limit -------------------------------------------------------------------

@pytest.mark.parametrize("ttl, questions", [(10.0, 1), (0.0, 3)])
async def test_dns_answers_are_cached_for_their_ttl(kind, ttl, questions):
    async def answer_and_close(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        return False  # a new connection (and a name to resolve) for each call

    resolver = CountingResolver()
    async with raw_server(answer_and_close) as (port, requests), \
            client_for(kind, resolver=resolver, dns_cache_ttl_s=ttl) as client:
        for _ in range(3):
            response = await call(client, f"http://{HOST}:{port}/", "GET", None)
            assert await response.read() == b"ok"
            response.release()
        assert len(requests) == 3
    assert resolver.calls == [HOST] * questions


async def test_connections_per_origin_are_limited(kind):
    open_now, most = 0, 0
    release = asyncio.Event()

    async def track(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_now, most
        open_now += 1
        most = max(most, open_now)
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                await release.wait()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            open_now -= 1
            writer.close()

    server = await asyncio.start_server(track, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def one(client) -> bytes:
        response = await call(client, f"http://127.0.0.1:{port}/", "GET", None)
        body = await response.read()
        response.release()
        return body

    try:
        async with client_for(kind, max_connections=2) as client:
            calls = [asyncio.ensure_future(one(client)) for _ in range(8)]
            while most < 2:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)  # time for a third connection, were the limit not kept
            release.set()
            assert await asyncio.gather(*calls) == [b"ok"] * 8
            assert most == 2
            release.clear()  # both connections busy again: one more call waits past its connect timeout
            busy = [asyncio.ensure_future(one(client)) for _ in range(2)]
            await asyncio.sleep(0.05)
            with pytest.raises(asyncio.TimeoutError):
                await client.request("GET", f"http://127.0.0.1:{port}/", data=None, headers=CIMultiDict(),
                                     total_timeout=TIMEOUT, connect_timeout=0.2)
            release.set()
            assert await asyncio.gather(*busy) == [b"ok"] * 2
            assert most == 2
    finally:
        server.close()
        await server.wait_closed()


# -- the factory ---------------------------------------------------------------------------------------------

def test_the_factory_picks_the_client_the_settings_name():
    assert type(create_upstream_client(Settings(upstream_client="native"), proxies={})) is UpstreamClient
    assert type(create_upstream_client(Settings(upstream_client="aiohttp"), proxies={})) is AiohttpUpstreamClient
