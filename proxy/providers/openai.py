"""OpenAI wire format: Chat Completions, Completions, Embeddings, Responses, and pass-through.

Also serves any OpenAI-compatible server (vLLM, Ollama, ...) when given another base URL.
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

# Request path (after /v1) -> gen_ai.operation.name.
OPERATIONS = {
    "/chat/completions": "chat",
    "/completions": "text_completion",
    "/embeddings": "embeddings",
    "/responses": "responses",
}

REQUEST_PARAMETERS = {
    "max_tokens": sc.GEN_AI_REQUEST_MAX_TOKENS,
    "max_completion_tokens": sc.GEN_AI_REQUEST_MAX_TOKENS,
    "max_output_tokens": sc.GEN_AI_REQUEST_MAX_TOKENS,
    "temperature": sc.GEN_AI_REQUEST_TEMPERATURE,
    "top_p": sc.GEN_AI_REQUEST_TOP_P,
    "frequency_penalty": sc.GEN_AI_REQUEST_FREQUENCY_PENALTY,
    "presence_penalty": sc.GEN_AI_REQUEST_PRESENCE_PENALTY,
    "stop": sc.GEN_AI_REQUEST_STOP_SEQUENCES,
    "seed": sc.GEN_AI_REQUEST_SEED,
    "n": sc.GEN_AI_REQUEST_CHOICE_COUNT,
}

# With include_usage the upstream adds "usage":null to every chunk (last, or before "obfuscation"...).
_USAGE_NULL = b'"usage":null'
_USAGE_KEY = b'"usage"'
_STRUCTURE = re.compile(rb'[{}\[\]"\\]')
_SPACE = b" \t\r\n"


def _value_end(data: bytes, start: int) -> int:
    """Where the JSON value starting at ``start`` ends (exclusive); -1 if the data is cut short."""
    if data[start : start + 4] == b"null":
        return start + 4
    first = data[start : start + 1]
    if first == b'"':
        index = start + 1
        while True:
            index = data.find(b'"', index)
            if index == -1:
                return -1
            backslashes = 0
            while data[index - 1 - backslashes] == 0x5C:
                backslashes += 1
            if backslashes % 2 == 0:
                return index + 1
            index += 1
    if first not in (b"{", b"["):
        end = start
        while end < len(data) and data[end : end + 1] not in b",}] \t\r\n":
            end += 1
        return end
    depth, in_string, skip_to = 0, False, start
    for match in _STRUCTURE.finditer(data, start):
        index = match.start()
        if index < skip_to:
            continue
        char = data[index]
        if in_string:
            if char == 0x5C:
                skip_to = index + 2
            elif char == 0x22:
                in_string = False
        elif char == 0x22:
            in_string = True
        elif char in (0x7B, 0x5B):
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return index + 1
    return -1


def _top_level_key(data: bytes, key: bytes) -> int:
    """Where the member ``key`` (quoted, e.g. ``b'"usage"'``) of the top-level object starts; -1 if none.
    Walks the JSON structure, so a nested member or the same bytes inside a string never count."""
    depth, in_string, skip_to, string_start = 0, False, 0, 0
    for match in _STRUCTURE.finditer(data):
        index = match.start()
        if index < skip_to:
            continue
        char = data[index]
        if in_string:
            if char == 0x5C:
                skip_to = index + 2
            elif char == 0x22:
                in_string = False
                if depth == 1 and data[string_start : index + 1] == key:
                    after = data[index + 1 :].lstrip(_SPACE)
                    if after[:1] == b":":  # a member name, not a value
                        return string_start
        elif char == 0x22:
            in_string, string_start = True, index
        elif char in (0x7B, 0x5B):
            depth += 1
        else:
            depth -= 1
    return -1


def without_member(data: bytes, start: int, end: int) -> bytes:
    """``data`` less the object member at ``start:end`` and the comma that joined it to a neighbour
    (the one before it, else the one after it), so the rest stays byte for byte what it was."""
    before = data[:start].rstrip(_SPACE)
    if before.endswith(b","):
        return before[:-1] + data[end:]
    after = data[end:].lstrip(_SPACE)
    if after.startswith(b","):
        return data[:start] + after[1:].lstrip(_SPACE)
    return data[:start] + data[end:]  # the only member


def strip_usage(data: bytes) -> bytes:
    """An OpenAI-style chunk without its top-level ``usage`` member (the proxy asked for it, the
    client did not): exactly the bytes the upstream sends when not asked, whatever fields come
    before or after it. Fast path: one compact ``"usage":null`` in the chunk (~0.3 µs); otherwise
    the chunk's structure is walked to find the top-level member (rare: nested or spaced usage)."""
    start = data.find(_USAGE_NULL)
    # the only "usage" in the chunk (so the top-level one), compact, after "," or "{" (a member name)
    if start > 0 and data.find(_USAGE_KEY, 0, start) == -1 and data.find(_USAGE_KEY, start + 7) == -1:
        end = start + len(_USAGE_NULL)
        before = data[start - 1]
        if before == 0x2C:  # ,"usage":null
            return data[: start - 1] + data[end:]
        if before == 0x7B:  # {"usage":null,  or  {"usage":null}
            after = data[end : end + 1]
            if after == b",":
                return data[:start] + data[end + 1 :]
            if after == b"}":
                return data[:start] + data[end:]
    start = _top_level_key(data, _USAGE_KEY)
    if start == -1:
        return data
    rest = data[data.index(b":", start + len(_USAGE_KEY)) + 1 :]
    end = _value_end(data, len(data) - len(rest.lstrip(_SPACE)))
    return data if end == -1 else without_member(data, start, end)


def read_usage(u: Usage, usage: Any) -> Usage:
    """``u`` updated by a Chat/Completions (prompt_/completion_tokens) or Responses
    (input_/output_tokens) usage object (``u`` itself when there is none)."""
    if not isinstance(usage, dict):
        return u
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        input_tokens = as_int(usage.get("prompt_tokens"))
        output_tokens = as_int(usage.get("completion_tokens"))
        details_in = usage.get("prompt_tokens_details") or {}
        details_out = usage.get("completion_tokens_details") or {}
    else:
        input_tokens = as_int(usage.get("input_tokens"))
        output_tokens = as_int(usage.get("output_tokens"))
        details_in = usage.get("input_tokens_details") or {}
        details_out = usage.get("output_tokens_details") or {}
    cache_read = as_int(details_in.get("cached_tokens")) if isinstance(details_in, dict) else u.cache_read_tokens
    reasoning = as_int(details_out.get("reasoning_tokens")) if isinstance(details_out, dict) else u.reasoning_tokens
    return Usage(input_tokens, output_tokens, cache_read, u.cache_write_tokens, u.cache_write_1h_tokens, reasoning)


def read_error(body: Any) -> tuple[str, str | None] | None:
    """An OpenAI error body's type/code (error.type) and message; None when it has no error."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = error.get("message")
        return str(error.get("code") or error.get("type") or "error"), str(message)[:500] if message else None
    return None


def _content_slots(role: str, index: int, container: Any, key: Any) -> Iterator[TextSlot]:
    """String content, or a list of parts with ``text`` (chat) / ``input_text``/``output_text`` (Responses)."""
    content = container[key]
    if isinstance(content, str):
        yield TextPart(role, index, 0, content), container, key
    elif isinstance(content, list):
        for j, part in enumerate(content):
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                yield TextPart(role, index, j, part["text"]), part, "text"
            elif isinstance(part, str):
                yield TextPart(role, index, j, part), content, j


def _tool_call_slots(index: int, tool_calls: Any) -> Iterator[TextSlot]:
    """Tool-call arguments (JSON strings the model wrote) as parts 100, 101, ..."""
    for k, tool_call in enumerate(tool_calls if isinstance(tool_calls, list) else ()):
        function = tool_call.get("function") if isinstance(tool_call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            yield TextPart("assistant", index, 100 + k, function["arguments"]), function, "arguments"


def _string_list_slots(container: dict[str, Any], key: str, role: str) -> Iterator[TextSlot]:
    """A string or a list of strings (Completions ``prompt``, Embeddings ``input``); token arrays skipped."""
    value = container.get(key)
    if isinstance(value, str):
        yield TextPart(role, 0, 0, value), container, key
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, str):
                yield TextPart(role, i, 0, item), value, i


def request_slots(operation: str | None, request: Any) -> Iterator[TextSlot]:
    """Every text slot of an OpenAI request body, in a stable order."""
    if not isinstance(request, dict):
        return
    if operation == "chat":
        for i, message in enumerate(request.get("messages") or ()):
            if not isinstance(message, dict):
                continue
            role = str(message.get("role") or "user")
            if "content" in message:
                yield from _content_slots(role, i, message, "content")
            tool_calls = message.get("tool_calls")
            if tool_calls:  # most messages have none: skip making a generator for nothing
                yield from _tool_call_slots(i, tool_calls)
    elif operation == "text_completion":
        yield from _string_list_slots(request, "prompt", "user")
    elif operation == "embeddings":
        yield from _string_list_slots(request, "input", "user")
    elif operation == "responses":
        if isinstance(request.get("instructions"), str):
            yield TextPart("system", -1, 0, request["instructions"]), request, "instructions"
        items = request.get("input")
        if isinstance(items, str):
            yield TextPart("user", 0, 0, items), request, "input"
            return
        for i, item in enumerate(items if isinstance(items, list) else ()):
            if not isinstance(item, dict):
                continue
            kind = item.get("type")
            if kind == "function_call_output" and isinstance(item.get("output"), str):
                yield TextPart("tool", i, 0, item["output"]), item, "output"
            elif kind == "function_call" and isinstance(item.get("arguments"), str):
                yield TextPart("assistant", i, 100, item["arguments"]), item, "arguments"
            elif "content" in item:
                yield from _content_slots(str(item.get("role") or "user"), i, item, "content")


def response_parts(operation: str | None, data: Any) -> list[TextPart]:
    """The texts of a complete OpenAI response body."""
    parts: list[TextPart] = []
    if not isinstance(data, dict):
        return parts
    if operation == "responses":
        for i, item in enumerate(data.get("output") or ()):
            if not isinstance(item, dict):
                continue
            if item.get("type") == "function_call" and isinstance(item.get("arguments"), str):
                parts.append(TextPart("assistant", i, 100, item["arguments"]))
            for j, content in enumerate(item.get("content") or ()):
                if isinstance(content, dict) and isinstance(content.get("text"), str):
                    parts.append(TextPart("assistant", i, j, content["text"]))
        return parts
    for i, choice in enumerate(data.get("choices") or ()):
        if not isinstance(choice, dict):
            continue
        if isinstance(choice.get("text"), str):  # Completions
            parts.append(TextPart("assistant", i, 0, choice["text"]))
        message = choice.get("message")
        if isinstance(message, dict):
            if isinstance(message.get("content"), str):
                parts.append(TextPart("assistant", i, 0, message["content"]))
            parts.extend(slot[0] for slot in _tool_call_slots(i, message.get("tool_calls")))
    return parts


def body_context(request: Any) -> dict[str, Any]:
    """``user`` (or ``safety_identifier``), ``metadata`` and the Responses API's reusable
    ``prompt`` ({id, version}) as context keys (see proxy/context.py)."""
    if not isinstance(request, dict):
        return {}
    out: dict[str, Any] = {}
    user = request.get("user") or request.get("safety_identifier")
    if isinstance(user, str):
        out["user-id"] = user
    metadata = request.get("metadata")
    if isinstance(metadata, dict):
        for key, value in metadata.items():
            out[f"property-{key}"] = value
    prompt = request.get("prompt")
    if isinstance(prompt, dict):  # Responses API; a string prompt is a Completions prompt text
        out["prompt-id"] = prompt.get("id")
        out["prompt-version"] = prompt.get("version")
    return out


class OpenAIStream(StreamState):
    """Chat Completions / Completions chunks and Responses API events."""

    def on_event(self, event: bytes) -> bytes | None:
        data = self.event_data(event)
        if data is None or data == b"[DONE]":
            return event
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return event
        if not isinstance(chunk, dict):
            return event
        acc = self._acc
        kind = chunk.get("type")
        if isinstance(kind, str):  # Responses API event
            self._responses_event(kind, chunk)
            return event
        if acc.response_id is None and chunk.get("id"):
            acc.response_id = chunk.get("id")
            acc.response_model = chunk.get("model")
        if "error" in chunk:
            acc.set_error(read_error(chunk))
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            text = delta.get("content") or choice.get("text") or delta.get("reasoning_content")
            if text or delta.get("tool_calls") or delta.get("refusal"):
                self.mark_first_token()
                for tool_call in delta.get("tool_calls") or ():
                    if isinstance(tool_call, dict) and tool_call.get("id"):  # only a call's first delta has the id
                        acc.tool_calls.append(str((tool_call.get("function") or {}).get("name") or ""))
                if isinstance(text, str):
                    acc.output_text.append(text)
            if choice.get("finish_reason"):
                acc.finish_reasons.append(choice["finish_reason"])
        usage = chunk.get("usage")
        if usage:
            acc.usage = read_usage(acc.usage, usage)
            if self.usage_injected and not chunk.get("choices"):
                return None  # the usage chunk only exists because the proxy asked for it
        if self.usage_injected and "usage" in chunk:  # asked for by the proxy only: hidden
            stripped = strip_usage(data)
            if stripped is not data:
                cut = len(event) - 2 - len(data)  # "data: {...}\n\n", the usual event: swap the payload in place
                if cut >= 5 and event.endswith(b"\n\n") and event[cut:-2] == data:
                    return event[:cut] + stripped + b"\n\n"
                return event.replace(data, stripped, 1)  # unchanged if the data spans several lines
        return event

    def _responses_event(self, kind: str, chunk: dict[str, Any]) -> None:
        acc = self._acc
        if kind in ("response.output_text.delta", "response.reasoning_summary_text.delta",
                    "response.function_call_arguments.delta", "response.refusal.delta"):
            self.mark_first_token()
            delta = chunk.get("delta")
            if isinstance(delta, str) and kind == "response.output_text.delta":
                acc.output_text.append(delta)
        elif kind in ("response.created", "response.completed", "response.incomplete", "response.failed"):
            response = chunk.get("response") or {}
            acc.response_id = response.get("id") or acc.response_id
            acc.response_model = response.get("model") or acc.response_model
            if kind != "response.created":
                acc.usage = read_usage(acc.usage, response.get("usage"))
                status = response.get("status")
                if status:
                    acc.finish_reasons.append(str(status))
                if kind == "response.failed" and isinstance(response.get("error"), dict):
                    acc.set_error(read_error({"error": response["error"]}))
        elif kind == "response.output_item.added":
            item = chunk.get("item") or {}
            if item.get("type") == "function_call":
                acc.tool_calls.append(str(item.get("name") or ""))
        elif kind == "error":
            acc.set_error(read_error({"error": chunk}))


class OpenAIAdapter(ProviderAdapter):
    """OpenAI's public API (and OpenAI-compatible servers) under ``/v1``."""

    name = "openai"
    provider_name = "openai"
    price_provider_id: str | None = "openai"
    prefixes = ("/v1",)

    def __init__(self, base_url: str, *, name: str | None = None, prefix: str | None = None,
                 provider_name: str | None = None, price_provider_id: str | None = "openai",
                 inject_stream_usage: bool = True) -> None:
        self.base_url = base_url.rstrip("/")
        if name:
            self.name = name
        if prefix is not None:
            self.prefixes = (prefix,)
        if provider_name:
            self.provider_name = provider_name
        self.price_provider_id = price_provider_id
        self.inject_stream_usage = inject_stream_usage  # OpenAI-style bases may or may not end in /v1 already

    def upstream(self, tail: str, query_string: str, headers: MultiMapping[str],
                 base_url: str | None = None) -> Upstream:
        base = base_url.rstrip("/") if base_url else self.base_url
        version = "" if base.endswith("/v1") else "/v1"
        stored = f"{base}{version}{tail}"
        return Upstream(url=f"{stored}?{query_string}" if query_string else stored, stored_url=stored)

    def parse_request(self, method: str, tail: str, body: bytes, headers: MultiMapping[str]) -> RequestFacts:
        return self.read_request(method, tail, body)

    @staticmethod
    def read_request(method: str, tail: str, body: bytes, *, model: str | None = None,
                     variant: str | None = None) -> RequestFacts:
        """A request for ``tail`` (the path after ``/v1``); ``model`` stands when the body names
        none (an Azure deployment), ``variant`` is kept for the adapter that asks (Azure)."""
        operation = OPERATIONS.get(tail.rstrip("/")) if method == "POST" else None
        if operation is None:
            # generic pass-through: traced as HTTP, body untouched
            return PASS_THROUGH if variant is None else RequestFacts(variant=variant)
        request = parse_json_body(body)
        if not isinstance(request, dict):
            raise RequestError(400, "The request body must be a JSON object.", "invalid_request_error", "invalid_body")
        body_model = request.get("model")
        if not isinstance(body_model, str):
            body_model = None
        if not body_model and model is not None:
            body_model = model
        return RequestFacts(operation, body_model, request.get("stream") is True, request,
                            pick(request, REQUEST_PARAMETERS), variant)

    def prepare_body(self, request: RequestFacts, body: bytes) -> tuple[bytes, bool]:
        if not (request.stream and self.inject_stream_usage and request.operation in ("chat", "text_completion")):
            return body, False
        parsed = request.request_json
        options = parsed.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            return body, False
        if options is not None and not isinstance(options, dict):
            return body, False
        patched = dict(parsed)
        patched["stream_options"] = {**(options or {}), "include_usage": True}
        return orjson.dumps(patched), True

    def parse_response(self, request: RequestFacts, status: int, body: bytes) -> ResponseFacts:
        data = read_json(body)
        if not isinstance(data, dict):
            return NO_RESPONSE if data is None else ResponseFacts(body_json=data)
        if status >= 400:
            error = read_error(data)
            if error is None:
                return ResponseFacts(body_json=data)
            return ResponseFacts(error_type=error[0], error_message=error[1], body_json=data)
        finish_reasons: list[str] = []
        tool_calls: list[str] = []
        if request.operation == "responses":
            if data.get("status"):
                finish_reasons.append(str(data["status"]))
            for item in data.get("output") or ():
                if isinstance(item, dict) and item.get("type") == "function_call":
                    tool_calls.append(str(item.get("name") or ""))
        else:
            for choice in data.get("choices") or ():
                if isinstance(choice, dict) and choice.get("finish_reason"):
                    finish_reasons.append(str(choice["finish_reason"]))
                message = choice.get("message") if isinstance(choice, dict) else None
                calls = message.get("tool_calls") if isinstance(message, dict) else None
                for tool_call in calls or ():
                    if isinstance(tool_call, dict):
                        tool_calls.append(str((tool_call.get("function") or {}).get("name") or ""))
        return ResponseFacts(data.get("id"), data.get("model"), finish_reasons, tool_calls,
                             read_usage(NO_USAGE, data.get("usage")), None, None, (), data)

    def new_stream(self, request: RequestFacts, started_ns: int, usage_injected: bool = False) -> StreamState:
        return OpenAIStream(request, started_ns, usage_injected)

    def text_slots(self, request: RequestFacts) -> Iterator[TextSlot]:
        return request_slots(request.operation, request.request_json)

    def response_parts(self, request: RequestFacts, data: Any) -> list[TextPart]:
        return response_parts(request.operation, data)

    def request_context(self, request: RequestFacts) -> dict[str, Any]:
        return body_context(request.request_json)
