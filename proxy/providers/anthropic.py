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
    Call,
    ProviderAdapter,
    RequestError,
    StreamState,
    TextPart,
    TextSlot,
    Upstream,
    as_int,
    parse_json_body,
    pick,
    response_json,
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


def read_usage(call: Call, usage: Any) -> None:
    """Anthropic usage. Its ``input_tokens`` excludes cache reads and writes; GenAI's includes them."""
    if not isinstance(usage, dict):
        return
    u = call.usage
    uncached = as_int(usage.get("input_tokens"))
    written = as_int(usage.get("cache_creation_input_tokens"))
    read = as_int(usage.get("cache_read_input_tokens"))
    if uncached is not None:
        u.input_tokens = uncached + (written or 0) + (read or 0)
        u.cache_write_tokens = written
        u.cache_read_tokens = read
        creation = usage.get("cache_creation")
        if isinstance(creation, dict):
            u.cache_write_1h_tokens = as_int(creation.get("ephemeral_1h_input_tokens"))
    output = as_int(usage.get("output_tokens"))
    if output is not None:
        u.output_tokens = output
    u.estimated = False


def read_error(call: Call, body: Any) -> None:
    """``{"type":"error","error":{"type":..., "message":...}}`` -> error.type."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        call.error_type = str(error.get("type") or "error")
        message = error.get("message")
        call.error_message = str(message)[:500] if message else None


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


def read_request(body: bytes, *, model: str | None = None, stream: bool | None = None) -> Call:
    """A Messages request. Vertex passes the ``model`` (from the URL) and ``stream`` (from the method)."""
    request = parse_json_body(body)
    if not isinstance(request, dict):
        raise RequestError(400, "The request body must be a JSON object.", "invalid_request_error")
    body_model = request.get("model")
    return Call(
        operation="chat",
        model=model or (body_model if isinstance(body_model, str) else None),
        stream=request.get("stream") is True if stream is None else stream,
        request_json=request,
        request_attributes=pick(request, REQUEST_PARAMETERS),
    )


def read_response(call: Call, status: int, body: bytes) -> None:
    """A complete Messages response (or error) into ``call``."""
    try:
        data = response_json(call, body)
    except orjson.JSONDecodeError:
        return
    if not isinstance(data, dict):
        return
    if status >= 400 or data.get("type") == "error":
        read_error(call, data)
        return
    call.response_id = data.get("id")
    call.response_model = data.get("model")
    if data.get("stop_reason"):
        call.finish_reasons.append(str(data["stop_reason"]))
    for block in data.get("content") or ():
        if isinstance(block, dict) and block.get("type") in TOOL_BLOCKS:
            call.tool_calls.append(str(block.get("name") or ""))
    read_usage(call, data.get("usage"))


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
        call = self.call
        kind = payload.get("type")
        if kind == "content_block_delta":
            delta = payload.get("delta") or {}
            self.mark_first_token()
            text = delta.get("text") if delta.get("type") == "text_delta" else None
            if isinstance(text, str):
                call.output_text_chars += len(text)
                call.output_text.append(text)
        elif kind == "content_block_start":
            block = payload.get("content_block") or {}
            if block.get("type") in TOOL_BLOCKS:
                self.mark_first_token()
                call.tool_calls.append(str(block.get("name") or ""))
        elif kind == "message_start":
            message = payload.get("message") or {}
            call.response_id = message.get("id") or call.response_id
            call.response_model = message.get("model") or call.response_model
            read_usage(call, message.get("usage"))
        elif kind == "message_delta":
            delta = payload.get("delta") or {}
            if delta.get("stop_reason"):
                call.finish_reasons.append(str(delta["stop_reason"]))
            # Cumulative counts: output always, input and cache fields in newer API versions.
            read_usage_delta(call, payload.get("usage"))
        elif kind == "error":
            read_error(call, payload)
        return event


def read_usage_delta(call: Call, usage: Any) -> None:
    """``message_delta`` usage: cumulative output; input/cache fields override when present."""
    if not isinstance(usage, dict):
        return
    if usage.get("input_tokens") is not None:
        read_usage(call, usage)
    else:
        output = as_int(usage.get("output_tokens"))
        if output is not None:
            call.usage.output_tokens = output
            call.usage.estimated = False


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

    def parse_request(self, method: str, tail: str, body: bytes, headers: MultiMapping[str]) -> Call:
        if method != "POST" or tail.rstrip("/") != "/v1/messages":
            return Call()  # count_tokens, models, batches...: traced as HTTP, body untouched
        return read_request(body)

    def parse_response(self, call: Call, status: int, body: bytes) -> None:
        read_response(call, status, body)

    def new_stream(self, call: Call, started_ns: int) -> StreamState:
        return AnthropicStream(call, started_ns)

    def error_body(self, status: int, message: str, error_type: str, code: str | None = None) -> bytes:
        return error_body(status, message)

    def text_slots(self, call: Call) -> Iterator[TextSlot]:
        return request_slots(call.request_json)

    def response_parts(self, call: Call, data: Any) -> list[TextPart]:
        return response_parts(data)

    def request_context(self, call: Call) -> dict[str, Any]:
        return body_context(call.request_json)
