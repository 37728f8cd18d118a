"""Gemini API wire format (Google AI Studio): ``generateContent``, ``streamGenerateContent``,
``countTokens``, ``embedContent`` / ``batchEmbedContents``.

Served under ``/gemini`` (``http_options={"base_url": "http://127.0.0.1:8080/gemini"}`` in
``google-genai``). The key arrives as ``x-goog-api-key`` or as a ``key`` query parameter; it
is forwarded but the stored URL never has a query string. Streams come as SSE
(``alt=sse``, what the SDKs ask for) or as one JSON array written piece by piece; both are
read as they pass. Vertex AI's Gemini models speak the same format and reuse
:func:`read_request`, :func:`read_response`, :class:`GeminiStream` and :func:`error_body`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson
from multidict import MultiMapping

from genops import semconv as sc
from genops.proxy.providers.base import (
    NO_RESPONSE,
    PASS_THROUGH,
    ProviderAdapter,
    RequestError,
    RequestFacts,
    ResponseAccumulator,
    ResponseFacts,
    StreamState,
    TextPart,
    TextSlot,
    Upstream,
    Usage,
    as_int,
    parse_json_body,
    pick,
    read_json,
    string_leaves,
)

# Method after "models/{model}:" -> gen_ai.operation.name (None: traced as plain HTTP).
OPERATIONS = {
    "generateContent": "generate_content",
    "streamGenerateContent": "generate_content",
    "embedContent": "embeddings",
    "batchEmbedContents": "embeddings",
}

GENERATION_PARAMETERS = {
    "maxOutputTokens": sc.GEN_AI_REQUEST_MAX_TOKENS,
    "max_output_tokens": sc.GEN_AI_REQUEST_MAX_TOKENS,
    "temperature": sc.GEN_AI_REQUEST_TEMPERATURE,
    "topP": sc.GEN_AI_REQUEST_TOP_P,
    "top_p": sc.GEN_AI_REQUEST_TOP_P,
    "topK": sc.GEN_AI_REQUEST_TOP_K,
    "top_k": sc.GEN_AI_REQUEST_TOP_K,
    "stopSequences": sc.GEN_AI_REQUEST_STOP_SEQUENCES,
    "stop_sequences": sc.GEN_AI_REQUEST_STOP_SEQUENCES,
    "seed": sc.GEN_AI_REQUEST_SEED,
    "candidateCount": sc.GEN_AI_REQUEST_CHOICE_COUNT,
    "candidate_count": sc.GEN_AI_REQUEST_CHOICE_COUNT,
    "presencePenalty": sc.GEN_AI_REQUEST_PRESENCE_PENALTY,
    "presence_penalty": sc.GEN_AI_REQUEST_PRESENCE_PENALTY,
    "frequencyPenalty": sc.GEN_AI_REQUEST_FREQUENCY_PENALTY,
    "frequency_penalty": sc.GEN_AI_REQUEST_FREQUENCY_PENALTY,
}

# HTTP status -> google.rpc status name, for proxy-made errors.
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

_PATH = re.compile(r"^/(?P<version>v\d\w*)/(?P<model>(?:models|tunedModels)/[^/:]+):(?P<method>\w+)$")


def read_usage(u: Usage, usage: Any) -> Usage:
    """``u`` updated by ``usageMetadata`` (``u`` itself when there is none): prompt (includes
    cached) + tool-use prompt in, candidates + thoughts out."""
    if not isinstance(usage, dict):
        return u
    input_tokens, output_tokens, reasoning, cache_read, estimated = (
        u.input_tokens, u.output_tokens, u.reasoning_tokens, u.cache_read_tokens, u.estimated)
    prompt = as_int(usage.get("promptTokenCount"))
    if prompt is not None:
        input_tokens = prompt + (as_int(usage.get("toolUsePromptTokenCount")) or 0)
    candidates = as_int(usage.get("candidatesTokenCount"))
    thoughts = as_int(usage.get("thoughtsTokenCount"))
    if candidates is not None or thoughts is not None:
        output_tokens = (candidates or 0) + (thoughts or 0)
    if thoughts is not None:
        reasoning = thoughts
    cached = as_int(usage.get("cachedContentTokenCount"))
    if cached is not None:
        cache_read = cached
    if prompt is not None or candidates is not None:
        estimated = False
    return Usage(input_tokens, output_tokens, cache_read, u.cache_write_tokens, u.cache_write_1h_tokens, reasoning,
                 estimated)


def read_error(body: Any) -> tuple[str, str | None] | None:
    """``{"error": {"code", "message", "status"}}`` -> (error.type = the status name, message); None: no error."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = error.get("message")
        return str(error.get("status") or error.get("code") or "error"), str(message)[:500] if message else None
    return None


def read_chunk(acc: ResponseAccumulator, data: Any, stream: StreamState | None = None) -> None:
    """One ``GenerateContentResponse`` (a whole response, or one stream chunk) into the reader's ``acc``."""
    if isinstance(data, list):  # a JSON-array stream read whole
        for item in data:
            read_chunk(acc, item, stream)
        return
    if not isinstance(data, dict):
        return
    if "error" in data:
        acc.set_error(read_error(data))
        return
    acc.response_id = data.get("responseId") or acc.response_id
    acc.response_model = data.get("modelVersion") or acc.response_model
    for candidate in data.get("candidates") or ():
        if not isinstance(candidate, dict):
            continue
        for part in (candidate.get("content") or {}).get("parts") or ():
            if not isinstance(part, dict):
                continue
            text = part.get("text")
            if stream is not None and (text or part.get("functionCall") or part.get("inlineData")):
                stream.mark_first_token()
            if isinstance(text, str) and not part.get("thought"):
                acc.output_text.append(text)
            function_call = part.get("functionCall")
            if isinstance(function_call, dict):
                acc.tool_calls.append(str(function_call.get("name") or ""))
        if candidate.get("finishReason"):
            acc.finish_reasons.append(str(candidate["finishReason"]))
    acc.usage = read_usage(acc.usage, data.get("usageMetadata"))


def read_request(method_name: str, model: str, body: bytes, variant: str | None = None) -> RequestFacts:
    """A Gemini request for ``models/{model}:{method_name}`` (``variant``: kept for Vertex)."""
    operation = OPERATIONS.get(method_name)
    if operation is None:  # countTokens, ...: traced as HTTP
        return PASS_THROUGH if variant is None else RequestFacts(variant=variant)
    request = parse_json_body(body)
    if not isinstance(request, dict):
        raise RequestError(400, "The request body must be a JSON object.", "INVALID_ARGUMENT")
    config = request.get("generationConfig") or request.get("generation_config") or {}
    return RequestFacts(
        operation,
        model,
        method_name.startswith("stream"),
        request,
        pick(config, GENERATION_PARAMETERS) if isinstance(config, dict) else {},
        variant,
    )


def read_response(request: RequestFacts, status: int, body: bytes) -> ResponseFacts:
    """What a complete response body (object, or a JSON-array stream that came back whole) says."""
    data = read_json(body)
    if data is None:
        return NO_RESPONSE
    if status >= 400:
        error = read_error(data[0] if isinstance(data, list) and data else data)
        if error is None:
            return ResponseFacts(body_json=data)
        return ResponseFacts(error_type=error[0], error_message=error[1], body_json=data)
    if request.operation != "generate_content":
        return ResponseFacts(body_json=data)
    acc = ResponseAccumulator()  # this function's own, frozen before it returns
    read_chunk(acc, data)
    return acc.freeze(data)


def _parts_slots(role: str, index: int, content: Any) -> Iterator[TextSlot]:
    """``{"parts": [{"text"}, {"functionResponse": {"response": {...}}}]}``; strings inside a
    function response are tool text (parts 1000*(j+1)+k)."""
    for j, part in enumerate((content.get("parts") if isinstance(content, dict) else None) or ()):
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str) and not part.get("thought"):
            yield TextPart(role, index, j, part["text"]), part, "text"
        response = part.get("functionResponse") or part.get("function_response")
        if isinstance(response, dict):
            for k, (container, key, text) in enumerate(string_leaves(response.get("response"))):
                yield TextPart("tool", index, 1000 * (j + 1) + k, text), container, key


def request_slots(request: Any) -> Iterator[TextSlot]:
    """Text slots of generateContent / embedContent / batchEmbedContents requests."""
    if not isinstance(request, dict):
        return
    for key in ("systemInstruction", "system_instruction"):
        system = request.get(key)
        if isinstance(system, str):
            yield TextPart("system", -1, 0, system), request, key
        elif isinstance(system, dict):
            yield from _parts_slots("system", -1, system)
    contents = request.get("contents")
    if isinstance(contents, str):
        yield TextPart("user", 0, 0, contents), request, "contents"
    for i, content in enumerate(contents if isinstance(contents, list) else ()):
        if isinstance(content, dict):
            role = content.get("role") or "user"
            yield from _parts_slots("assistant" if role == "model" else str(role), i, content)
    if isinstance(request.get("content"), dict):  # embedContent
        yield from _parts_slots("user", 0, request["content"])
    for i, item in enumerate(request.get("requests") or ()):  # batchEmbedContents
        if isinstance(item, dict):
            yield from _parts_slots("user", i, item.get("content"))


def response_parts(data: Any) -> list[TextPart]:
    """Candidate texts of a complete response (or of a JSON-array stream read whole)."""
    items = data if isinstance(data, list) else [data]
    texts: dict[tuple[int, int], list[str]] = {}
    for item in items:
        for i, candidate in enumerate((item.get("candidates") if isinstance(item, dict) else None) or ()):
            parts = ((candidate.get("content") or {}).get("parts") if isinstance(candidate, dict) else None) or ()
            for j, part in enumerate(parts):
                if isinstance(part, dict) and isinstance(part.get("text"), str) and not part.get("thought"):
                    texts.setdefault((candidate.get("index", i), j if len(items) == 1 else 0), []).append(part["text"])
    return [TextPart("assistant", i, j, "".join(chunks)) for (i, j), chunks in texts.items()]


def error_body(status: int, message: str) -> bytes:
    """A proxy-made error in Google's shape."""
    return orjson.dumps({"error": {"code": status, "message": message,
                                   "status": STATUS_NAMES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")}})


class GeminiStream(StreamState):
    """``streamGenerateContent`` as SSE (``alt=sse``) or as one JSON array sent in pieces.

    The framing is decided by the first byte: ``[`` starts a JSON array, whose top-level
    elements are cut out by tracking nesting and strings across chunk boundaries.
    """

    _SPECIAL = re.compile(rb'[{}\[\]"\\]')

    def __init__(self, request: RequestFacts, started_ns: int, usage_injected: bool = False) -> None:
        super().__init__(request, started_ns, usage_injected)
        self._array: bool | None = None
        self._depth = 0
        self._in_string = False
        self._scanned = 0  # bytes of self._buffer already scanned
        self._element_start: int | None = None

    def _events(self, chunk: bytes) -> Iterator[bytes]:
        if self._array is None:
            stripped = (self._buffer + chunk).lstrip()
            if not stripped:
                self._buffer += chunk
                return iter(())
            self._array = stripped[:1] == b"["
        if not self._array:
            return super()._events(chunk)
        return iter(self._array_elements(chunk))

    def _array_elements(self, chunk: bytes) -> list[bytes]:
        data = self._buffer + chunk
        out = []
        skip_to = self._scanned  # positions before this are done (or an escaped byte)
        for match in self._SPECIAL.finditer(data, self._scanned):
            index = match.start()
            if index < skip_to:
                continue
            char = data[index]
            if self._in_string:
                if char == 0x5C:  # backslash: the next byte is escaped, even if it is in the next chunk
                    skip_to = index + 2
                elif char == 0x22:
                    self._in_string = False
            elif char == 0x22:
                self._in_string = True
            elif char in (0x7B, 0x5B):  # { [
                self._depth += 1
                if self._depth == 2:
                    self._element_start = index
            else:  # } ]
                if self._depth == 2 and self._element_start is not None:
                    out.append(data[self._element_start : index + 1])
                    self._element_start = None
                self._depth -= 1
        # Keep only the unfinished element (strings exist only inside elements).
        keep = self._element_start if self._element_start is not None else len(data)
        self._buffer = data[keep:]
        self._scanned = max(len(data), skip_to) - keep
        if self._element_start is not None:
            self._element_start = 0
        return out

    def on_event(self, event: bytes) -> bytes | None:
        payload = event if self._array else self.event_data(event)
        if payload:
            try:
                read_chunk(self._acc, orjson.loads(payload), self)
            except orjson.JSONDecodeError:
                pass
        return event


class GeminiAdapter(ProviderAdapter):
    """The Gemini API under ``/gemini`` (``/gemini/v1beta/models/{model}:{method}``)."""

    name = "gemini"
    provider_name = "gcp.gemini"
    price_provider_id = "google"
    prefixes = ("/gemini",)

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def upstream(self, tail: str, query_string: str, headers: MultiMapping[str],
                 base_url: str | None = None) -> Upstream:
        stored = f"{(base_url or self.base_url).rstrip('/')}{tail}"
        # The query may carry the API key (key=...): it is sent, never stored.
        return Upstream(url=f"{stored}?{query_string}" if query_string else stored, stored_url=stored)

    def parse_request(self, method: str, tail: str, body: bytes, headers: MultiMapping[str]) -> RequestFacts:
        match = _PATH.match(tail)
        if method != "POST" or match is None:
            return PASS_THROUGH
        return read_request(match["method"], match["model"].split("/", 1)[1], body)

    def parse_response(self, request: RequestFacts, status: int, body: bytes) -> ResponseFacts:
        return read_response(request, status, body)

    def new_stream(self, request: RequestFacts, started_ns: int, usage_injected: bool = False) -> StreamState:
        return GeminiStream(request, started_ns, usage_injected)

    def streams_response(self, request: RequestFacts, status: int, content_type: str) -> bool:
        return request.stream and status < 400  # the JSON-array stream is application/json too

    def error_body(self, status: int, message: str, error_type: str, code: str | None = None) -> bytes:
        return error_body(status, message)

    def text_slots(self, request: RequestFacts) -> Iterator[TextSlot]:
        return request_slots(request.request_json)

    def response_parts(self, request: RequestFacts, data: Any) -> list[TextPart]:
        return response_parts(data)
