"""Fake Anthropic Messages API (``/v1/messages``, ``/v1/messages/count_tokens``).

Streams use Anthropic's event sequence: ``message_start`` (usage with cache fields),
``content_block_start``, ``ping``, ``content_block_delta`` (``text_delta``),
``content_block_stop``, ``message_delta`` (stop reason, cumulative usage), ``message_stop``.
The same handlers answer Claude on Vertex AI (``rawPredict`` / ``streamRawPredict``):
there the model comes from the URL and the body carries ``anthropic_version``.

Tools: with ``tools`` (and ``tool_choice`` not ``none``) a user turn gets one ``tool_use``
block (the first tool, or ``tool_choice``'s), its ``input`` sampled from ``input_schema``,
``stop_reason: "tool_use"``, streamed as ``input_json_delta`` fragments; a user turn of
``tool_result`` blocks gets a text reply quoting them. ``output_config.format`` /
``output_format`` JSON schemas get a JSON text reply.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson
from aiohttp import web

from genops.fake_upstream.common import (
    Controls,
    count_tokens,
    dumps,
    fake_id,
    json_pieces,
    json_tokens,
    record,
    reply_pieces,
    sample_from_schema,
    sse,
    text_of,
    tool_result_pieces,
)

ERRORS = {
    400: ("invalid_request_error", "messages: field required"),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "model: claude-nonexistent"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}


def error_response(status: int, message: str | None = None) -> web.Response:
    """An error exactly as Anthropic sends it."""
    kind, default = ERRORS.get(status, ("api_error", "Internal server error"))
    body = {"type": "error", "error": {"type": kind, "message": message or default},
            "request_id": "req_011CFakeErrorRequestId"}
    headers = {"request-id": "req_011CFakeErrorRequestId"}
    if status == 429:
        headers["retry-after"] = "7"
    return web.Response(status=status, body=dumps(body), content_type="application/json", headers=headers)


def _prompt_text(request: dict[str, Any]) -> str:
    parts: list[str] = []
    system = request.get("system")
    if isinstance(system, str):
        parts.append(system)
    elif isinstance(system, list):
        parts.extend(b.get("text", "") for b in system if isinstance(b, dict))
    for message in request.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(b.get("text", "") for b in content if isinstance(b, dict))
    return " ".join(parts)


def _custom_tools(request: dict[str, Any]) -> list[dict[str, Any]]:
    """Client tools (with an ``input_schema``); server tools (web search, bash...) are not called."""
    return [t for t in request.get("tools") or () if isinstance(t, dict) and t.get("name")
            and isinstance(t.get("input_schema"), dict) and t.get("type", "custom") == "custom"]


def _input_tokens(request: dict[str, Any]) -> int:
    tools = request.get("tools")
    return count_tokens(_prompt_text(request)) + 3 + (json_tokens(dumps(tools).decode()) if tools else 0)


def _plan(request: dict[str, Any], body_id: str) -> tuple[dict[str, Any] | None, list[str], bool]:
    """(tool_use block or None, the pieces to stream, whether the pieces are JSON)."""
    messages = request.get("messages") or []
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    content = last.get("content")
    blocks = [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []
    results = [b for b in blocks if b.get("type") == "tool_result"]
    if last.get("role") == "user" and results:
        names_by_id = {}
        for message in messages:
            if isinstance(message, dict) and message.get("role") == "assistant" and isinstance(message.get("content"), list):
                names_by_id.update({str(b.get("id")): str(b.get("name", "")) for b in message["content"]
                                    if isinstance(b, dict) and b.get("type") == "tool_use"})
        names = [names_by_id.get(str(b.get("tool_use_id")), "") for b in results]
        return None, tool_result_pieces(", ".join(dict.fromkeys(n for n in names if n)),
                                        "; ".join(text_of(b.get("content")) for b in results)), False
    tools = _custom_tools(request)
    choice = request["tool_choice"] if isinstance(request.get("tool_choice"), dict) else {}
    if last.get("role") == "user" and tools and choice.get("type") != "none":
        tool = tools[0]
        if choice.get("type") == "tool":
            tool = next((t for t in tools if t.get("name") == choice.get("name")), tools[0])
        arguments = sample_from_schema(tool["input_schema"])
        block = {"type": "tool_use", "id": f"toolu_01{fake_id(body_id, 22)}", "name": str(tool["name"]),
                 "input": arguments}
        # The API streams the input with a space after separators, starting with an empty fragment.
        return block, [""] + json_pieces(json.dumps(arguments, ensure_ascii=False)), True
    fmt = (request.get("output_config") or {}).get("format") if isinstance(request.get("output_config"), dict) else None
    fmt = fmt or request.get("output_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return None, json_pieces(dumps(sample_from_schema(fmt.get("schema") or {"type": "object"})).decode()), True
    return None, reply_pieces(_prompt_text(request)), False


def _usage(request: dict[str, Any], output_tokens: int, controls: Controls) -> dict[str, Any]:
    # Anthropic's input_tokens counts only the uncached part of the prompt.
    return {
        "input_tokens": _input_tokens(request),
        "cache_creation_input_tokens": controls.cache_write_tokens,
        "cache_read_input_tokens": controls.cached_tokens,
        "cache_creation": {"ephemeral_5m_input_tokens": controls.cache_write_tokens, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _headers(body_id: str) -> dict[str, str]:
    return {
        "request-id": f"req_011C{body_id[:20]}",
        "anthropic-ratelimit-requests-limit": "4000",
        "anthropic-ratelimit-requests-remaining": "3999",
        "anthropic-ratelimit-tokens-limit": "400000",
        "anthropic-ratelimit-tokens-remaining": "399000",
    }


async def _read(request: web.Request, *, vertex: bool) -> tuple[dict[str, Any], web.Response | None, Controls, str]:
    """(body, error response or None, controls, body id); the body is ``{}`` with an error, which callers return."""
    body = await record(request)
    controls = Controls.from_request(request)
    body_id = hashlib.sha1(body).hexdigest()
    # The API takes x-api-key (newer SDKs send the key as a Bearer token); Vertex takes a Bearer token.
    bearer = request.headers.get("Authorization", "").startswith("Bearer ")
    authorized = bearer if vertex else bearer or bool(request.headers.get("x-api-key"))
    if not authorized:
        return {}, error_response(401, "x-api-key header is required" if not vertex else None), controls, body_id
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}, error_response(400, "There was an error parsing the body: invalid JSON"), controls, body_id
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        return {}, error_response(400), controls, body_id
    # Vertex names the model in the URL ({model}:rawPredict), the Messages API in the body.
    model = str(data.get("model") or request.match_info.get("model_method", "").partition(":")[0])
    status = controls.status_for(request, model)
    if status >= 400:
        await controls.wait()
        return {}, error_response(status), controls, body_id
    return data, None, controls, body_id


async def respond(request: web.Request, data: dict[str, Any], controls: Controls, body_id: str,
                  model: str, stream: bool) -> web.StreamResponse:
    """A Messages response (JSON or event stream) for a parsed request."""
    tool_use, pieces, is_json = _plan(data, body_id)
    text = "".join(pieces)
    generated = json_tokens(text) + (count_tokens(tool_use["name"]) + 4 if tool_use else 0) if is_json else count_tokens(text)
    output_tokens = generated + controls.reasoning_tokens
    stop_reason = "tool_use" if tool_use else "end_turn"
    msg_id = f"msg_01{body_id[:22]}"
    usage = _usage(data, output_tokens, controls)
    await controls.wait()
    if not stream:
        body = {"id": msg_id, "type": "message", "role": "assistant", "model": model,
                "content": [tool_use or {"type": "text", "text": text}], "stop_reason": stop_reason, "stop_sequence": None,
                "usage": usage}
        return web.Response(body=dumps(body), content_type="application/json", headers=_headers(body_id))

    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
                                           **_headers(body_id)})
    await response.prepare(request)

    async def emit(kind: str, payload: dict[str, Any]) -> None:
        await response.write(sse(dumps({"type": kind, **payload}), event=kind))

    start_usage = {**usage, "output_tokens": 1}
    message: dict[str, Any] = {"id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
                               "stop_reason": None, "stop_sequence": None}
    if not controls.drop_usage:
        message["usage"] = start_usage
    await emit("message_start", {"message": message})
    if tool_use:
        await emit("content_block_start", {"index": 0, "content_block": {**tool_use, "input": {}}})
    else:
        await emit("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
    await response.write(b'event: ping\ndata: {"type": "ping"}\n\n')
    for piece in pieces:
        await controls.between_chunks()
        if tool_use:
            await emit("content_block_delta", {"index": 0, "delta": {"type": "input_json_delta", "partial_json": piece}})
        else:
            await emit("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}})
    await emit("content_block_stop", {"index": 0})
    delta: dict[str, Any] = {"delta": {"stop_reason": stop_reason, "stop_sequence": None}}
    if not controls.drop_usage:
        delta["usage"] = {"output_tokens": output_tokens}
    await emit("message_delta", delta)
    await emit("message_stop", {})
    await response.write_eof()
    return response


async def messages(request: web.Request) -> web.StreamResponse:
    data, error, controls, body_id = await _read(request, vertex=False)
    if error is not None:
        return error
    if not data.get("model") or not data.get("max_tokens"):
        return error_response(400, "max_tokens: Field required" if data.get("model") else "model: Field required")
    return await respond(request, data, controls, body_id, str(data["model"]), data.get("stream") is True)


async def count_tokens_route(request: web.Request) -> web.Response:
    data, error, _, _ = await _read(request, vertex=False)
    if error is not None:
        return error
    return web.Response(body=dumps({"input_tokens": _input_tokens(data)}),
                        content_type="application/json")


async def vertex_raw_predict(request: web.Request) -> web.StreamResponse:
    """``.../publishers/anthropic/models/{model}:rawPredict|streamRawPredict`` on Vertex AI."""
    data, error, controls, body_id = await _read(request, vertex=True)
    if error is not None:
        return error
    if not data.get("anthropic_version"):  # e.g. "vertex-2023-10-16"; the model is in the URL instead
        return error_response(400, "anthropic_version: Field required")
    model, _, method = request.match_info["model_method"].partition(":")
    return await respond(request, data, controls, body_id, model, method == "streamRawPredict" or data.get("stream") is True)


def register(app: web.Application, prefix: str = "") -> None:
    """Mount the fake Anthropic API under ``prefix``."""
    app.router.add_post(prefix + "/v1/messages", messages)
    app.router.add_post(prefix + "/v1/messages/count_tokens", count_tokens_route)
