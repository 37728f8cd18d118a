"""Fake OpenAI API: Chat Completions, Completions, Embeddings, Responses, Models.

Tools: a request with ``tools`` whose last message is the user's gets one call to the first
tool (or the one ``tool_choice`` names), arguments sampled from its JSON schema; a request
ending with tool results gets a text reply that quotes them. ``response_format`` /
``text.format`` JSON modes answer JSON (the schema's required properties).

Identical requests get identical responses (ids derive from the body), so a test can
compare what an SDK gets directly with what it gets through the proxy.
"""

from __future__ import annotations

import base64
import hashlib
import struct
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

CREATED = 1730000000
FINGERPRINT = "fp_f00dfeed01"
DATED = {"gpt-4o-mini": "gpt-4o-mini-2024-07-18", "gpt-4o": "gpt-4o-2024-08-06"}

ERRORS = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Country, region, or territory not supported"),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again in 1s."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


def error_response(status: int, message: str | None = None, code: str | None = None) -> web.Response:
    """An error exactly as OpenAI sends it."""
    kind, default_code, default_message = ERRORS.get(status, ("server_error", None, "Error."))
    body = {"error": {"message": message or default_message, "type": kind, "param": None, "code": code or default_code}}
    headers = {"x-request-id": "req_fake_error"}
    if status == 429:
        headers.update({"retry-after": "1", "x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "0"})
    return web.Response(status=status, body=dumps(body), content_type="application/json", headers=headers)


def _headers(body_id: str) -> dict[str, str]:
    return {
        "x-request-id": f"req_{body_id[:20]}",
        "openai-processing-ms": "12",
        "openai-version": "2020-10-01",
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "499",
        "x-ratelimit-limit-tokens": "200000",
        "x-ratelimit-remaining-tokens": "199000",
    }


def _prompt_text(request: dict[str, Any]) -> str:
    parts: list[str] = []
    for message in request.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
    prompt = request.get("prompt") or request.get("input")
    if isinstance(prompt, str):
        parts.append(prompt)
    elif isinstance(prompt, list):
        for item in prompt:
            if isinstance(item, str):
                parts.append(item)
            elif isinstance(item, dict):
                content = item.get("content")
                if isinstance(content, str):
                    parts.append(content)
                elif isinstance(content, list):
                    parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
    return " ".join(parts)


def _usage(prompt_tokens: int, completion_tokens: int, controls: Controls) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": controls.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": controls.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }



# --- Tools and JSON mode --------------------------------------------------------------------


def _chosen_tool(tools: list[dict[str, Any]], choice: Any, name_of: Any) -> dict[str, Any] | None:
    """The tool to call: ``tool_choice``'s (by name, or the first allowed one), else the first."""
    if not tools or choice == "none":
        return None
    wanted: str | None = None
    if isinstance(choice, dict):
        if choice.get("type") == "allowed_tools":
            allowed = choice["allowed_tools"] if isinstance(choice.get("allowed_tools"), dict) else choice
            names = [name_of(t) for t in allowed.get("tools") or () if isinstance(t, dict)]
            return next((t for t in tools if name_of(t) in names), None)
        wanted = (choice.get("function") or {}).get("name") if isinstance(choice.get("function"), dict) else None
        wanted = wanted or choice.get("name")
    if wanted:
        return next((t for t in tools if name_of(t) == wanted), None)
    return tools[0]


def _chat_tools(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in data.get("tools") or () if isinstance(t, dict) and t.get("type", "function") == "function"
            and isinstance(t.get("function"), dict) and t["function"].get("name")]


def _arguments(parameters: Any) -> str:
    return dumps(sample_from_schema(parameters or {"type": "object", "properties": {}})).decode()


def _chat_tool_results(messages: list[Any]) -> tuple[str, str] | None:
    """(tool names, results) of the tool messages that end the conversation, else None."""
    trailing: list[dict[str, Any]] = []
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") in ("tool", "function"):
            trailing.insert(0, message)
        else:
            break
    if not trailing:
        return None
    names_by_id: dict[str, str] = {}
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "assistant":
            for call in message.get("tool_calls") or ():
                if isinstance(call, dict) and isinstance(call.get("function"), dict):
                    names_by_id[str(call.get("id"))] = str(call["function"].get("name", ""))
    names = [m.get("name") or names_by_id.get(str(m.get("tool_call_id")), "") for m in trailing]
    return ", ".join(dict.fromkeys(n for n in names if n)), "; ".join(text_of(m.get("content")) for m in trailing)


def _json_reply(fmt: Any, prompt: str) -> str | None:
    """The JSON content for a JSON-mode request (``{"type": "json_object"}`` or a JSON schema), else None."""
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_object":
        return dumps({"reply": "".join(reply_pieces(prompt))}).decode()
    if fmt.get("type") == "json_schema":
        schema = fmt.get("json_schema", fmt)  # Chat nests it under json_schema; Responses' text.format is flat
        schema = schema.get("schema") if isinstance(schema, dict) else None
        return dumps(sample_from_schema(schema or {"type": "object"})).decode()
    return None


async def _parse(request: web.Request) -> tuple[dict[str, Any], web.Response | None, Controls, str]:
    """(body, error response or None, controls, body id); the body is ``{}`` with an error, which callers return."""
    body = await record(request)
    controls = Controls.from_request(request)
    body_id = hashlib.sha1(body).hexdigest()
    # Bearer token; Azure OpenAI (fake_upstream/azure.py reuses these handlers) also takes api-key.
    if not (request.headers.get("Authorization", "").startswith("Bearer ") or request.headers.get("api-key")):
        return {}, error_response(401, "You didn't provide an API key.", None), controls, body_id
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}, error_response(400, "We could not parse the JSON body of your request."), controls, body_id
    # The model an X-Fake-Error-Rate counts under: the body's, else the Azure deployment's name.
    model = data.get("model") if isinstance(data, dict) else None
    status = controls.status_for(request, str(model or request.match_info.get("deployment", "")))
    if status >= 400:
        await controls.wait()
        return {}, error_response(status), controls, body_id
    if isinstance(data, dict):  # ids ignore stream_options, so a proxy asking for usage gets the same ids
        body_id = hashlib.sha1(orjson.dumps({k: v for k, v in data.items() if k != "stream_options"})).hexdigest()
    return data, None, controls, body_id


def _chat_plan(data: dict[str, Any], prompt: str, body_id: str) -> tuple[dict[str, Any] | None, list[str], int, int]:
    """What a chat request gets: (tool call or None, content pieces, extra prompt tokens, completion tokens)."""
    tools = _chat_tools(data)
    extra_prompt = json_tokens(dumps(tools).decode()) if tools else 0
    messages = data["messages"] if isinstance(data.get("messages"), list) else []
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    tool = None
    if last.get("role") == "user":
        tool = _chosen_tool(tools, data.get("tool_choice"), lambda t: (t.get("function") or {}).get("name"))
    if tool is not None:
        function = tool["function"]
        arguments = _arguments(function.get("parameters"))
        call = {"id": f"call_{fake_id(body_id, 24)}", "type": "function",
                "function": {"name": str(function["name"]), "arguments": arguments}}
        return call, json_pieces(arguments), extra_prompt, json_tokens(arguments) + count_tokens(str(function["name"])) + 4
    results = _chat_tool_results(messages)
    if results is not None:
        pieces = tool_result_pieces(*results)
        return None, pieces, extra_prompt, count_tokens("".join(pieces))
    json_text = _json_reply(data.get("response_format"), prompt)
    if json_text is not None:
        return None, json_pieces(json_text), extra_prompt, json_tokens(json_text)
    pieces = reply_pieces(prompt)
    return None, pieces, extra_prompt, count_tokens("".join(pieces))


async def chat_completions(request: web.Request) -> web.StreamResponse:
    data, error, controls, body_id = await _parse(request)
    if error is not None:
        return error
    model = DATED.get(data.get("model", ""), data.get("model", ""))
    prompt = _prompt_text(data)
    call, pieces, extra_prompt, completion_tokens = _chat_plan(data, prompt, body_id)
    prompt_tokens = count_tokens(prompt) + 7 + extra_prompt
    completion_tokens += controls.reasoning_tokens
    finish_reason = "tool_calls" if call else "stop"
    chat_id = f"chatcmpl-{body_id[:24]}"
    await controls.wait()
    if not data.get("stream"):
        if call:
            message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None,
                                       "annotations": []}
        else:
            message = {"role": "assistant", "content": "".join(pieces), "refusal": None, "annotations": []}
        body = {
            "id": chat_id,
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": _usage(prompt_tokens, completion_tokens, controls),
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        }
        return web.Response(body=dumps(body), content_type="application/json", headers=_headers(body_id))

    include_usage = bool((data.get("stream_options") or {}).get("include_usage")) and not controls.drop_usage
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8", **_headers(body_id)})
    await response.prepare(request)

    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        payload: dict[str, Any] = {
            "id": chat_id,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            payload["usage"] = None
        return sse(dumps(payload))

    if call:
        # As the API streams a tool call: id, type and name first with empty arguments, then
        # argument fragments addressed by index only.
        head = {"index": 0, "id": call["id"], "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""}}
        await response.write(chunk({"role": "assistant", "content": None, "tool_calls": [head], "refusal": None}, None))
        for piece in pieces:
            await controls.between_chunks()
            await response.write(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}, None))
    else:
        await response.write(chunk({"role": "assistant", "content": "", "refusal": None}, None))
        for piece in pieces:
            await controls.between_chunks()
            await response.write(chunk({"content": piece}, None))
    await response.write(chunk({}, finish_reason))
    if include_usage:
        usage_chunk = {
            "id": chat_id,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
            "choices": [],
            "usage": _usage(prompt_tokens, completion_tokens, controls),
        }
        await response.write(sse(dumps(usage_chunk)))
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def completions(request: web.Request) -> web.StreamResponse:
    data, error, controls, body_id = await _parse(request)
    if error is not None:
        return error
    model = data.get("model", "")
    prompt = _prompt_text(data)
    prompt_tokens = count_tokens(prompt)
    pieces = reply_pieces(prompt)
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": count_tokens("".join(pieces)),
             "total_tokens": prompt_tokens + count_tokens("".join(pieces))}
    cmpl_id = f"cmpl-{body_id[:24]}"
    await controls.wait()
    if not data.get("stream"):
        body = {"id": cmpl_id, "object": "text_completion", "created": CREATED, "model": model,
                "choices": [{"text": "".join(pieces), "index": 0, "logprobs": None, "finish_reason": "stop"}],
                "usage": usage}
        return web.Response(body=dumps(body), content_type="application/json", headers=_headers(body_id))
    include_usage = bool((data.get("stream_options") or {}).get("include_usage")) and not controls.drop_usage
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8", **_headers(body_id)})
    await response.prepare(request)
    for i, piece in enumerate(pieces):
        await controls.between_chunks()
        payload: dict[str, Any] = {"id": cmpl_id, "object": "text_completion", "created": CREATED,
                                   "choices": [{"text": piece, "index": 0, "logprobs": None,
                                                "finish_reason": "stop" if i == len(pieces) - 1 else None}],
                                   "model": model, "system_fingerprint": FINGERPRINT}
        if include_usage:
            payload["usage"] = None
        await response.write(sse(dumps(payload)))
    if include_usage:
        await response.write(sse(dumps({"id": cmpl_id, "object": "text_completion", "created": CREATED,
                                        "choices": [], "model": model, "system_fingerprint": FINGERPRINT,
                                        "usage": usage})))
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


EMBEDDING_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}


def _vector(text: str, dims: int) -> list[float]:
    # The first 32 values come from the text's SHA-256 (as they always have); more dimensions
    # extend the seed with SHAKE-256 so long vectors do not repeat every 32 values.
    seed = hashlib.sha256(text.encode()).digest()
    if dims > 32:
        seed += hashlib.shake_256(text.encode()).digest(dims - 32)
    return [(b / 255.0) - 0.5 for b in seed[:dims]]


async def embeddings(request: web.Request) -> web.Response:
    data, error, controls, body_id = await _parse(request)
    if error is not None:
        return error
    inputs = data.get("input")
    # A list of token ids is one input; a list of strings (or of token lists) is one input each.
    if isinstance(inputs, list) and inputs and all(isinstance(i, int) for i in inputs):
        texts: list[Any] = [inputs]
    else:
        texts = inputs if isinstance(inputs, list) else [inputs]
    model = data.get("model") or request.match_info.get("deployment", "")
    default_dims = next((d for name, d in EMBEDDING_DIMENSIONS.items() if str(model).startswith(name)), 8)
    dims = int(data.get("dimensions") or default_dims)
    items = []
    tokens = 0
    base64_format = data.get("encoding_format") == "base64"
    for index, text in enumerate(texts):
        if isinstance(text, list):  # token ids
            tokens += max(1, len(text))
            text = " ".join(str(t) for t in text)
        else:
            text = str(text)
            tokens += count_tokens(text)
        vector = _vector(text, dims)
        if base64_format:
            embedding: Any = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
        else:
            embedding = vector
        items.append({"object": "embedding", "index": index, "embedding": embedding})
    await controls.wait()
    body = {"object": "list", "data": items, "model": data.get("model", ""),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return web.Response(body=dumps(body), content_type="application/json", headers=_headers(body_id))


def _response_object(resp_id: str, model: str, status: str, text: str | None, usage: dict[str, Any] | None,
                     output: list[dict[str, Any]] | None = None, echo: dict[str, Any] | None = None) -> dict[str, Any]:
    if output is None:
        output = []
        if text is not None:
            output.append({"id": f"msg_{resp_id[5:]}", "type": "message", "status": "completed", "role": "assistant",
                           "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}]})
    body = {
        "id": resp_id, "object": "response", "created_at": CREATED, "status": status, "background": False,
        "error": None, "incomplete_details": None, "instructions": None, "max_output_tokens": None,
        "model": model, "output": output, "parallel_tool_calls": True, "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None}, "service_tier": "default", "store": True,
        "temperature": 1.0, "text": {"format": {"type": "text"}, "verbosity": "medium"}, "tool_choice": "auto",
        "tools": [], "top_p": 1.0, "truncation": "disabled", "usage": usage, "user": None, "metadata": {},
    }
    body.update(echo or {})
    return body


def _responses_tools(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in data.get("tools") or () if isinstance(t, dict) and t.get("type") == "function" and t.get("name")]


def _responses_echo(data: dict[str, Any], tools: list[dict[str, Any]]) -> dict[str, Any]:
    """Request fields the API echoes in the response object (only those the request set)."""
    echo: dict[str, Any] = {}
    if tools:
        echo["tools"] = [{"type": "function", "description": t.get("description"), "name": t["name"],
                          "parameters": t.get("parameters"), "strict": t.get("strict", True)} for t in tools]
    if data.get("tool_choice") is not None:
        echo["tool_choice"] = data["tool_choice"]
    if isinstance(data.get("reasoning"), dict):
        echo["reasoning"] = {"effort": data["reasoning"].get("effort", "medium"), "summary": data["reasoning"].get("summary")}
    text = data.get("text")
    if isinstance(text, dict) and isinstance(text.get("format"), dict):
        echo["text"] = {"format": text["format"], "verbosity": text.get("verbosity", "medium")}
    if isinstance(data.get("instructions"), str):
        echo["instructions"] = data["instructions"]
    if data.get("previous_response_id"):
        echo["previous_response_id"] = data["previous_response_id"]
    return echo


def _responses_tool_results(items: list[Any]) -> tuple[str, str] | None:
    """(tool names, outputs) of the ``function_call_output`` items that end the input, else None."""
    trailing: list[dict[str, Any]] = []
    for item in reversed(items):
        if isinstance(item, dict) and item.get("type") == "function_call_output":
            trailing.insert(0, item)
        else:
            break
    if not trailing:
        return None
    names_by_id = {str(i.get("call_id")): str(i.get("name", "")) for i in items
                   if isinstance(i, dict) and i.get("type") == "function_call"}
    names = [names_by_id.get(str(i.get("call_id")), "") for i in trailing]
    return ", ".join(dict.fromkeys(n for n in names if n)), "; ".join(text_of(i.get("output")) for i in trailing)


async def responses(request: web.Request) -> web.StreamResponse:
    data, error, controls, body_id = await _parse(request)
    if error is not None:
        return error
    model = DATED.get(data.get("model", ""), data.get("model", ""))
    prompt = _prompt_text(data)
    resp_id = f"resp_{body_id[:32]}"
    tools = _responses_tools(data)
    echo = _responses_echo(data, tools)
    items = data["input"] if isinstance(data.get("input"), list) else []
    last = items[-1] if items and isinstance(items[-1], dict) else {}
    user_last = isinstance(data.get("input"), str) or (last.get("role") == "user" and last.get("type", "message") == "message")
    tool = _chosen_tool(tools, data.get("tool_choice"), lambda t: t.get("name")) if user_last else None
    results = None if tool else _responses_tool_results(items)
    text_format = (data.get("text") or {}).get("format") if isinstance(data.get("text"), dict) else None
    json_text = None if tool or results else _json_reply(text_format, prompt)
    output: list[dict[str, Any]] = []
    pieces: list[str] = []
    # Reasoning models asked to reason show a reasoning item first (a summary when one is asked for).
    requested = str(data.get("model", ""))
    reasoning = data.get("reasoning") if isinstance(data.get("reasoning"), dict) else None
    reasoning_tokens = controls.reasoning_tokens
    if reasoning is not None and (requested.startswith("o") or requested.startswith("gpt-5")):
        item: dict[str, Any] = {"id": f"rs_{body_id[:32]}", "type": "reasoning", "summary": []}
        if reasoning.get("summary") in ("auto", "concise", "detailed"):
            item["summary"] = [{"type": "summary_text", "text": "**Planning the answer**\n\nThe user asked a question; "
                                                                "I will answer it directly."}]
        if "reasoning.encrypted_content" in (data.get("include") or ()):
            item["encrypted_content"] = "gAAAAA" + base64.b64encode(body_id.encode()).decode()
        output.append(item)
        reasoning_tokens = reasoning_tokens or 16
    if tool is not None:
        arguments = _arguments(tool.get("parameters"))
        output.append({"id": f"fc_{body_id[:32]}", "type": "function_call", "status": "completed",
                       "arguments": arguments, "call_id": f"call_{fake_id(body_id, 24)}", "name": str(tool["name"])})
        pieces = json_pieces(arguments)
        generated = json_tokens(arguments) + count_tokens(str(tool["name"])) + 4
    else:
        if results is not None:
            pieces = tool_result_pieces(*results)
        elif json_text is not None:
            pieces = json_pieces(json_text)
        else:
            pieces = reply_pieces(prompt)
        text = "".join(pieces)
        output.append({"id": f"msg_{resp_id[5:]}", "type": "message", "status": "completed", "role": "assistant",
                       "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}]})
        generated = json_tokens(text) if json_text is not None else count_tokens(text)
    input_tokens = count_tokens(prompt) + 5 + (json_tokens(dumps(tools).decode()) if tools else 0)
    output_tokens = generated + reasoning_tokens
    usage = {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": controls.cached_tokens},
             "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
             "total_tokens": input_tokens + output_tokens}
    await controls.wait()
    if not data.get("stream"):
        return web.Response(body=dumps(_response_object(resp_id, model, "completed", None, usage, output, echo)),
                            content_type="application/json", headers=_headers(body_id))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8", **_headers(body_id)})
    await response.prepare(request)
    seq = 0

    async def emit(kind: str, payload: dict[str, Any]) -> None:
        nonlocal seq
        await response.write(sse(dumps({"type": kind, **payload, "sequence_number": seq}), event=kind))
        seq += 1

    await emit("response.created", {"response": _response_object(resp_id, model, "in_progress", None, None, [], echo)})
    await emit("response.in_progress", {"response": _response_object(resp_id, model, "in_progress", None, None, [], echo)})
    for index, done_item in enumerate(output):
        item_id = done_item["id"]
        kind = done_item["type"]
        if kind == "reasoning":
            await emit("response.output_item.added", {"output_index": index, "item": {"id": item_id, "type": "reasoning",
                                                                                      "summary": []}})
            for s_index, part in enumerate(done_item["summary"]):
                at = {"item_id": item_id, "output_index": index, "summary_index": s_index}
                await emit("response.reasoning_summary_part.added", {**at, "part": {"type": "summary_text", "text": ""}})
                for piece in json_pieces(part["text"], 12):
                    await controls.between_chunks()
                    await emit("response.reasoning_summary_text.delta", {**at, "delta": piece})
                await emit("response.reasoning_summary_text.done", {**at, "text": part["text"]})
                await emit("response.reasoning_summary_part.done", {**at, "part": part})
        elif kind == "function_call":
            await emit("response.output_item.added", {"output_index": index, "item": {
                **done_item, "status": "in_progress", "arguments": ""}})
            for piece in pieces:
                await controls.between_chunks()
                await emit("response.function_call_arguments.delta", {"item_id": item_id, "output_index": index,
                                                                      "delta": piece})
            await emit("response.function_call_arguments.done", {"item_id": item_id, "output_index": index,
                                                                 "arguments": done_item["arguments"]})
        else:
            text = done_item["content"][0]["text"]
            at = {"item_id": item_id, "output_index": index, "content_index": 0}
            await emit("response.output_item.added", {"output_index": index, "item": {"id": item_id, "type": "message",
                       "status": "in_progress", "content": [], "role": "assistant"}})
            await emit("response.content_part.added", {**at, "part": {"type": "output_text", "annotations": [],
                                                                      "logprobs": [], "text": ""}})
            for piece in pieces:
                await controls.between_chunks()
                await emit("response.output_text.delta", {**at, "delta": piece, "logprobs": []})
            await emit("response.output_text.done", {**at, "text": text, "logprobs": []})
            await emit("response.content_part.done", {**at, "part": {"type": "output_text", "annotations": [],
                                                                     "logprobs": [], "text": text}})
        await emit("response.output_item.done", {"output_index": index, "item": done_item})
    await emit("response.completed", {"response": _response_object(resp_id, model, "completed", None,
                                                                    None if controls.drop_usage else usage, output, echo)})
    await response.write_eof()
    return response


async def models(request: web.Request) -> web.Response:
    await record(request)
    data = [{"id": m, "object": "model", "created": CREATED, "owned_by": "system"}
            for m in ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")]
    return web.Response(body=dumps({"object": "list", "data": data}), content_type="application/json")


def register(app: web.Application, prefix: str = "") -> None:
    """Mount the fake OpenAI API under ``prefix`` (``/v1/...`` below it)."""
    app.router.add_post(prefix + "/v1/chat/completions", chat_completions)
    app.router.add_post(prefix + "/v1/completions", completions)
    app.router.add_post(prefix + "/v1/embeddings", embeddings)
    app.router.add_post(prefix + "/v1/responses", responses)
    app.router.add_get(prefix + "/v1/models", models)
