"""OpenAI Chat Completions client -> Anthropic Messages target, and the answer back.

Request: ``system``/``developer`` messages become the top-level ``system``; user and assistant
turns become content blocks (text, images, PDFs); ``tool_calls`` become ``tool_use`` blocks and
``tool`` messages ``tool_result`` blocks of a user turn; consecutive turns of one role merge (the
Messages API alternates roles). Tools, ``tool_choice``, ``parallel_tool_calls``, stops, the end
user and JSON-schema output map to their Anthropic forms; ``max_tokens`` is required there, so it
defaults to :data:`DEFAULT_MAX_TOKENS`. What Anthropic cannot express and the client relies on
(``n`` > 1, log probabilities, audio, JSON mode without a schema, legacy ``functions``) is refused
with a 400; sampling hints it has no knob for (penalties, seed, logit bias...) are dropped.

Response: a whole message becomes a ``chat.completion``; a stream's events become
``chat.completion.chunk`` events as they arrive; an Anthropic error (body or ``error`` event)
becomes OpenAI's error shape. This runs on the hot path of routed calls: one ``orjson`` parse per
upstream event, chunks are built from pre-serialised bytes, and framing uses ``bytes.find`` only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import orjson

from genops.proxy.providers.base import RequestError
from genops.proxy.translate.base import StreamTranslator, TranslatedRequest, Translation

ANTHROPIC_VERSION = "2023-06-01"
#: ``max_tokens`` when the client sets none: the Messages API requires one.
DEFAULT_MAX_TOKENS = 4096

_HEADERS: Mapping[str, str] = MappingProxyType({"anthropic-version": ANTHROPIC_VERSION})

#: Anthropic ``stop_reason`` -> OpenAI ``finish_reason``.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

#: Anthropic error type -> (OpenAI error ``type``, ``code``), after the errors OpenAI itself sends
#: for the same condition; unknown types keep their name as the code.
ERROR_TYPES: dict[str, tuple[str, str | None]] = {
    "invalid_request_error": ("invalid_request_error", None),
    "authentication_error": ("invalid_request_error", "invalid_api_key"),
    "permission_error": ("invalid_request_error", "permission_denied"),
    "not_found_error": ("invalid_request_error", "not_found"),
    "request_too_large": ("invalid_request_error", "request_too_large"),
    "billing_error": ("insufficient_quota", "insufficient_quota"),
    "rate_limit_error": ("requests", "rate_limit_exceeded"),
    "api_error": ("server_error", None),
    "overloaded_error": ("server_error", "overloaded"),
    "timeout_error": ("server_error", "timeout"),
}


def _unsupported(message: str) -> RequestError:
    return RequestError(400, message + " (the route's target is an Anthropic model).", "invalid_request_error",
                        "unsupported_parameter")


def _invalid(message: str) -> RequestError:
    return RequestError(400, message, "invalid_request_error", "invalid_value")


# --- request -------------------------------------------------------------------------------


def _refuse_unexpressible(body: dict[str, Any]) -> None:
    """A 400 for parameters the client relies on that the Messages API cannot honour."""
    n = body.get("n")
    if n is not None and n != 1:
        raise _unsupported("'n' other than 1 is not supported: Anthropic returns one choice per call")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise _unsupported("'logprobs' and 'top_logprobs' are not supported: Anthropic returns no log probabilities")
    if body.get("functions") is not None or body.get("function_call") is not None:
        raise _unsupported("The legacy 'functions' / 'function_call' parameters are not supported; use 'tools'")
    modalities = body.get("modalities")
    if body.get("audio") is not None or (isinstance(modalities, list) and "audio" in modalities):
        raise _unsupported("Audio output is not supported")
    if body.get("web_search_options") is not None:
        raise _unsupported("'web_search_options' is not supported")


def _data_url(url: str, what: str) -> tuple[str, str]:
    """``data:<media type>;base64,<data>`` -> (media type, data)."""
    head, comma, data = url.partition(",")
    if not comma or not head.endswith(";base64"):
        raise _invalid(f"{what}: a data URL must be base64-encoded (data:<media type>;base64,<data>).")
    return head[5:-7], data


def _image_block(part: dict[str, Any], where: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise _invalid(f"{where}.image_url.url is required.")
    if url.startswith("data:"):
        media_type, data = _data_url(url, f"{where}.image_url.url")
        source: dict[str, Any] = {"type": "base64", "media_type": media_type, "data": data}
    elif url.startswith(("https://", "http://")):
        source = {"type": "url", "url": url}
    else:
        raise _invalid(f"{where}.image_url.url must be an http(s) or data URL.")
    return {"type": "image", "source": source}


def _file_block(part: dict[str, Any], where: str) -> dict[str, Any]:
    file = part.get("file")
    data = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data, str) or not data.startswith("data:"):
        raise _unsupported(f"{where}: only files sent inline as 'file_data' data URLs are supported (no 'file_id')")
    media_type, payload = _data_url(data, f"{where}.file.file_data")
    if media_type != "application/pdf":
        raise _unsupported(f"{where}: only PDF files are supported, not {media_type!r}")
    return {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": payload}}


def _content_blocks(content: Any, where: str, *, media: bool) -> list[dict[str, Any]]:
    """A message's ``content`` (string or parts) as Anthropic blocks; empty texts are left out
    (the Messages API refuses empty text blocks). ``media``: images and files are allowed."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if content is None:
        return []
    if not isinstance(content, list):
        raise _invalid(f"{where}.content must be a string or an array of content parts.")
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            raise _invalid(f"{where}.content[{j}] must be an object.")
        kind = part.get("type")
        if kind == "text" or kind == "refusal":
            text = part.get(kind)
            if not isinstance(text, str):
                raise _invalid(f"{where}.content[{j}].{kind} must be a string.")
            if not text:
                continue
            block: dict[str, Any] = {"type": "text", "text": text}
        elif media and kind == "image_url":
            block = _image_block(part, f"{where}.content[{j}]")
        elif media and kind == "file":
            block = _file_block(part, f"{where}.content[{j}]")
        else:
            raise _unsupported(f"{where}.content[{j}]: content parts of type {kind!r} are not supported here")
        if part.get("cache_control") is not None:  # Anthropic prompt caching, as LiteLLM clients send it
            block["cache_control"] = part["cache_control"]
        blocks.append(block)
    return blocks


def _tool_use_blocks(calls: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(calls, list):
        raise _invalid(f"{where}.tool_calls must be an array.")
    blocks = []
    for k, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _invalid(f"{where}.tool_calls[{k}].function.name is required.")
        if call.get("type", "function") != "function":
            raise _unsupported(f"{where}.tool_calls[{k}]: tool calls of type {call.get('type')!r} are not supported")
        arguments = function.get("arguments")
        try:
            parsed = orjson.loads(arguments) if arguments else {}
        except (orjson.JSONDecodeError, TypeError):
            raise _invalid(f"{where}.tool_calls[{k}].function.arguments must be a JSON object string.") from None
        if not isinstance(parsed, dict):
            raise _invalid(f"{where}.tool_calls[{k}].function.arguments must be a JSON object string.")
        blocks.append({"type": "tool_use", "id": str(call.get("id") or f"toolu_{k}"), "name": function["name"],
                       "input": parsed})
    return blocks


def _tool_result_block(message: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise _invalid(f"{where}.tool_call_id is required.")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    else:
        parts = _content_blocks(content, where, media=True)
        if parts:
            block["content"] = parts
    return block


def _conversation(messages: Any) -> tuple[str | list[dict[str, Any]] | None, list[dict[str, Any]]]:
    """(Anthropic ``system``, ``messages``) for OpenAI ``messages``."""
    if not isinstance(messages, list) or not messages:
        raise _invalid("'messages' must be a non-empty array.")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _invalid(f"{where} must be an object.")
        role = message.get("role")
        if role == "user":
            blocks = _content_blocks(message.get("content"), where, media=True)
        elif role == "assistant":
            blocks = _content_blocks(message.get("content"), where, media=False)
            if message.get("function_call") is not None:
                raise _unsupported(f"{where}.function_call (legacy functions) is not supported; use 'tool_calls'")
            if message.get("tool_calls"):
                blocks.extend(_tool_use_blocks(message["tool_calls"], where))
        elif role == "tool":
            role, blocks = "user", [_tool_result_block(message, where)]
        elif role in ("system", "developer"):
            system.extend(_content_blocks(message.get("content"), where, media=False))
            continue
        elif role == "function":
            raise _unsupported(f"{where}: 'function' messages (legacy functions) are not supported; use 'tool' messages")
        else:
            raise _invalid(f"{where}.role must be one of system, developer, user, assistant, tool.")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:  # the Messages API alternates roles
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        content = turn["content"]
        if len(content) == 1 and content[0]["type"] == "text" and "cache_control" not in content[0]:
            turn["content"] = content[0]["text"]
    if not system:
        return None, turns
    if any("cache_control" in block for block in system):
        return system, turns
    return "\n\n".join(block["text"] for block in system), turns


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _invalid("'tools' must be an array.")
    out = []
    for k, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise _unsupported(f"tools[{k}]: tools of type {kind!r} are not supported, only 'function' tools")
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _invalid(f"tools[{k}].function.name is required.")
        schema = function.get("parameters")
        converted: dict[str, Any] = {"name": function["name"]}
        if function.get("description"):
            converted["description"] = function["description"]
        converted["input_schema"] = schema if isinstance(schema, dict) else {"type": "object", "properties": {}}
        if tool.get("cache_control") is not None:
            converted["cache_control"] = tool["cache_control"]
        out.append(converted)
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None or choice == "auto":
        converted: dict[str, Any] = {"type": "auto"}
    elif choice == "required":
        converted = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("function", {}).get("name") if isinstance(choice.get("function"), dict) else None
        if not isinstance(name, str):
            raise _invalid("tool_choice.function.name is required.")
        converted = {"type": "tool", "name": name}
    else:
        raise _unsupported(f"tool_choice {choice!r} is not supported")
    if parallel is False:
        converted["disable_parallel_tool_use"] = True
    elif choice is None:
        return None  # Anthropic's default is "auto" already
    return converted


def _output_config(response_format: Any) -> dict[str, Any] | None:
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise _invalid("response_format.json_schema.schema is required.")
        return {"format": {"type": "json_schema", "schema": schema}}
    if kind == "json_object":
        raise _unsupported("response_format 'json_object' is not supported; send a 'json_schema' response_format")
    raise _unsupported(f"response_format {kind!r} is not supported")


def translate_request(body: Any, target_model: str, stream: bool) -> dict[str, Any]:
    """The Messages request (as a dict) for an OpenAI Chat Completions request."""
    if not isinstance(body, dict):
        raise _invalid("The request body must be a JSON object.")
    _refuse_unexpressible(body)
    system, turns = _conversation(body.get("messages"))
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    out: dict[str, Any] = {"model": target_model, "max_tokens": DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens}
    if system is not None:
        out["system"] = system
    out["messages"] = turns
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        out["stop_sequences"] = stop
    tools = body.get("tools")
    if tools:
        out["tools"] = _tools(tools)
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice
    output_config = _output_config(body.get("response_format"))
    if output_config is not None:
        out["output_config"] = output_config
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    if stream:
        out["stream"] = True
    return out


# --- response ------------------------------------------------------------------------------


def _openai_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI usage for Anthropic usage: OpenAI's prompt tokens include cached ones, Anthropic's
    ``input_tokens`` excludes cache reads and writes."""
    cache_read = usage.get("cache_read_input_tokens") or 0
    prompt = (usage.get("input_tokens") or 0) + cache_read + (usage.get("cache_creation_input_tokens") or 0)
    completion = usage.get("output_tokens") or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cache_read}}


def _error(status: int, kind: str, message: str) -> dict[str, Any]:
    mapped = ERROR_TYPES.get(kind)
    if mapped is None:
        mapped = ("server_error" if status >= 500 or status < 400 else "invalid_request_error", kind or None)
    return {"error": {"message": message, "type": mapped[0], "param": None, "code": mapped[1]}}


def _error_of(status: int, data: Any, body: bytes) -> dict[str, Any]:
    """OpenAI's error for an Anthropic error body, or for any other body (its text is the message)."""
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        kind = str(error.get("type") or "")
        return _error(status, kind, str(error.get("message") or kind or f"HTTP {status}"))
    text = body.decode("utf-8", "replace").strip()
    return _error(status, "", text or f"The target answered HTTP {status} with an empty body.")


def translate_response(status: int, body: bytes) -> dict[str, Any]:
    """The ``chat.completion`` (or OpenAI error) for a whole Anthropic answer."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _error_of(status, None, body)
    if status >= 400 or not isinstance(data, dict) or data.get("type") == "error":
        return _error_of(status, data, body)
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in data.get("content") or ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"),
                                       "arguments": orjson.dumps(block.get("input") or {}).decode()}})
        # thinking, server tool use and its results have no Chat Completions form: left out.
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    usage = data.get("usage")
    created = int(time.time())
    out: dict[str, Any] = {
        "id": str(data.get("id") or f"chatcmpl-{created}"),
        "object": "chat.completion",
        "created": created,
        "model": str(data.get("model") or ""),
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": FINISH_REASONS.get(data.get("stop_reason") or "end_turn", "stop")}],
    }
    if isinstance(usage, dict):
        out["usage"] = _openai_usage(usage)
    return out


# --- stream ----------------------------------------------------------------------------------

_CHUNK_TAIL = b',"logprobs":null,"finish_reason":null}]}\n\n'
_DONE = b"data: [DONE]\n\n"
_OPEN, _STOPPED, _ENDED = 1, 2, 3  # stream states after the initial 0 (nothing seen yet)


def _event_data(event: bytes) -> bytes | None:
    """The ``data:`` payload of one SSE event (one line, as Anthropic sends it; several joined)."""
    at = event.find(b"data:")
    if at < 0:
        return None
    if at == 0 or event[at - 1] in b"\r\n":
        start = at + 5
        if event[start : start + 1] == b" ":
            start += 1
        end = event.find(b"\n", start)
        if end < 0:
            end = len(event)
        if event.find(b"data:", end) < 0:
            return event[start : end - 1] if end > start and event[end - 1] == 13 else event[start:end]
    lines = [line[5:].removeprefix(b" ") for line in event.splitlines() if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


class AnthropicToOpenAIStream:
    """One streamed Messages answer as ``chat.completion.chunk`` events, as it arrives."""

    __slots__ = ("_buffer", "_created", "_finish", "_head", "_id", "_include_usage", "_model", "_state", "_tools",
                 "_usage")

    def __init__(self, include_usage: bool) -> None:
        self._include_usage = include_usage
        self._buffer = b""
        self._created = int(time.time())
        self._id = ""
        self._model = ""
        self._head = b""  # every chunk's bytes up to its delta: same id, created and model
        self._tools: dict[Any, int] = {}  # Anthropic content block index -> OpenAI tool call index
        self._usage: dict[str, Any] | None = None
        self._finish = "stop"
        self._state = 0

    def feed(self, chunk: bytes) -> bytes:
        if self._state >= _STOPPED:
            return b""
        data = self._buffer + chunk if self._buffer else chunk
        out: list[bytes] = []
        start = 0
        while self._state < _STOPPED:
            end = data.find(b"\n\n", start)
            # A "\r\n\r\n" counts only if it starts before that "\n\n": search no further.
            crlf = data.find(b"\r\n\r\n", start) if end == -1 else data.find(b"\r\n\r\n", start, end + 3)
            if crlf != -1:
                event, start = data[start:crlf], crlf + 4
            elif end != -1:
                event, start = data[start:end], end + 2
            else:
                break
            self._on_event(event, out)
        self._buffer = data[start:] if self._state < _STOPPED else b""
        return b"".join(out)

    def finish(self) -> bytes:
        out: list[bytes] = []
        if self._state < _STOPPED and self._buffer.strip():  # a last event without its blank line
            self._on_event(self._buffer, out)
        self._buffer = b""
        if self._state == _ENDED:
            return b"".join(out)
        if self._state != _STOPPED:  # the target's stream broke off: say so, as an OpenAI stream error would
            out.append(self._error_event(_error(502, "api_error", "The target's stream ended before it was complete.")))
        else:
            if self._include_usage and self._usage is not None:
                out.append(b"data: " + orjson.dumps({"id": self._id, "object": "chat.completion.chunk",
                                                     "created": self._created, "model": self._model, "choices": [],
                                                     "usage": _openai_usage(self._usage)}) + b"\n\n")
            out.append(_DONE)
        self._state = _ENDED
        return b"".join(out)

    # -- events ---------------------------------------------------------------------------
    def _start(self, message: Any) -> bytes:
        if not isinstance(message, dict):
            message = {}
        self._id = str(message.get("id") or f"chatcmpl-{self._created}")
        self._model = str(message.get("model") or "")
        self._head = (b'data: {"id":' + orjson.dumps(self._id) + b',"object":"chat.completion.chunk","created":'
                      + str(self._created).encode() + b',"model":' + orjson.dumps(self._model)
                      + b',"choices":[{"index":0,"delta":')
        usage = message.get("usage")
        if isinstance(usage, dict):
            self._usage = dict(usage)
        self._state = _OPEN
        return self._head + b'{"role":"assistant","content":""}' + _CHUNK_TAIL

    def _on_event(self, event: bytes, out: list[bytes]) -> None:
        payload = _event_data(event)
        if payload is None:
            return
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return  # not an event the Messages API sends; nothing to translate
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        if kind == "message_start":
            if self._state == 0:
                out.append(self._start(message.get("message")))
            return
        if kind == "error":
            error = message.get("error")
            if not isinstance(error, dict):
                error = {}
            kind_name = str(error.get("type") or "api_error")
            out.append(self._error_event(_error(500, kind_name, str(error.get("message") or kind_name))))
            self._state = _ENDED
            return
        if self._state == 0 and kind in ("content_block_start", "content_block_delta", "message_delta", "message_stop"):
            out.append(self._start(None))  # no message_start: translate what follows all the same
        if kind == "content_block_delta":
            delta = message.get("delta")
            if not isinstance(delta, dict):
                return
            delta_kind = delta.get("type")
            if delta_kind == "text_delta":
                text = delta.get("text")
                if text:
                    out.append(self._head + b'{"content":' + orjson.dumps(text) + b"}" + _CHUNK_TAIL)
            elif delta_kind == "input_json_delta":
                index = self._tools.get(message.get("index"))
                fragment = delta.get("partial_json")
                if index is not None and fragment:
                    out.append(self._head + b'{"tool_calls":[{"index":' + str(index).encode()
                               + b',"function":{"arguments":' + orjson.dumps(fragment) + b"}}]}" + _CHUNK_TAIL)
            # thinking, signature and citation deltas have no Chat Completions form.
        elif kind == "content_block_start":
            block = message.get("content_block")
            if not isinstance(block, dict):
                return
            if block.get("type") == "text" and block.get("text"):
                out.append(self._head + b'{"content":' + orjson.dumps(block["text"]) + b"}" + _CHUNK_TAIL)
            elif block.get("type") == "tool_use":
                index = self._tools[message.get("index")] = len(self._tools)
                arguments = orjson.dumps(block["input"]).decode() if block.get("input") else ""
                call = {"index": index, "id": block.get("id"), "type": "function",
                        "function": {"name": block.get("name"), "arguments": arguments}}
                out.append(self._head + b'{"tool_calls":[' + orjson.dumps(call) + b"]}" + _CHUNK_TAIL)
        elif kind == "message_delta":
            delta = message.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason"):
                self._finish = FINISH_REASONS.get(delta["stop_reason"], "stop")
            usage = message.get("usage")
            if isinstance(usage, dict):  # cumulative: output always, input and cache fields when present
                if self._usage is None:
                    self._usage = {}
                self._usage.update((k, v) for k, v in usage.items() if v is not None)
        elif kind == "message_stop":
            out.append(self._head + b'{},"logprobs":null,"finish_reason":' + orjson.dumps(self._finish) + b"}]}\n\n")
            self._state = _STOPPED
        # ping and unknown event types: nothing for the client.

    @staticmethod
    def _error_event(error: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(error) + b"\n\n"


class OpenAIToAnthropic:
    """An OpenAI Chat Completions client whose routed call lands on Anthropic's Messages API."""

    client_format = "openai.chat"
    target_format = "anthropic.messages"

    def request(self, body: Any, target_model: str, stream: bool) -> TranslatedRequest:
        return TranslatedRequest("/v1/messages", "", orjson.dumps(translate_request(body, target_model, stream)),
                                 _HEADERS)

    def response(self, status: int, body: bytes) -> bytes:
        return orjson.dumps(translate_response(status, body))

    def stream(self, include_usage: bool) -> AnthropicToOpenAIStream:
        return AnthropicToOpenAIStream(include_usage)


if TYPE_CHECKING:  # mypy checks the classes against the fixed interface
    _translation: type[Translation] = OpenAIToAnthropic
    _stream: type[StreamTranslator] = AnthropicToOpenAIStream
