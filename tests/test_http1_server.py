"""The native HTTP/1.1 server (runtime/http1/) in process: what a client cannot see from outside and
tests/test_server_conformance.py therefore does not compare (flow control, a handler's view of a
client gone, a head aiohttp would refuse to write), and the head rules it shares with aiohttp.

Real sockets on 127.0.0.1; no mocks; waits are bounded and no duration is asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest
from multidict import CIMultiDict

from genops.proxy.client_side import ClientGone
from genops.runtime.http1 import wire
from genops.runtime.http1.exchange import Http1Exchange
from genops.runtime.http1.server import Http1Server

pytestmark = pytest.mark.integration

WAIT_S = 20.0


@contextlib.asynccontextmanager
async def serving(dispatch):
    server = Http1Server(dispatch, header_timeout_s=10.0, max_body_bytes=1 << 20)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)  # accepted sockets inherit it: a small kernel buffer
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    listener = await server.listen(sock, 128)
    try:
        yield server, sock.getsockname()[1]
    finally:
        await listener.stop()
        for connection in list(server.connections):
            connection.close()
        sock.close()


async def _request(port: int, head: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.connect(("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 16)
    writer.write(head)
    await writer.drain()
    return reader, writer


GET = b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n"


async def test_a_stream_waits_while_the_client_does_not_read():
    """8 MB streamed to a client that reads nothing for a while: the server's send buffer stays
    near the transport's high-water mark instead of holding the whole answer."""
    largest: list[int] = []
    backed_up = asyncio.Event()  # the kernel's buffers are full: the transport holds what is written

    async def dispatch(exchange: Http1Exchange) -> None:
        await exchange.start(200, CIMultiDict({"Content-Type": "application/octet-stream"}))
        transport = exchange.connection.transport
        for _ in range(128):
            await exchange.write(b"x" * 65536)
            largest.append(transport.get_write_buffer_size())
            if largest[-1]:
                backed_up.set()
        await exchange.end()

    async with serving(dispatch) as (_, port):
        reader, writer = await _request(port, GET)
        await asyncio.wait_for(backed_up.wait(), WAIT_S)  # from here on only flow control bounds the buffer
        received = 0
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
        assert b"Transfer-Encoding: chunked" in head
        while True:
            size = int((await asyncio.wait_for(reader.readline(), WAIT_S)).strip(), 16)
            if size == 0:
                break
            received += len(await asyncio.wait_for(reader.readexactly(size + 2), WAIT_S)) - 2
        writer.close()
    assert received == 128 * 65536
    assert max(largest) < 1024 * 1024  # never the whole 8 MB


async def test_a_handler_writing_to_a_client_gone_gets_client_gone():
    outcome: asyncio.Future = asyncio.get_running_loop().create_future()

    async def dispatch(exchange: Http1Exchange) -> None:
        await exchange.start(200, CIMultiDict({"Content-Type": "text/event-stream"}))
        await exchange.write(b"data: 1\n\n")
        while not exchange.connection.lost:
            await asyncio.sleep(0.01)
        try:
            await exchange.write(b"data: 2\n\n")
        except ClientGone as exc:
            outcome.set_result(exc)
        else:
            outcome.set_result(None)

    async with serving(dispatch) as (_, port):
        reader, writer = await _request(port, GET)
        await asyncio.wait_for(reader.readuntil(b"data: 1\n\n"), WAIT_S)
        writer.close()
        assert isinstance(await asyncio.wait_for(outcome, WAIT_S), ConnectionResetError)


async def test_a_header_that_would_inject_a_line_is_a_500_and_the_connection_closes():
    async def dispatch(exchange: Http1Exchange) -> None:
        await exchange.send(200, CIMultiDict({"X-Bad": "a\r\nSet-Cookie: owned=1"}), b"{}")

    async with serving(dispatch) as (_, port):
        reader, writer = await _request(port, GET)
        answer = await asyncio.wait_for(reader.read(), WAIT_S)  # ends: the connection closed
        writer.close()
    assert answer.startswith(b"HTTP/1.1 500 ")
    assert b"owned" not in answer


async def test_requests_are_answered_in_order_and_a_slow_first_one_holds_the_second():
    order: list[str] = []
    release = asyncio.Event()

    async def dispatch(exchange: Http1Exchange) -> None:
        if exchange.path == "/slow":
            await release.wait()
        order.append(exchange.path)
        await exchange.send(200, CIMultiDict({"Content-Type": "text/plain"}), exchange.path.encode())

    async with serving(dispatch) as (_, port):
        reader, writer = await _request(port, b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\nGET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
        await asyncio.sleep(0.2)
        assert order == []  # the second waits for the first, though it arrived
        release.set()
        first = await asyncio.wait_for(reader.readuntil(b"/slow"), WAIT_S)
        second = await asyncio.wait_for(reader.readuntil(b"/fast"), WAIT_S)
        writer.close()
    assert order == ["/slow", "/fast"]
    assert first.startswith(b"HTTP/1.1 200 ") and b"HTTP/1.1 200 " in second


@pytest.mark.parametrize(("version", "status", "method", "length", "expected", "absent", "keeps"), [
    ("1.1", 200, "POST", 2, {"Content-Length": "2"}, ("Connection", "Transfer-Encoding"), True),
    ("1.1", 200, "HEAD", 2, {"Content-Length": "2"}, ("Content-Type",), True),  # HEAD keeps the length
    ("1.1", 204, "POST", 0, {}, ("Content-Length", "Content-Type"), True),
    ("1.1", 200, "POST", None, {"Transfer-Encoding": "chunked", "Content-Type": "application/octet-stream"},
     ("Content-Length",), True),
    ("1.0", 200, "POST", None, {}, ("Transfer-Encoding", "Connection"), False),  # ends with the connection
    ("1.0", 200, "POST", 2, {"Connection": "keep-alive"}, (), True),
])
def test_the_head_follows_aiohttps_rules(version, status, method, length, expected, absent, keeps):
    headers: CIMultiDict[str] = CIMultiDict()
    data, chunked, keep_alive = wire.head(version, status, headers, method, length=length, keep_alive=True)
    assert data.startswith(f"HTTP/{version} {status} ".encode()) and data.endswith(b"\r\n\r\n")
    for name, value in expected.items():
        assert headers[name] == value
    for name in absent:
        assert name not in headers
    assert "Date" in headers and "Server" in headers
    assert chunked == (length is None and version == "1.1" and status != 204)
    assert keep_alive is keeps


def test_a_closing_answer_says_so_on_http_1_1_only():
    for version, header in (("1.1", "close"), ("1.0", None)):
        headers: CIMultiDict[str] = CIMultiDict()
        wire.head(version, 200, headers, "GET", length=0, keep_alive=False)
        assert headers.get("Connection") == header
