"""Anthropic wire format: the Messages API (``/v1/messages``), streamed or not.

Served under ``/anthropic`` (``base_url=http://127.0.0.1:8080/anthropic`` in the SDK);
``x-api-key`` and ``anthropic-version`` travel upstream untouched. The same body and event
format is spoken by Claude on Vertex AI (``rawPredict`` / ``streamRawPredict``), which reuses
:func:`read_request`, :func:`read_response` and :class:`AnthropicStream`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from multidict import MultiMapping

from genops import semconv as sc
from genops.proxy.agents import claude_code_user_id
from genops.proxy.providers.base import (
    NO_RESPONSE,
    NO_USAGE,
    PASS_THROUGH,
    ProviderAdapter,
    RequestError,
    RequestFacts,
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
)

REQUEST_PARAMETERS = {
    "max_tokens": sc.GEN_AI_REQUEST_MAX_TOKENS,
    "temperature": sc.GEN_AI_REQUEST_TEMPERATURE,
    "top_p": sc.GEN_AI_REQUEST_TOP_P,
    "top_k": sc.GEN_AI_REQUEST_TOP_K,
    "stop_sequences": sc.GEN_AI_REQUEST_STOP_SEQUENCES,
}

TOOL_BLOCKS = ("tool_use", "server_tool_use")  # content blocks that are tool calls

# HTTP status -> Anthropic error type (https://docs.anthropic.com/en/api/errors).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def read_usage(u: Usage, usage: Any) -> Usage:
    """``u`` updated by an Anthropic usage object (``u`` itself when there is none). Its
    ``input_tokens`` excludes cache reads and writes; GenAI's includes them."""
    if not isinstance(usage, dict):
        return u
    input_tokens, cache_write, cache_read, cache_write_1h = (u.input_tokens, u.cache_write_tokens,
                                                             u.cache_read_tokens, u.cache_write_1h_tokens)
    uncached = as_int(usage.get("input_tokens"))
    if uncached is not None:
        cache_write = as_int(usage.get("cache_creation_input_tokens"))
        cache_read = as_int(usage.get("cache_read_input_tokens"))
        input_tokens = uncached + (cache_write or 0) + (cache_read or 0)
        creation = usage.get("cache_creation")
        if isinstance(creation, dict):
            cache_write_1h = as_int(creation.get("ephemeral_1h_input_tokens"))
    output = as_int(usage.get("output_tokens"))
    return Usage(input_tokens, u.output_tokens if output is None else output, cache_read, cache_write,
                 cache_write_1h, u.reasoning_tokens)


def read_error(body: Any) -> tuple[str, str | None] | None:
    """``{"type":"error","error":{"type":..., "message":...}}`` -> (error.type, message); None: no error."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = error.get("message")
        return str(error.get("type") or "error"), str(message)[:500] if message else None
    return None


def body_context(request: Any) -> dict[str, Any]:
    """Messages API: ``metadata.user_id`` is the end user (the only metadata key Anthropic accepts).
    Claude Code's composite value (``user_<hash>_account_<uuid>_session_<uuid>``, or its JSON form)
    is split into user, session and properties (:func:`genops.proxy.agents.claude_code_user_id`)."""
    metadata = request.get("metadata") if isinstance(request, dict) else None
    if isinstance(metadata, dict):
        user = metadata.get("user_id")
        if isinstance(user, str):
            return claude_code_user_id(user) or {"user-id": user}
    return {}


def read_request(body: bytes, *, model: str | None = None, stream: bool | None = None,
                 variant: str | None = None) -> RequestFacts:
    """A Messages request. Vertex passes the ``model`` (from the URL), ``stream`` (from the method)
    and its ``variant``."""
    request = parse_json_body(body)
    if not isinstance(request, dict):
        raise RequestError(400, "The request body must be a JSON object.", "invalid_request_error")
    body_model = request.get("model")
    return RequestFacts(
        "chat",
        model or (body_model if isinstance(body_model, str) else None),
        request.get("stream") is True if stream is None else stream,
        request,
        pick(request, REQUEST_PARAMETERS),
        variant,
    )


def read_response(status: int, body: bytes) -> ResponseFacts:
    """What a complete Messages response (or error) says."""
    data = read_json(body)
    if not isinstance(data, dict):
        return NO_RESPONSE if data is None else ResponseFacts(body_json=data)
    if status >= 400 or data.get("type") == "error":
        error = read_error(data)
        if error is None:
            return ResponseFacts(body_json=data)
        return ResponseFacts(error_type=error[0], error_message=error[1], body_json=data)
    finish_reasons = [str(data["stop_reason"])] if data.get("stop_reason") else []
    tool_calls = [str(block.get("name") or "") for block in data.get("content") or ()
                  if isinstance(block, dict) and block.get("type") in TOOL_BLOCKS]
    return ResponseFacts(data.get("id"), data.get("model"), finish_reasons, tool_calls,
                         read_usage(NO_USAGE, data.get("usage")), None, None, (), data)


def error_body(status: int, message: str) -> bytes:
    """A proxy-made error exactly as Anthropic shapes its own."""
    kind = ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


def request_slots(request: Any) -> Iterator[TextSlot]:
    """Text slots of a Messages request: ``system`` (message -1), text blocks, tool results
    (role ``tool``; blocks inside a tool result are parts 1000*(j+1)+k)."""
    if not isinstance(request, dict):
        return
    system = request.get("system")
    if isinstance(system, str):
        yield TextPart("system", -1, 0, system), request, "system"
    elif isinstance(system, list):
        for j, block in enumerate(system):
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                yield TextPart("system", -1, j, block["text"]), block, "text"
    for i, message in enumerate(request.get("messages") or ()):
        if not isinstance(message, dict):
            continue
        role = str(message.get("role") or "user")
        content = message.get("content")
        if isinstance(content, str):
            yield TextPart(role, i, 0, content), message, "content"
            continue
        for j, block in enumerate(content if isinstance(content, list) else ()):
            if not isinstance(block, dict):
                continue
            if isinstance(block.get("text"), str):
                yield TextPart(role, i, j, block["text"]), block, "text"
            elif block.get("type") == "tool_result":
                result = block.get("content")
                if isinstance(result, str):
                    yield TextPart("tool", i, j, result), block, "content"
                for k, sub in enumerate(result if isinstance(result, list) else ()):
                    if isinstance(sub, dict) and isinstance(sub.get("text"), str):
                        yield TextPart("tool", i, 1000 * (j + 1) + k, sub["text"]), sub, "text"


def response_parts(data: Any) -> list[TextPart]:
    """Text blocks of a complete Messages response."""
    if not isinstance(data, dict):
        return []
    return [TextPart("assistant", 0, j, block["text"]) for j, block in enumerate(data.get("content") or ())
            if isinstance(block, dict) and isinstance(block.get("text"), str)]


class AnthropicStream(StreamState):
    """``message_start`` / ``content_block_*`` / ``message_delta`` / ``message_stop`` / ``error`` events."""

    def on_event(self, event: bytes) -> bytes | None:
        data = self.event_data(event)
        if not data:
            return event
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return event
        if not isinstance(payload, dict):
            return event
        acc = self._acc
        kind = payload.get("type")
        if kind == "content_block_delta":
            delta = payload.get("delta") or {}
            self.mark_first_token()
            text = delta.get("text") if delta.get("type") == "text_delta" else None
            if isinstance(text, str):
                acc.output_text.append(text)
        elif kind == "content_block_start":
            block = payload.get("content_block") or {}
            if block.get("type") in TOOL_BLOCKS:
                self.mark_first_token()
                acc.tool_calls.append(str(block.get("name") or ""))
        elif kind == "message_start":
            message = payload.get("message") or {}
            acc.response_id = message.get("id") or acc.response_id
            acc.response_model = message.get("model") or acc.response_model
            acc.usage = read_usage(acc.usage, message.get("usage"))
        elif kind == "message_delta":
            delta = payload.get("delta") or {}
            if delta.get("stop_reason"):
                acc.finish_reasons.append(str(delta["stop_reason"]))
            # Cumulative counts: output always, input and cache fields in newer API versions.
            acc.usage = read_usage_delta(acc.usage, payload.get("usage"))
        elif kind == "error":
            acc.set_error(read_error(payload))
        return event


def read_usage_delta(u: Usage, usage: Any) -> Usage:
    """``u`` updated by ``message_delta`` usage: cumulative output; input/cache fields override when present."""
    if not isinstance(usage, dict):
        return u
    if usage.get("input_tokens") is not None:
        return read_usage(u, usage)
    output = as_int(usage.get("output_tokens"))
    return u if output is None else u._replace(output_tokens=output, estimated=False)


class AnthropicAdapter(ProviderAdapter):
    """Anthropic's API under ``/anthropic`` (``/anthropic/v1/messages``)."""

    name = "anthropic"
    provider_name = "anthropic"
    price_provider_id = "anthropic"
    prefixes = ("/anthropic",)

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def upstream(self, tail: str, query_string: str, headers: MultiMapping[str],
                 base_url: str | None = None) -> Upstream:
        base = base_url.rstrip("/") if base_url else self.base_url
        if base.endswith("/v1") and tail.startswith("/v1/"):
            tail = tail[3:]
        stored = f"{base}{tail}"
        return Upstream(url=f"{stored}?{query_string}" if query_string else stored, stored_url=stored)

    def parse_request(self, method: str, tail: str, body: bytes, headers: MultiMapping[str]) -> RequestFacts:
        if method != "POST" or tail.rstrip("/") != "/v1/messages":
            return PASS_THROUGH  # count_tokens, models, batches...: traced as HTTP, body untouched
        return read_request(body)

    def parse_response(self, request: RequestFacts, status: int, body: bytes) -> ResponseFacts:
        return read_response(status, body)

    def new_stream(self, request: RequestFacts, started_ns: int, usage_injected: bool = False) -> StreamState:
        return AnthropicStream(request, started_ns, usage_injected)

    def error_body(self, status: int, message: str, error_type: str, code: str | None = None) -> bytes:
        return error_body(status, message)

    def text_slots(self, request: RequestFacts) -> Iterator[TextSlot]:
        return request_slots(request.request_json)

    def response_parts(self, request: RequestFacts, data: Any) -> list[TextPart]:
        return response_parts(data)

    def request_context(self, request: RequestFacts) -> dict[str, Any]:
        return body_context(request.request_json)
