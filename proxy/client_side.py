"""The proxy's side facing its client: what the request path reads of a request and how it answers,
whichever HTTP server serves the connection.

Two servers implement it: aiohttp.web (:mod:`genops.proxy.client_aiohttp`, the reference) and
GenOps's own HTTP/1.1 server (:mod:`genops.runtime.http1`, less CPU per call). The stages
(proxy/stages/) only see these protocols, so one request path serves both, and one conformance
suite (tests/test_server_conformance.py) runs against both.
"""

from __future__ import annotations

from typing import Protocol

from multidict import CIMultiDict, CIMultiDictProxy


class BodyTooLarge(Exception):
    """The request body is over the limit (``length``: its declared or read size so far)."""

    def __init__(self, limit: int, length: int) -> None:
        super().__init__(f"request body of {length} bytes is over the limit of {limit}")
        self.limit = limit
        self.length = length


class BodyPaused(Exception):
    """The client sent no part of the request body for the allowed pause."""


class BodyUnreadable(Exception):
    """The request body cannot be read: its Content-Encoding does not match it, or it is cut short."""


#: A client gone while it was being answered (every server raises a ConnectionResetError then).
ClientGone = ConnectionResetError


class ClientRequest(Protocol):
    """One request as the client sent it."""

    method: str
    #: The path, percent-decoded as the client meant it (no query string).
    path: str
    #: The query string, percent-decoded (aiohttp's ``request.query_string``; without ``?``).
    query_string: str
    headers: CIMultiDictProxy[str]

    async def read_body(self, limit: int, pause_s: float) -> bytes:
        """The whole body (decoded from its transfer coding). Raises :class:`BodyTooLarge` over
        ``limit`` bytes (at once when ``Content-Length`` says so), :class:`BodyPaused` when
        no part of it arrives for ``pause_s`` seconds, :class:`BodyUnreadable`."""
        ...


class ClientReply(Protocol):
    """How one request is answered: whole (:meth:`send`) or as a stream (:meth:`start`,
    :meth:`write`..., :meth:`end`). A client gone raises :data:`ClientGone`."""

    async def send(self, status: int, headers: CIMultiDict[str], body: bytes, *, close: bool = False) -> None:
        """The whole answer. ``close``: the connection cannot serve another request (the body
        was not read whole) and is closed after it."""
        ...

    async def start(self, status: int, headers: CIMultiDict[str], *, hold_headers: float = 0.0) -> None:
        """A streamed answer's head. ``hold_headers``: seconds the head may wait to leave in one
        write with the first chunk (0: at once)."""
        ...

    async def write(self, data: bytes) -> None:
        """Part of a streamed answer, sent as it is (waits while the client is slow to read)."""
        ...

    async def end(self) -> None:
        """The end of a streamed answer."""
        ...
