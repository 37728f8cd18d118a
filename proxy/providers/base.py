"""The one interface every provider adapter implements.

An adapter knows its provider's wire format and nothing about HTTP plumbing or
telemetry export: it recognises its routes, reads the request (model, parameters,
stream flag), reads the response or each stream event (usage, ids, finish reasons),
and builds a proxy-made error in the provider's own error shape. The proxy handler
(proxy/handler.py) drives it; adding a provider is adding one module.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
from multidict import MultiMapping


@dataclass
class Usage:
    """Token counts of one call. ``input_tokens`` includes cached tokens and
    ``output_tokens`` includes reasoning tokens, as the GenAI conventions define them."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    cache_write_1h_tokens: int | None = None  # the part of cache_write_tokens kept for 1 hour (Anthropic)
    reasoning_tokens: int | None = None
    estimated: bool = False

    @property
    def reported(self) -> bool:
        return self.input_tokens is not None or self.output_tokens is not None


@dataclass
class Call:
    """Everything the adapter learns about one model call; the handler turns it into a span."""

    operation: str | None = None  # gen_ai.operation.name; None for generic pass-through
    model: str | None = None  # requested model
    stream: bool = False
    request_json: Any = None  # parsed body, when JSON
    request_attributes: dict[str, Any] = field(default_factory=dict)  # gen_ai.request.* values
    response_id: str | None = None
    response_model: str | None = None
    finish_reasons: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    error_type: str | None = None  # error.type (provider error code or proxy reason)
    error_message: str | None = None
    usage_injected: bool = False  # the proxy asked the upstream for stream usage
    output_text_chars: int = 0  # streamed text seen, for token estimates
    output_text: list[str] = field(default_factory=list)  # streamed text, for estimates and capture
    variant: str | None = None  # adapter-private: which wire format a multi-format route speaks
    tool_calls: list[str] = field(default_factory=list)  # names of the tool calls the model made
    # (body, parsed JSON) of the complete response: parse_response and the safety scan's
    # response_texts read the same body, and it is parsed once (see response_json).
    response_data: tuple[bytes, Any] | None = None


class TextPart(NamedTuple):
    """One piece of text in a call, as an adapter yields it for safety scanning and capture.

    ``role`` is the GenAI role of the message it belongs to (``system``, ``user``, ``assistant``,
    ``tool``); ``message_index`` the position of the message / input item in the request (or
    choice / output item in the response; -1 for a separate system prompt such as Anthropic's
    ``system`` or the Responses API's ``instructions``); ``part_index`` the position of the text
    inside the message (0 for plain string content). (message_index, part_index) is unique.
    """

    role: str
    message_index: int
    part_index: int
    text: str


#: A text slot: the part, plus the container and key (or index) where a replacement is written.
TextSlot = tuple[TextPart, Any, Any]


def write_texts(slots: Iterable[TextSlot], texts: Mapping[int, str]) -> None:
    """Write ``texts`` (keyed by position in ``slots``) into their containers: the shared body of
    ``replace_request_texts`` for adapters that walk their request as text slots."""
    for position, (_, container, key) in enumerate(list(slots)):
        if position in texts:
            container[key] = texts[position]


def string_leaves(value: Any, container: Any = None, key: Any = None) -> Iterator[tuple[Any, Any, str]]:
    """Every string inside a JSON value as (container, key, text): tool results given as objects."""
    if isinstance(value, str) and container is not None:
        yield container, key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from string_leaves(v, value, k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from string_leaves(v, value, i)


@dataclass
class Upstream:
    """Where a call goes and which headers to add or remove on the way."""

    url: str  # full URL, query string included
    stored_url: str  # what may be stored: no query string (keys travel there)
    set_headers: Mapping[str, str] = field(default_factory=dict)
    drop_headers: tuple[str, ...] = ()


class RequestError(Exception):
    """The request cannot be forwarded; becomes a proxy-made error in the provider's shape."""

    def __init__(self, status: int, message: str, error_type: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.code = code


class StreamState:
    """Reads one streamed response as it passes. Default: Server-Sent Events.

    ``observe(chunk)`` reads a copy of bytes already forwarded; ``rewrite(chunk)`` is used
    instead when the proxy changed the request (``call.usage_injected``) and must hide the
    difference from the client: it returns the bytes to forward (whole events only).
    """

    def __init__(self, call: Call, started_ns: int) -> None:
        self.call = call
        self.started_ns = started_ns
        self.first_token_ns: int | None = None
        self.chunks = 0
        self._buffer = b""

    # -- framing ----------------------------------------------------------------
    def _events(self, chunk: bytes) -> Iterator[bytes]:
        """The complete events of what has arrived so far, one at a time (the rest is kept for
        the next chunk once this iterator is exhausted). An event ends at the first blank line,
        ``\\n\\n`` or ``\\r\\n\\r\\n``; each search only covers the event being cut, so a chunk
        of many events costs time linear in its size and the first event is ready first."""
        data = self._buffer + chunk if self._buffer else chunk
        start = 0
        while True:
            end = data.find(b"\n\n", start)
            # A "\r\n\r\n" counts only if it starts before that "\n\n": search no further.
            crlf = data.find(b"\r\n\r\n", start) if end == -1 else data.find(b"\r\n\r\n", start, end + 3)
            if crlf != -1:
                event, start = data[start : crlf + 4], crlf + 4
            elif end != -1:
                event, start = data[start : end + 2], end + 2
            else:
                break
            yield event
        self._buffer = data[start:]

    @staticmethod
    def event_data(event: bytes) -> bytes | None:
        """The joined ``data:`` payload of one SSE event, or None."""
        if event.endswith(b"\n\n"):  # fast path: one "data:" line, the usual shape of a provider's event
            line = event[:-2]
            if line.startswith(b"data:") and b"\n" not in line and b"\r" not in line:
                return line[5:].lstrip(b" ")
        parts = []
        for line in event.splitlines():
            if line.startswith(b"data:"):
                parts.append(line[5:].lstrip(b" ") if line[5:6] == b" " else line[5:])
        return b"\n".join(parts) if parts else None

    @staticmethod
    def event_name(event: bytes) -> bytes | None:
        for line in event.splitlines():
            if line.startswith(b"event:"):
                return line[6:].strip()
        return None

    def mark_first_token(self) -> None:
        if self.first_token_ns is None:
            self.first_token_ns = time.perf_counter_ns()

    # -- entry points -------------------------------------------------------------
    def observe(self, chunk: bytes) -> None:
        for event in self._events(chunk):
            self.chunks += 1
            self.on_event(event)

    def rewrite(self, chunk: bytes) -> bytes:
        return b"".join(self.rewrite_events(chunk))

    def rewrite_events(self, chunk: bytes) -> Iterator[bytes]:
        """:meth:`rewrite`, one forwarded event at a time, each read only when the caller asks
        for it (the relay sends a stream's first event before reading the rest of its chunk)."""
        for event in self._events(chunk):
            self.chunks += 1
            forwarded = self.on_event(event)
            if forwarded is not None:
                yield forwarded

    def finish(self) -> bytes:
        """Called at end of stream; returns any held bytes still to forward (rewrite mode)."""
        rest, self._buffer = self._buffer, b""
        return rest

    def on_event(self, event: bytes) -> bytes | None:
        """Read one event; return the bytes to forward (rewrite mode) or None to drop it."""
        return event


class ProviderAdapter:
    """Base class of provider adapters. Subclasses set the class attributes and override methods."""

    #: Identifier used in config, routes and ``genops.route`` (e.g. ``"openai"``).
    name: str = ""
    #: ``gen_ai.provider.name`` value.
    provider_name: str = ""
    #: ``genai-prices`` provider id (None: never priced).
    price_provider_id: str | None = None
    #: URL prefixes served, e.g. ``("/anthropic",)``. ``""`` serves ``/v1/...`` at the root.
    prefixes: tuple[str, ...] = ()

    def upstream(self, tail: str, query_string: str, headers: MultiMapping[str],
                 base_url: str | None = None) -> Upstream:
        """Where to send a request whose path after the prefix is ``tail``.

        ``base_url`` replaces the configured upstream base (an allowed per-request target URL).
        """
        raise NotImplementedError

    def parse_request(self, method: str, tail: str, body: bytes, headers: MultiMapping[str]) -> Call:
        """Read the request. Raise :class:`RequestError` for a body the proxy cannot accept."""
        raise NotImplementedError

    def prepare_body(self, call: Call, body: bytes) -> bytes:
        """The body to send upstream (unchanged unless the adapter must ask for usage)."""
        return body

    def parse_response(self, call: Call, status: int, body: bytes) -> None:
        """Read a complete (non-streamed) response body into ``call``."""

    def new_stream(self, call: Call, started_ns: int) -> StreamState:
        """A reader for one streamed response."""
        return StreamState(call, started_ns)

    def streams_response(self, call: Call, status: int, content_type: str) -> bool:
        """Whether to relay this response as a stream (chunk by chunk) rather than read it whole."""
        return call.stream and status < 400 and "json" not in content_type.split(";")[0]

    def price_provider(self, call: Call) -> str | None:
        """The ``genai-prices`` provider id for this call (routes serving several providers override it)."""
        return self.price_provider_id

    # -- content: used by safety scanning and content capture (proxy/safety/) -----------------
    # An adapter that implements the two hooks (text_slots, response_parts) gets PII/secret/
    # injection scanning, masking before the upstream, and gen_ai.input/output.messages
    # capture through the three methods below; the defaults mean "no text known".
    def text_slots(self, call: Call) -> Iterable[TextSlot] | None:
        """Every text of the parsed request (``call.request_json``) in a stable order, each with
        where it lives (for rewriting): message contents and text parts, tool results (role
        ``tool``), tool-call arguments, system prompts, completion prompts, embedding inputs.
        Images and token arrays are skipped. None: this adapter knows no request texts."""
        return None

    def response_parts(self, call: Call, data: Any) -> list[TextPart]:
        """Texts the model produced, from a complete parsed JSON response."""
        return []

    def request_texts(self, call: Call) -> list[TextPart]:
        """The request's texts (see :meth:`text_slots`)."""
        slots = self.text_slots(call)
        return [] if slots is None else [slot[0] for slot in slots]

    def replace_request_texts(self, call: Call, texts: Mapping[int, str]) -> bytes:
        """Replace the texts at these positions (indexes into ``request_texts(call)``) in
        ``call.request_json`` in place, and return the new request body to send upstream."""
        slots = self.text_slots(call)
        if slots is None:
            raise NotImplementedError(f"{type(self).__name__} cannot rewrite request texts")
        write_texts(slots, texts)
        return orjson.dumps(call.request_json)

    def response_texts(self, call: Call, body: bytes | None) -> list[TextPart]:
        """Texts the model produced: read from ``body`` for a complete response, or from
        ``call.output_text`` (collected by the stream reader) when ``body`` is None."""
        if body is None:
            return [TextPart("assistant", 0, 0, "".join(call.output_text))] if call.output_text else []
        try:
            data = response_json(call, body)
        except orjson.JSONDecodeError:
            return []
        return self.response_parts(call, data)

    def error_body(self, status: int, message: str, error_type: str, code: str | None = None) -> bytes:
        """A proxy-made error in this provider's own shape."""
        return orjson.dumps({"error": {"message": message, "type": error_type, "param": None, "code": code}})

    def error_content_type(self) -> str:
        return "application/json"

    def request_context(self, call: Call) -> Mapping[str, Any]:
        """Context the request body carries (user, metadata, prompt), keyed like the ``GenOps-*``
        headers without their prefix: ``{"user-id": ..., "property-<name>": ...}`` (proxy/context.py)."""
        return {}


def response_json(call: Call, body: bytes) -> Any:
    """``orjson.loads(body)`` for a complete response body, parsed once per call and body
    (raises ``orjson.JSONDecodeError`` like ``orjson.loads``). Callers only read the result."""
    cached = call.response_data
    if cached is not None and cached[0] is body:
        return cached[1]
    data = orjson.loads(body)
    call.response_data = (body, data)
    return data


def parse_json_body(body: bytes) -> Any:
    """Parse a JSON request body or raise a 400 :class:`RequestError` that says why."""
    if not body:
        raise RequestError(400, "The request body is empty; a JSON body is required.", "invalid_request_error", "empty_body")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(
            400,
            f"The request body is not valid JSON ({exc}).",
            "invalid_request_error",
            "invalid_json",
        ) from None


def pick(source: Mapping[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    """``{attribute: source[key]}`` for the keys present (request parameters to gen_ai.request.*)."""
    out = {}
    for key, attribute in mapping.items():
        value = source.get(key)
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = [str(v) for v in value]
        elif isinstance(value, str) and attribute.endswith("stop_sequences"):
            value = [value]
        elif not isinstance(value, (str, bool, int, float)):
            continue
        out[attribute] = value
    return out


def as_int(value: Any) -> int | None:
    """An int from a usage field, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    return None
