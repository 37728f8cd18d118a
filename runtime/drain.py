"""Graceful drain: how a GenOps server process stops (or leaves the port to another) without dropping a call.

On SIGTERM or SIGINT a process serving the proxy port:

1. fails readiness (``/readyz`` answers 503 ``{"status": "draining"}``; ``/healthz`` stays 200, so a
   liveness probe does not kill a draining process), and from now on every response carries
   ``Connection: close`` so kept-alive clients reconnect, elsewhere once the load balancer knows;
2. runs its ``before_close`` steps (a supervisor stops its workers here, while it still
   listens for their last spans);
3. waits ``GENOPS_DRAIN_DELAY_S`` so load balancers (Kubernetes endpoints, kube-proxy) stop
   sending new connections;
4. stops accepting: the kernel is told to drop new connection attempts (SYNs) on the listening
   socket (Linux), the connections it had already queued are accepted and served, then the
   listener is closed. Closing a listener with connections in its queue would reset them: these
   clients had connected and sent their request (with ``SO_REUSEPORT`` the dropped SYN's retry
   goes to the other listeners of the port, a second after; with no listener left it is refused);
5. gives kept-alive connections a moment (:data:`KEEPALIVE_GRACE_S`) to bring one more request
   (answered with ``Connection: close``), closes the idle ones, and waits for the calls in
   flight, long streams included, up to ``GENOPS_DRAIN_TIMEOUT_S`` (calls still running then
   are cancelled; their spans say so); each connection closes once its response is sent;
6. stops the application (``on_shutdown``, ``on_cleanup``): the spans are flushed to the store.

A worker told to *retire* (SIGUSR2, sent by its supervisor in a rolling restart) does steps 4-6
only: the port stays served by the other workers, so its readiness does not change.

:func:`serve_app` runs an aiohttp application this way; it replaces ``web.run_app`` and uses
aiohttp's public API (``AppRunner``, ``SockSite``, ``Server.connections``). A worker on the native
server (runtime/http1/) is run the same way: the application then only starts and stops (its
``on_startup``/``on_cleanup``), and the native server serves the port, its connections drained alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from genops.api.admin import NOT_READY_KEY
from genops.runtime.http1.server import Http1Server

log = logging.getLogger("genops.drain")

#: Connections already queued on a listener are accepted until the queue has stayed empty this long
#: (a handshake under way when SYNs started being dropped completes within one round trip).
QUEUE_QUIET_S = 0.1
#: ...or this long when the queue was full (see _stop_accepting).
OVERFLOW_QUIET_S = 1.5
#: ...but no longer than this (an event loop too busy to accept them: the rest are reset).
QUEUE_DRAIN_LIMIT_S = 5.0
#: Once the listener is closed, how long kept-alive connections may still bring one more request
#: (answered with ``Connection: close``) before the idle ones are closed.
KEEPALIVE_GRACE_S = 0.5
#: After GENOPS_DRAIN_TIMEOUT_S, how long cancelled calls get to end (and record their spans).
CANCEL_GRACE_S = 2.0
#: How long the final flush may take to store the spans (or hand them to the supervisor) once
#: the calls are done; what is left stays in the spool for the next start.
FINAL_FLUSH_S = 30.0
#: Backlog of the listening sockets (as uvicorn's; the kernel caps it at net.core.somaxconn). aiohttp's
#: 128 overflows in bursts, and an overflowing queue leaves half-open connections a drain cannot see.
BACKLOG = 2048

# Linux: attach a classic BPF socket filter (setsockopt SOL_SOCKET/SO_ATTACH_FILTER) that drops
# every TCP segment with SYN set. A listening socket's filter sees the TCP header at offset 0;
# byte 13 holds the flags. Segments of handshakes already answered (ACK) and of accepted
# connections (which inherit the filter) carry no SYN and pass.
_SO_ATTACH_FILTER = 26
_DROP_SYN = ((0x30, 0, 0, 13),           # ldb [13]          A = TCP flags
             (0x45, 0, 1, 0x02),         # jset #0x02        SYN set? next : skip one
             (0x06, 0, 0, 0),            # ret #0            drop
             (0x06, 0, 0, 0xFFFFFFFF))   # ret #-1           keep the whole segment
_TCP_INFO_UNACKED = 24  # offset of struct tcp_info's tcpi_unacked (then tcpi_sacked)


def drop_new_connections(sock: socket.socket) -> bool:
    """Make the kernel drop new connection attempts on listening ``sock`` (Linux); False where unsupported."""
    if not sys.platform.startswith("linux") or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    code = b"".join(struct.pack("HBBI", *instruction) for instruction in _DROP_SYN)
    program = ctypes.create_string_buffer(code)  # the kernel copies it during setsockopt
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER,
                        struct.pack("@HP", len(_DROP_SYN), ctypes.addressof(program)))
    except OSError as exc:
        log.warning("cannot hold new connections off the listener; closing it may reset queued ones",
                    extra={"error": str(exc)})
        return False
    return True


def accept_queue_length(sock: socket.socket) -> int:
    """Connections the kernel has queued on listening ``sock`` that nobody accepted yet (Linux; else 0)."""
    return _accept_queue(sock)[0]


def _accept_queue(sock: socket.socket) -> tuple[int, int]:
    """(connections waiting, the queue's limit) of a listening socket; (0, 0) where unknown."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except (OSError, AttributeError):
        return 0, 0
    if len(info) < _TCP_INFO_UNACKED + 8:
        return 0, 0
    # On a listener, tcpi_unacked and tcpi_sacked hold the accept queue's length and limit.
    waiting, limit = struct.unpack_from("II", info, _TCP_INFO_UNACKED)
    return waiting, limit


def listen_sockets(host: str | None, port: int, reuse_port: bool = False) -> list[socket.socket]:
    """Bound sockets for every address of ``host`` (all interfaces when empty), as asyncio's
    ``create_server`` makes them; ``reuse_port`` shares the port with other processes of this
    user (``SO_REUSEPORT``: the kernel spreads new connections among them).

    Raises OSError (e.g. the port is taken) with nothing left open.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # the IPv4 address has its own socket
            sock.bind(address)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Drain:
    """One process's drain: its state (for readiness and responses) and the steps it runs.

    ``delay_s``: GENOPS_DRAIN_DELAY_S for a process on the public port, 0 for a supervisor's
    internal one. ``timeout_s``: GENOPS_DRAIN_TIMEOUT_S.
    """

    def __init__(self, delay_s: float, timeout_s: float) -> None:
        self.delay_s = delay_s
        self.timeout_s = timeout_s
        #: Why the process is draining (readiness fails), or "" while it serves.
        self.reason = ""
        #: True once responses must close their connection.
        self.closing = False
        #: Awaited (in order) once readiness fails and before the listener closes.
        self.before_close: list[Callable[[], Awaitable[None]]] = []
        #: Called on SIGHUP (serve sets it: the routes read again, a supervisor's rolling restart); None: logged, ignored.
        self.on_hangup: Callable[[], None] | None = None
        #: Whether SIGUSR2 makes this process retire (a worker of a supervisor).
        self.retire_on_usr2 = False
        self._started = asyncio.Event()  # bound to the event loop that first waits on it
        self._signal = ""
        self._began = 0.0

    @property
    def draining(self) -> bool:
        return bool(self.reason)

    def not_ready(self) -> str | None:
        """Why readiness fails because of the drain, or None."""
        return self.reason or None

    def begin(self, reason: str, delay_s: float | None = None) -> None:
        """Start draining (fail readiness, then the steps above); later calls change nothing."""
        if self._started.is_set():
            log.info("already draining; signal ignored", extra={"reason": reason})
            return
        self.reason = reason
        self.closing = True
        if delay_s is not None:
            self.delay_s = delay_s
        self._signal, self._began = reason, time.monotonic()
        self._started.set()

    def retire(self) -> None:
        """Leave the port to the other listeners: no readiness change, no delay (a rolling restart)."""
        if self._started.is_set():
            return
        self.closing = True
        self.delay_s = 0.0
        self._signal, self._began = "retire", time.monotonic()
        self._started.set()

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """Once draining, each response tells its client to close the connection (and aiohttp closes it)."""
        if self.closing:
            response.force_close()
            response.headers["Connection"] = "close"

    def install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        handlers = {signal.SIGTERM: lambda: self.begin("SIGTERM"), signal.SIGINT: lambda: self.begin("SIGINT"),
                    signal.SIGHUP: self._hangup}
        if self.retire_on_usr2:
            handlers[signal.SIGUSR2] = self.retire
        for signum, handler in handlers.items():
            with contextlib.suppress(NotImplementedError, AttributeError, ValueError):
                loop.add_signal_handler(signum, handler)

    def _hangup(self) -> None:
        if self.on_hangup is not None:
            self.on_hangup()
        else:
            log.warning("SIGHUP ignored: this process has nothing to reload or restart (rolling restarts need "
                        "the proxy in worker processes: GENOPS_STORE_PROCESS=separate or --workers N)")

    async def wait_started(self) -> None:
        await self._started.wait()

    async def run(self, server: Any, sites: list[Any], sockets: list[socket.socket]) -> None:
        """Steps 2-5 (the caller then runs ``runner.cleanup()``: step 6). ``server``: aiohttp's
        ``runner.server`` or the native server (its ``connections``, each with ``close()`` and
        ``shutdown(timeout)``); ``sites``: what listens (each with ``stop()``)."""
        log.info("draining", extra={"signal": self._signal, "delay_s": self.delay_s, "timeout_s": self.timeout_s,
                                    "connections": len(server.connections)})
        if self.draining:
            for step in self.before_close:
                await step()
        if self.delay_s > 0:
            await asyncio.sleep(self.delay_s)
        accepted, reset = await _stop_accepting(sites, sockets)
        # Kept-alive connections a client is using bring their next request within moments; its
        # answer says Connection: close. Closing them idle instead races with a request on its way.
        grace_end = time.monotonic() + KEEPALIVE_GRACE_S
        while server.connections and time.monotonic() < grace_end:
            await asyncio.sleep(0.05)
        # aiohttp's per-connection shutdown: an idle connection closes now, a busy one once its
        # response is sent (or its call is cancelled after the timeout).
        cut_off = sum(await asyncio.gather(*(self._finish(c) for c in server.connections)))
        if cut_off:
            log.warning("calls still in flight after GENOPS_DRAIN_TIMEOUT_S were cancelled",
                        extra={"calls": cut_off, "timeout_s": self.timeout_s})
        log.info("listener closed and calls in flight finished; flushing spans",
                 extra={"signal": self._signal, "drain_s": round(time.monotonic() - self._began, 3),
                        "queued_connections": accepted, "queued_reset": reset, "cut_off": cut_off})

    async def _finish(self, connection: Any) -> bool:
        """Close ``connection`` once its call (if any) is done; True when the timeout cut the call off.

        As aiohttp's own ``Server.pre_shutdown`` then ``shutdown``: ``close()`` ends an idle
        connection's wait for a next request, ``shutdown()`` waits for the call in flight.
        """
        began = time.monotonic()
        connection.close()
        await connection.shutdown(self.timeout_s)
        return time.monotonic() - began >= self.timeout_s


async def _stop_accepting(sites: list[Any], sockets: list[socket.socket]) -> tuple[int, int]:
    """Close the listeners without resetting the connections queued on them.

    Returns how many connections were queued when new ones were held off, and how many were
    still queued when the listeners closed (reset: 0 unless the event loop could not accept them
    within :data:`QUEUE_DRAIN_LIMIT_S`).
    """
    held = [sock for sock in sockets if drop_new_connections(sock)]
    queued = sum(accept_queue_length(sock) for sock in held)
    if held:
        # A full queue made the kernel drop handshakes' last ACK: those clients believe they are
        # connected and their ACK comes again with the next SYN-ACK, a second later.
        quiet_s = OVERFLOW_QUIET_S if any(_queue_full(sock) for sock in held) else QUEUE_QUIET_S
        limit = time.monotonic() + QUEUE_DRAIN_LIMIT_S
        quiet_since = time.monotonic()
        while time.monotonic() < limit:
            await asyncio.sleep(0.01)  # the event loop accepts them meanwhile
            if any(accept_queue_length(sock) for sock in held):
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_s:
                break
    left = sum(accept_queue_length(sock) for sock in held)
    for site in sites:
        await site.stop()
    return queued, left


def _queue_full(sock: socket.socket) -> bool:
    waiting, limit = _accept_queue(sock)
    return limit > 0 and waiting >= limit


def serve_app(app: web.Application, drain: Drain, *, host: str | None, port: int, reuse_port: bool = False,
              keepalive_timeout: float = 75.0, on_listening: Iterable[Callable[[], None]] = (),
              clients: bool = True, native: Callable[[web.Application], Http1Server] | None = None,
              internal: Iterable[socket.socket] = ()) -> None:
    """Run ``app`` on ``host:port`` until a signal, then drain (see the module's doc).

    Like ``web.run_app``: the app's ``on_startup`` runs before the port is bound, an OSError
    from binding propagates (after ``on_cleanup``), the event loop comes from the current policy.
    ``clients``: the port serves clients (not only a supervisor's own workers), so responses
    say ``Connection: close`` once draining (a hook per response: one test of a flag, not
    measurable in CPU per request). ``native``: the native server to serve the port with, made
    from the started application (None: aiohttp.web serves it); it asks ``drain.closing`` itself.
    ``internal``: bound loopback sockets aiohttp.web serves the application on besides (the native
    server hands its admin paths there), until the application stops.
    """
    app[NOT_READY_KEY] = drain.not_ready  # /readyz fails first (genops.api.admin.draining_response)
    if clients and native is None:
        app.on_response_prepare.append(drain.on_response_prepare)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(_serve(app, drain, host, port, reuse_port, keepalive_timeout, tuple(on_listening), native,
                                   tuple(internal)))
    try:
        loop.run_until_complete(main)
    except KeyboardInterrupt:  # before the signal handlers were in place
        if not main.done():
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(main)
    finally:
        _cancel_all(loop)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _serve(app: web.Application, drain: Drain, host: str | None, port: int, reuse_port: bool,
                 keepalive_timeout: float, on_listening: tuple[Callable[[], None], ...],
                 native: Callable[[web.Application], Http1Server] | None,
                 internal: tuple[socket.socket, ...] = ()) -> None:
    loop = asyncio.get_running_loop()
    drain.install_signals(loop)  # a signal during start-up drains once listening
    # Calls are waited for by Drain.run; aiohttp's own shutdown wait then only ends cancelled ones.
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=keepalive_timeout, shutdown_timeout=CANCEL_GRACE_S)
    await runner.setup()
    sites: list[Any] = []
    sockets: list[socket.socket] = []
    try:
        sockets = listen_sockets(host, port, reuse_port)
        server: Any = runner.server
        for sock in internal:  # stopped with the application (runner.cleanup), after the drain
            await web.SockSite(runner, sock, backlog=BACKLOG).start()
        if native is not None:
            server = native(app)
            for sock in sockets:
                sites.append(await server.listen(sock, BACKLOG))
        else:
            for sock in sockets:
                site = web.SockSite(runner, sock, backlog=BACKLOG)
                await site.start()
                sites.append(site)
        for callback in on_listening:
            callback()
        await drain.wait_started()
        await drain.run(server, sites, sockets)
    finally:
        await runner.cleanup()  # the signal handlers stay until the loop closes: a late signal changes nothing
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
