"""The one interface every provider adapter implements.

An adapter knows its provider's wire format and nothing about HTTP plumbing or
telemetry export: it recognises its routes, reads the request (model, parameters,
stream flag), reads the response or each stream event (usage, ids, finish reasons),
and builds a proxy-made error in the provider's own error shape. The proxy's stages
(proxy/stages/) drive it; adding a provider is adding one module.

What an adapter reads it returns frozen, and nothing writes it afterwards:

- :meth:`ProviderAdapter.parse_request` returns the call's :class:`RequestFacts`;
- :meth:`ProviderAdapter.parse_response` (a whole body) returns its :class:`ResponseFacts`;
- a stream's :class:`StreamState` collects into a :class:`ResponseAccumulator` that it alone
  owns and writes, and :meth:`StreamState.result` freezes it when the stream ends.

The record stage composes them, with what the stages measured, into the call's
:class:`~genops.proxy.call_result.CallResult`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

import orjson
from multidict import MultiMapping


class Usage(NamedTuple):
    """Token counts of one call. ``input_tokens`` includes cached tokens and
    ``output_tokens`` includes reasoning tokens, as the GenAI conventions define them.

    Immutable: a reader that learns more (a stream's later event) makes a new one."""

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


#: No token counts known.
NO_USAGE = Usage()
_NO_ATTRIBUTES: Mapping[str, Any] = MappingProxyType({})


class RequestFacts(NamedTuple):
    """What an adapter read from one request (:meth:`ProviderAdapter.parse_request`). Frozen.

    A ``NamedTuple`` (like :class:`~genops.proxy.call_result.CallResult`): built once per call,
    ~3x cheaper to make than a frozen slots dataclass (measured ~0.7 µs against ~2 µs; the same
    for :class:`ResponseFacts`). ``request_json`` is the parsed body the adapter's text and
    context readers walk; the one change it ever sees is the safety guard's
    ``mask-upstream``, which rewrites its texts in place (:meth:`ProviderAdapter.replace_request_texts`)
    before the body leaves, so that it stays the body that was sent.
    """

    operation: str | None = None  # gen_ai.operation.name; None for generic pass-through
    model: str | None = None  # requested model
    stream: bool = False  # the client asked for a stream
    request_json: Any = None  # parsed body, when JSON
    request_attributes: Mapping[str, Any] = _NO_ATTRIBUTES  # gen_ai.request.* values
    variant: str | None = None  # adapter-private: which wire format a multi-format route speaks


#: A request the adapter does not read: generic pass-through, traced as HTTP only.
PASS_THROUGH = RequestFacts()


class ResponseFacts(NamedTuple):
    """What an adapter read from one response: a whole body (:meth:`ProviderAdapter.parse_response`)
    or a stream (:meth:`StreamState.result`). Frozen; its lists are the reader's own, handed over
    when it froze them (not copied) and never written again."""

    response_id: Any = None
    response_model: Any = None
    finish_reasons: Sequence[str] = ()
    tool_calls: Sequence[str] = ()  # names of the tool calls the model made
    usage: Usage = NO_USAGE  # as reported; a stream's missing counts are estimated apart (proxy/tokenizer)
    error_type: str | None = None  # error.type (provider error code)
    error_message: str | None = None
    # the model's text as a reader collected it piece by piece (a stream's: for estimates and capture)
    output_text: Sequence[str] = ()
    # a whole body's parsed JSON (None: a stream, or not JSON): what the safety scan and capture read
    body_json: Any = None


#: Nothing read from the response (no body read, or not JSON).
NO_RESPONSE = ResponseFacts()


class ResponseAccumulator:
    """The mutable scratch a response reader fills while it reads: a stream's, owned by its
    :class:`StreamState` (and by nothing else), or a whole body's while one reader walks it.
    :meth:`freeze` turns it into :class:`ResponseFacts`; it is not written after that."""

    __slots__ = ("error_message", "error_type", "finish_reasons", "output_text", "response_id", "response_model",
                 "tool_calls", "usage")

    def __init__(self) -> None:
        self.response_id: Any = None
        self.response_model: Any = None
        self.finish_reasons: list[str] = []
        self.tool_calls: list[str] = []
        self.usage = NO_USAGE
        self.error_type: str | None = None
        self.error_message: str | None = None
        self.output_text: list[str] = []

    def set_error(self, error: tuple[str, str | None] | None) -> None:
        """Keep an error read by a wire format's ``read_error`` (None: the body had none)."""
        if error is not None:
            self.error_type, self.error_message = error

    def freeze(self, body_json: Any = None) -> ResponseFacts:
        return ResponseFacts(self.response_id, self.response_model, self.finish_reasons, self.tool_calls, self.usage,
                             self.error_type, self.error_message, self.output_text, body_json)


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
    instead when the proxy changed the request (``usage_injected``: it asked for stream usage)
    and must hide the difference from the client: it returns the bytes to forward (whole events
    only). What the events say goes into the reader's own :class:`ResponseAccumulator`
    (``self._acc``, written by this reader only); :meth:`result` freezes it.
    """

    def __init__(self, request: RequestFacts, started_ns: int, usage_injected: bool = False) -> None:
        self.request = request
        self.usage_injected = usage_injected
        self._acc = ResponseAccumulator()
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

    def result(self) -> ResponseFacts:
        """What the stream said, frozen: called once, when the relay is done with the stream
        (ended, broken or left by the client); the reader reads nothing after that."""
        return self._acc.freeze()


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

    def parse_request(self, method: str, tail: str, body: bytes, headers: MultiMapping[str]) -> RequestFacts:
        """Read the request (:data:`PASS_THROUGH` for one that is not a model call). Raise
        :class:`RequestError` for a body the proxy cannot accept."""
        raise NotImplementedError

    def prepare_body(self, request: RequestFacts, body: bytes) -> tuple[bytes, bool]:
        """The body to send upstream, and whether the adapter changed it to ask the upstream for
        stream usage the client did not ask for (``usage_injected``: the stream reader then hides
        that usage from the client). Unchanged by default."""
        return body, False

    def parse_response(self, request: RequestFacts, status: int, body: bytes) -> ResponseFacts:
        """Read a complete (non-streamed) response body; its JSON is parsed once, here, and kept
        in ``body_json`` for the safety scan and content capture."""
        return NO_RESPONSE

    def new_stream(self, request: RequestFacts, started_ns: int, usage_injected: bool = False) -> StreamState:
        """A reader for one streamed response."""
        return StreamState(request, started_ns, usage_injected)

    def streams_response(self, request: RequestFacts, status: int, content_type: str) -> bool:
        """Whether to relay this response as a stream (chunk by chunk) rather than read it whole."""
        return request.stream and status < 400 and "json" not in content_type.split(";")[0]

    def price_provider(self, request: RequestFacts) -> str | None:
        """The ``genai-prices`` provider id for this call (routes serving several providers override it)."""
        return self.price_provider_id

    # -- content: used by safety scanning and content capture (proxy/safety/) -----------------
    # An adapter that implements the two hooks (text_slots, response_parts) gets PII/secret/
    # injection scanning, masking before the upstream, and gen_ai.input/output.messages
    # capture through the three methods below; the defaults mean "no text known".
    def text_slots(self, request: RequestFacts) -> Iterable[TextSlot] | None:
        """Every text of the parsed request (``request.request_json``) in a stable order, each with
        where it lives (for rewriting): message contents and text parts, tool results (role
        ``tool``), tool-call arguments, system prompts, completion prompts, embedding inputs.
        Images and token arrays are skipped. None: this adapter knows no request texts."""
        return None

    def response_parts(self, request: RequestFacts, data: Any) -> list[TextPart]:
        """Texts the model produced, from a complete parsed JSON response (``[]`` for None)."""
        return []

    def request_texts(self, request: RequestFacts) -> list[TextPart]:
        """The request's texts (see :meth:`text_slots`)."""
        slots = self.text_slots(request)
        return [] if slots is None else [slot[0] for slot in slots]

    def replace_request_texts(self, request: RequestFacts, texts: Mapping[int, str]) -> bytes:
        """Replace the texts at these positions (indexes into ``request_texts(request)``) in
        ``request.request_json`` in place, and return the new request body to send upstream."""
        slots = self.text_slots(request)
        if slots is None:
            raise NotImplementedError(f"{type(self).__name__} cannot rewrite request texts")
        write_texts(slots, texts)
        return orjson.dumps(request.request_json)

    def response_texts(self, request: RequestFacts, response: ResponseFacts | None) -> list[TextPart]:
        """Texts the model produced: from a complete response's parsed body (``body_json``), or
        else from the text a stream reader collected (``output_text``)."""
        if response is None:
            return []
        if response.body_json is not None:
            return self.response_parts(request, response.body_json)
        return [TextPart("assistant", 0, 0, "".join(response.output_text))] if response.output_text else []

    def error_body(self, status: int, message: str, error_type: str, code: str | None = None) -> bytes:
        """A proxy-made error in this provider's own shape."""
        return orjson.dumps({"error": {"message": message, "type": error_type, "param": None, "code": code}})

    def error_content_type(self) -> str:
        return "application/json"

    def request_context(self, request: RequestFacts) -> Mapping[str, Any]:
        """Context the request body carries (user, metadata, prompt), keyed like the ``GenOps-*``
        headers without their prefix: ``{"user-id": ..., "property-<name>": ...}`` (proxy/context.py)."""
        return {}


def read_json(body: bytes) -> Any:
    """A whole response body's JSON (parsed once per call, by its ``parse_response``), or None
    when it is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


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
