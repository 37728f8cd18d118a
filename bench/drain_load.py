"""An open-loop load of chat calls that tells apart how each call ended, for restart and drain tests.

Used by ``bench/durability.py`` and ``tests/test_graceful_drain.py``. A call is started every
``1/rate`` seconds whatever the others do (a restart must not slow the load down, as a
closed loop would), on a kept-alive connection when one is idle, else on a new one; one call
in ``stream_every`` is a stream the fake upstream sends slowly (``X-Fake-Chunk-Delay-Ms``),
so streams are in flight at any moment. Each call ends as one of:

- ``ok``: status 200 and the whole body (a stream up to ``data: [DONE]``);
- ``refused``: the connection was refused: the listener was closed, nothing was sent;
- ``reset``: the server had the connection (it was accepted) and the call did not complete:
  reset, closed early, cut off mid-stream. A graceful drain must have none;
- ``http_<code>``: another status (the proxy answered, e.g. a 503);
- ``timeout``: no answer within ``timeout_s``.

A kept-alive connection the server closed while it was idle (the request met the close on
the way) is retried once on a new connection, as HTTP clients do for a request that got no
byte of answer on a reused connection (RFC 9112, 9.3.1); such retries are counted apart.
"""

from __future__ import annotations

import asyncio
import select
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

STREAM_END = b"data: [DONE]"


@dataclass
class Call:
    """One call of the load: its request id, whether it streamed, and how and when it ended."""

    request_id: str
    stream: bool
    started: float
    outcome: str = ""
    ended: float = 0.0
    detail: str = ""
    #: The answer said ``Connection: close`` (a draining server's do).
    closed: bool = False


def _pooled(idle: list) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """An idle kept-alive connection still open, if any. As HTTP clients do (urllib3, httpcore),
    one the server has closed is dropped, not reused: its socket is readable (the FIN, which
    this event loop may not have processed yet)."""
    while idle:
        reader, writer = idle.pop()
        sock = writer.get_extra_info("socket")
        if not reader.at_eof() and not writer.is_closing() and not _readable(sock):
            return reader, writer
        writer.close()
    return None


def _readable(sock: object) -> bool:
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError, TypeError):
        return True


class _Closed(Exception):
    """The connection ended before the whole answer; ``got_bytes`` says whether any came."""

    def __init__(self, got_bytes: bool, detail: str) -> None:
        super().__init__(detail)
        self.got_bytes = got_bytes


@dataclass
class DrainLoad:
    """Chat calls at ``rate`` per second against ``host:port`` from a thread of its own, until :meth:`stop`."""

    host: str
    port: int
    rate: float = 200.0
    stream_every: int = 10
    chunk_delay_ms: int = 150
    timeout_s: float = 60.0
    keepalive: bool = True  # False: a new connection per call (as clients without a pool)
    prefix: str = field(default_factory=lambda: "drain-" + uuid.uuid4().hex[:8])
    calls: list[Call] = field(default_factory=list)
    stale_retries: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> DrainLoad:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="drain-load", daemon=True)
        self._thread.start()
        return self

    def stop(self, wait_s: float = 90.0) -> None:
        """Start no more calls and wait (up to ``wait_s``) for those under way."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(wait_s)

    # -- results ------------------------------------------------------------------------

    def counts(self) -> Counter:
        """How many calls ended each way (``pending`` for calls not ended yet)."""
        return Counter(c.outcome or "pending" for c in self.calls)

    def ok_ids(self) -> set[str]:
        return {c.request_id for c in self.calls if c.outcome == "ok"}

    def failures(self, limit: int = 5) -> list[str]:
        """A few calls that were accepted and did not complete, for assertion messages."""
        return [f"{c.request_id} {c.outcome} stream={c.stream}: {c.detail}" for c in self.calls
                if c.outcome not in ("ok", "refused")][:limit]

    # -- the load -----------------------------------------------------------------------

    async def _run(self) -> None:
        idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        tasks: set[asyncio.Task] = set()
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        n = 0
        while not self._stop.is_set():
            call = Call(f"{self.prefix}-{n}", self.stream_every > 0 and n % self.stream_every == 0, time.monotonic())
            n += 1
            self.calls.append(call)
            task = asyncio.get_running_loop().create_task(self._call(call, idle))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if tasks:
            await asyncio.wait(tasks, timeout=self.timeout_s + 5)
        for _, writer in idle:
            writer.close()

    def _request(self, call: Call) -> bytes:
        stream = b',"stream":true' if call.stream else b""
        body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"a b c d e f"}]%s}' % stream
        extra = f"X-Fake-Chunk-Delay-Ms: {self.chunk_delay_ms}\r\n" if call.stream else ""
        return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nAuthorization: Bearer sk-drain\r\n"
                f"GenOps-Request-Id: {call.request_id}\r\n{extra}Content-Length: {len(body)}\r\n\r\n").encode() + body

    async def _call(self, call: Call, idle: list) -> None:
        try:
            call.outcome = await asyncio.wait_for(self._attempt(call, idle), self.timeout_s)
        except TimeoutError:
            call.outcome, call.detail = "timeout", f"no answer within {self.timeout_s}s"
        call.ended = time.monotonic()

    async def _attempt(self, call: Call, idle: list) -> str:
        request = self._request(call)
        fresh_only = False
        while True:
            pooled = None if fresh_only else _pooled(idle)
            if pooled is not None:
                reader, writer = pooled
            else:
                try:
                    reader, writer = await asyncio.open_connection(self.host, self.port)
                except ConnectionRefusedError:
                    return "refused"
                except OSError as exc:
                    call.detail = f"connect: {exc!r}"
                    return "refused"  # never accepted either (e.g. a connect timeout)
            try:
                writer.write(request)
                status, keep = await self._read_response(reader, call.stream)
            except (_Closed, OSError) as exc:
                writer.close()
                if pooled is not None and not (isinstance(exc, _Closed) and exc.got_bytes):
                    self.stale_retries += 1  # a kept-alive connection the server closed as we sent: retry anew
                    fresh_only = True
                    continue
                call.detail = f"{type(exc).__name__}: {exc}"
                return "reset"
            call.closed = not keep
            if keep and self.keepalive:
                idle.append((reader, writer))
            else:
                writer.close()
            return "ok" if status == 200 else f"http_{status}"

    async def _read_response(self, reader: asyncio.StreamReader, stream: bool) -> tuple[int, bool]:
        """Read one whole response; returns (status, whether the connection may be reused)."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise _Closed(bool(exc.partial), f"closed after {len(exc.partial)} header bytes") from None
        except ConnectionError as exc:
            raise _Closed(False, repr(exc)) from None
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        keep = headers.get("connection", "").lower() != "close"
        body = bytearray()
        try:
            if headers.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
                    chunk = await reader.readexactly(size + 2)
                    if size == 0:
                        break
                    body += chunk[:-2]
            else:
                body += await reader.readexactly(int(headers.get("content-length", "0")))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            raise _Closed(True, f"body cut off after {len(body)} bytes: {exc!r}") from None
        if stream and status == 200 and STREAM_END not in body:
            raise _Closed(True, "stream ended without data: [DONE]")
        return status, keep
