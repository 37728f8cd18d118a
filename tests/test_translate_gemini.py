"""An OpenAI-format client on a Gemini target: the Chat Completions <-> generateContent translation.

The fake upstream answers in Gemini's exact wire format (whole, ``alt=sse`` streams, errors); the
translated answers are judged by the openai SDK: its types (``ChatCompletion`` /
``ChatCompletionChunk.model_validate``) and its client, driven through an httpx transport that does
for one route what the router does (translate, send, translate back).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types import ErrorObject
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel

from genops.proxy.providers.base import RequestError
from genops.proxy.translate.openai_gemini import TRANSLATION, OpenAIToGemini, gemini_schema

pytestmark = pytest.mark.integration

MODEL = "gemini-2.0-flash"
USER = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {
    "type": "object",
    "properties": {
        "location": {"type": "string", "description": "City and country"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 2},
    },
    "required": ["location", "unit", "days"],
    "additionalProperties": False,
    "$schema": "http://json-schema.org/draft-07/schema#",
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather", "parameters": WEATHER,
                                      "strict": True}},
    {"type": "function", "function": {"name": "search", "description": "Web search",
                                      "parameters": {"type": "object", "properties": {"q": {"type": "string"}},
                                                     "required": ["q"]}}},
]
WEATHER_ARGS = {"location": "Paris, France", "unit": "celsius", "days": 2}


# --- the route, in-process ---------------------------------------------------------------------


def send(fake: Any, body: dict[str, Any], stream: bool = False, headers: dict[str, str] | None = None) -> httpx.Response:
    """The translated request sent to the fake Gemini API, the key added as the router adds it."""
    request = TRANSLATION.request(body, MODEL, stream)
    assert dict(request.headers) == {}  # the router adds the key; the translation never does
    url = fake.url + request.tail + (f"?{request.query}" if request.query else "")
    return httpx.post(url, content=request.body, headers={"content-type": "application/json",
                                                          "x-goog-api-key": "AIza-test", **(headers or {})})


def whole(fake: Any, body: dict[str, Any], **headers: str) -> tuple[int, dict[str, Any]]:
    response = send(fake, body, headers=headers)
    return response.status_code, orjson.loads(TRANSLATION.response(response.status_code, response.content))


def sse_events(data: bytes) -> list[bytes]:
    """The ``data:`` payloads of an OpenAI event stream, checking its framing."""
    assert data.endswith(b"\n\n") and b"\r" not in data
    events = data[:-2].split(b"\n\n")
    assert all(e.startswith(b"data: ") and b"\n" not in e for e in events)
    return [e[6:] for e in events]


def streamed(fake: Any, body: dict[str, Any], include_usage: bool = False, byte_by_byte: bool = False,
             **headers: str) -> tuple[list[dict[str, Any]], bytes]:
    """(OpenAI chunks, Gemini's raw stream): every chunk validated by the SDK's type, [DONE] last."""
    raw = send(fake, body, stream=True, headers=headers)
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("text/event-stream")
    translator = TRANSLATION.stream(include_usage)
    pieces = [raw.content[i : i + 1] for i in range(len(raw.content))] if byte_by_byte else [raw.content]
    out = b"".join(translator.feed(piece) for piece in pieces) + translator.finish()
    events = sse_events(out)
    assert events[-1] == b"[DONE]" and b"[DONE]" not in events[:-1]
    chunks = [orjson.loads(e) for e in events[:-1]]
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1
    return chunks, raw.content


class RouteTransport(httpx.BaseTransport):
    """What the router does for a route landing on Gemini, for one openai SDK client: the SDK's request
    translated and sent to the fake Gemini API, the answer (whole or streamed) translated back."""

    def __init__(self, base: str, headers: dict[str, str] | None = None) -> None:
        self.base = base
        self.headers = headers or {}
        self.client = httpx.Client(timeout=30)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.read())
        stream = bool(body.get("stream"))
        try:
            translated = TRANSLATION.request(body, MODEL, stream)
        except RequestError as error:
            content = orjson.dumps({"error": {"message": error.message, "type": error.error_type, "param": None,
                                              "code": error.code}})
            return httpx.Response(error.status, headers={"content-type": "application/json"}, content=content)
        url = self.base + translated.tail + (f"?{translated.query}" if translated.query else "")
        upstream = self.client.send(self.client.build_request(
            "POST", url, content=translated.body,
            headers={"content-type": "application/json", "x-goog-api-key": "AIza-test", **self.headers}), stream=True)
        if not stream or upstream.status_code >= 400:
            content = TRANSLATION.response(upstream.status_code, upstream.read())
            upstream.close()
            return httpx.Response(upstream.status_code, headers={"content-type": "application/json"}, content=content)
        translator = TRANSLATION.stream(bool((body.get("stream_options") or {}).get("include_usage")))

        def events() -> Iterator[bytes]:
            try:
                for piece in upstream.iter_raw():
                    out = translator.feed(piece)
                    if out:
                        yield out
                yield translator.finish()
            finally:
                upstream.close()

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=events())


def sdk(fake: Any, **headers: str) -> openai.OpenAI:
    transport = RouteTransport(fake.url, headers)
    return openai.OpenAI(base_url="http://genops.test/v1", api_key="sk-test", max_retries=0,
                         http_client=httpx.Client(transport=transport))


def last_request(fake: Any) -> tuple[str, str, dict[str, Any]]:
    """(path, query, JSON body) of the last request the fake Gemini API received."""
    request = fake.requests()[-1]
    return request["path"], request["query"], json.loads(request["body"])


# --- request -----------------------------------------------------------------------------------


def test_request_maps_roles_parts_tools_and_parameters_without_touching_the_body():
    body = {
        "model": "support-bot",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp?size=2", "detail": "low"}},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
            ]},
            {"role": "user", "content": "and the weather?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}},
                {"id": "call_b", "type": "function", "function": {"name": "search", "arguments": "{}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_b", "content": "nothing found"},
            {"role": "tool", "tool_call_id": "call_a", "content": '{"temp": 18}'},
            {"role": "assistant", "content": "18 degrees."},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": TOOLS,
        "tool_choice": "required",
        "max_completion_tokens": 100, "temperature": 0.2, "top_p": 0.9, "stop": "END", "n": 2, "seed": 7,
        "presence_penalty": 0, "frequency_penalty": 0.5,
        "response_format": {"type": "json_object"},
        "user": "u-1", "parallel_tool_calls": True, "stream_options": {"include_usage": True},
    }
    before = copy.deepcopy(body)
    request = TRANSLATION.request(body, MODEL, stream=False)
    assert body == before  # the parsed body is the request the proxy records: never modified
    assert (request.tail, request.query) == (f"/v1beta/models/{MODEL}:generateContent", "")
    assert orjson.loads(request.body) == {
        "contents": [
            {"role": "user", "parts": [
                {"text": "Look:"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp?size=2"}},
                {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
                {"text": "and the weather?"},
            ]},
            {"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}},
                {"functionCall": {"name": "search", "args": {}}},
            ]},
            {"role": "user", "parts": [  # names found from the calls' ids; JSON results as structure
                {"functionResponse": {"name": "search", "response": {"content": "nothing found"}}},
                {"functionResponse": {"name": "get_weather", "response": {"content": {"temp": 18}}}},
            ]},
            {"role": "model", "parts": [{"text": "18 degrees."}]},
            {"role": "user", "parts": [{"text": "Thanks"}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Answer in French."}]},
        "tools": [{"functionDeclarations": [
            {"name": "get_weather", "description": "Current weather", "parameters": {
                "type": "OBJECT",
                "properties": {"location": {"type": "STRING", "description": "City and country"},
                               "unit": {"type": "STRING", "enum": ["celsius", "fahrenheit"]},
                               "days": {"type": "INTEGER", "minimum": 1, "maximum": 2}},
                "required": ["location", "unit", "days"]}},
            {"name": "search", "description": "Web search", "parameters": {
                "type": "OBJECT", "properties": {"q": {"type": "STRING"}}, "required": ["q"]}},
        ]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
        "generationConfig": {"maxOutputTokens": 100, "temperature": 0.2, "topP": 0.9, "candidateCount": 2, "seed": 7,
                             "frequencyPenalty": 0.5, "stopSequences": ["END"], "responseMimeType": "application/json"},
    }
    streaming = TRANSLATION.request(body, "models/" + MODEL, stream=True)
    assert (streaming.tail, streaming.query) == (f"/v1beta/models/{MODEL}:streamGenerateContent", "alt=sse")


def test_schemas_are_cut_to_geminis_subset():
    class Address(BaseModel):
        city: str
        zip: str | None = None

    class Order(BaseModel):
        id: int
        ship_to: Address
        tags: list[str]
        priority: int | str

    schema = openai.pydantic_function_tool(Order)["function"]["parameters"]  # strict: $defs, $ref, additionalProperties
    assert "$defs" in schema
    assert gemini_schema(schema, "p") == {
        "type": "OBJECT", "title": "Order", "required": ["id", "ship_to", "tags", "priority"],
        "properties": {
            "id": {"type": "INTEGER", "title": "Id"},
            "ship_to": {"type": "OBJECT", "title": "Address", "required": ["city", "zip"],
                        "properties": {"city": {"type": "STRING", "title": "City"},
                                       "zip": {"type": "STRING", "title": "Zip", "nullable": True}}},
            "tags": {"type": "ARRAY", "title": "Tags", "items": {"type": "STRING"}},
            "priority": {"anyOf": [{"type": "INTEGER"}, {"type": "STRING"}], "title": "Priority"},
        },
    }
    assert gemini_schema({"type": ["string", "null"], "format": "uri", "const": "x"}, "p") == {
        "type": "STRING", "enum": ["x"], "nullable": True}
    assert gemini_schema({"type": "integer", "enum": [1, 2], "format": "int64"}, "p") == {
        "type": "INTEGER", "enum": ["1", "2"], "format": "enum"}
    recursive = {"$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
                 "$ref": "#/$defs/Node"}
    with pytest.raises(RequestError) as caught:
        gemini_schema(recursive, "tools[0].function.parameters")
    assert caught.value.status == 400 and "recursive" in caught.value.message


@pytest.mark.parametrize(("change", "words"), [
    ({"logprobs": True}, "logprobs"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"tools": [{"type": "custom", "custom": {"name": "grep"}}]}, "only function tools"),
    ({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-abc"}}]}]}, "file ids"),
    ({"messages": [{"role": "tool", "tool_call_id": "call_x", "content": "1"}]}, None),
    ({"messages": [{"role": "system", "content": "only a system prompt"}]}, None),
])
def test_what_gemini_cannot_express_is_a_clear_400(change, words):
    with pytest.raises(RequestError) as caught:
        TRANSLATION.request({"messages": USER, **change}, MODEL, stream=False)
    error = caught.value
    assert error.status == 400 and error.error_type == "invalid_request_error"
    if words is not None:
        assert words in error.message and error.code == "unsupported_parameter"
    else:
        assert error.code == "invalid_value"


def test_replayed_calls_carry_a_signature_placeholder_only_for_models_that_check_it():
    messages = USER + [{"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
        {"id": "c2", "type": "function", "function": {"name": "b", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "x"}, {"role": "tool", "tool_call_id": "c2", "content": "y"}]
    newer = orjson.loads(TRANSLATION.request({"messages": messages}, "gemini-3-pro-preview", False).body)
    assert [p.get("thoughtSignature") for p in newer["contents"][1]["parts"]] == ["skip_thought_signature_validator", None]
    older = orjson.loads(TRANSLATION.request({"messages": messages}, "gemini-2.5-flash", False).body)
    assert all("thoughtSignature" not in p for p in older["contents"][1]["parts"])


# --- whole answers -------------------------------------------------------------------------------


def test_plain_answer(fake_upstream):
    status, completion = whole(fake_upstream, {"model": "support-bot", "messages": USER})
    assert status == 200
    result = ChatCompletion.model_validate(completion)
    path, query, sent = last_request(fake_upstream)
    assert (path, query) == (f"/v1beta/models/{MODEL}:generateContent", "")
    assert sent == {"contents": [{"role": "user", "parts": [{"text": "What is the weather in Paris?"}]}]}
    assert result.object == "chat.completion" and result.id.startswith("chatcmpl-") and len(result.id) > 12
    assert result.model == MODEL  # Gemini's modelVersion
    [choice] = result.choices
    assert choice.index == 0 and choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert choice.message.content == "Hello! This is a fake reply about: What is the weather in Paris?"
    assert choice.message.tool_calls is None
    # usage is Gemini's usageMetadata, read from the same answer untranslated
    raw = orjson.loads(send(fake_upstream, {"messages": USER}).content)["usageMetadata"]
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (
        raw["promptTokenCount"], raw["candidatesTokenCount"], raw["totalTokenCount"])

    via_sdk = sdk(fake_upstream).chat.completions.create(model="support-bot", messages=USER)
    assert via_sdk.choices[0].message.content == choice.message.content


def test_system_prompt_and_multi_turn(fake_upstream):
    messages = [{"role": "system", "content": "Reply like a pirate."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Ahoy!"},
                {"role": "user", "content": "Weather?"}]
    result = sdk(fake_upstream).chat.completions.create(model="support-bot", messages=messages)
    _, _, sent = last_request(fake_upstream)
    assert sent["systemInstruction"] == {"parts": [{"text": "Reply like a pirate."}]}
    assert [c["role"] for c in sent["contents"]] == ["user", "model", "user"]
    # the fake quotes the first words of the prompt: every turn, then the system prompt, reached it
    assert result.choices[0].message.content == "Hello! This is a fake reply about: Hi Ahoy! Weather? Reply like a"


def test_tool_call_then_tool_result(fake_upstream):
    client = sdk(fake_upstream)
    first = client.chat.completions.create(model="support-bot", messages=USER, tools=TOOLS)
    ChatCompletion.model_validate(first.model_dump())
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == WEATHER_ARGS
    _, _, sent = last_request(fake_upstream)
    declared = sent["tools"][0]["functionDeclarations"][0]["parameters"]
    assert "additionalProperties" not in declared and "$schema" not in declared and "strict" not in declared

    messages = [*USER, choice.message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"}]
    second = client.chat.completions.create(model="support-bot", messages=messages, tools=TOOLS)
    _, _, sent = last_request(fake_upstream)
    assert sent["contents"][-1] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_weather", "response": {"content": "18 degrees and sunny"}}}]}
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.tool_calls is None
    # the fake quotes the function response it got: the tool's text reached Gemini under the function's name
    assert second.choices[0].message.content.startswith("The get_weather tool returned: ")
    assert "18 degrees and sunny" in second.choices[0].message.content


def test_tool_choice(fake_upstream):
    client = sdk(fake_upstream)
    named = client.chat.completions.create(model="support-bot", messages=USER, tools=TOOLS,
                                           tool_choice={"type": "function", "function": {"name": "search"}})
    assert last_request(fake_upstream)[2]["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["search"]}}
    call = named.choices[0].message.tool_calls[0]
    assert call.function.name == "search" and json.loads(call.function.arguments) == {"q": "fake search query"}

    none = client.chat.completions.create(model="support-bot", messages=USER, tools=TOOLS, tool_choice="none")
    assert last_request(fake_upstream)[2]["toolConfig"] == {"functionCallingConfig": {"mode": "NONE"}}
    assert none.choices[0].message.tool_calls is None and none.choices[0].finish_reason == "stop"

    class Lookup(BaseModel):
        """Look an order up."""

        order_id: str
        quantity: int

    parsed = client.chat.completions.parse(model="support-bot", messages=USER, tools=[openai.pydantic_function_tool(Lookup)])
    arguments = parsed.choices[0].message.tool_calls[0].function.parsed_arguments
    assert isinstance(arguments, Lookup) and arguments.quantity == 3


def test_json_modes(fake_upstream):
    client = sdk(fake_upstream)
    plain = client.chat.completions.create(model="support-bot", messages=USER, response_format={"type": "json_object"})
    assert last_request(fake_upstream)[2]["generationConfig"] == {"responseMimeType": "application/json"}
    assert isinstance(json.loads(plain.choices[0].message.content), dict)

    class City(BaseModel):
        name: str
        population: int

    parsed = client.chat.completions.parse(model="support-bot", messages=USER, response_format=City)
    config = last_request(fake_upstream)[2]["generationConfig"]
    assert config["responseSchema"] == {"type": "OBJECT", "title": "City", "required": ["name", "population"],
                                        "properties": {"name": {"type": "STRING", "title": "Name"},
                                                       "population": {"type": "INTEGER", "title": "Population"}}}
    city = parsed.choices[0].message.parsed
    assert isinstance(city, City) and city.population == 3


# --- streams -----------------------------------------------------------------------------------


def test_streamed_text(fake_upstream):
    chunks, raw = streamed(fake_upstream, {"messages": USER, "stream": True})
    path, query, _ = last_request(fake_upstream)
    assert (path, query) == (f"/v1beta/models/{MODEL}:streamGenerateContent", "alt=sse")
    assert raw.count(b"\r\n\r\n") > 5  # Gemini's framing, many events
    assert chunks[0]["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                     "finish_reason": None}]
    assert chunks[-1]["choices"][0]["delta"] == {} and chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in chunks)  # not asked for
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "Hello! This is a fake reply about: What is the weather in Paris?"
    assert chunks[0]["id"] == "chatcmpl-" + orjson.loads(raw.split(b"\r\n\r\n")[0][6:])["responseId"]

    events = list(sdk(fake_upstream).chat.completions.create(model="support-bot", messages=USER, stream=True))
    assert "".join(e.choices[0].delta.content or "" for e in events if e.choices) == text


def test_streamed_tool_call(fake_upstream):
    chunks, _ = streamed(fake_upstream, {"messages": USER, "tools": TOOLS, "stream": True})
    calls = [c["choices"][0]["delta"]["tool_calls"] for c in chunks if "tool_calls" in c["choices"][0]["delta"]]
    assert len(calls) == 1 and len(calls[0]) == 1
    call = calls[0][0]
    assert (call["index"], call["type"], call["function"]["name"]) == (0, "function", "get_weather")
    assert call["id"].startswith("call_") and json.loads(call["function"]["arguments"]) == WEATHER_ARGS
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"

    # The SDK's stream helper accumulates the deltas into the call.
    client = sdk(fake_upstream)
    with client.chat.completions.stream(model="support-bot", messages=USER, tools=TOOLS) as stream:
        done = [e for e in stream if e.type == "tool_calls.function.arguments.done"]
        final = stream.get_final_completion()
    assert done[0].name == "get_weather"
    assert json.loads(final.choices[0].message.tool_calls[0].function.arguments) == WEATHER_ARGS
    assert final.choices[0].finish_reason == "tool_calls"


def test_include_usage_sends_the_last_usage_metadata(fake_upstream):
    body = {"messages": USER, "stream": True, "stream_options": {"include_usage": True}}
    chunks, raw = streamed(fake_upstream, body, include_usage=True, **{"X-Fake-Reasoning-Tokens": "7",
                                                                      "X-Fake-Cached-Tokens": "4"})
    last = orjson.loads(raw.rstrip().split(b"\r\n\r\n")[-1][6:])["usageMetadata"]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-2]["choices"][0]["finish_reason"] == "stop"
    usage = ChatCompletionChunk.model_validate(chunks[-1]).usage
    assert usage is not None
    assert usage.prompt_tokens == last["promptTokenCount"]
    assert usage.completion_tokens == last["candidatesTokenCount"] + 7
    assert usage.total_tokens == last["totalTokenCount"]
    assert usage.completion_tokens_details.reasoning_tokens == 7
    assert usage.prompt_tokens_details.cached_tokens == 4

    events = list(sdk(fake_upstream).chat.completions.create(model="support-bot", messages=USER, stream=True,
                                                            stream_options={"include_usage": True}))
    assert events[-1].choices == [] and events[-1].usage.completion_tokens > 0


@pytest.mark.parametrize("tools", [False, True])
def test_a_stream_fed_one_byte_at_a_time(fake_upstream, tools):
    body = {"messages": USER, "stream": True, **({"tools": TOOLS} if tools else {})}
    at_once, _ = streamed(fake_upstream, body, include_usage=True)
    by_byte, _ = streamed(fake_upstream, body, include_usage=True, byte_by_byte=True)

    def same_ids(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:  # call ids are random, created a clock
        text = orjson.dumps(chunks).decode()
        for chunk in chunks:
            for call in chunk["choices"][0]["delta"].get("tool_calls", ()) if chunk["choices"] else ():
                text = text.replace(call["id"], "call_x")
        return [{**chunk, "created": 0} for chunk in orjson.loads(text)]

    assert len(by_byte) > 3 and same_ids(by_byte) == same_ids(at_once)


def test_stream_framing_edge_cases():
    """Events split inside ``\\r\\n``, ``\\n\\n`` framing, a comment line, a last event without its blank
    line, and an error event after the stream started."""
    event = {"candidates": [{"content": {"parts": [{"text": "Hi"}], "role": "model"}, "index": 0}],
             "modelVersion": "gemini-x", "responseId": "r1"}
    final = {"candidates": [{"content": {"parts": [{"text": "!"}], "role": "model"}, "finishReason": "MAX_TOKENS",
                             "index": 0}], "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2}}
    stream = TRANSLATION.stream(include_usage=True)
    out = stream.feed(b": keep-alive\r\ndata: " + orjson.dumps(event) + b"\r")
    out += stream.feed(b"\n\r\n")
    out += stream.feed(b"data: " + orjson.dumps(final) + b"\n\n")
    out += stream.feed(b'data: {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}')
    out += stream.finish()
    events = sse_events(out)
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert [c["choices"][0]["delta"] if c.get("choices") else None for c in chunks[:4]] == [
        {"role": "assistant", "content": ""}, {"content": "Hi"}, {"content": "!"}, {}]
    assert chunks[3]["choices"][0]["finish_reason"] == "length"
    assert chunks[4] == {"error": {"message": "overloaded", "type": "server_error", "param": None, "code": "unavailable"}}
    assert chunks[5]["usage"]["total_tokens"] == 5 and chunks[5]["id"] == "chatcmpl-r1"
    assert events[-1] == b"[DONE]"


# --- errors and other answers --------------------------------------------------------------------


@pytest.mark.parametrize(("status", "kind", "code", "exception"), [
    (429, "rate_limit_error", "resource_exhausted", openai.RateLimitError),
    (500, "server_error", "internal", openai.InternalServerError),
])
def test_gemini_errors_become_openai_errors(fake_upstream, status, kind, code, exception):
    got, body = whole(fake_upstream, {"messages": USER}, **{"X-Fake-Status": str(status)})
    assert got == status
    error = ErrorObject.model_validate(body["error"])
    assert (error.type, error.code, error.param) == (kind, code, None) and error.message

    with pytest.raises(exception) as caught:
        sdk(fake_upstream, **{"X-Fake-Status": str(status)}).chat.completions.create(
            model="support-bot", messages=USER, stream=True)
    assert caught.value.status_code == status and caught.value.code == code
    assert caught.value.message.endswith(error.message)


def test_non_json_and_unexpected_bodies_are_wrapped_as_openai_errors():
    for status, body in ((502, b"<html>Bad Gateway</html>"), (200, b"not json"), (503, b"")):
        error = ErrorObject.model_validate(orjson.loads(TRANSLATION.response(status, body))["error"])
        assert error.message.startswith(f"The Gemini API answered HTTP {status}")
        assert error.type == ("server_error" if status != 400 else "invalid_request_error")
    assert "Bad Gateway" in orjson.loads(TRANSLATION.response(502, b"<html>Bad Gateway</html>"))["error"]["message"]


def test_finish_reasons_thoughts_candidates_and_blocked_prompts():
    answer = {
        "candidates": [
            {"content": {"parts": [{"text": "thinking...", "thought": True}, {"text": "Part"}, {"text": "ial"}],
                         "role": "model"}, "finishReason": "MAX_TOKENS", "index": 0},
            {"content": {"parts": [{"text": "x"}], "role": "model"}, "finishReason": "SAFETY", "index": 1},
            {"finishReason": "RECITATION", "index": 2},
        ],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 3,
                          "cachedContentTokenCount": 6, "totalTokenCount": 18},
    }
    result = ChatCompletion.model_validate(orjson.loads(TRANSLATION.response(200, orjson.dumps(answer))))
    assert [(c.index, c.message.content, c.finish_reason) for c in result.choices] == [
        (0, "Partial", "length"), (1, "x", "content_filter"), (2, None, "content_filter")]
    assert result.model == ""  # no modelVersion, no model given
    assert OpenAIToGemini().response(200, orjson.dumps(answer), model=MODEL).count(MODEL.encode()) == 1
    assert result.usage is not None and (result.usage.prompt_tokens, result.usage.completion_tokens,
                                         result.usage.total_tokens) == (10, 8, 18)
    assert result.usage.prompt_tokens_details.cached_tokens == 6
    assert result.usage.completion_tokens_details.reasoning_tokens == 3

    blocked = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": {"promptTokenCount": 4}}
    result = ChatCompletion.model_validate(orjson.loads(TRANSLATION.response(200, orjson.dumps(blocked))))
    assert [(c.message.content, c.finish_reason) for c in result.choices] == [(None, "content_filter")]
