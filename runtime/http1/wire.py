"""A response head's bytes, by aiohttp.web's rules (``StreamResponse._prepare_headers``, aiohttp 3.14):
the reference behaviour the native server keeps, so a client sees the same head from either.

- a body known in advance gets ``Content-Length`` (kept on HEAD; dropped for 1xx/204/304);
- a streamed body is chunked on HTTP/1.1; on HTTP/1.0 it ends with the connection;
- ``Content-Type: application/octet-stream`` when a body is sent without one;
- ``Date`` and ``Server`` when absent;
- ``Connection: close`` on HTTP/1.1 when the connection ends after this answer,
  ``Connection: keep-alive`` on HTTP/1.0 when it does not.
"""

from __future__ import annotations

import re
import sys
import time
from email.utils import formatdate
from http import HTTPStatus

from multidict import CIMultiDict

from genops import __version__

#: The ``Server`` header (aiohttp's names Python and aiohttp; this names Python and GenOps).
SERVER = f"Python/{sys.version_info[0]}.{sys.version_info[1]} genops/{__version__}"
#: Statuses whose answer never has a body (aiohttp's EMPTY_BODY_STATUS_CODES).
EMPTY_BODY_STATUSES = frozenset((204, 304, *range(100, 200)))
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"

_REASONS = {status.value: status.phrase for status in HTTPStatus}
#: aiohttp refuses these in a head (a header injection); so does this.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_date = ["", 0]


def date_value() -> str:
    """The ``Date`` header's value, made once per second."""
    now = int(time.time())
    if now != _date[1]:
        _date[0], _date[1] = formatdate(now, usegmt=True), now
    return _date[0]  # type: ignore[return-value]


def must_be_empty(method: str, status: int) -> bool:
    """Whether the answer to ``method`` with ``status`` carries no body (HEAD, 1xx, 204, 304)."""
    return status in EMPTY_BODY_STATUSES or method == "HEAD"


def head(version: str, status: int, headers: CIMultiDict[str], method: str, *, length: int | None,
         keep_alive: bool) -> tuple[bytes, bool, bool]:
    """The head of an answer; ``length``: the body's size, None for a streamed one.

    Returns (the head's bytes, whether the body is chunked, whether the connection stays open).
    Raises ValueError for a header holding CR, LF or NUL (as aiohttp does).
    """
    empty = must_be_empty(method, status)
    chunked = False
    if length is not None:
        if "Content-Length" not in headers:
            headers["Content-Length"] = str(length)
    elif version == "1.1":
        if not empty:
            chunked = True
            headers["Transfer-Encoding"] = "chunked"
    elif not empty:
        keep_alive = False  # an HTTP/1.0 client learns the body's end from the connection's
    if empty:
        if "Content-Length" in headers and (status in EMPTY_BODY_STATUSES):
            del headers["Content-Length"]
        headers.popall("Transfer-Encoding", None)
    elif length != 0:
        headers.setdefault("Content-Type", "application/octet-stream")
    if "Date" not in headers:
        headers["Date"] = date_value()
    headers.setdefault("Server", SERVER)
    if "Connection" not in headers:
        if keep_alive:
            if version == "1.0":
                headers["Connection"] = "keep-alive"
        elif version == "1.1":
            headers["Connection"] = "close"
    lines = [f"HTTP/{version} {status} {_REASONS.get(status, '')}"]
    for name, value in headers.items():
        lines.append(f"{name}: {value}")
    if _FORBIDDEN.search("\t".join(lines)) is not None:  # tab is allowed: it cannot end a line
        raise ValueError("Newline or carriage return character detected in HTTP status message or header. "
                         "This is a potential security issue.")
    # surrogateescape: header bytes that were not UTF-8 arrived as lone surrogates (both servers
    # decode them so); they leave as the same bytes.
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape"), chunked, keep_alive


def plain_error(version: str, status: int, message: str = "") -> bytes:
    """A bare text error the server itself answers (a malformed request, an exception in a
    handler), as aiohttp's ``web_protocol.handle_error``; the connection closes after it."""
    if status == 500:
        message = f"500 {_REASONS[500]}\n\n{HTTPStatus.INTERNAL_SERVER_ERROR.description}"
    body = message.encode("utf-8", "surrogateescape")
    headers: CIMultiDict[str] = CIMultiDict({"Content-Type": "text/plain; charset=utf-8"})
    data, _, _ = head(version, status, headers, "GET", length=len(body), keep_alive=False)
    return data + body
