"""The worker's two HTTP servers, native (httptools + asyncio protocols) and aiohttp.web, answer alike.

Two real ``genops serve`` processes (``GENOPS_STORE_PROCESS=separate``: a supervisor with the store,
a worker on the public port) differ only in ``GENOPS_HTTP_SERVER``. Every probe runs against both
at once and their normalized results must be EQUAL, aiohttp being the reference; where the right
behaviour is clear the probe also asserts it, so both servers wrong in the same way still fail.

Normalized: the status line (version, code, reason) and any 1xx before it, the framing (length,
chunked, close-delimited), the header names as a sorted multiset (case-insensitive), the values of
every header but ``Date``, ``Server``, ``GenOps-Request-Id``, ``traceparent`` and ``x-request-id``,
and the body (de-chunked; a JSON error parsed). ``Date`` and ``Server`` must still be there (aiohttp
sends both on every answer, errors included), and ``Date`` in the HTTP date format.

Raw sockets (asyncio streams) where bytes and framing matter, the official ``openai`` SDK for a
plain and a streamed call. No mocks; real chDB. Waits are bounded (a hang fails the test) and no
duration is asserted.

The shared proxies' settings: ``GENOPS_MAX_BODY_BYTES`` 1 MiB (this suite found it also limited the
supervisor's internal span ingest; it no longer does: tests/test_request_limits.py).
Client header and body timeouts are 1 s.

aiohttp behaviours found by these probes (the reference, so the native server must do the same):

* An answer given before the request body was read whole (the 413 on a declared length, the 408)
  says ``Connection: close`` but aiohttp first *lingers*: it reads and drops the rest of the body
  for up to 10 s, then closes. A body that ends meanwhile closes it at once.
* Errors of the request head are answered ``HTTP/1.0 400 Bad Request``, ``text/plain;
  charset=utf-8``, with no ``Connection`` header (HTTP/1.0 closes), then the connection is closed.
  A header line over 65,536 bytes is such a 400 too (not a 431), a request line over 8,190 bytes
  too (not a 414), and so are more than 128 header lines.
* ``Expect: 100-continue`` gets ``HTTP/1.1 100 Continue`` as soon as the head is routed, before
  the handler runs: also for a GET, a 404, and a body whose declared length the handler then
  refuses with a 413. Another expectation gets a plain-text 417, and the connection is kept: the
  body sent along is skipped and the next request answered.
* Invalid chunk framing that arrives after the handler started reading the body is not a 400:
  the parser's error never reaches the request's payload, so the handler waits for the body and
  answers 408 after ``GENOPS_CLIENT_BODY_TIMEOUT_S`` (then lingers). In the same packet as the
  head it is the 400 above. The one deliberate difference: the native server tells the reader at
  once (a 400 ``unreadable_body``), see test_bad_chunk_after_the_handler_started.
* A percent-encoded ``/`` (``%2F``) in the path reaches the upstream decoded, and the query string
  is re-encoded (``%2F`` becomes ``/``, ``%20`` becomes ``+``): see test_upstream_sees_the_target_as_sent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import signal
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from aiohttp import web
from conftest import FakeUpstream, Proxy, serve_in_thread, start_proxy, upstream_env, wait_ready

pytestmark = pytest.mark.e2e

REFERENCE = "aiohttp"
SERVERS = (REFERENCE, "native")
MAX_BODY = 1 << 20
WAIT_S = 30.0  # longest wait for an answer: a hang fails the test, no duration is ever asserted
CLOSE_WAIT_S = 20.0  # the server closes an idle or finished connection within this
LINGER_WAIT_S = 40.0  # ... or this, where aiohttp first lingers up to 10 s over an unread body
#: Header values that differ by nature from call to call (their names are still compared).
VOLATILE = frozenset({"date", "server", "genops-request-id", "traceparent", "x-request-id"})
AUTH = ("Authorization", "Bearer sk-conformance")
JSON_TYPE = ("Content-Type", "application/json")


# -- the servers ----------------------------------------------------------------------------------

@dataclass
class Recorder:
    """An upstream in the test process that records each request as it arrived, raw."""

    url: str
    seen: list[dict[str, Any]] = field(default_factory=list)

    def find(self, tag: str) -> list[dict[str, Any]]:
        return [r for r in self.seen if tag in r["target"]]


@pytest.fixture(scope="module")
def recorder() -> Any:
    seen: list[dict[str, Any]] = []

    async def record(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append({"method": request.method, "target": request.raw_path, "body": body,
                     "headers": [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]})
        return web.Response(body=b'{"recorded":true}', content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    with serve_in_thread(app) as url:
        yield Recorder(url, seen)


def start_both(data_dir: Path, env: dict[str, str]) -> dict[str, Proxy]:
    """One ``genops serve`` per server, started side by side."""
    proxies: dict[str, Proxy] = {}
    try:
        for name in SERVERS:
            proxies[name] = start_proxy(data_dir / name, {**env, "GENOPS_STORE_PROCESS": "separate",
                                                          "GENOPS_HTTP_SERVER": name}, wait=False)
        for proxy in proxies.values():
            wait_ready(proxy)
    except BaseException:
        for proxy in proxies.values():
            proxy.stop(signal.SIGKILL)
        raise
    return proxies


@dataclass
class Servers:
    proxies: dict[str, Proxy]
    #: The probes that wait for aiohttp's lingering close (~11 s), started in the background at once.
    lingering: concurrent.futures.Future


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, fake_upstream: FakeUpstream, recorder: Recorder) -> Any:
    env = {**upstream_env(fake_upstream.url), "GENOPS_UPSTREAM_REC": recorder.url + "/v1",
           "GENOPS_MAX_BODY_BYTES": str(MAX_BODY), "GENOPS_CLIENT_HEADER_TIMEOUT_S": "1",
           "GENOPS_CLIENT_BODY_TIMEOUT_S": "1"}
    proxies = start_both(tmp_path_factory.mktemp("conformance"), env)
    background = concurrent.futures.ThreadPoolExecutor(1)
    lingering = background.submit(asyncio.run, _lingering_probes(proxies))
    try:
        yield Servers(proxies, lingering)
    finally:
        concurrent.futures.wait([lingering], timeout=2 * LINGER_WAIT_S)
        background.shutdown(wait=False)
        for proxy in proxies.values():
            proxy.stop()


async def on_both(proxies: dict[str, Proxy], probe: Callable[[Proxy], Awaitable[Any]]) -> dict[str, Any]:
    """``probe`` run against every server at once: {server: result}."""
    results = await asyncio.gather(*(probe(proxies[name]) for name in SERVERS))
    return dict(zip(SERVERS, results, strict=True))


def assert_same(results: dict[str, Any]) -> None:
    """Every server's (normalized) result equals the reference's."""
    for name in SERVERS:
        assert results[name] == results[REFERENCE], f"{name} differs from the {REFERENCE} reference"


# -- raw HTTP/1.1 ---------------------------------------------------------------------------------

@dataclass
class Reply:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    interim: list[str]  # the status lines of 1xx answers before this one
    framing: str = "none"  # length, chunked, close (read to EOF) or none (HEAD, 204, 304)
    body: bytes = b""

    def get(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n.lower() == name]
        assert len(values) <= 1, (name, self.headers)
        return values[0] if values else None

    def json(self) -> Any:
        return orjson.loads(self.body)


def normal(reply: Reply, *, body: bool = True) -> dict[str, Any]:
    """What two servers' answers must share (see the module's doc); ``body=False``: not the body (nor
    its length), for answers whose wording or contents may differ."""
    assert reply.get("server"), f"no Server header: {reply.headers}"  # (get: at most one of each)
    date = reply.get("date") or ""
    assert email.utils.parsedate_to_datetime(date).tzname() == "UTC" and date.endswith(" GMT"), reply.headers
    skip = VOLATILE if body else VOLATILE | {"content-length"}
    values = sorted(((n.lower(), v) for n, v in reply.headers if n.lower() not in skip), key=lambda item: item[0])
    out: dict[str, Any] = {"status_line": (reply.version, reply.status, reply.reason), "interim": reply.interim,
                           "framing": reply.framing, "names": sorted(n.lower() for n, _ in reply.headers),
                           "values": values}
    if body:
        content_type = reply.get("content-type") or ""
        is_json_error = reply.status >= 400 and content_type.startswith("application/json") and reply.body
        out["body"] = reply.json() if is_json_error else reply.body
    return out


class Conn:
    """One client connection: raw bytes out, parsed answers in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, server: Proxy | int) -> Conn:
        """A connection to ``server`` (a proxy, or a port on 127.0.0.1)."""
        port = server if isinstance(server, int) else port_of(server)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def head(self) -> Reply:
        """The next final answer's status line and headers (1xx answers before it are kept in ``interim``)."""
        interim: list[str] = []
        async with asyncio.timeout(WAIT_S):
            while True:
                try:
                    raw = await self.reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as exc:
                    raise AssertionError(f"connection closed before an answer; got {exc.partial[:300]!r}") from None
                lines = raw[:-4].decode("latin-1").split("\r\n")
                version, _, rest = lines[0].partition(" ")
                code, _, reason = rest.partition(" ")
                if 100 <= int(code) < 200:
                    interim.append(lines[0])
                    continue
                headers = []
                for line in lines[1:]:
                    name, colon, value = line.partition(":")
                    assert colon and name == name.strip(), f"malformed header line {line!r}"
                    headers.append((name, value.strip(" \t")))
                return Reply(version, int(code), reason, headers, interim)

    async def body(self, reply: Reply, *, method: str = "GET") -> Reply:
        """Reads ``reply``'s body, as its headers frame it."""
        encoding = (reply.get("transfer-encoding") or "").lower()
        length = reply.get("content-length")
        async with asyncio.timeout(WAIT_S):
            if method == "HEAD" or reply.status in (204, 304):
                reply.framing = "none"
            elif encoding:
                assert encoding == "chunked", encoding
                reply.framing, reply.body = "chunked", await self._chunks()
            elif length is not None:
                reply.framing, reply.body = "length", await self.reader.readexactly(int(length))
            else:
                reply.framing, reply.body = "close", await self.reader.read()
        return reply

    async def _chunks(self) -> bytes:
        body = bytearray()
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                break
            body += await self.reader.readexactly(size)
            assert await self.reader.readexactly(2) == b"\r\n", "chunk not ended by CRLF"
        assert await self.reader.readuntil(b"\r\n") == b"\r\n", "trailers in a response"
        return bytes(body)

    async def reply(self, *, method: str = "GET") -> Reply:
        return await self.body(await self.head(), method=method)

    async def closed(self, within: float = CLOSE_WAIT_S) -> bytes:
        """Waits for the server to close the connection (EOF, or a reset); returns the bytes that came first."""
        data = b""
        try:
            async with asyncio.timeout(within):
                while piece := await self.reader.read(65536):
                    data += piece
        except ConnectionResetError:
            pass
        except TimeoutError:
            raise AssertionError(f"the server kept the connection open over {within} s (got {data[:200]!r})") from None
        return data

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


def port_of(server: Proxy | FakeUpstream) -> int:
    return int(server.url.rsplit(":", 1)[1])


def request(method: str, target: str, headers: Iterable[tuple[str, str]] = (), body: bytes = b"", *,
            version: str = "1.1", length: bool = True) -> bytes:
    """A request's bytes; header values are latin-1 text, so any byte can be written."""
    lines = [f"{method} {target} HTTP/{version}", "Host: 127.0.0.1", *(f"{n}: {v}" for n, v in headers)]
    if length and (body or method in ("POST", "PUT", "PATCH")):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chat_body(prompt: str, *, stream: bool = False) -> bytes:
    return orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}],
                         **({"stream": True} if stream else {})})


def chat(prompt: str, *, stream: bool = False, headers: Iterable[tuple[str, str]] = (), **options: Any) -> bytes:
    return request("POST", "/v1/chat/completions", [AUTH, JSON_TYPE, *headers], chat_body(prompt, stream=stream),
                   **options)


def sse_text(body: bytes) -> str:
    """The text a streamed chat answer's events carry."""
    events = [orjson.loads(line[6:]) for line in body.split(b"\n") if line.startswith(b"data: {")]
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])


def chunked(body: bytes, size: int, *, extension: str = "", trailer: str = "") -> bytes:
    """``body`` in the chunked transfer coding, ``size`` bytes a chunk."""
    out = b"".join(b"%x%s\r\n%s\r\n" % (len(body[i:i + size]), extension.encode(), body[i:i + size])
                   for i in range(0, len(body), size))
    return out + b"0\r\n" + (trailer.encode() + b"\r\n" if trailer else b"") + b"\r\n"


async def fetch(server: Proxy | int, data: bytes, *, method: str = "GET") -> Reply:
    """One request on a connection of its own."""
    conn = await Conn.open(server)
    try:
        await conn.send(data)
        return await conn.reply(method=method)
    finally:
        await conn.close()


def assert_openai_error(reply: Reply, status: int, code: str) -> dict[str, Any]:
    assert reply.status == status, (reply.status, reply.body[:300])
    assert reply.get("content-type") == "application/json"
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code, error
    assert error["type"] == "invalid_request_error"
    return error


# -- 1, 2: a plain and a streamed chat call ------------------------------------------------------------

async def test_plain_chat_completion(servers: Servers) -> None:
    """The fake upstream's answer, its headers and ours (``GenOps-Request-Id``, ``traceparent``), with a length."""
    async def probe(proxy: Proxy) -> Any:
        reply = await fetch(proxy, chat("one plain call", headers=[("GenOps-Request-Id", "conf-plain-1")]))
        assert (reply.version, reply.status, reply.framing) == ("HTTP/1.1", 200, "length")
        assert reply.get("genops-request-id") == "conf-plain-1"  # a client's own id is kept
        assert reply.get("connection") is None  # kept alive: HTTP/1.1's default goes unsaid
        assert reply.json()["choices"][0]["message"]["content"] == "Hello! This is a fake reply about: one plain call"
        return normal(reply)

    assert_same(await on_both(servers.proxies, probe))


def sdk(proxy: Proxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-conformance", max_retries=0)


def sdk_head(raw: Any) -> dict[str, Any]:
    """An SDK answer's status, version and headers, normalized as :func:`normal` does."""
    headers = [(k.decode().lower(), v.decode()) for k, v in raw.headers.raw]
    return {"status": raw.status_code, "version": raw.http_response.http_version,
            "names": sorted(k for k, _ in headers), "values": sorted((k, v) for k, v in headers if k not in VOLATILE)}


def test_plain_chat_completion_through_the_sdk(servers: Servers) -> None:
    """The SDK (httpx) gets the same status, headers and parsed completion from both."""
    results = {}
    for name, proxy in servers.proxies.items():
        with sdk(proxy) as client:
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "through the sdk"}])
            completion = raw.parse()
        results[name] = {**sdk_head(raw), "completion": completion.model_dump()}
        assert completion.choices[0].message.content == "Hello! This is a fake reply about: through the sdk"
    assert_same(results)


@pytest.mark.parametrize("version", ["1.1", "1.0"])
async def test_streamed_chat_completion(servers: Servers, version: str) -> None:
    """HTTP/1.1: chunked; HTTP/1.0 has no chunks: the stream is the body up to the connection's close."""
    async def probe(proxy: Proxy) -> Any:
        conn = await Conn.open(proxy)
        await conn.send(chat("stream these words", stream=True, version=version))
        reply = await conn.reply()
        if version == "1.1":
            assert (reply.version, reply.framing, reply.get("transfer-encoding")) == ("HTTP/1.1", "chunked", "chunked")
        else:
            assert (reply.version, reply.framing, reply.get("transfer-encoding")) == ("HTTP/1.0", "close", None)
        assert reply.status == 200 and reply.get("content-length") is None
        assert reply.get("content-type") == "text/event-stream; charset=utf-8"
        assert reply.body.endswith(b"data: [DONE]\n\n"), reply.body[-200:]
        assert sse_text(reply.body) == "Hello! This is a fake reply about: stream these words"
        await conn.close()
        return normal(reply)

    assert_same(await on_both(servers.proxies, probe))


def test_streamed_chat_completion_through_the_sdk(servers: Servers) -> None:
    """The SDK reads the same chunks, the usage chunk included, from both."""
    results = {}
    for name, proxy in servers.proxies.items():
        with sdk(proxy) as client:
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "stream through the sdk"}], stream=True,
                stream_options={"include_usage": True})
            chunks = [chunk.model_dump() for chunk in raw.parse()]
        head = sdk_head(raw)
        assert raw.headers["transfer-encoding"] == "chunked"
        text = "".join(c["choices"][0]["delta"]["content"] or "" for c in chunks if c["choices"])
        assert text == "Hello! This is a fake reply about: stream through the sdk"
        assert chunks[-1]["usage"]["completion_tokens"] > 0
        results[name] = {**head, "chunks": chunks}
    assert_same(results)


# -- 3, 4: connections -------------------------------------------------------------------------------

async def test_keep_alive_and_pipelining(servers: Servers) -> None:
    """Two calls one after the other on one connection; then five requests written at once (two calls,
    a GET, a HEAD, a 404 asking to close) answered in order on it, and the connection closed."""
    pipelined = [("POST", chat("pipelined first")), ("POST", chat("pipelined second")),
                 ("GET", request("GET", "/healthz")), ("HEAD", request("HEAD", "/healthz")),
                 ("GET", request("GET", "/nope", [("Connection", "close")]))]

    async def probe(proxy: Proxy) -> Any:
        conn = await Conn.open(proxy)
        one_by_one = []
        for prompt in ("kept alive one", "kept alive two"):
            await conn.send(chat(prompt))
            reply = await conn.reply()
            assert reply.status == 200 and reply.get("connection") is None
            assert reply.json()["choices"][0]["message"]["content"].endswith(prompt)
            one_by_one.append(normal(reply))
        await conn.send(b"".join(data for _, data in pipelined))
        replies = [await conn.reply(method=method) for method, _ in pipelined]
        assert [r.status for r in replies] == [200, 200, 200, 200, 404]
        assert replies[0].json()["choices"][0]["message"]["content"].endswith("pipelined first")
        assert replies[1].json()["choices"][0]["message"]["content"].endswith("pipelined second")
        assert replies[3].body == b"" and replies[3].get("content-length") == replies[2].get("content-length")
        assert [r.get("connection") for r in replies] == [None, None, None, None, "close"]
        assert await conn.closed() == b""
        await conn.close()
        return one_by_one, [normal(r) for r in replies]

    assert_same(await on_both(servers.proxies, probe))


CLOSE_CASES = {
    # name: (request, reply's version, its Connection header, closed after it)
    "http/1.0": (chat("old client", version="1.0"), "HTTP/1.0", None, True),
    "http/1.1 close": (chat("closing client", headers=[("Connection", "close")]), "HTTP/1.1", "close", True),
    "http/1.0 keep-alive": (chat("old keeping client", version="1.0", headers=[("Connection", "keep-alive")]),
                            "HTTP/1.0", "keep-alive", False),
    "h2c upgrade ignored": (chat("upgrading client", headers=[("Connection", "Upgrade, HTTP2-Settings"),
                                                              ("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABkAAQAAP__")]),
                            "HTTP/1.1", None, False),
}


@pytest.mark.parametrize("case", list(CLOSE_CASES))
async def test_connection_close_and_http_1_0(servers: Servers, case: str) -> None:
    """HTTP/1.0 without keep-alive and ``Connection: close`` are answered, then closed; HTTP/1.0 asking for
    keep-alive gets it (``Connection: keep-alive`` in the answer), and an h2c upgrade is answered in
    HTTP/1.1 on a connection that stays open: a second request on either is answered."""
    data, version, connection, closes = CLOSE_CASES[case]

    async def probe(proxy: Proxy) -> Any:
        conn = await Conn.open(proxy)
        await conn.send(data)
        reply = await conn.reply()
        assert (reply.status, reply.version, reply.get("connection")) == (200, version, connection)
        results = [normal(reply)]
        if closes:
            assert await conn.closed() == b""
        else:
            await conn.send(data)
            again = await conn.reply()
            assert again.status == 200
            results.append(normal(again))
        await conn.close()
        return results

    assert_same(await on_both(servers.proxies, probe))


# -- 5, 6: request bodies ----------------------------------------------------------------------------

@pytest.mark.parametrize("chunking", ["one chunk", "7-byte chunks", "extensions and trailer"])
async def test_chunked_request_body_is_forwarded_like_a_content_length(servers: Servers, fake_upstream: FakeUpstream,
                                                                      chunking: str) -> None:
    """A chunked body (chunk extensions and a trailer too) is answered as the same body with a length, and
    the upstream receives the same request for both (a ``Content-Length``, no ``Transfer-Encoding``)."""
    async def probe(proxy: Proxy) -> Any:
        tag = uuid.uuid4().hex
        body = chat_body(f"chunked body {chunking}")
        head = [AUTH, JSON_TYPE, ("X-Probe", tag)]
        framed = {"one chunk": chunked(body, len(body)), "7-byte chunks": chunked(body, 7),
                  "extensions and trailer": chunked(body, 16, extension=";name=value", trailer="X-Trailer: t")}[chunking]
        with_length = await fetch(proxy, request("POST", "/v1/chat/completions", head, body))
        with_chunks = await fetch(proxy, request("POST", "/v1/chat/completions", [*head, ("Transfer-Encoding", "chunked")],
                                                 framed, length=False))
        assert with_chunks.status == 200 and normal(with_chunks) == normal(with_length)
        seen = await asyncio.to_thread(fake_upstream.requests)
        sent = [r for r in seen if r["headers"].get("X-Probe") == tag]
        assert len(sent) == 2 and sent[0]["body"] == sent[1]["body"] == body.decode()
        for record in sent:
            record["headers"].pop("traceparent")
        assert sent[0] == sent[1], "the upstream cannot tell a chunked request from one with a length"
        assert "Transfer-Encoding" not in sent[1]["headers"]
        assert sent[1]["headers"]["Content-Length"] == str(len(body))
        return normal(with_chunks), {**sent[1]["headers"], "X-Probe": "TAG"}

    assert_same(await on_both(servers.proxies, probe))


EXPECTING = chat_body("expecting to continue")
EXPECT_CASES = {
    # name: (request, status, 1xx answers before it)
    "post": (request("POST", "/v1/chat/completions", [AUTH, JSON_TYPE, ("Content-Length", str(len(EXPECTING))),
                                                      ("Expect", "100-continue")], length=False),
             200, ["HTTP/1.1 100 Continue"]),
    "get": (request("GET", "/healthz", [("Expect", "100-continue"), ("Connection", "close")]),
            200, ["HTTP/1.1 100 Continue"]),
    "404": (request("GET", "/nope", [("Expect", "100-continue"), ("Connection", "close")]),
            404, ["HTTP/1.1 100 Continue"]),
    "413": (request("POST", "/v1/chat/completions", [AUTH, JSON_TYPE, ("Content-Length", str(MAX_BODY + 1)),
                                                     ("Expect", "100-continue")], length=False),
            413, ["HTTP/1.1 100 Continue"]),
    "417": (request("POST", "/v1/chat/completions", [AUTH, JSON_TYPE, ("Expect", "something-else")], EXPECTING),
            417, []),
    "http/1.0": (request("POST", "/v1/chat/completions", [AUTH, JSON_TYPE, ("Expect", "100-continue")], EXPECTING,
                         version="1.0"), 200, []),
}


@pytest.mark.parametrize("case", list(EXPECT_CASES))
async def test_expect_100_continue(servers: Servers, case: str) -> None:
    """``post``: the client sends its body only once ``100 Continue`` came, as curl does. aiohttp answers
    every HTTP/1.1 ``Expect: 100-continue`` with it before the handler runs (also a GET, a 404, a body
    over the limit, which then gets its 413); an unknown expectation gets a plain-text 417 on a
    connection kept alive (the body sent with the head is skipped); HTTP/1.0 gets no 100."""
    data, status, interim = EXPECT_CASES[case]

    async def probe(proxy: Proxy) -> Any:
        conn = await Conn.open(proxy)
        await conn.send(data)
        if case == "post":
            async with asyncio.timeout(WAIT_S):  # before a byte of the body was sent
                assert await conn.reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            await conn.send(EXPECTING)
            reply = await conn.reply()
            reply.interim.insert(0, "HTTP/1.1 100 Continue")
        else:
            reply = await conn.reply()
        assert (reply.status, reply.interim) == (status, interim)
        result = [normal(reply)]
        if case == "417":  # kept alive: the body sent with the head is skipped, the next request answered
            assert reply.get("content-type") == "text/plain; charset=utf-8" and reply.get("connection") is None
            await conn.send(request("GET", "/healthz", [("Connection", "close")]))
            after = await conn.reply()
            assert after.status == 200 and after.json() == {"status": "ok"}
            result.append(normal(after))
        if case == "413":
            assert_openai_error(reply, 413, "request_too_large")
        await conn.close()
        return result

    assert_same(await on_both(servers.proxies, probe))


# -- 9, 10: malformed heads and head limits ----------------------------------------------------------

CHAT_HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-x\r\n"
MALFORMED = {
    "request line": b"GARBAGE\r\n\r\n",
    "http version": b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
    "header without colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
    "space in header name": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Sp ace: 1\r\n\r\n",
    "obsolete line folding": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n b\r\n\r\n",
    "NUL in header value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
    "bare LF line ends": b"GET /healthz HTTP/1.1\nHost: x\n\n",
    "no Host": b"GET /healthz HTTP/1.1\r\n\r\n",
    "length and chunked": CHAT_HEAD + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two lengths": CHAT_HEAD + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
    "bad length": CHAT_HEAD + b"Content-Length: abc\r\n\r\n",
    "negative length": CHAT_HEAD + b"Content-Length: -1\r\n\r\n",
    "unknown transfer coding": CHAT_HEAD + b"Transfer-Encoding: gzip\r\n\r\n",
    "bad chunk size": CHAT_HEAD + b"Transfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n",
    "chunk longer than its size": CHAT_HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}}\r\n0\r\n\r\n",
    "TLS on the plain port": bytes.fromhex("160301002a0100002603030000") + bytes(40),
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    # the parser's error wins over the good request parsed before it in the same bytes (not answered)
    "after a good request in the same write": b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n",
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_malformed_request_gets_400_and_close(servers: Servers, case: str) -> None:
    """aiohttp: ``HTTP/1.0 400 Bad Request``, plain text (its wording not compared), no ``Connection``
    header, the connection closed. Sent in one write, so the chunk errors are found before the handler."""
    async def probe(proxy: Proxy) -> Any:
        conn = await Conn.open(proxy)
        await conn.send(MALFORMED[case])
        reply = await conn.reply()
        assert (reply.version, reply.status, reply.reason) == ("HTTP/1.0", 400, "Bad Request"), reply
        assert reply.get("content-type") == "text/plain; charset=utf-8" and reply.get("connection") is None
        assert await conn.closed() == b""
        await conn.close()
        return normal(reply, body=False)

    assert_same(await on_both(servers.proxies, probe))


HEAD_LIMITS = {
    # name: (request, status): aiohttp's limits are 8,190 bytes of request line, 65,536 of a header
    # line (set in runtime/app.py) and 128 header lines
    "request line of 8,000 bytes": (request("GET", "/healthz?x=" + "a" * 8000, [("Connection", "close")]), 200),
    "request line of 9,000 bytes": (request("GET", "/healthz?x=" + "a" * 9000, [("Connection", "close")]), 400),
    "header line of 60,000 bytes": (request("GET", "/healthz", [("X-Big", "a" * 60000), ("Connection", "close")]), 200),
    "header line of 70,000 bytes": (request("GET", "/healthz", [("X-Big", "a" * 70000), ("Connection", "close")]), 400),
    "100 header lines": (request("GET", "/healthz", [*((f"X-H{i}", "v") for i in range(100)), ("Connection", "close")]),
                         200),
    "200 header lines": (request("GET", "/healthz", [*((f"X-H{i}", "v") for i in range(200)), ("Connection", "close")]),
                         400),
}


@pytest.mark.parametrize("case", list(HEAD_LIMITS))
async def test_request_head_limits(servers: Servers, case: str) -> None:
    """A header line over 65,536 bytes is a 400 (aiohttp's ``HTTP/1.0 400 Bad Request``, not a 431), as
    are a request line over 8,190 bytes and more than 128 header lines; just under, answered."""
    data, status = HEAD_LIMITS[case]

    async def probe(proxy: Proxy) -> Any:
        conn = await Conn.open(proxy)
        await conn.send(data)
        reply = await conn.reply()
        assert reply.status == status
        if status == 400:
            assert reply.version == "HTTP/1.0" and reply.get("content-type") == "text/plain; charset=utf-8"
        else:
            assert reply.json() == {"status": "ok"}
        assert await conn.closed() == b""
        await conn.close()
        return normal(reply, body=status != 400)

    assert_same(await on_both(servers.proxies, probe))


# -- 11: the header timeout ----------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["nothing sent", "half a request line", "half a head", "head trickled",
                                  "idle after an answer"])
async def test_header_timeout_closes_the_connection(servers: Servers, case: str) -> None:
    """GENOPS_CLIENT_HEADER_TIMEOUT_S (1 s here) bounds the time to a complete head, from the connection's
    start or the previous answer, however slowly bytes keep coming; aiohttp closes without a word."""
    async def probe(proxy: Proxy) -> Any:
        conn = await Conn.open(proxy)
        answered = None
        trickle = None
        if case == "half a request line":
            await conn.send(b"GET /hea")
        elif case == "half a head":
            await conn.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: abc")
        elif case == "head trickled":
            async def send_slowly() -> None:
                for _ in range(200):  # one byte every 0.1 s: 20 s, far over the timeout
                    await conn.send(b"X")
                    await asyncio.sleep(0.1)

            await conn.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            trickle = asyncio.ensure_future(send_slowly())
        elif case == "idle after an answer":
            await conn.send(request("GET", "/healthz"))
            answered = normal(await conn.reply())
        after = await conn.closed()
        if trickle is not None:
            trickle.cancel()
            await asyncio.gather(trickle, return_exceptions=True)
        await conn.close()
        assert after == b""
        return answered

    assert_same(await on_both(servers.proxies, probe))


# -- 12: routes outside the provider calls, methods ------------------------------------------------------

ADMIN_CASES = {
    # name: (method, target, headers, body, status)
    "unknown route": ("GET", "/nope", [], b"", 404),
    "unknown route, POST": ("POST", "/nope/v9/chat", [JSON_TYPE], b"{}", 404),
    "healthz": ("GET", "/healthz", [], b"", 200),
    "healthz, HEAD": ("HEAD", "/healthz", [], b"", 200),
    "readyz": ("GET", "/readyz", [], b"", 200),
    "sql": ("POST", "/genops/v1/sql", ["token"], b'{"query": "SELECT 1 AS one, \'x\' AS s"}', 200),
    "sql without token": ("POST", "/genops/v1/sql", [], b'{"query": "SELECT 1"}', 401),
    "metrics": ("GET", "/metrics", [], b"", 200),
    "OPTIONS on a provider path": ("OPTIONS", "/v1/chat/completions", [AUTH], b"", 404),
    "HEAD on a provider path": ("HEAD", "/v1/chat/completions", [AUTH], b"", 404),
    "TRACE on a provider path": ("TRACE", "/v1/chat/completions", [AUTH], b"", 404),
    "PROPFIND on a provider path": ("PROPFIND", "/v1/chat/completions", [AUTH], b"", 404),
    "GET on a POST-only operation": ("GET", "/v1/chat/completions", [AUTH], b"", 405),
    "CONNECT": ("CONNECT", "example.com:443", [], b"", 404),
}


@pytest.mark.parametrize("case", list(ADMIN_CASES))
async def test_routes_and_methods(servers: Servers, case: str) -> None:
    """Unknown routes: 404 in OpenAI's shape (CONNECT: aiohttp's plain-text 404); health, readiness,
    metrics, the admin SQL path (``/genops/v1/sql``: rows with the admin token, 401 without); methods
    outside GET/POST/PUT/PATCH/DELETE on a provider path: 404 (HEAD: without its body); GET on a
    POST-only operation: 405 with ``Allow: POST``."""
    method, target, headers, body, status = ADMIN_CASES[case]

    async def probe(proxy: Proxy) -> Any:
        sent = [("Authorization", f"Bearer {proxy.token}") if h == "token" else h for h in headers]
        reply = await fetch(proxy, request(method, target, [*sent, ("Connection", "close")], body), method=method)
        assert reply.status == status, (reply.status, reply.body[:300])
        if method == "HEAD":
            assert reply.body == b"" and int(reply.get("content-length") or 0) > 0
        if case.startswith(("unknown", "OPTIONS", "TRACE", "PROPFIND")):
            assert_openai_error(reply, 404, "unknown_route")
        if case == "HEAD on a provider path":  # the unknown route's 404, less its body
            assert reply.get("content-type") == "application/json" and reply.get("genops-request-id")
        if case == "GET on a POST-only operation":
            assert reply.get("allow") == "POST"
        if case == "sql":
            assert reply.json()["rows"] == [[1, "x"]]
        if case == "sql without token":
            assert reply.json()["error"]["code"] == "unauthorized"
        if case == "metrics":  # its counters differ between the processes: its form does not
            assert reply.get("content-type") == "text/plain; version=0.0.4; charset=utf-8"
            assert b"# TYPE genops_" in reply.body
            return normal(reply, body=False)
        if case == "readyz":  # the spans waiting in the spool differ
            answer = reply.json()
            assert answer["status"] == "ready"
            return normal(reply, body=False), sorted(answer), answer["status"]
        return normal(reply)

    assert_same(await on_both(servers.proxies, probe))


# -- 13: what the upstream receives -----------------------------------------------------------------------

SENT_HEADERS = [("Authorization", "Bearer sk-rec"), ("X-Dup", "1"), ("x-dup", "2"), ("X-MiXeD-CaSe", "v"),
                ("X-Empty", ""), ("X-Spaces", "padded value"), ("X-Utf8", "caf\xc3\xa9"), ("X-Latin", "caf\xe9"),
                ("X-Tab", "a\tb")]


def _target(tag: str) -> str:
    return f"/u/rec/v1/things/{tag}/a%2Fb%20c/%E2%82%AC;p=1?x=%2F%20&y=1&y=2&empty=&flag&plus=a+b"


async def _to_upstream(proxy: Proxy, recorder: Recorder) -> dict[str, Any]:
    tag = uuid.uuid4().hex
    headers = [(n, "  padded value   " if n == "X-Spaces" else v) for n, v in SENT_HEADERS]
    reply = await fetch(proxy, request("GET", _target(tag), [*headers, ("Connection", "close")]))
    assert reply.status == 200 and reply.json() == {"recorded": True}
    [seen] = recorder.find(tag)
    seen = {**seen, "target": seen["target"].replace(tag, "TAG")}
    return {"reply": normal(reply), "method": seen["method"], "target": seen["target"],
            "headers": [(n, "..." if n.lower() == "traceparent" else v) for n, v in seen["headers"]]}


async def test_upstream_sees_the_target_and_headers_alike(servers: Servers, recorder: Recorder) -> None:
    """The request target and headers the upstream receives are the same through both servers. The
    client's headers arrive in their order and case, duplicates kept, bytes as sent (UTF-8 and not),
    optional whitespace around values trimmed. The path's ``%20``, ``%E2%82%AC`` and ``;p=1`` and the
    query's parameters in order reach it; ``%2F`` does not, see the next test."""
    results = await on_both(servers.proxies, lambda proxy: _to_upstream(proxy, recorder))
    for result in results.values():
        target = result["target"]
        assert target.startswith("/v1/things/TAG/") and "b%20c/%E2%82%AC;p=1?" in target, target
        assert target.endswith("&y=1&y=2&empty=&flag&plus=a+b"), target
        names = [n for n, _ in result["headers"]]
        assert names[0] == "Host" and names.count("Host") == 1
        assert result["headers"][1:1 + len(SENT_HEADERS)] == SENT_HEADERS
        assert not {"connection", "content-length", "transfer-encoding"} & {n.lower() for n in names}
    assert_same(results)


@pytest.mark.xfail(strict=True, reason="the aiohttp reference decodes %2F in the path and re-encodes the query")
async def test_upstream_sees_the_target_as_sent(servers: Servers, recorder: Recorder) -> None:
    """What an HTTP proxy should do: the path and query string reach the upstream byte for byte. The
    reference does not: ``a%2Fb`` arrives as ``a/b`` (another resource) and ``x=%2F%20`` as ``x=/+``
    (aiohttp's ``request.path`` and ``request.query_string`` are decoded, the upstream client encodes
    them again). Strict: once the reference keeps the target, this passes and the mark must go."""
    results = await on_both(servers.proxies, lambda proxy: _to_upstream(proxy, recorder))
    for result in results.values():
        assert result["target"] == _target("TAG").removeprefix("/u/rec")


# -- 14, 15: a client gone mid-stream; a large answer ------------------------------------------------------

async def test_client_gone_mid_stream_is_recorded(servers: Servers) -> None:
    """A client closing its connection after the first event of a slow stream: the call's span says
    ``error.type=client_disconnected`` (tests/test_bad_input.py has the aiohttp-only version)."""
    async def probe(proxy: Proxy) -> Any:
        request_id = f"conf-gone-{uuid.uuid4().hex}"
        conn = await Conn.open(proxy)
        await conn.send(chat("one two three four five six", stream=True,
                             headers=[("X-Fake-Chunk-Delay-Ms", "300"), ("GenOps-Request-Id", request_id)]))
        reply = await conn.head()
        assert reply.status == 200
        async with asyncio.timeout(WAIT_S):
            await conn.reader.readuntil(b"data:")
        await conn.close()  # after the first event; the proxy notices at its next write
        span = await asyncio.to_thread(proxy.span, request_id, 30.0)
        attrs = span["SpanAttributes"]
        assert attrs["error.type"] == "client_disconnected" and attrs["genops.client.disconnected"] == "true"
        assert span["StatusCode"] == "Error"
        keys = ("error.type", "genops.client.disconnected", "http.response.status_code", "gen_ai.request.model")
        return span["StatusCode"], span["SpanName"], {k: attrs.get(k) for k in keys}

    assert_same(await on_both(servers.proxies, probe))


async def test_large_answer_is_byte_identical(servers: Servers, fake_upstream: FakeUpstream) -> None:
    """An embeddings answer of ~3 MB (the fake upstream's ``dimensions``): the bytes the upstream sends."""
    body = orjson.dumps({"model": "text-embedding-3-small", "input": "conformance", "dimensions": 150_000})
    headers = [AUTH, JSON_TYPE, ("Connection", "close")]
    direct = await fetch(port_of(fake_upstream), request("POST", "/v1/embeddings", headers, body))
    assert direct.status == 200 and len(direct.body) > 2_000_000

    async def probe(proxy: Proxy) -> Any:
        reply = await fetch(proxy, request("POST", "/v1/embeddings", headers, body))
        assert reply.status == 200 and reply.framing == "length" and reply.body == direct.body
        return normal(reply)

    assert_same(await on_both(servers.proxies, probe))


# -- 16: SIGTERM ------------------------------------------------------------------------------------------

async def test_sigterm_finishes_a_stream_and_closes_kept_alive_connections(tmp_path: Path,
                                                                           fake_upstream: FakeUpstream) -> None:
    """Proxies of their own (SIGTERM stops them): a slow stream in flight when the supervisor gets SIGTERM
    is finished for its client; once the worker drains (its /readyz says 503 ``draining``), a call on
    another kept-alive connection is answered with ``Connection: close`` and that connection closed;
    the process exits 0. tests/test_graceful_drain.py drains under load, with the store inline."""
    env = {**upstream_env(fake_upstream.url), "GENOPS_DRAIN_DELAY_S": "2"}
    proxies = await asyncio.to_thread(start_both, tmp_path, env)

    async def probe(proxy: Proxy) -> Any:
        streaming = await Conn.open(proxy)
        await streaming.send(chat("a slow stream in flight", stream=True, headers=[("X-Fake-Chunk-Delay-Ms", "250")]))
        stream_head = await streaming.head()
        kept = await Conn.open(proxy)
        await kept.send(chat("before the drain"))
        before = await kept.reply()
        assert before.status == 200 and before.get("connection") is None
        proxy.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WAIT_S):
            while (ready := await fetch(proxy, request("GET", "/readyz", [("Connection", "close")]))).status == 200:
                await asyncio.sleep(0.05)
        assert ready.status == 503 and ready.json()["status"] == "draining"
        await kept.send(chat("during the drain"))
        during = await kept.reply()
        assert during.status == 200 and during.get("connection") == "close"
        assert await kept.closed() == b""
        stream = await streaming.body(stream_head)
        assert stream.status == 200 and stream.body.endswith(b"data: [DONE]\n\n")
        assert sse_text(stream.body) == "Hello! This is a fake reply about: a slow stream in flight"
        assert await streaming.closed() == b""
        await kept.close()
        await streaming.close()
        code = await asyncio.to_thread(proxy.process.wait, 60)
        assert code == 0, proxy.logs()[-3000:]
        return normal(before), normal(ready), normal(during), normal(stream)

    try:
        assert_same(await on_both(proxies, probe))
    finally:
        for proxy in proxies.values():
            await asyncio.to_thread(proxy.stop)


# -- 7, 8: answers given before the body was read whole --------------------------------------------
#
# Last in the module: their probes wait for aiohttp's lingering close (~11 s); the servers fixture
# starts them in the background, so they are done by the time these tests look at them.


def _declared(length: int) -> bytes:
    """A call's head declaring a body of ``length`` bytes."""
    return request("POST", "/v1/chat/completions", [AUTH, JSON_TYPE, ("Content-Length", str(length))], length=False)


BIG = chat_body("x" * (MAX_BODY + 10))


async def _unread_body_probe(proxy: Proxy, case: str) -> dict[str, Any]:
    """One of the cases of ``LINGERING``: its answer, and the bytes seen before the server closed."""
    conn = await Conn.open(proxy)
    if case == "413 declared":  # a Content-Length over the limit, nothing of the body sent
        await conn.send(_declared(MAX_BODY + 1))
    elif case == "408 stalled":  # part of the body, then nothing
        await conn.send(_declared(200) + b'{"model": "gpt-4o-mini", "mess')
    else:  # "bad chunk after the handler started": the 100 says the head was routed
        await conn.send(request("POST", "/v1/chat/completions", [AUTH, JSON_TYPE, ("Transfer-Encoding", "chunked"),
                                                                 ("Expect", "100-continue")], length=False))
        assert await conn.reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        await conn.send(b'5\r\n{"mod\r\nZZ\r\nxx\r\n0\r\n\r\n')
    reply = await conn.reply()
    after = await conn.closed(LINGER_WAIT_S)
    await conn.close()
    return {"reply": reply, "after": after}


LINGERING = ("413 declared", "408 stalled", "bad chunk after the handler started")


async def _lingering_probes(proxies: dict[str, Proxy]) -> dict[str, dict[str, Any]]:
    async def case_on_both(case: str) -> dict[str, Any]:
        return await on_both(proxies, lambda proxy: _unread_body_probe(proxy, case))

    results = await asyncio.gather(*(case_on_both(case) for case in LINGERING))
    return dict(zip(LINGERING, results, strict=True))


def lingering_result(servers: Servers, case: str) -> dict[str, Any]:
    return servers.lingering.result(timeout=2 * LINGER_WAIT_S)[case]


@pytest.mark.parametrize("case", ["declared, body unsent", "declared, body sent", "chunked"])
async def test_body_over_the_limit_gets_413(servers: Servers, case: str) -> None:
    """413 in OpenAI's shape with ``Connection: close``, and the connection closed: at once when the
    whole body was sent, after aiohttp's lingering (up to 10 s reading the body) when it was not."""
    if case == "declared, body unsent":
        results = lingering_result(servers, "413 declared")
        for result in results.values():
            assert_openai_error(result["reply"], 413, "request_too_large")
            assert result["reply"].get("connection") == "close" and result["after"] == b""
        assert_same({name: normal(r["reply"]) for name, r in results.items()})
        return

    async def probe(proxy: Proxy) -> Any:
        conn = await Conn.open(proxy)
        if case == "declared, body sent":
            data = request("POST", "/v1/chat/completions", [AUTH, JSON_TYPE], BIG)
        else:
            data = request("POST", "/v1/chat/completions", [AUTH, JSON_TYPE, ("Transfer-Encoding", "chunked")],
                           chunked(BIG, 65536), length=False)
        sending = asyncio.ensure_future(conn.send(data))  # the answer may come before the body is all sent
        reply = await conn.reply()
        error = assert_openai_error(reply, 413, "request_too_large")
        assert str(MAX_BODY) in error["message"] and reply.get("connection") == "close"
        assert await conn.closed() == b""
        await asyncio.gather(sending, return_exceptions=True)
        await conn.close()
        return normal(reply)

    assert_same(await on_both(servers.proxies, probe))


def test_stalled_body_gets_408(servers: Servers) -> None:
    """A body that pauses over GENOPS_CLIENT_BODY_TIMEOUT_S: 408 in OpenAI's shape, ``Connection: close``,
    and (after aiohttp's lingering) the connection is closed."""
    results = lingering_result(servers, "408 stalled")
    for result in results.values():
        error = assert_openai_error(result["reply"], 408, "request_timeout")
        assert "GENOPS_CLIENT_BODY_TIMEOUT_S" in error["message"]
        assert result["reply"].get("connection") == "close" and result["after"] == b""
    assert_same({name: normal(r["reply"]) for name, r in results.items()})


def test_bad_chunk_after_the_handler_started(servers: Servers) -> None:
    """Invalid chunk framing once the handler is reading the body (the 100 Continue tells the head was
    routed): the one place the native server departs from the reference, on purpose. aiohttp's parser
    error never reaches the body being read, so the call waits for it and gets the 408 of
    GENOPS_CLIENT_BODY_TIMEOUT_S (then lingers and closes); the native server tells the reader at once
    and the client gets a 400 ``unreadable_body``. Both answer in OpenAI's shape with
    ``Connection: close``, then close."""
    results = lingering_result(servers, "bad chunk after the handler started")
    for result in results.values():
        reply = result["reply"]
        assert reply.get("connection") == "close" and result["after"] == b""
    assert_openai_error(results["aiohttp"]["reply"], 408, "request_timeout")
    assert_openai_error(results["native"]["reply"], 400, "unreadable_body")


# -- the store inline: the native server hands the admin paths to its own process -----------------------

@pytest.fixture(scope="module")
def inline_native(tmp_path_factory: pytest.TempPathFactory, fake_upstream: FakeUpstream, recorder: Recorder) -> Any:
    """A proxy with the store in its own process (``GENOPS_STORE_PROCESS=inline``) on the native server,
    configured as the shared proxies are."""
    env = {**upstream_env(fake_upstream.url), "GENOPS_UPSTREAM_REC": recorder.url + "/v1",
           "GENOPS_MAX_BODY_BYTES": str(MAX_BODY), "GENOPS_STORE_PROCESS": "inline", "GENOPS_HTTP_SERVER": "native"}
    proxy = start_proxy(tmp_path_factory.mktemp("conformance-inline"), env)
    yield proxy
    proxy.stop()


@pytest.mark.parametrize("case", ["unknown route", "healthz", "readyz", "sql", "sql without token", "metrics"])
async def test_the_store_inline_answers_like_the_reference(servers: Servers, inline_native: Proxy, case: str) -> None:
    """With the store inline, the native server serves the public port and hands the admin paths to its
    own aiohttp application over loopback: a client sees what the reference worker answers."""
    method, target, headers, body, status = ADMIN_CASES[case]
    results = {}
    for name, proxy in (("aiohttp", servers.proxies[REFERENCE]), ("native", inline_native)):
        sent = [("Authorization", f"Bearer {proxy.token}") if h == "token" else h for h in headers]
        reply = await fetch(proxy, request(method, target, [*sent, ("Connection", "close")], body), method=method)
        assert reply.status == status, (name, reply.status, reply.body[:300])
        if case == "sql":
            assert reply.json()["rows"] == [[1, "x"]]
        if name == "native" and case not in ("readyz", "sql", "sql without token", "metrics"):
            assert (reply.get("server") or "").split()[-1].startswith("genops/")  # the native server answered
        results[name] = normal(reply, body=case not in ("readyz", "metrics"))
    assert_same(results)


async def test_the_store_inline_records_a_call_served_by_the_native_server(inline_native: Proxy) -> None:
    reply = await fetch(inline_native, chat("inline call", headers=[("GenOps-Request-Id", "conf-inline-1")]))
    assert reply.status == 200 and reply.json()["choices"][0]["message"]["content"].endswith("inline call")
    span = inline_native.span("conf-inline-1")
    assert span["SpanAttributes"]["http.response.status_code"] == "200"
