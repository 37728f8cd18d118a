"""Fake OpenAI API: Chat Completions, Completions, Embeddings, Responses, Models.

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

from genops.fake_upstream.common import Controls, count_tokens, dumps, record, reply_pieces, sse

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


async def _parse(request: web.Request) -> tuple[dict[str, Any] | None, web.Response | None, Controls, str]:
    body = await record(request)
    controls = Controls.from_request(request)
    body_id = hashlib.sha1(body).hexdigest()
    # Bearer token; Azure OpenAI (fake_upstream/azure.py reuses these handlers) also takes api-key.
    if not (request.headers.get("Authorization", "").startswith("Bearer ") or request.headers.get("api-key")):
        return None, error_response(401, "You didn't provide an API key.", None), controls, body_id
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, error_response(400, "We could not parse the JSON body of your request."), controls, body_id
    if controls.status >= 400:
        await controls.wait()
        return None, error_response(controls.status), controls, body_id
    if isinstance(data, dict):  # ids ignore stream_options, so a proxy asking for usage gets the same ids
        body_id = hashlib.sha1(orjson.dumps({k: v for k, v in data.items() if k != "stream_options"})).hexdigest()
    return data, None, controls, body_id


async def chat_completions(request: web.Request) -> web.StreamResponse:
    data, error, controls, body_id = await _parse(request)
    if error is not None:
        return error
    model = DATED.get(data.get("model", ""), data.get("model", ""))
    prompt = _prompt_text(data)
    prompt_tokens = count_tokens(prompt) + 7
    pieces = reply_pieces(prompt)
    completion_tokens = count_tokens("".join(pieces)) + controls.reasoning_tokens
    chat_id = f"chatcmpl-{body_id[:24]}"
    await controls.wait()
    if not data.get("stream"):
        body = {
            "id": chat_id,
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(pieces), "refusal": None, "annotations": []},
                    "logprobs": None,
                    "finish_reason": "stop",
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

    await response.write(chunk({"role": "assistant", "content": "", "refusal": None}, None))
    for piece in pieces:
        await controls.between_chunks()
        await response.write(chunk({"content": piece}, None))
    await response.write(chunk({}, "stop"))
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


async def embeddings(request: web.Request) -> web.Response:
    data, error, controls, body_id = await _parse(request)
    if error is not None:
        return error
    inputs = data.get("input")
    texts = inputs if isinstance(inputs, list) else [inputs]
    dims = int(data.get("dimensions") or 8)
    items = []
    tokens = 0
    for index, text in enumerate(texts):
        text = str(text)
        tokens += count_tokens(text)
        seed = hashlib.sha256(text.encode()).digest()
        vector = [((seed[i % 32] / 255.0) - 0.5) for i in range(dims)]
        if data.get("encoding_format") == "base64":
            embedding: Any = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
        else:
            embedding = vector
        items.append({"object": "embedding", "index": index, "embedding": embedding})
    await controls.wait()
    body = {"object": "list", "data": items, "model": data.get("model", ""),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return web.Response(body=dumps(body), content_type="application/json", headers=_headers(body_id))


def _response_object(resp_id: str, model: str, status: str, text: str | None, usage: dict[str, Any] | None) -> dict[str, Any]:
    output = []
    if text is not None:
        output.append({"id": f"msg_{resp_id[5:]}", "type": "message", "status": "completed", "role": "assistant",
                       "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}]})
    return {
        "id": resp_id, "object": "response", "created_at": CREATED, "status": status, "background": False,
        "error": None, "incomplete_details": None, "instructions": None, "max_output_tokens": None,
        "model": model, "output": output, "parallel_tool_calls": True, "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None}, "service_tier": "default", "store": True,
        "temperature": 1.0, "text": {"format": {"type": "text"}, "verbosity": "medium"}, "tool_choice": "auto",
        "tools": [], "top_p": 1.0, "truncation": "disabled", "usage": usage, "user": None, "metadata": {},
    }


async def responses(request: web.Request) -> web.StreamResponse:
    data, error, controls, body_id = await _parse(request)
    if error is not None:
        return error
    model = DATED.get(data.get("model", ""), data.get("model", ""))
    prompt = _prompt_text(data)
    pieces = reply_pieces(prompt)
    text = "".join(pieces)
    input_tokens = count_tokens(prompt) + 5
    output_tokens = count_tokens(text) + controls.reasoning_tokens
    usage = {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": controls.cached_tokens},
             "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": controls.reasoning_tokens},
             "total_tokens": input_tokens + output_tokens}
    resp_id = f"resp_{body_id[:32]}"
    await controls.wait()
    if not data.get("stream"):
        return web.Response(body=dumps(_response_object(resp_id, model, "completed", text, usage)),
                            content_type="application/json", headers=_headers(body_id))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8", **_headers(body_id)})
    await response.prepare(request)
    seq = 0

    async def emit(kind: str, payload: dict[str, Any]) -> None:
        nonlocal seq
        await response.write(sse(dumps({"type": kind, **payload, "sequence_number": seq}), event=kind))
        seq += 1

    msg_id = f"msg_{resp_id[5:]}"
    await emit("response.created", {"response": _response_object(resp_id, model, "in_progress", None, None)})
    await emit("response.in_progress", {"response": _response_object(resp_id, model, "in_progress", None, None)})
    await emit("response.output_item.added", {"output_index": 0, "item": {"id": msg_id, "type": "message",
               "status": "in_progress", "content": [], "role": "assistant"}})
    await emit("response.content_part.added", {"item_id": msg_id, "output_index": 0, "content_index": 0,
               "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}})
    for piece in pieces:
        await controls.between_chunks()
        await emit("response.output_text.delta", {"item_id": msg_id, "output_index": 0, "content_index": 0,
                   "delta": piece, "logprobs": []})
    await emit("response.output_text.done", {"item_id": msg_id, "output_index": 0, "content_index": 0,
               "text": text, "logprobs": []})
    await emit("response.content_part.done", {"item_id": msg_id, "output_index": 0, "content_index": 0,
               "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": text}})
    done_item = _response_object(resp_id, model, "completed", text, usage)["output"][0]
    await emit("response.output_item.done", {"output_index": 0, "item": done_item})
    await emit("response.completed", {"response": _response_object(resp_id, model, "completed", text,
                                                                    None if controls.drop_usage else usage)})
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
