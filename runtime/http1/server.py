"""The native server: its listeners and its open connections, in the shape the drain
(runtime/drain.py) uses for aiohttp's (``connections``, each with ``close()`` and ``shutdown()``)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

from genops.runtime.http1.connection import Http1Connection
from genops.runtime.http1.exchange import Http1Exchange


class Http1Server:
    """Serves ``dispatch(exchange)`` for every request of every connection it accepts.

    ``header_timeout_s``: a request's head is due within it (from the connection's start or the
    previous answer). ``max_body_bytes``: a request body the handler does not read is kept up to
    this (the handler refuses more). ``closing``: whether answers must say ``Connection: close``
    (the drain).
    """

    def __init__(self, dispatch: Callable[[Http1Exchange], Awaitable[None]], *, header_timeout_s: float,
                 max_body_bytes: int, closing: Callable[[], bool] = lambda: False) -> None:
        self.dispatch = dispatch
        self.header_timeout_s = header_timeout_s
        self.max_body_bytes = max_body_bytes
        self.closing = closing
        self.connections: list[Http1Connection] = []

    async def listen(self, sock: socket.socket, backlog: int) -> Listener:
        """Start accepting connections on a bound socket."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Http1Connection(self), sock=sock, backlog=backlog)
        return Listener(server)


class Listener:
    """One listening socket (``stop`` as aiohttp's ``BaseSite.stop``: no new connections, the open ones stay)."""

    def __init__(self, server: asyncio.AbstractServer) -> None:
        self.server = server

    async def stop(self) -> None:
        self.server.close()
