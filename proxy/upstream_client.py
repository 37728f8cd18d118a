"""The proxy's upstream HTTP/1.1 client: keep-alive connections, httptools parsing, bodies as they arrive.

Why not ``aiohttp.ClientSession``: its per-request machinery (URL objects, request and
response classes, payload registry, timer context, connector bookkeeping) costs ~140 µs of
CPU per call on this project's benchmark machine, more than all of GenOps's telemetry; this
client does the same round trip in ~40 µs. The proxy needs only a small part of a general
client: one request with a complete body, the response's status and headers, and its body
either whole or chunk by chunk, raw (never decompressed: the client gets the upstream's bytes).

What it keeps from aiohttp's behaviour, so the upstream sees the same request:
- the headers a stock ``ClientSession(skip_auto_headers=("User-Agent",))`` sends: ``Host``
  first, then the caller's, then ``Accept``/``Accept-Encoding`` when missing, a body's
  ``Content-Type``/``Content-Length``, and ``Content-Length: 0`` for an empty POST;
- paths and queries percent-encoded the same way (yarl, only for URLs that need it);
- a connection pool per origin, optionally limited (``max_connections``: more calls wait for a
  connection, within the connect timeout), closing connections idle for :data:`KEEPALIVE_S`,
  retrying an idempotent request once when a reused connection turns out to be closed
  (RFC 9112, section 9.3.1);
- aiohttp's default limits on a response's head (:data:`MAX_FIELD_SIZE`, :data:`MAX_HEADERS`);
- outbound proxies from ``HTTP(S)_PROXY``/``NO_PROXY`` (proxy/upstream_env.py), a DNS cache;
- errors as aiohttp's exception types (``ClientError`` subclasses, ``asyncio.TimeoutError``),
  so callers handle both the same way.

Streamed bodies are flow-controlled: reading from the upstream pauses while more than
:data:`HIGH_WATER` bytes wait for the client. A whole-body :meth:`UpstreamResponse.read` never
pauses: it must hold the whole body anyway, and pausing it would wait for a reader that is
itself waiting for the end (the large-body hang of issue #18).

``GENOPS_UPSTREAM_CLIENT=aiohttp`` swaps this client for an ``aiohttp.ClientSession`` behind the
same interface (proxy/upstream_aiohttp.py); :func:`create_upstream_client` picks one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httptools
from aiohttp import ClientRequest  # public; its method sets and default headers are the reference
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from genops.proxy.upstream_env import DnsCache, OutboundProxy, ProxyEnv, Resolver

#: Idle keep-alive connections are closed after this long (aiohttp's default keepalive_timeout).
KEEPALIVE_S = 15.0
#: A streamed body stops reading from the upstream while this much waits for the client.
HIGH_WATER = 256 * 1024
#: Methods sent without ``Content-Length: 0`` when they have no body (aiohttp's GET_METHODS).
_NO_BODY_METHODS = frozenset(ClientRequest.GET_METHODS)
#: Methods sent with ``Content-Type: application/octet-stream`` even without a body (aiohttp's POST_METHODS).
_POST_METHODS = frozenset(ClientRequest.POST_METHODS)
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_DEFAULT_HEADERS = tuple(ClientRequest.DEFAULT_HEADERS.items())
#: A response header's name or value, or its status line, may not exceed this many bytes
#: (aiohttp's ClientSession defaults: max_field_size, max_line_size).
MAX_FIELD_SIZE = 8190
#: At most this many header fields in a response (aiohttp's ClientSession max_headers).
MAX_HEADERS = 128
#: Bytes of a response's head buffered before its end, at most: bounds the memory of a head
#: that never ends (httptools accumulates a field until it is complete).
MAX_HEAD_BYTES = (MAX_HEADERS + 1) * (2 * MAX_FIELD_SIZE + 4)
# A path and query that yarl would send unchanged: unreserved and sub-delim characters, and
# well-formed percent escapes. Anything else goes through yarl once.
_SENT_AS_IS = re.compile(r"(?:[A-Za-z0-9\-._~/!$&'()*+,;=:@?]|%[0-9A-Fa-f]{2})*\Z")


class UpstreamConnectError(aiohttp.ClientConnectionError):
    """The upstream could not be reached (refused, DNS, TLS handshake...)."""


class UpstreamDisconnected(aiohttp.ServerDisconnectedError):
    """The upstream closed the connection before its response's headers."""


class UpstreamPayloadError(aiohttp.ClientPayloadError):
    """The upstream's response body ended early or was malformed."""


class UpstreamHeadersTooLarge(aiohttp.ClientResponseError):
    """The upstream's response head broke a limit (:data:`MAX_FIELD_SIZE`, :data:`MAX_HEADERS`),
    as aiohttp raises ``ClientResponseError`` for it."""

    def __init__(self, origin: str, method: str, message: str) -> None:
        url = URL(origin)
        info = aiohttp.RequestInfo(url, method, CIMultiDictProxy(CIMultiDict()), url)
        super().__init__(info, (), status=400, message=message)


class _Origin:
    """Where one ``scheme://host:port`` lives, parsed once, with its pool of connections."""

    __slots__ = ("host", "port", "ssl", "host_header", "idle", "proxy", "absolute", "literal", "open", "waiters",
                 "text")

    def __init__(self, origin: str, proxies: ProxyEnv) -> None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise aiohttp.InvalidURL(origin)
        secure = parts.scheme == "https"
        default_port = 443 if secure else 80
        self.text = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"  # for errors: no user info
        self.host = parts.hostname
        self.port = parts.port or default_port
        self.ssl = secure
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if self.port == default_port else f"{host}:{self.port}"
        self.idle: list[_Connection] = []  # most recently used last
        self.proxy: OutboundProxy | None = proxies.for_origin(parts.scheme, self.host, self.port)
        # Through a proxy, plain http requests name the whole URL (RFC 9112, 3.2.2, absolute-form).
        self.absolute = f"http://{self.host_header}" if self.proxy is not None and not secure else ""
        self.literal = _is_ip(self.host)  # an IP address needs no DNS
        self.open = 0  # connections open or being opened (each holds a slot of the limit)
        self.waiters: deque[asyncio.Future[_Connection | None]] = deque()  # calls waiting for a slot

    def hand_over(self, conn: _Connection) -> bool:
        """Give a freed connection to the first call still waiting for one."""
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    def free_slot(self) -> None:
        """A connection closed (or failed to open): its slot goes to a waiting call, else back."""
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the waiter opens a connection in this slot
                return
        self.open -= 1


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class UpstreamResponse:
    """One upstream response: ``status`` and ``headers`` at once, the body by :meth:`read` or
    :meth:`iter_any`; then :meth:`release` (connection back to the pool) or :meth:`close`."""

    __slots__ = ("status", "headers", "_conn", "_chunks", "_buffered", "_done", "_error", "_waiter", "_timer",
                 "_whole")

    def __init__(self, conn: _Connection, status: int, headers: CIMultiDictProxy[str]) -> None:
        self.status = status
        self.headers = headers
        self._conn: _Connection | None = conn
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._whole = False  # read() wants everything: no flow control, no wake-up per chunk

    @property
    def content(self) -> UpstreamResponse:
        """aiohttp's spelling (``response.content.iter_any()``)."""
        return self

    # -- fed by the connection ---------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        if self._whole:
            return  # read() waits for the end, not for pieces
        self._buffered += len(data)
        if self._buffered > HIGH_WATER and self._conn is not None:
            self._conn.pause()
        self._wake()

    def _finish(self, error: BaseException | None = None) -> None:
        if self._done:
            return
        self._done = True
        self._error = error
        self._cancel_timer()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- the caller's side ---------------------------------------------------------------
    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        await self._waiter

    def _take(self) -> bytes:
        chunks = self._chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        if self._conn is not None:
            self._conn.resume()
        return data

    async def read(self) -> bytes:
        """The whole body (raw bytes, as sent).

        Reading is never paused meanwhile (and resumed if bytes that came before this call had
        paused it): the body is wanted whole, so nobody would take buffered bytes before its end.
        """
        if not self._done:
            self._whole = True
            if self._conn is not None:
                self._conn.resume()
            while not self._done:
                await self._wait()
        if self._error is not None:
            raise self._error
        return self._take() if self._chunks else b""

    async def iter_any(self) -> AsyncIterator[bytes]:
        """The body as it arrives: whatever is buffered, joined, at each step."""
        while True:
            if self._chunks:
                yield self._take()
                continue
            if self._done:
                if self._error is not None:
                    raise self._error
                return
            await self._wait()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def release(self) -> None:
        """Done with the response: a completely read body frees its connection for reuse."""
        conn, self._conn = self._conn, None
        self._cancel_timer()
        if conn is None:
            return
        if self._done and self._error is None and not self._chunks:
            conn.response_released()
        else:
            conn.close()

    def close(self) -> None:
        """Abandon the response and its connection (the client went away)."""
        conn, self._conn = self._conn, None
        self._cancel_timer()
        if not self._done:
            self._finish(UpstreamPayloadError("The response was closed before its end."))
        if conn is not None:
            conn.close()

    def _timed_out(self) -> None:
        self._timer = None
        self._finish(TimeoutError())
        self.close()  # the body is abandoned at its deadline, as when the client goes away


class _Connection(asyncio.Protocol):
    """One keep-alive connection to an origin; parses each response with httptools."""

    def __init__(self, origin: _Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.paused = False
        self.reusable = False
        self.idle_since = 0.0
        self.received = False  # any byte of the current response
        self.head: asyncio.Future[UpstreamResponse] | None = None
        self.response: UpstreamResponse | None = None
        self.method = ""
        self._headers: list[tuple[str, str]] = []
        self._informational = False
        self.counted = False  # holds one of the origin's connection slots (from when it is open until closed)
        self.head_bytes = -1  # bytes of the response head so far; -1 once the head is complete

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received = True
        if self.head_bytes >= 0:
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD_BYTES:
                return self._too_large(f"Got more than {MAX_HEAD_BYTES} bytes of response headers")
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            cause = exc.__context__  # what a callback below raised, if one did
            self._fail(cause if isinstance(cause, UpstreamHeadersTooLarge)
                       else UpstreamPayloadError(f"Malformed response from the upstream: {exc}"))
            self.close()

    def _too_large(self, message: str) -> None:
        self._fail(UpstreamHeadersTooLarge(self.origin.text, self.method, message))
        self.close()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        idle = self.origin.idle
        if self in idle:
            idle.remove(self)
        self._forget()
        response = self.response
        if response is not None and not response._done and self._until_eof(response):
            response._finish()  # a body delimited by the connection's end (no length, not chunked)
        else:
            self._fail(UpstreamDisconnected() if self.head is not None and not self.head.done()
                       else UpstreamPayloadError("The upstream closed the connection mid-response."))

    # -- httptools callbacks --------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._headers = []
        self.head_bytes = max(self.head_bytes, 0)

    def on_status(self, status: bytes) -> None:
        if len(status) > MAX_FIELD_SIZE:
            raise UpstreamHeadersTooLarge(self.origin.text, self.method,
                                          f"Got more than {MAX_FIELD_SIZE} bytes in the status line")

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) > MAX_FIELD_SIZE or len(value) > MAX_FIELD_SIZE or len(self._headers) >= MAX_HEADERS:
            raise UpstreamHeadersTooLarge(self.origin.text, self.method,
                                          f"Response headers over the limit ({MAX_HEADERS} fields of at most "
                                          f"{MAX_FIELD_SIZE} bytes)")
        # decoded as aiohttp decodes them, so the relayed response carries the same bytes
        self._headers.append((name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        self.head_bytes = -1
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._informational = True  # 100 Continue and the like: the real response follows
            return
        response = UpstreamResponse(self, status, CIMultiDictProxy(CIMultiDict(self._headers)))
        self.response = response
        self.reusable = self.parser.should_keep_alive()
        head = self.head
        if head is not None and not head.done():
            head.set_result(response)
        if self.method == "HEAD":  # no body follows, whatever the headers say
            self.reusable = False
            response._finish()

    def on_body(self, body: bytes) -> None:
        response = self.response
        if response is not None and not response._done:
            response._feed(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        response = self.response
        if response is not None:
            response._finish()

    # -- pool and flow control ------------------------------------------------------------------
    def _until_eof(self, response: UpstreamResponse) -> bool:
        headers = response.headers
        return ("Content-Length" not in headers and "chunked" not in headers.get("Transfer-Encoding", "").lower()
                and response.status not in (204, 304))

    def _fail(self, error: BaseException) -> None:
        head = self.head
        if head is not None and not head.done():
            head.set_exception(error)
        response = self.response
        if response is not None:
            response._finish(error)

    def pause(self) -> None:
        if not self.paused and self.transport is not None and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def response_released(self) -> None:
        """The current response was read to its end: keep the connection if the upstream lets us."""
        self.response = None
        self.head = None
        if self.closed or not self.reusable or self.transport is None or self.transport.is_closing():
            self.close()
            return
        self.resume()
        self.idle_since = now = time.monotonic()
        origin = self.origin
        if origin.waiters and origin.hand_over(self):
            return  # straight to a call waiting for a connection (a limit is set)
        idle = origin.idle
        if idle and now - idle[0].idle_since > KEEPALIVE_S:
            idle[0].close()  # the least recently used, idle too long (reuse is LIFO, so it would stay)
        idle.append(self)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.reusable = False
            if self.transport is not None:
                self.transport.close()
        idle = self.origin.idle
        if self in idle:
            idle.remove(self)
        self._forget()

    def _forget(self) -> None:
        """Give back this connection's slot of the origin's limit, once."""
        if self.counted:
            self.counted = False
            self.origin.free_slot()


class UpstreamClient:
    """Sends the proxy's upstream requests; one per event loop (the app's), created lazily.

    ``dns_cache_ttl_s``: how long a host's addresses are reused (0: resolved for each new
    connection). ``max_connections``: connections per origin at most (0: no limit).
    ``resolver``: ``async (host, port) -> [addresses]``, the system's by default. ``proxies``:
    ``{"https": url, "no": "..."}`` as ``urllib.request.getproxies()`` returns them (read from
    the environment, once, when not given). ``ssl_context``: the default verifies against the
    system's CAs (``SSL_CERT_FILE``/``SSL_CERT_DIR`` respected).
    """

    #: Header values with bytes that are not UTF-8 are sent as received (see ``_serialize``).
    preserves_header_bytes = True


    def __init__(self, *, dns_cache_ttl_s: float = 10.0, max_connections: int = 0, resolver: Resolver | None = None,
                 proxies: Mapping[str, str] | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        self._origins: dict[str, _Origin] = {}
        self._ssl: ssl.SSLContext | None = ssl_context
        self._closed = False
        self._dns = DnsCache(resolver, dns_cache_ttl_s)
        self._max_connections = max_connections
        self._proxies = ProxyEnv(proxies)

    async def request(self, method: str, url: str, *, data: bytes | None, headers: CIMultiDict[str],
                      total_timeout: float | None, connect_timeout: float | None) -> UpstreamResponse:
        """Send one request and return once the response's headers are in (its body follows).

        Raises ``asyncio.TimeoutError`` past ``total_timeout`` (which also bounds reading the
        body) and ``aiohttp.ClientError`` subclasses when the upstream cannot be reached or
        breaks off.
        """
        origin, target = self._split(url)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + total_timeout if total_timeout else None
        if origin.proxy is not None:
            target, headers = self._via_proxy(origin, origin.proxy, target, headers)
        payload = self._serialize(method, target, origin.host_header, data, headers)
        attempts = 2 if method in _IDEMPOTENT else 1
        while True:
            attempts -= 1
            conn = self._idle(origin)
            reserved = False
            if conn is None and self._max_connections and origin.open >= self._max_connections:
                conn = await self._wait_for_connection(origin, loop, deadline, connect_timeout)
                reserved = conn is None  # a slot freed: ours to open a connection in
            reused = conn is not None
            if conn is None:
                conn = await self._connect(origin, loop, deadline, connect_timeout, reserved)
            conn.method = method
            conn.received = False
            conn.head_bytes = 0
            conn.head = head = loop.create_future()
            conn.transport.writelines(payload)  # type: ignore[union-attr]
            timer = loop.call_at(deadline, _expire, head, conn) if deadline is not None else None
            try:
                response = await head
            except UpstreamDisconnected:
                if timer is not None:
                    timer.cancel()
                conn.close()
                if reused and not conn.received and attempts > 0:
                    continue  # the upstream had closed this idle connection: once more, on a new one
                raise
            except BaseException:  # timeout, cancellation: the connection's state is unknown
                if timer is not None:
                    timer.cancel()
                conn.close()
                raise
            if timer is not None:
                timer.cancel()
                if not response._done and deadline is not None:  # a timer means a deadline
                    response._timer = loop.call_at(deadline, response._timed_out)
            return response

    # -- pieces ------------------------------------------------------------------------------
    def _split(self, url: str) -> tuple[_Origin, str]:
        scheme_end = url.find("://")
        path_at = url.find("/", scheme_end + 3) if scheme_end != -1 else -1
        query_at = url.find("?", scheme_end + 3) if scheme_end != -1 else -1
        if path_at == -1 or (query_at != -1 and query_at < path_at):
            path_at = query_at
        origin_text, target = (url, "/") if path_at == -1 else (url[:path_at], url[path_at:])
        if target.startswith("?"):
            target = "/" + target
        origin = self._origins.get(origin_text)
        if origin is None:
            origin = self._origins[origin_text] = _Origin(origin_text, self._proxies)
        if not _SENT_AS_IS.match(target):
            target = URL(url).raw_path_qs  # what aiohttp would have sent
        return origin, target

    @staticmethod
    def _via_proxy(origin: _Origin, proxy: OutboundProxy, target: str,
                   headers: CIMultiDict[str]) -> tuple[str, CIMultiDict[str]]:
        """A plain http request through a proxy: absolute-form target, and the proxy's credentials."""
        if not origin.absolute:
            return target, headers  # https: the CONNECT tunnel carries the request unchanged
        if proxy.authorization is not None:
            headers = headers.copy()  # the caller's dict stays as it was
            headers["Proxy-Authorization"] = proxy.authorization
        return origin.absolute + target, headers

    @staticmethod
    def _serialize(method: str, target: str, host: str, data: bytes | None,
                   headers: CIMultiDict[str]) -> list[bytes]:
        """The request's head (and body) as aiohttp would send them for these headers."""
        lines = [f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"]
        for name, value in headers.items():
            if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
                raise ValueError(f"Newline or carriage return in the header {name!r}")
            lines.append(f"{name}: {value}\r\n")
        for name, value in _DEFAULT_HEADERS:
            if name not in headers:
                lines.append(f"{name}: {value}\r\n")
        if data:
            if "Content-Length" not in headers:
                lines.append(f"Content-Length: {len(data)}\r\n")
            if "Content-Type" not in headers:
                lines.append("Content-Type: application/octet-stream\r\n")
        elif method not in _NO_BODY_METHODS:
            if "Content-Length" not in headers:
                lines.append("Content-Length: 0\r\n")
            if "Content-Type" not in headers and method in _POST_METHODS:  # not for DELETE (aiohttp 3.14)
                lines.append("Content-Type: application/octet-stream\r\n")
        lines.append("\r\n")
        # surrogateescape: header bytes that are not UTF-8 arrive as lone surrogates (aiohttp's server
        # decodes them so) and leave as the same bytes, so such a header is forwarded unchanged.
        head = "".join(lines).encode("utf-8", "surrogateescape")
        if not data:
            return [head]
        return [head + data] if len(data) < 16384 else [head, data]

    def _idle(self, origin: _Origin) -> _Connection | None:
        idle = origin.idle
        now = 0.0
        while idle:
            conn = idle.pop()
            if conn.closed or conn.transport is None or conn.transport.is_closing():
                continue
            if not now:
                now = time.monotonic()
            if now - conn.idle_since > KEEPALIVE_S:
                conn.close()
                for stale in idle:  # older still: close them all
                    stale.close()
                idle.clear()
                return None
            return conn
        return None

    @staticmethod
    def _timeout(loop: asyncio.AbstractEventLoop, deadline: float | None, connect_timeout: float | None) -> float | None:
        """The connect timeout, cut short by the call's total deadline."""
        if deadline is None:
            return connect_timeout
        left = max(deadline - loop.time(), 0.001)
        return left if connect_timeout is None else min(connect_timeout, left)

    async def _wait_for_connection(self, origin: _Origin, loop: asyncio.AbstractEventLoop, deadline: float | None,
                                   connect_timeout: float | None) -> _Connection | None:
        """At the origin's limit: wait (within the connect timeout, as aiohttp's pool does) for a
        released connection, or for a closed one's slot (``None``)."""
        waiter: asyncio.Future[_Connection | None] = loop.create_future()
        origin.waiters.append(waiter)
        timeout = self._timeout(loop, deadline, connect_timeout)
        try:
            return await (asyncio.wait_for(waiter, timeout) if timeout else waiter)
        except BaseException:  # timed out or cancelled: what was handed over meanwhile goes on
            if waiter.done() and not waiter.cancelled():
                given = waiter.result()
                if given is None:
                    origin.free_slot()
                else:
                    given.close()  # its state is fine, but the simplest safe choice
            else:
                waiter.cancel()
            raise

    async def _connect(self, origin: _Origin, loop: asyncio.AbstractEventLoop, deadline: float | None,
                       connect_timeout: float | None, reserved: bool = False) -> _Connection:
        if not reserved:
            origin.open += 1  # this connection's slot, held while it opens
        try:
            if self._closed:
                raise aiohttp.ClientConnectionError("The proxy is shutting down.")
            timeout = self._timeout(loop, deadline, connect_timeout)
            connect = self._open(origin, loop)
            conn = await (asyncio.wait_for(connect, timeout) if timeout else connect)
            if conn.closed:  # lost before we saw it; its slot is still ours to give back
                raise ConnectionResetError("The connection closed as it opened")
            conn.counted = True  # the slot now goes with the connection
            return conn
        except TimeoutError:
            origin.free_slot()
            raise  # an OSError too (Python 3.11+), but the caller's timeout, not an unreachable host
        except (OSError, ssl.SSLError) as exc:
            origin.free_slot()
            raise UpstreamConnectError(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            origin.free_slot()
            raise

    async def _open(self, origin: _Origin, loop: asyncio.AbstractEventLoop) -> _Connection:
        """A new connection to the origin (or its proxy), trying each address of the host in turn."""
        proxy = origin.proxy
        host, port = (origin.host, origin.port) if proxy is None else (proxy.host, proxy.port)
        addresses = [host] if proxy is None and origin.literal else await self._dns.resolve(host, port)
        secure = self._ssl_context() if origin.ssl else None
        error: OSError | None = None
        for address in addresses:
            try:
                if proxy is not None and secure is not None:
                    return await self._tunnel(origin, proxy, address, loop, secure)
                _, conn = await loop.create_connection(lambda: _Connection(origin), address, port, ssl=secure,
                                                       server_hostname=origin.host if secure else None)
                return conn
            except ssl.SSLError:
                raise  # the server was reached: another address would not change its certificate
            except OSError as exc:
                error = exc
        assert error is not None
        raise error

    async def _tunnel(self, origin: _Origin, proxy: OutboundProxy, address: str, loop: asyncio.AbstractEventLoop,
                      secure: ssl.SSLContext) -> _Connection:
        """An https origin through a proxy: ``CONNECT host:port``, then TLS inside the tunnel."""
        transport, setup = await loop.create_connection(_TunnelSetup, address, proxy.port)
        try:
            authority = f"{'[' + origin.host + ']' if ':' in origin.host else origin.host}:{origin.port}"
            head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
            if proxy.authorization is not None:
                head += f"Proxy-Authorization: {proxy.authorization}\r\n"
            transport.write((head + "\r\n").encode("utf-8"))
            status = await setup.answer
            if not 200 <= status < 300:
                raise OSError(f"The proxy answered {status} to CONNECT")
            conn = _Connection(origin)
            tls = await loop.start_tls(transport, conn, secure, server_hostname=origin.host)
            if tls is None:  # start_tls returns None only when the loop is closing
                raise OSError("The TLS handshake through the proxy was cut short")
            conn.connection_made(tls)  # start_tls does not call it
            return conn
        except BaseException:
            transport.close()
            raise

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()  # system CAs; SSL_CERT_FILE / SSL_CERT_DIR respected
        return self._ssl

    async def close(self) -> None:
        """Close every idle connection; later requests fail."""
        self._closed = True
        for origin in self._origins.values():
            for conn in list(origin.idle):
                conn.close()
            origin.idle.clear()


class _TunnelSetup(asyncio.Protocol):
    """Reads a proxy's answer to ``CONNECT`` (its status; a CONNECT answer has no body)."""

    def __init__(self) -> None:
        self.answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._buffer = b""

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end != -1 and not self.answer.done():
            status_line = self._buffer.split(b"\r\n", 1)[0].split()
            try:
                self.answer.set_result(int(status_line[1]))
            except (IndexError, ValueError):
                self.answer.set_exception(OSError("The proxy's answer to CONNECT is not HTTP"))
        elif len(self._buffer) > MAX_HEAD_BYTES and not self.answer.done():
            self.answer.set_exception(OSError("The proxy's answer to CONNECT is too long"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc or OSError("The proxy closed the connection during CONNECT"))


def _expire(head: asyncio.Future[Any], conn: _Connection) -> None:
    """The total timeout passed before the response's headers: fail the wait, drop the connection."""
    if not head.done():
        head.set_exception(TimeoutError())
    conn.close()
