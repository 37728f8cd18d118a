"""OpenAI Chat Completions client, Gemini API target: ``generateContent`` for a whole answer,
``streamGenerateContent?alt=sse`` for a stream (the Gemini Developer API's format).

Request (OpenAI -> Gemini):

- system / developer messages -> ``systemInstruction``; user and tool turns -> role ``user``,
  assistant turns -> role ``model``; consecutive turns of one role are merged (Gemini wants them
  alternating, and a tool turn's ``functionResponse`` parts in the turn after the calls);
- text parts -> ``text``; ``data:`` images, audio and files -> ``inlineData``; http(s) and ``gs://``
  images -> ``fileData`` (MIME type guessed from the path);
- assistant ``tool_calls`` -> ``functionCall`` parts; ``tool`` messages -> ``functionResponse`` parts
  named after the call they answer (found by ``tool_call_id``);
- ``tools`` -> ``functionDeclarations`` with their JSON schemas cut down to Gemini's OpenAPI subset
  (local ``$ref`` inlined, ``anyOf [X, null]`` -> nullable, unknown keywords dropped);
  ``tool_choice`` -> ``toolConfig.functionCallingConfig``;
- sampling parameters and ``response_format`` -> ``generationConfig``.

What Gemini cannot express and a client relies on (log probabilities, logit bias, audio output,
non-function tools, OpenAI file ids, recursive schemas) is refused with a 400
:class:`~genops.proxy.providers.base.RequestError` naming the parameter, rather than dropped.

Answer (Gemini -> OpenAI): a ``chat.completion`` (one choice per candidate), an OpenAI error body,
or ``chat.completion.chunk`` events ending in ``data: [DONE]``. The input body is never modified:
it is the parsed request the proxy records.
"""

from __future__ import annotations

import base64
import logging
import mimetypes
import secrets
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, unquote_to_bytes, urlsplit

import orjson

from genops.proxy.providers.base import RequestError
from genops.proxy.translate.base import TranslatedRequest, Translation

log = logging.getLogger(__name__)

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})

# Gemini finishReason -> OpenAI finish_reason (anything else, e.g. OTHER or
# MALFORMED_FUNCTION_CALL, ends the answer without a filter: "stop").
FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
}

# HTTP status of a Gemini error -> OpenAI error "type".
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}

# Keywords of Gemini's Schema (an OpenAPI 3.0 subset) copied as they are; "type", "format", "enum",
# "properties", "required", "items", "anyOf" and "nullable" are converted apart. Everything else
# ("additionalProperties", "$schema", "strict", "const", "exclusiveMinimum", ...) is rejected by Gemini.
_SCHEMA_KEYS = ("title", "description", "minItems", "maxItems", "minProperties", "maxProperties", "minLength",
                "maxLength", "pattern", "example", "default", "minimum", "maximum", "propertyOrdering")
# The formats the Gemini Developer API accepts, per type (others fail the request).
_FORMATS = {"STRING": ("enum", "date-time"), "NUMBER": ("float", "double"), "INTEGER": ("int32", "int64")}
_MAX_SCHEMA_DEPTH = 32

# Common media types by extension, before the platform's table (which varies between systems).
_MIME_TYPES = {
    "jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "gif": "image/gif",
    "heic": "image/heic", "heif": "image/heif", "pdf": "application/pdf", "mp3": "audio/mp3", "wav": "audio/wav",
    "mp4": "video/mp4", "mov": "video/mov", "txt": "text/plain",
}
_AUDIO_TYPES = {"wav": "audio/wav", "mp3": "audio/mp3", "flac": "audio/flac", "aac": "audio/aac", "ogg": "audio/ogg",
                "opus": "audio/ogg", "pcm16": "audio/pcm"}

# Gemini 3 models refuse a replayed functionCall part without the thoughtSignature they sent with it,
# which the OpenAI format has no field for; Google documents this value as the signature to send
# when the real one is not available (history from another model or client).
_SIGNATURE_SENTINEL = "skip_thought_signature_validator"
_UNSIGNED_MODELS = ("gemini-1", "gemini-2", "gemma", "learnlm")  # models that do not require signatures back


# --- errors ------------------------------------------------------------------------------------


def _unsupported(message: str) -> RequestError:
    """A request the Gemini API cannot express (the Translation interface's 400)."""
    return RequestError(400, message, "invalid_request_error", "unsupported_parameter")


def _invalid(message: str) -> RequestError:
    """A request that is not a valid Chat Completions request."""
    return RequestError(400, message, "invalid_request_error", "invalid_value")


# --- request: messages -------------------------------------------------------------------------


def _object(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (for optional nested fields)."""
    return value if isinstance(value, dict) else {}


def _text_of(content: Any, where: str, allow_refusal: bool = False) -> list[dict[str, Any]]:
    """Text parts of a system/assistant/tool ``content``: a string or an array of text parts."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise _invalid(f"{where}.content must be a string or an array of content parts.")
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            text = part["text"]
        elif kind == "refusal" and allow_refusal and isinstance(part.get("refusal"), str):
            text = part["refusal"]
        else:
            raise _unsupported(f"{where}.content[{j}]: only text parts can be sent to Gemini here (got {kind!r}).")
        if text:
            parts.append({"text": text})
    return parts


def _mime_from_path(url: str, default: str) -> str:
    path = urlsplit(url).path
    extension = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    return _MIME_TYPES.get(extension) or mimetypes.guess_type(path)[0] or default


def _media(url: Any, where: str, default_mime: str) -> dict[str, Any]:
    """An image/file URL as a Gemini part: ``data:`` -> inlineData, http(s) / gs -> fileData."""
    if not isinstance(url, str) or not url:
        raise _invalid(f"{where}: a URL is required.")
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        if not comma:
            raise _invalid(f"{where}: the data: URL has no ',' before its data.")
        mime, *params = header.split(";")
        if "base64" not in params:  # a percent-encoded data: URL; Gemini wants base64
            data = base64.b64encode(unquote_to_bytes(data)).decode("ascii")
        return {"inlineData": {"mimeType": mime or default_mime, "data": data}}
    if url.startswith(("https://", "http://", "gs://")):
        return {"fileData": {"mimeType": _mime_from_path(url, default_mime), "fileUri": url}}
    raise _invalid(f"{where}: the URL must be a data: URL or an http(s):// or gs:// URL.")


def _user_parts(content: Any, where: str) -> list[dict[str, Any]]:
    """A user message's content as Gemini parts (text, images, audio, files)."""
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise _invalid(f"{where}.content must be a string or an array of content parts.")
    parts = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            if part["text"]:
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            parts.append(_media(image.get("url") if isinstance(image, dict) else image, at, "image/jpeg"))
        elif kind == "input_audio" and isinstance(part.get("input_audio"), dict):
            audio = part["input_audio"]
            mime = _AUDIO_TYPES.get(str(audio.get("format", "wav")).lower(), f"audio/{audio.get('format')}")
            parts.append({"inlineData": {"mimeType": mime, "data": audio.get("data") or ""}})
        elif kind == "file" and isinstance(part.get("file"), dict):
            file = part["file"]
            if not file.get("file_data"):
                raise _unsupported(f"{at}: OpenAI file ids mean nothing to Gemini; send the file as file_data.")
            parts.append(_media(file["file_data"], at, "application/pdf"))
        else:
            raise _unsupported(f"{at}: content parts of type {kind!r} cannot be sent to Gemini.")
    return parts


def _arguments(arguments: Any, where: str) -> dict[str, Any]:
    """A tool call's JSON ``arguments`` string as the object Gemini's ``args`` is."""
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments)
    except (orjson.JSONDecodeError, TypeError):
        raise _invalid(f"{where}.function.arguments is not valid JSON.") from None
    if not isinstance(value, dict):
        raise _invalid(f"{where}.function.arguments must be a JSON object.")
    return value


def _assistant_parts(message: dict[str, Any], where: str, call_names: dict[str, str],
                     sign: bool) -> list[dict[str, Any]]:
    """An assistant message: its text, then a ``functionCall`` part per tool call (names kept by id
    for the tool messages that answer them)."""
    parts = _text_of(message.get("content"), where, allow_refusal=True)
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise _invalid(f"{where}.tool_calls must be an array.")
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        calls = [*calls, {"type": "function", "function": legacy}]
    signed = False
    for k, call in enumerate(calls):
        at = f"{where}.tool_calls[{k}]"
        if not isinstance(call, dict) or call.get("type", "function") != "function":
            raise _unsupported(f"{at}: only function tool calls can be sent to Gemini.")
        function = _object(call.get("function"))
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise _invalid(f"{at}.function.name is required.")
        part: dict[str, Any] = {"functionCall": {"name": name, "args": _arguments(function.get("arguments"), at)}}
        if sign and not signed:  # only the first call of a turn carries a signature
            part["thoughtSignature"] = _SIGNATURE_SENTINEL
            signed = True
        parts.append(part)
        if isinstance(call.get("id"), str):
            call_names[call["id"]] = name
    return parts


def _tool_result(message: dict[str, Any], where: str, call_names: dict[str, str]) -> dict[str, Any]:
    """A ``tool`` (or legacy ``function``) message as a ``functionResponse`` part: Gemini names the
    function, OpenAI names the call, so the name comes from the assistant turn that made the call."""
    call_id = message.get("tool_call_id")
    name = call_names.get(call_id) if isinstance(call_id, str) else None
    name = name or message.get("name")
    if not isinstance(name, str) or not name:
        raise _invalid(f"{where}: tool_call_id {call_id!r} answers no tool call of an earlier assistant message.")
    text = "".join(p["text"] for p in _text_of(message.get("content"), where))
    content: Any = text
    if text[:1] in ("{", "["):  # a JSON result reaches the model as structure, as Gemini's own SDKs send it
        try:
            content = orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return {"functionResponse": {"name": name, "response": {"content": content}}}


def _contents(messages: list[Any], sign: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(systemInstruction parts, contents) of the Chat Completions ``messages``."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _invalid(f"{where} must be an object.")
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_of(message.get("content"), where))
            continue
        if role == "user":
            gemini_role, parts = "user", _user_parts(message.get("content"), where)
        elif role == "assistant":
            gemini_role, parts = "model", _assistant_parts(message, where, call_names, sign)
        elif role in ("tool", "function"):
            gemini_role, parts = "user", [_tool_result(message, where, call_names)]
        else:
            raise _invalid(f"{where}.role {role!r} is not a Chat Completions role.")
        if not parts:
            continue
        if contents and contents[-1]["role"] == gemini_role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": gemini_role, "parts": parts})
    return system, contents


# --- request: schemas and tools ----------------------------------------------------------------


def _enum_text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _schema(node: Any, refs: Mapping[str, Any], where: str, depth: int = 0, seen: frozenset[str] = frozenset()
            ) -> dict[str, Any]:
    """One JSON-schema node in Gemini's Schema subset (a new dict; the client's schema is left as it is)."""
    if depth > _MAX_SCHEMA_DEPTH:
        raise _unsupported(f"{where}: the schema is nested deeper than {_MAX_SCHEMA_DEPTH} levels.")
    if not isinstance(node, dict):
        return {}  # `true` / `{}`: any value
    ref = node.get("$ref")
    if isinstance(ref, str):
        if ref in seen:
            raise _unsupported(f"{where}: recursive schemas ({ref}) cannot be sent to Gemini.")
        if ref not in refs:
            raise _unsupported(f"{where}: $ref {ref!r} is not a definition of this schema.")
        resolved = _schema(refs[ref], refs, where, depth + 1, seen | {ref})
        siblings = {k: v for k, v in node.items() if k != "$ref"}  # a description next to the $ref wins
        return {**resolved, **_schema(siblings, refs, where, depth + 1, seen)} if siblings else resolved

    out: dict[str, Any] = {}
    nullable = node.get("nullable") is True
    options = node.get("anyOf") if isinstance(node.get("anyOf"), list) else node.get("oneOf")
    if isinstance(options, list):
        kept = []
        for k, option in enumerate(options):
            if isinstance(option, dict) and option.get("type") == "null":
                nullable = True  # Optional[X] is anyOf [X, null]: Gemini's nullable
            else:
                kept.append(_schema(option, refs, f"{where}.anyOf[{k}]", depth + 1, seen))
        if len(kept) == 1:
            out.update(kept[0])
        elif kept:
            out["anyOf"] = kept
    for k, part in enumerate(node.get("allOf") or ()):
        merged = _schema(part, refs, f"{where}.allOf[{k}]", depth + 1, seen)
        out.setdefault("properties", {}).update(merged.pop("properties", {}))
        out["required"] = [*out.get("required", ()), *merged.pop("required", ())]
        for key, value in merged.items():
            out.setdefault(key, value)
    if out.get("properties") == {}:
        del out["properties"]
    if out.get("required") == []:
        del out["required"]

    kind = node.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        nullable = nullable or len(kinds) < len(kind)
        if len(kinds) > 1:
            out["anyOf"] = [{"type": str(k).upper()} for k in kinds]
        kind = kinds[0] if len(kinds) == 1 else None
    if kind == "null":
        nullable = True
    elif isinstance(kind, str):
        out["type"] = kind.upper()

    if "const" in node or isinstance(node.get("enum"), list):
        values = [node["const"]] if "const" in node else node["enum"]
        if None in values:
            nullable = True
        out["enum"] = [_enum_text(v) for v in values if v is not None]
        out.setdefault("type", "STRING")
        if out["type"] != "STRING":  # Gemini enums are strings; other types say so by format
            out["format"] = "enum"

    properties = node.get("properties")
    if isinstance(properties, dict):
        out["properties"] = {**out.get("properties", {}), **{
            name: _schema(value, refs, f"{where}.properties.{name}", depth + 1, seen)
            for name, value in properties.items()}}
    required = node.get("required")
    if isinstance(required, list) and "properties" in out:
        names = [r for r in dict.fromkeys([*out.get("required", ()), *required]) if r in out["properties"]]
        if names:
            out["required"] = names
    items = node.get("items")
    if isinstance(items, list):  # tuple validation has no Gemini form: the first item's schema
        items = items[0] if items else None
    if isinstance(items, dict):
        out["items"] = _schema(items, refs, f"{where}.items", depth + 1, seen)

    fmt = node.get("format")
    if isinstance(fmt, str) and "format" not in out and fmt in _FORMATS.get(out.get("type", ""), ()):
        out["format"] = fmt
    for key in _SCHEMA_KEYS:
        value = node.get(key)
        if value is not None:
            out[key] = value
    if nullable:
        out["nullable"] = True
    return out


def gemini_schema(schema: Any, where: str) -> dict[str, Any]:
    """A JSON schema (tool parameters, ``response_format``) as Gemini's Schema: local ``$ref``
    (``#/$defs/...``, ``#/definitions/...``) inlined, unsupported keywords dropped."""
    refs: dict[str, Any] = {"#": schema}
    if isinstance(schema, dict):
        for key in ("$defs", "definitions"):
            definitions = schema.get(key)
            if isinstance(definitions, dict):
                refs.update({f"#/{key}/{name}": value for name, value in definitions.items()})
    return _schema(schema, refs, where)


def _declarations(tools: Any) -> list[dict[str, Any]]:
    """OpenAI ``tools`` as Gemini function declarations."""
    if not isinstance(tools, list):
        raise _invalid("tools must be an array.")
    declarations = []
    for k, tool in enumerate(tools):
        where = f"tools[{k}]"
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise _unsupported(f"{where}: only function tools can be sent to Gemini (got {kind!r}).")
        function = _object(tool.get("function"))
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise _invalid(f"{where}.function.name is required.")
        declaration: dict[str, Any] = {"name": name}
        description = function.get("description")
        if isinstance(description, str) and description:
            declaration["description"] = description
        parameters = function.get("parameters")
        if isinstance(parameters, dict):
            schema = gemini_schema(parameters, f"{where}.function.parameters")
            # Gemini refuses an OBJECT without properties: a function without parameters has none.
            if schema.get("properties") or schema.get("type", "OBJECT") != "OBJECT":
                declaration["parameters"] = schema
        declarations.append(declaration)
    return declarations


def _allowed_names(tools: Any, where: str) -> list[str]:
    names = []
    for tool in tools if isinstance(tools, list) else ():
        name = _object(_object(tool).get("function")).get("name")
        if not isinstance(name, str):
            raise _unsupported(f"{where}: only function tools can be allowed when the route lands on Gemini.")
        names.append(name)
    return names


def _tool_config(choice: Any, declarations: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(toolConfig or None, declarations to send) for an OpenAI ``tool_choice``."""
    if choice is None or choice == "auto":
        return None, declarations
    if choice == "none":
        return {"functionCallingConfig": {"mode": "NONE"}}, declarations
    if choice == "required":
        return {"functionCallingConfig": {"mode": "ANY"}}, declarations
    kind = _object(choice).get("type")
    if kind == "function":
        name = _object(choice.get("function")).get("name")
        if not isinstance(name, str) or not name:
            raise _invalid("tool_choice.function.name is required.")
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}, declarations
    if kind == "allowed_tools" and isinstance(choice.get("allowed_tools"), dict):
        allowed = choice["allowed_tools"]
        names = _allowed_names(allowed.get("tools"), "tool_choice.allowed_tools")
        if allowed.get("mode") == "required":
            return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": names}}, declarations
        # Gemini restricts names only in ANY mode: for "auto", send only the allowed declarations.
        return None, [d for d in declarations if d["name"] in names]
    raise _unsupported(f"tool_choice {choice!r} cannot be sent to Gemini.")


# --- request: parameters -----------------------------------------------------------------------


def _reject_unsupported(body: Mapping[str, Any]) -> None:
    """Parameters whose effect a client relies on and Gemini's generateContent cannot give back."""
    if body.get("logprobs") or body.get("top_logprobs") is not None:
        raise _unsupported("logprobs / top_logprobs are not supported when the route lands on Gemini.")
    if body.get("logit_bias"):
        raise _unsupported("logit_bias is not supported when the route lands on Gemini.")
    if body.get("audio") or "audio" in (body.get("modalities") or ()):
        raise _unsupported("audio output is not supported when the route lands on Gemini.")
    if body.get("prediction"):
        raise _unsupported("prediction (predicted outputs) is not supported when the route lands on Gemini.")
    if body.get("web_search_options") is not None:
        raise _unsupported("web_search_options is not supported when the route lands on Gemini.")
    if body.get("functions") is not None or body.get("function_call") is not None:
        raise _unsupported("functions / function_call (deprecated) are not supported when the route lands on Gemini; "
                           "use tools / tool_choice.")


def _generation_config(body: Mapping[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    for openai_name, gemini_name in (("temperature", "temperature"), ("top_p", "topP"), ("top_k", "topK"),
                                     ("n", "candidateCount"), ("seed", "seed")):
        if body.get(openai_name) is not None:
            config[gemini_name] = body[openai_name]
    # Penalties are sent only when set to something: some Gemini models refuse the field itself,
    # and many clients send the default 0.
    for openai_name, gemini_name in (("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")):
        if body.get(openai_name):
            config[gemini_name] = body[openai_name]
    stop = body.get("stop")
    if isinstance(stop, str):
        config["stopSequences"] = [stop]
    elif isinstance(stop, list) and stop:
        config["stopSequences"] = stop
    response_format = body.get("response_format")
    kind = _object(response_format).get("type")
    if kind in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        spec = _object(response_format).get("json_schema") if kind == "json_schema" else None
        if isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
            config["responseSchema"] = gemini_schema(spec["schema"], "response_format.json_schema.schema")
    elif response_format is not None and kind != "text":
        raise _unsupported(f"response_format {kind!r} cannot be sent to Gemini.")
    return config


def gemini_request(body: Any, target_model: str) -> dict[str, Any]:
    """The ``generateContent`` request body for a parsed Chat Completions ``body``."""
    if not isinstance(body, dict):
        raise _invalid("The request body must be a JSON object.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages must be a non-empty array.")
    _reject_unsupported(body)
    sign = not target_model.startswith(_UNSIGNED_MODELS)
    system, contents = _contents(messages, sign)
    if not contents:
        raise _invalid("messages needs at least one non-empty user, assistant or tool message for Gemini.")
    request: dict[str, Any] = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": system}
    tools = body.get("tools")
    if tools:
        declarations = _declarations(tools)
        tool_config, declarations = _tool_config(body.get("tool_choice"), declarations)
        if declarations:
            request["tools"] = [{"functionDeclarations": declarations}]
        if tool_config is not None:
            request["toolConfig"] = tool_config
    config = _generation_config(body)
    if config:
        request["generationConfig"] = config
    return request


# --- answer ------------------------------------------------------------------------------------


def _call_id() -> str:
    return "call_" + secrets.token_hex(12)


def openai_usage(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Gemini ``usageMetadata`` as OpenAI ``usage``: output counts thoughts (billed as output), the
    prompt counts the tool-use prompt, as GenOps' own Gemini reader counts them."""
    def count(key: str) -> int:
        value = metadata.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    prompt = count("promptTokenCount") + count("toolUsePromptTokenCount")
    thoughts = count("thoughtsTokenCount")
    completion = count("candidatesTokenCount") + thoughts
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": count("cachedContentTokenCount")},
            "completion_tokens_details": {"reasoning_tokens": thoughts}}


def _finish_reason(reason: str, called: bool) -> str:
    mapped = FINISH_REASONS.get(reason, "stop")
    return "tool_calls" if called and mapped == "stop" else mapped


def _read_parts(candidate: Mapping[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """(texts, OpenAI tool calls) of one candidate's parts; thoughts are not part of the answer."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    content = candidate.get("content")
    for part in (content.get("parts") if isinstance(content, dict) else None) or ():
        if not isinstance(part, dict) or part.get("thought"):
            continue
        text = part.get("text")
        if isinstance(text, str):
            texts.append(text)
        call = part.get("functionCall")
        if isinstance(call, dict):
            calls.append({"id": _call_id(), "type": "function",
                          "function": {"name": str(call.get("name") or ""),
                                       "arguments": orjson.dumps(call.get("args") or {}).decode()}})
    return texts, calls


def _candidates(data: Mapping[str, Any]) -> list[tuple[int, Mapping[str, Any]]]:
    """(choice index, candidate) pairs; a prompt Gemini blocked (no candidates, a ``blockReason``)
    becomes one empty candidate stopped by the filter."""
    candidates = data.get("candidates")
    if isinstance(candidates, list) and candidates:
        return [(c.get("index", i) if isinstance(c.get("index"), int) else i, c)
                for i, c in enumerate(candidates) if isinstance(c, dict)]
    feedback = data.get("promptFeedback")
    if isinstance(feedback, dict) and feedback.get("blockReason"):
        return [(0, {"finishReason": "SAFETY"})]
    return []


def openai_error(status: int, body: bytes) -> bytes:
    """A Gemini error (``{"error": {"code", "message", "status"}}``, any status) or any other
    failed answer as an OpenAI error body."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, list) and data:  # an error inside a JSON-array stream
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or f"The Gemini API answered HTTP {status}.")
        code = error.get("status") or error.get("code") or status
    else:
        text = body[:500].decode("utf-8", "replace").strip()
        message = f"The Gemini API answered HTTP {status}" + (f": {text}" if text else " with an empty body.")
        code = status
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 or status < 400 else "invalid_request_error")
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None,
                                   "code": code.lower() if isinstance(code, str) else str(code)}})


def chat_completion(data: Mapping[str, Any], model: str) -> dict[str, Any]:
    """A whole ``GenerateContentResponse`` as a ``chat.completion``."""
    choices = []
    for index, candidate in _candidates(data):
        texts, calls = _read_parts(candidate)
        message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
        if calls:
            message["tool_calls"] = calls
        reason = candidate.get("finishReason")
        choices.append({"index": index, "message": message, "logprobs": None,
                        "finish_reason": _finish_reason(str(reason), bool(calls)) if reason else "stop"})
    response_id = data.get("responseId")
    completion: dict[str, Any] = {
        "id": f"chatcmpl-{response_id}" if isinstance(response_id, str) and response_id else f"chatcmpl-{secrets.token_hex(12)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": data.get("modelVersion") or model,
        "choices": choices,
    }
    usage = data.get("usageMetadata")
    if isinstance(usage, dict):
        completion["usage"] = openai_usage(usage)
    return completion


class _Choice:
    """What a stream has said so far for one candidate."""

    __slots__ = ("called", "calls", "finished")

    def __init__(self) -> None:
        self.calls = 0  # tool calls sent (the next call's index)
        self.called = False
        self.finished = False


class GeminiChatStream:
    """``streamGenerateContent?alt=sse`` events in, ``chat.completion.chunk`` events out.

    Every chunk carries the id (``chatcmpl-`` + Gemini's ``responseId``), ``created`` and model of the
    first event. A candidate's first event sends the ``role`` delta, its text parts ``content`` deltas,
    its function calls whole ``tool_calls`` deltas (Gemini streams a call in one piece), its
    ``finishReason`` a chunk of its own; :meth:`finish` adds the usage chunk (when asked for, from
    the last ``usageMetadata``) and ``data: [DONE]``.
    """

    __slots__ = ("_buffer", "_choices", "_created", "_data", "_head", "_include_usage", "_model", "_scan", "_tail",
                 "_usage", "_warned")

    def __init__(self, include_usage: bool, model: str = "") -> None:
        self._include_usage = include_usage
        self._model = model
        self._created = int(time.time())
        # The bytes every chunk starts with (id, object, created, model), made once at the first event.
        self._head: bytes | None = None
        # OpenAI sends "usage": null on every chunk but the last when usage is asked for.
        self._tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"
        self._buffer = b""  # an unfinished line
        self._scan = 0  # bytes of the buffer already searched for a line end
        self._data: list[bytes] = []  # data: lines of the event being read
        self._choices: dict[int, _Choice] = {}
        self._usage: dict[str, Any] | None = None
        self._warned = False

    # -- framing ------------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> bytes:
        """Gemini SSE bytes in (any split), whole OpenAI events out (``b""`` until one is complete)."""
        if self._buffer:
            data, scan = self._buffer + chunk, self._scan
        else:
            data, scan = chunk, 0
        out: list[bytes] = []
        start = 0
        while (end := data.find(b"\n", scan)) != -1:
            line_end = end - 1 if end > start and data[end - 1] == 0x0D else end
            self._line(data[start:line_end], out)
            start = scan = end + 1
        self._buffer = data[start:]
        self._scan = len(self._buffer)
        return b"".join(out)

    def finish(self) -> bytes:
        """An unterminated last event, the usage chunk (``include_usage``), then ``data: [DONE]``."""
        out: list[bytes] = []
        if self._buffer:
            self._line(self._buffer.rstrip(b"\r"), out)
            self._buffer, self._scan = b"", 0
        self._line(b"", out)
        if self._include_usage and self._usage is not None:
            out.append(self._head_bytes() + b',"choices":[],"usage":' + orjson.dumps(openai_usage(self._usage))
                       + b"}\n\n")
        out.append(b"data: [DONE]\n\n")
        return b"".join(out)

    def _line(self, line: bytes, out: list[bytes]) -> None:
        """One SSE line: ``data:`` lines gather, a blank line ends the event; comments and other
        fields are ignored."""
        if line.startswith(b"data:"):
            self._data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif not line and self._data:
            payload = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
            self._data = []
            try:
                data = orjson.loads(payload)
            except orjson.JSONDecodeError:
                if not self._warned:  # once per stream: the rest of it is likely the same
                    self._warned = True
                    log.warning("gemini stream event is not JSON", extra={"event_bytes": len(payload)})
                return
            if isinstance(data, dict):
                self._chunks(data, out)

    # -- events -------------------------------------------------------------------------------
    def _head_bytes(self, data: Mapping[str, Any] | None = None) -> bytes:
        """``data: {"id":...,"object":...,"created":...,"model":...`` (from the first event's ids)."""
        if self._head is None:
            response_id = data.get("responseId") if data is not None else None
            if data is not None and data.get("modelVersion"):
                self._model = str(data["modelVersion"])
            identity = {"id": f"chatcmpl-{response_id}" if isinstance(response_id, str) and response_id
                        else f"chatcmpl-{secrets.token_hex(12)}",
                        "object": "chat.completion.chunk", "created": self._created, "model": self._model}
            self._head = b"data: " + orjson.dumps(identity)[:-1]
        return self._head

    def _delta(self, index: int, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choices = orjson.dumps([{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}])
        return self._head_bytes() + b',"choices":' + choices + self._tail

    def _chunks(self, data: dict[str, Any], out: list[bytes]) -> None:
        """The OpenAI chunks of one Gemini event."""
        if "error" in data:  # an error after the stream started: OpenAI streams it as an error event
            out.append(b"data: " + openai_error(500, orjson.dumps(data)) + b"\n\n")
            return
        self._head_bytes(data)
        usage = data.get("usageMetadata")
        if isinstance(usage, dict):
            self._usage = usage
        for index, candidate in _candidates(data):
            choice = self._choices.get(index)
            if choice is None:
                choice = self._choices[index] = _Choice()
                out.append(self._delta(index, {"role": "assistant", "content": ""}))
            if choice.finished:
                continue
            texts, calls = _read_parts(candidate)
            delta: dict[str, Any] = {}
            if texts:
                text = texts[0] if len(texts) == 1 else "".join(texts)
                if text:
                    delta["content"] = text
            if calls:
                delta["tool_calls"] = [{"index": choice.calls + k, **call} for k, call in enumerate(calls)]
                choice.calls += len(calls)
                choice.called = True
            if delta:
                out.append(self._delta(index, delta))
            reason = candidate.get("finishReason")
            if reason:
                choice.finished = True
                out.append(self._delta(index, {}, _finish_reason(str(reason), choice.called)))


class OpenAIToGemini:
    """An OpenAI Chat Completions client on a Gemini API target."""

    client_format = "openai.chat"
    target_format = "gemini.generate"

    def request(self, body: Any, target_model: str, stream: bool) -> TranslatedRequest:
        """``/v1beta/models/{model}:generateContent``, or ``:streamGenerateContent`` with ``alt=sse``.
        No headers: the router adds the key."""
        model = target_model.removeprefix("models/")
        payload = gemini_request(body, model)
        method = "streamGenerateContent" if stream else "generateContent"
        return TranslatedRequest(f"/v1beta/models/{quote(model, safe='')}:{method}", "alt=sse" if stream else "",
                                 orjson.dumps(payload), _NO_HEADERS)

    def response(self, status: int, body: bytes, model: str = "") -> bytes:
        """A whole answer as a ``chat.completion``, or an OpenAI error body. ``model`` (the target's)
        names the answer when Gemini's lacks ``modelVersion``."""
        if status >= 400:
            return openai_error(status, body)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return openai_error(status, body)
        if not isinstance(data, dict) or "error" in data:
            return openai_error(status, body)
        return orjson.dumps(chat_completion(data, model))

    def stream(self, include_usage: bool, model: str = "") -> GeminiChatStream:
        """A translator for one ``streamGenerateContent?alt=sse`` answer."""
        return GeminiChatStream(include_usage, model)


#: The translation (stateless: one instance serves every call). Typed so that mypy checks the class
#: against the Translation protocol, and its stream against StreamTranslator.
TRANSLATION: Translation = OpenAIToGemini()
