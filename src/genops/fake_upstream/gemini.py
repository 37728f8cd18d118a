"""Fake Gemini API and Vertex AI model endpoints.

Gemini: ``/v1beta/models/{model}:generateContent|streamGenerateContent|countTokens|embedContent|
batchEmbedContents`` (also under ``/v1``), key in ``x-goog-api-key`` or ``?key=``.
Streams are SSE with ``alt=sse`` (``data: {...}`` + CRLF CRLF, as Google sends them) and
otherwise one pretty-printed JSON array written in small pieces. ``usageMetadata`` carries
``cachedContentTokenCount`` and ``thoughtsTokenCount`` when the ``X-Fake-*`` controls ask.

Vertex AI: ``/vertex/{host-location}/v1/projects/{p}/locations/{l}/publishers/{pub}/models/
{model}:{method}``; point ``GENOPS_VERTEX_BASE_URL`` at ``http://host:port/vertex/{location}``.
The path's first location stands for the region host the proxy chose; a request whose host
and path locations differ is refused, so tests see that the host follows the location.
Google's models answer in the Gemini format, Anthropic's in the Messages format.

Tools: ``tools[].functionDeclarations`` (and ``toolConfig.functionCallingConfig`` modes) make a
user turn answer one ``functionCall`` part with ``args`` sampled from the declaration's
schema; a turn of ``functionResponse`` parts gets a text reply quoting them.
``generationConfig.responseMimeType: application/json`` answers JSON (``responseSchema`` /
``responseJsonSchema``'s required properties). Embeddings honour ``outputDimensionality``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from aiohttp import web

from genops.fake_upstream import anthropic, openai
from genops.fake_upstream.common import (
    Controls,
    count_tokens,
    dumps,
    json_pieces,
    json_tokens,
    record,
    reply_pieces,
    sample_from_schema,
    text_of,
    tool_result_pieces,
)

ERRORS = {
    400: ("INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."),
    403: ("PERMISSION_DENIED", "Method doesn't allow unregistered callers (callers without established identity). "
                               "Please use API Key or other form of API consumer identity to call this API."),
    404: ("NOT_FOUND", "models/gemini-nonexistent is not found for API version v1beta, or is not supported for "
                       "generateContent."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: ("INTERNAL", "An internal error has occurred. Please retry or report in "
                      "https://developers.generativeai.google/guide/troubleshooting"),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
}


def error_response(status: int, message: str | None = None) -> web.Response:
    """An error exactly as Google's APIs send it."""
    name, default = ERRORS.get(status, ("INTERNAL", "Internal error encountered."))
    body: dict[str, Any] = {"error": {"code": status, "message": message or default, "status": name}}
    if status == 400 and message is None:
        body["error"]["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                                     "domain": "googleapis.com",
                                     "metadata": {"service": "generativelanguage.googleapis.com"}}]
    text = orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n"
    return web.Response(status=status, body=text, content_type="application/json")


def _prompt_text(request: dict[str, Any]) -> str:
    parts: list[str] = []
    for content in request.get("contents") or ():
        if isinstance(content, dict):
            parts.extend(p.get("text", "") for p in content.get("parts") or () if isinstance(p, dict))
    system = request.get("systemInstruction") or request.get("system_instruction")
    if isinstance(system, dict):
        parts.extend(p.get("text", "") for p in system.get("parts") or () if isinstance(p, dict))
    return " ".join(parts)


def _usage(prompt_tokens: int, candidates: int | None, controls: Controls) -> dict[str, Any]:
    usage: dict[str, Any] = {"promptTokenCount": prompt_tokens}
    if candidates is not None:
        usage["candidatesTokenCount"] = candidates
    total = prompt_tokens + (candidates or 0)
    if controls.cached_tokens:
        usage["cachedContentTokenCount"] = controls.cached_tokens
    if controls.reasoning_tokens and candidates is not None:
        usage["thoughtsTokenCount"] = controls.reasoning_tokens
        total += controls.reasoning_tokens
    usage["totalTokenCount"] = total
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt_tokens}]
    if controls.cached_tokens:
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": controls.cached_tokens}]
    return usage


def _get(data: Any, camel: str, snake: str) -> Any:
    """A field the REST API accepts in either spelling."""
    if not isinstance(data, dict):
        return None
    return data.get(camel) if data.get(camel) is not None else data.get(snake)


def _plan(data: dict[str, Any], prompt: str) -> tuple[dict[str, Any] | None, list[str], bool]:
    """(functionCall or None, text pieces, whether the text is JSON) for a generate request."""
    contents = [c for c in data.get("contents") or () if isinstance(c, dict)]
    last = contents[-1] if contents else {}
    parts = [p for p in last.get("parts") or () if isinstance(p, dict)]
    responses = [_get(p, "functionResponse", "function_response") for p in parts]
    responses = [r for r in responses if isinstance(r, dict)]
    if responses:
        names = ", ".join(dict.fromkeys(str(r.get("name", "")) for r in responses if r.get("name")))
        return None, tool_result_pieces(names, "; ".join(text_of(r.get("response")) for r in responses)), False
    declarations = [d for tool in data.get("tools") or () if isinstance(tool, dict)
                    for d in _get(tool, "functionDeclarations", "function_declarations") or ()
                    if isinstance(d, dict) and d.get("name")]
    config = _get(_get(data, "toolConfig", "tool_config"), "functionCallingConfig", "function_calling_config") or {}
    mode = str(config.get("mode", "AUTO")).upper()
    if last.get("role", "user") == "user" and declarations and mode != "NONE":
        allowed = _get(config, "allowedFunctionNames", "allowed_function_names") or ()
        declaration = next((d for d in declarations if d["name"] in allowed), declarations[0])
        schema = (_get(declaration, "parametersJsonSchema", "parameters_json_schema") or declaration.get("parameters")
                  or {"type": "object"})
        return {"name": str(declaration["name"]), "args": sample_from_schema(schema)}, [], True
    generation = _get(data, "generationConfig", "generation_config") or {}
    if _get(generation, "responseMimeType", "response_mime_type") == "application/json":
        schema = _get(generation, "responseJsonSchema", "response_json_schema") or \
            _get(generation, "responseSchema", "response_schema")
        value = sample_from_schema(schema) if isinstance(schema, dict) else {"reply": "".join(reply_pieces(prompt))}
        return None, json_pieces(dumps(value).decode()), True
    return None, reply_pieces(prompt), False


def _chunk(text: str, finish: bool, usage: dict[str, Any] | None, model: str, response_id: str,
           call: dict[str, Any] | None = None) -> dict[str, Any]:
    part = {"functionCall": call} if call is not None else {"text": text}
    candidate: dict[str, Any] = {"content": {"parts": [part], "role": "model"}}
    if finish:
        candidate["finishReason"] = "STOP"
    candidate["index"] = 0
    out: dict[str, Any] = {"candidates": [candidate]}
    if usage is not None:
        out["usageMetadata"] = usage
    out["modelVersion"] = model
    out["responseId"] = response_id
    return out


async def _generate(request: web.Request, data: dict[str, Any], controls: Controls, model: str, method: str,
                    body_id: str) -> web.StreamResponse:
    prompt = _prompt_text(data)
    prompt_tokens = count_tokens(prompt) + 2 + controls.cached_tokens  # promptTokenCount includes cached tokens
    if data.get("tools"):
        prompt_tokens += json_tokens(dumps(data["tools"]).decode())
    call, pieces, is_json = _plan(data, prompt)
    if call is not None:
        candidates = json_tokens(dumps(call["args"]).decode()) + count_tokens(call["name"]) + 4
    else:
        candidates = json_tokens("".join(pieces)) if is_json else count_tokens("".join(pieces))
    response_id = body_id[:22]
    model_version = model if model.count("-") >= 2 else f"{model}-001"
    await controls.wait()
    if method == "generateContent":
        body = _chunk("".join(pieces), True, _usage(prompt_tokens, candidates, controls), model_version, response_id,
                      call)
        return web.Response(body=dumps(body), content_type="application/json")
    if call is not None:
        pieces = [""]  # a function call comes whole, in one chunk

    sse = request.query.get("alt") == "sse"
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream" if sse else "application/json; charset=UTF-8"})
    await response.prepare(request)
    chunks = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        if controls.drop_usage:
            usage = None
        else:
            usage = _usage(prompt_tokens, candidates if last else None, controls)
        chunks.append(_chunk(piece, last, usage, model_version, response_id, call))
    if sse:
        for chunk in chunks:
            await controls.between_chunks()
            await response.write(b"data: " + dumps(chunk) + b"\r\n\r\n")
    else:
        # One JSON array, pretty-printed, written in pieces that cut through elements and strings.
        text = b"[" + b"\n,\r\n".join(orjson.dumps(c, option=orjson.OPT_INDENT_2) for c in chunks) + b"\n]"
        for start in range(0, len(text), 97):
            await controls.between_chunks()
            await response.write(text[start : start + 97])
    await response.write_eof()
    return response


EMBEDDING_DIMENSIONS = {"gemini-embedding-001": 3072, "text-embedding-004": 768, "text-embedding-005": 768,
                        "text-multilingual-embedding-002": 768}


def _dimensions(model: str, request: Any) -> int:
    """``outputDimensionality`` if asked, else the model's default size (8 for unknown models)."""
    asked = _get(request, "outputDimensionality", "output_dimensionality")
    return int(asked) if asked else EMBEDDING_DIMENSIONS.get(model.removeprefix("models/"), 8)


def _embedding(text: str, dims: int = 8) -> dict[str, Any]:
    seed = hashlib.sha256(text.encode()).digest()
    if dims > 32:
        seed += hashlib.shake_256(text.encode()).digest(dims - 32)
    return {"values": [round((seed[i] / 255.0) - 0.5, 6) for i in range(dims)]}


async def _dispatch(request: web.Request, model: str, method: str, body: bytes) -> web.StreamResponse:
    controls = Controls.from_request(request)
    try:
        data = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        return error_response(400, "Invalid JSON payload received.")
    status = controls.status_for(request, model)
    if status >= 400:
        await controls.wait()
        return error_response(status)
    body_id = hashlib.sha1(body).hexdigest()
    if method in ("generateContent", "streamGenerateContent"):
        if not data.get("contents"):
            return error_response(400, "* GenerateContentRequest.contents: contents is not specified\n")
        return await _generate(request, data, controls, model, method, body_id)
    if method == "predict" and "embedding" in model:
        return await vertex_predict_embeddings(request, data)
    if method == "countTokens":
        return web.Response(body=dumps({"totalTokens": count_tokens(_prompt_text(data)) + 2,
                                        "promptTokensDetails": [{"modality": "TEXT",
                                                                 "tokenCount": count_tokens(_prompt_text(data)) + 2}]}),
                            content_type="application/json")
    if method == "embedContent":
        text = _prompt_text({"contents": [data.get("content") or {}]})
        return web.Response(body=dumps({"embedding": _embedding(text, _dimensions(model, data))}),
                            content_type="application/json")
    if method == "batchEmbedContents":
        items = [_embedding(_prompt_text({"contents": [r.get("content") or {}]}),
                            _dimensions(str(r.get("model") or model), r))
                 for r in data.get("requests") or () if isinstance(r, dict)]
        return web.Response(body=dumps({"embeddings": items}), content_type="application/json")
    return error_response(404, f"Method {method} not found.")


async def gemini(request: web.Request) -> web.StreamResponse:
    body = await record(request)
    if not (request.headers.get("x-goog-api-key") or request.query.get("key")):
        return error_response(403)
    model, _, method = request.match_info["model_method"].partition(":")
    return await _dispatch(request, model, method, body)


async def vertex(request: web.Request) -> web.StreamResponse:
    info = request.match_info
    if info["host_location"] != info["location"]:
        await record(request)
        return error_response(400, f"Location {info['location']} is not served by the {info['host_location']} host.")
    if info["publisher"] == "anthropic":
        return await anthropic.vertex_raw_predict(request)
    body = await record(request)
    if not request.headers.get("Authorization", "").startswith("Bearer "):
        return error_response(401, "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                                   "login cookie or other valid authentication credential.")
    model, _, method = info["model_method"].partition(":")
    return await _dispatch(request, model, method, body)


async def vertex_openapi(request: web.Request) -> web.StreamResponse:
    """Vertex AI's OpenAI-compatible chat endpoint: the fake OpenAI's format, Google's auth and hosts."""
    if request.match_info["host_location"] != request.match_info["location"]:
        await record(request)
        return error_response(400, "Location mismatch.")
    return await openai.chat_completions(request)


async def vertex_predict_embeddings(request: web.Request, data: dict[str, Any]) -> web.Response:
    """``:predict`` of a text-embedding model: predictions with token statistics."""
    predictions = []
    dims = int(_get(data.get("parameters"), "outputDimensionality", "output_dimensionality") or 8)
    for instance in data.get("instances") or ():
        text = str((instance or {}).get("content", ""))
        predictions.append({"embeddings": {"statistics": {"truncated": False, "token_count": count_tokens(text)},
                                           "values": _embedding(text, dims)["values"]}})
    return web.Response(body=dumps({"predictions": predictions, "metadata": {"billableCharacterCount": 10}}),
                        content_type="application/json")


def register(app: web.Application, prefix: str = "") -> None:
    """Mount the fake Gemini API and the fake Vertex AI endpoints under ``prefix``."""
    for version in ("v1beta", "v1"):
        app.router.add_post(prefix + f"/{version}/models/{{model_method}}", gemini)
    app.router.add_post(
        prefix + "/vertex/{host_location}/{version}/projects/{project}/locations/{location}/publishers/{publisher}"
                 "/models/{model_method}", vertex)
    app.router.add_post(
        prefix + "/vertex/{host_location}/{version}/projects/{project}/locations/{location}/endpoints/openapi"
                 "/chat/completions", vertex_openapi)
