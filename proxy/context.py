"""Who and what a call is for: session, user, agent, prompt version and custom properties.

The agent says so in request headers addressed to the proxy (``GenOps-Session-Id``, ...),
in the equivalents of the proxies teams switch from (Helicone's ``Helicone-*`` headers,
Portkey's ``x-portkey-metadata`` JSON), or in the request body (each adapter reads its own
provider's fields, e.g. OpenAI's ``user`` and ``metadata``). All of it becomes span
attributes: GenAI convention names where they exist (``gen_ai.conversation.id``,
``gen_ai.agent.name``), ``genops.*`` otherwise.

Precedence when the same field arrives twice: ``GenOps-*`` > ``Helicone-*`` >
``x-portkey-metadata`` > request body > what a coding agent's own headers imply (Claude Code,
Codex CLI, Gemini CLI, OpenAI Agents SDK: agent name, session, user; ``proxy/agents.py``). Header names
are case-insensitive; property names
are lower-cased. Values are capped (:data:`MAX_VALUE_CHARS`, :data:`MAX_PROPERTY_CHARS`,
:data:`MAX_PROPERTIES`) and a capped call carries ``genops.context.truncated``. The
headers themselves never go upstream (``proxy/headers.py`` strips them when forwarding).

The handler calls :func:`call_context` once per call, after the client has its response,
so none of this adds latency (about 20 µs of CPU with eight context headers, 4 µs with none).
:func:`request_id_for` picks the call's request id.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from multidict import CIMultiDictProxy

from genops import semconv as sc
from genops.proxy.agents import agent_context
from genops.proxy.providers.base import ProviderAdapter, RequestFacts

log = logging.getLogger("genops.proxy.context")

MAX_VALUE_CHARS = 256  # ids, names, versions, paths
MAX_PROPERTY_CHARS = 1024  # one property value
MAX_PROPERTY_NAME_CHARS = 64
MAX_PROPERTIES = 64  # per call, all sources together
MAX_METADATA_JSON_BYTES = 16 * 1024  # x-portkey-metadata larger than this is ignored

# Context keys: the part after ``GenOps-`` in the header name, lower-cased. Adapters
# report body fields with the same keys (``"user-id"``, ``"property-<name>"``).
FIELDS: dict[str, str] = {
    "session-id": sc.GEN_AI_CONVERSATION_ID,
    "session-path": sc.GENOPS_SESSION_PATH,
    "session-name": sc.GENOPS_SESSION_NAME,
    "user-id": sc.GENOPS_USER_ID,
    "agent-name": sc.GEN_AI_AGENT_NAME,
    "prompt-id": sc.GENOPS_PROMPT_ID,
    "prompt-version": sc.GENOPS_PROMPT_VERSION,
}
PROPERTY = "property-"

# Header prefixes read here, with their rank (lower wins).
_GENOPS, _HELICONE, _PORTKEY, _BODY, _AGENT = 0, 1, 2, 3, 4  # _AGENT: inferred from a coding agent's own headers
_PREFIXES = (("genops-", _GENOPS), ("helicone-", _HELICONE))
_ANY_PREFIX = tuple(prefix for prefix, _ in _PREFIXES)
# Helicone's documented equivalents only (it has no agent name or prompt version header).
_HELICONE_KEYS = frozenset({"session-id", "session-path", "session-name", "user-id", "prompt-id"})
PORTKEY_METADATA = "x-portkey-metadata"
PORTKEY_USER_KEY = "_user"
# The client's own request id: ours, else Helicone's (so feedback code written for Helicone keeps its ids).
REQUEST_ID_HEADERS = ("GenOps-Request-Id", "Helicone-Request-Id")
_random_bits = random.getrandbits

_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.-")


class _Collector:
    """Keeps the best-ranked value of each field and the capped property set."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[int, str]] = {}
        self.properties: dict[str, tuple[int, str]] = {}
        self.truncated = False

    def add(self, key: str, value: Any, rank: int) -> None:
        if key.startswith(PROPERTY):
            self.add_property(key[len(PROPERTY) :], value, rank)
            return
        if key not in FIELDS:
            return
        text = self._text(value, MAX_VALUE_CHARS)
        if text is None:
            return
        current = self.values.get(key)
        if current is None or rank < current[0]:
            self.values[key] = (rank, text)

    def add_property(self, name: str, value: Any, rank: int) -> None:
        name = property_name(name)
        text = self._text(value, MAX_PROPERTY_CHARS)
        if not name or text is None:
            return
        current = self.properties.get(name)
        if current is not None and current[0] <= rank:
            return
        if current is None and len(self.properties) >= MAX_PROPERTIES:
            self.truncated = True
            return
        self.properties[name] = (rank, text)

    def _text(self, value: Any, limit: int) -> str | None:
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = (value if value.isascii() else escape_header(value)).strip()
        elif isinstance(value, (int, float)):
            text = str(value).strip()
        else:
            return None  # nested objects and nulls are not context values
        if not text:
            return None
        if len(text) > limit:
            self.truncated = True
            text = text[:limit]
        return text

    def attributes(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        for key, (_, value) in self.values.items():
            if key == "session-path":
                value = session_path(value)
            attrs[FIELDS[key]] = value
        for name, (_, value) in self.properties.items():
            attrs[sc.GENOPS_PROPERTY_PREFIX + name] = value
        if self.truncated:
            attrs[sc.GENOPS_CONTEXT_TRUNCATED] = True
        return attrs


def property_name(raw: str) -> str:
    """A property name as stored: lower-case letters, digits, ``_ . -`` (others become ``_``), capped."""
    name = raw.strip().lower()[:MAX_PROPERTY_NAME_CHARS]
    return "".join(c if c in _NAME_OK else "_" for c in name)


def session_path(raw: str) -> str:
    """``planner//researcher/`` -> ``/planner/researcher`` (one leading slash, no empty segments)."""
    segments = [s.strip() for s in raw.split("/") if s.strip()]
    return "/" + "/".join(segments)


def _portkey_metadata(raw: str, collector: _Collector) -> None:
    if len(raw) > MAX_METADATA_JSON_BYTES:
        collector.truncated = True
        return
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return
    if not isinstance(data, dict):
        return
    for key, value in data.items():
        if key == PORTKEY_USER_KEY:
            collector.add("user-id", value, _PORTKEY)
        else:
            collector.add_property(str(key), value, _PORTKEY)


def context_from_headers(headers: Iterable[tuple[str, str]], collector: _Collector) -> None:
    """Read the context headers (any case) into ``collector``."""
    for name, value in headers:
        lower = name.lower()
        if not lower.startswith(_ANY_PREFIX):  # most headers (content-type, authorization...) end here
            if lower == PORTKEY_METADATA:
                _portkey_metadata(value, collector)
            continue
        for prefix, rank in _PREFIXES:
            if lower.startswith(prefix):
                key = lower[len(prefix) :]
                if rank == _HELICONE and key not in _HELICONE_KEYS and not key.startswith(PROPERTY):
                    break
                if key.startswith(PROPERTY):
                    # keep the name as sent after the prefix (lower-cased by property_name)
                    collector.add_property(name[len(prefix) + len(PROPERTY) :], value, rank)
                else:
                    collector.add(key, value, rank)
                break


def context_attributes(headers: Iterable[tuple[str, str]], body_context: Mapping[str, Any] | None = None,
                       inferred: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Span attributes for one call's context headers and the adapter's ``body_context``.

    ``headers`` are the client's request headers (name, value pairs); ``body_context`` maps
    context keys (``"user-id"``, ``"property-<name>"``, ...) to what the body said; ``inferred``
    (same keys, lowest rank) is what a coding agent's own headers say (proxy/agents.py).
    """
    collector = _Collector()
    context_from_headers(headers, collector)
    for key, value in (body_context or {}).items():
        collector.add(key, value, _BODY)
    for key, value in (inferred or {}).items():
        collector.add(key, value, _AGENT)
    return collector.attributes()


def escape_header(value: str) -> str:
    """A header value as stored in spans and sent back in headers: bytes that are not UTF-8 become
    backslash escapes (the byte 0xff becomes the four characters ``\\xff``); valid UTF-8, non-ASCII
    letters included, is kept as it is.

    aiohttp decodes header bytes as UTF-8 with ``surrogateescape``, so a byte that is not UTF-8
    arrives as a lone surrogate (0xff -> U+DCFF), which no span exporter, ClickHouse insert or
    response header can encode: unescaped, such a value would cost the call its span. Escapes
    keep different raw ids different (a replacement character would merge them). A value that is
    ASCII (almost all) is returned as is after one ``str.isascii()`` (~30 ns).
    """
    if value.isascii():
        return value
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that did not come from a raw byte (e.g. "\ud800")
        return value.encode("utf-8", "backslashreplace").decode("utf-8")


def request_id_for(headers: Mapping[str, str]) -> str:
    """The call's request id: the client's own (capped at :data:`MAX_VALUE_CHARS`), else a new one.
    Bytes that are not UTF-8 are escaped (:func:`escape_header`): the id is stored and sent back."""
    for name in REQUEST_ID_HEADERS:
        value = headers.get(name)
        if value:
            value = (value if value.isascii() else escape_header(value)).strip()
            if value:
                return value[:MAX_VALUE_CHARS]
    # 32 hex digits like a uuid4's: ids need uniqueness, not secrecy (uuid4 reads os.urandom per call).
    return f"{_random_bits(128):032x}"


def call_context(headers: CIMultiDictProxy[str], adapter: ProviderAdapter, request: RequestFacts) -> dict[str, Any]:
    """The context attributes of one proxied call (the record stage's single entry point). Never raises."""
    try:
        body = adapter.request_context(request)
    except Exception:  # noqa: BLE001 - an adapter bug must not cost the header context
        log.warning("request body context failed", extra={"adapter": adapter.name}, exc_info=True)
        body = None
    try:
        inferred = agent_context(headers, request.request_json)
    except Exception:  # noqa: BLE001 - same: agent inference is best effort
        log.warning("agent context failed", exc_info=True)
        inferred = None
    try:
        return context_attributes(headers.items(), body, inferred)
    except Exception:  # noqa: BLE001 - context is best effort; the span must still end
        log.warning("context extraction failed", exc_info=True)
        return {}
