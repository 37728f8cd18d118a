"""Which headers cross the proxy, per RFC 9110 section 7.6.1 (hop-by-hop fields)."""

from __future__ import annotations

from functools import lru_cache

from multidict import CIMultiDict, CIMultiDictProxy

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# Never sent upstream: recomputed by the client library, or the proxy's own business.
_NOT_UPSTREAM = HOP_BY_HOP | {"host", "content-length", "traceparent", "tracestate"}
# Never sent back: recomputed by aiohttp for the body we write.
_NOT_DOWNSTREAM = HOP_BY_HOP | {"content-length"}
# Never relayed as is to an internal service (the client library sets them anew).
_NOT_RELAYED = HOP_BY_HOP | {"host", "content-length"}

# Prefixes of headers addressed to the proxy itself, stripped before forwarding (read from
# the incoming request first). Helicone's and Portkey's headers are accepted as aliases
# (proxy/context.py), so they are the proxy's business too.
PROXY_HEADER_PREFIXES: tuple[str, ...] = ("genops-", "helicone-", "x-portkey-")

# Encodings the proxy can decode to read usage; others are not offered upstream.
DECODABLE_ENCODINGS = ("gzip", "deflate")

# Header names that carry credentials: never stored, never logged.
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "api-key", "x-api-key", "x-goog-api-key", "cookie", "set-cookie"}
)


def _connection_tokens(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> set[str]:
    tokens: set[str] = set()
    for value in headers.getall("connection", ()):
        tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


class HeaderBytesError(ValueError):
    """A header to forward has bytes that are not UTF-8 and the upstream client cannot send them as they are."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _not_utf8(value: str) -> bool:
    """Whether a (non-ASCII) header value holds bytes that were not UTF-8 (aiohttp's surrogate escapes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def upstream_headers(incoming: CIMultiDictProxy[str], *, streaming: bool,
                     raw_bytes_ok: bool = True) -> CIMultiDict[str]:
    """Request headers to forward upstream (credentials included, proxy headers removed).

    Header bytes that are not UTF-8 arrive as surrogate escapes (aiohttp decodes with
    ``surrogateescape``). An upstream client that writes them back as the same bytes says so
    (``raw_bytes_ok``); for one that cannot, such a header raises :class:`HeaderBytesError`
    instead of being sent altered (aiohttp's writer drops the bytes, a strict encode fails).
    Costs one ``str.isascii()`` per header (O(1) in CPython: a flag of the string).
    """
    drop = _connection_tokens(incoming)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        lower = name.lower()
        if lower in _NOT_UPSTREAM or lower in drop or lower.startswith(PROXY_HEADER_PREFIXES):
            continue
        if lower == "accept-encoding":
            continue
        if not raw_bytes_ok and not value.isascii() and _not_utf8(value):
            raise HeaderBytesError(name)
        out.add(name, value)
    out["Accept-Encoding"] = "identity" if streaming else _accept_encoding(incoming.get("accept-encoding", ""))
    return out


@lru_cache(maxsize=256)
def _accept_encoding(client_value: str) -> str:
    offered = {part.split(";")[0].strip().lower() for part in client_value.split(",") if part.strip()}
    keep = [enc for enc in DECODABLE_ENCODINGS if enc in offered]
    return ", ".join(keep) if keep else "identity"


def _without(headers: CIMultiDictProxy[str], names: frozenset[str],
             out: CIMultiDict[str] | None = None) -> CIMultiDict[str]:
    """``headers`` less ``names`` and the fields their ``Connection`` header lists (added to ``out``)."""
    drop = _connection_tokens(headers)
    if out is None:
        out = CIMultiDict()
    for name, value in headers.items():
        lower = name.lower()
        if lower in names or lower in drop:
            continue
        out.add(name, value)
    return out


def downstream_headers(upstream: CIMultiDictProxy[str], out: CIMultiDict[str] | None = None) -> CIMultiDict[str]:
    """Response headers to return to the client (rate-limit and request-id headers included).

    ``out``: add them to this multidict (a response's own headers, saving a copy) instead of a new one.
    """
    return _without(upstream, _NOT_DOWNSTREAM, out)


def relayed_request_headers(incoming: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """Request headers to relay unchanged to an internal service (credentials included)."""
    return _without(incoming, _NOT_RELAYED)
