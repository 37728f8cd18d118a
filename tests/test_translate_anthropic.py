"""OpenAI Chat Completions -> Anthropic Messages translation (issue #21), judged by the official SDK.

A tiny aiohttp app stands where the proxy's routed path will: it translates the openai SDK's
request with :class:`OpenAIToAnthropic`, sends it to the fake Anthropic API (which speaks the
exact Messages format, stream events included) and translates the answer back. The openai SDK is
the client, and its pydantic types validate every body and chunk (the SDK itself builds its
objects without validation, so the tests call ``model_validate`` on the raw JSON).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from aiohttp import ClientSession, web
from conftest import FakeUpstream, serve_in_thread
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from genops.proxy.providers.base import RequestError
from genops.proxy.translate.openai_anthropic import OpenAIToAnthropic, translate_request

pytestmark = pytest.mark.integration

TARGET = "claude-haiku-4-5"
TRANSLATION = OpenAIToAnthropic()
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "location": {"type": "string", "description": "City and country"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 2},
    },
    "required": ["location", "unit", "days"],
    "additionalProperties": False,
}
EXPECTED_ARGS = {"location": "Paris, France", "unit": "celsius", "days": 2}  # what the fake samples
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                                      "parameters": WEATHER_SCHEMA}},
    {"type": "function", "function": {"name": "search", "description": "Web search",
                                      "parameters": {"type": "object", "properties": {"q": {"type": "string"}},
                                                     "required": ["q"]}}},
]
USER = [{"role": "user", "content": "What is the weather in Paris?"}]


# --- the stand-in for the routed request path ----------------------------------------------


def translating_app(upstream: str) -> web.Application:
    """``POST /v1/chat/completions`` translated to ``upstream``'s Messages API and back."""

    async def chat(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        stream = body.get("stream") is True
        try:
            translated = TRANSLATION.request(body, TARGET, stream)
        except RequestError as exc:
            error = {"error": {"message": exc.message, "type": exc.error_type, "param": None, "code": exc.code}}
            return web.Response(status=exc.status, body=orjson.dumps(error), content_type="application/json")
        headers = {**translated.headers, "x-api-key": "sk-ant-test", "Content-Type": "application/json",
                   **{k: v for k, v in request.headers.items() if k.lower().startswith("x-fake-")}}
        async with ClientSession() as session, session.post(upstream + translated.tail, data=translated.body,
                                                            headers=headers) as answer:
            if not stream or answer.status >= 400:
                return web.Response(status=answer.status, body=TRANSLATION.response(answer.status, await answer.read()),
                                    content_type="application/json")
            options = body.get("stream_options") or {}
            translator = TRANSLATION.stream(options.get("include_usage") is True)
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            async for piece in answer.content.iter_any():
                out = translator.feed(piece)
                if out:
                    await response.write(out)
            await response.write(translator.finish())
            await response.write_eof()
            return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


@pytest.fixture(scope="module")
def gateway(fake_upstream: FakeUpstream) -> Iterator[str]:
    with serve_in_thread(translating_app(fake_upstream.url)) as url:
        yield url


@pytest.fixture()
def client(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway + "/v1", api_key="sk-test", max_retries=0)


def sent_to_anthropic(fake: FakeUpstream) -> dict[str, Any]:
    """The last Messages request the fake received: its body, and its headers under ``_headers``."""
    entry = [r for r in fake.requests() if r["path"] == "/v1/messages"][-1]
    return {**json.loads(entry["body"]), "_headers": {k.lower(): v for k, v in entry["headers"].items()}}


def completion(client: openai.OpenAI, **kwargs: Any) -> ChatCompletion:
    """A whole completion, validated by the SDK's pydantic type from the raw JSON."""
    raw = client.chat.completions.with_raw_response.create(model="support-bot", **kwargs)
    return ChatCompletion.model_validate(raw.http_response.json())


def events(raw: bytes) -> list[bytes]:
    """The ``data:`` payloads of an OpenAI-style SSE body (every event exactly one data line)."""
    assert raw.endswith(b"\n\n")
    out = []
    for event in raw[:-2].split(b"\n\n"):
        assert event.startswith(b"data: ") and b"\n" not in event, event
        out.append(event[6:])
    return out


def chunks_of(raw: bytes, *, done: bool = True) -> list[ChatCompletionChunk]:
    """Every chunk validated by the SDK's type; ``done``: the stream ends with ``[DONE]``."""
    payloads = events(raw)
    if done:
        assert payloads[-1] == b"[DONE]" and b"[DONE]" not in payloads[:-1]
        payloads = payloads[:-1]
    chunks = [ChatCompletionChunk.model_validate_json(p) for p in payloads]
    assert chunks and {(c.id, c.created, c.model) for c in chunks} == {(chunks[0].id, chunks[0].created, chunks[0].model)}
    return chunks


def raw_stream(gateway: str, **body: Any) -> bytes:
    response = httpx.post(gateway + "/v1/chat/completions", json={"model": "support-bot", "stream": True, **body},
                          timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    return response.content


def anthropic_stream(fake: FakeUpstream, **body: Any) -> bytes:
    """The fake Anthropic API's raw event stream for a translated request."""
    translated = TRANSLATION.request({"stream": True, **body}, TARGET, True)
    response = httpx.post(fake.url + translated.tail, content=translated.body, timeout=30,
                          headers={**translated.headers, "x-api-key": "sk-ant-test", "Content-Type": "application/json"})
    assert response.status_code == 200 and b"event: message_stop" in response.content
    return response.content


# --- whole answers ---------------------------------------------------------------------------


def test_plain_call(client: openai.OpenAI, fake_upstream: FakeUpstream) -> None:
    result = completion(client, messages=USER)
    sent = sent_to_anthropic(fake_upstream)
    assert sent["_headers"]["anthropic-version"] == "2023-06-01"
    assert (sent["model"], sent["max_tokens"], sent["messages"]) == (TARGET, 4096, USER)
    assert "stream" not in sent and "system" not in sent
    assert result.object == "chat.completion" and result.id.startswith("msg_01") and result.model == TARGET
    [choice] = result.choices
    assert choice.finish_reason == "stop" and choice.message.role == "assistant" and choice.message.tool_calls is None
    assert choice.message.content == "Hello! This is a fake reply about: What is the weather in Paris?"
    usage = result.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_cached_tokens_count_in_prompt_tokens(client: openai.OpenAI) -> None:
    plain = completion(client, messages=USER)
    cached = completion(client, messages=USER, extra_headers={"X-Fake-Cached-Tokens": "40",
                                                              "X-Fake-Cache-Write-Tokens": "5"})
    assert plain.usage is not None and cached.usage is not None
    assert cached.usage.prompt_tokens == plain.usage.prompt_tokens + 45  # Anthropic's input_tokens excludes both
    assert cached.usage.prompt_tokens_details is not None and cached.usage.prompt_tokens_details.cached_tokens == 40


def test_system_and_developer_messages_become_the_system_prompt(client: openai.OpenAI, fake_upstream: FakeUpstream) -> None:
    result = completion(client, max_completion_tokens=50, temperature=0.2, stop=["END"], user="user-7", seed=1,
                        presence_penalty=0.5, messages=[
                            {"role": "system", "content": "Answer like a pirate."},
                            {"role": "developer", "content": [{"type": "text", "text": "Keep it short."}]},
                            *USER])
    sent = sent_to_anthropic(fake_upstream)
    assert sent["system"] == "Answer like a pirate.\n\nKeep it short." and sent["messages"] == USER
    assert (sent["max_tokens"], sent["temperature"], sent["stop_sequences"]) == (50, 0.2, ["END"])
    assert sent["metadata"] == {"user_id": "user-7"}
    assert "seed" not in sent and "presence_penalty" not in sent  # harmless hints Anthropic has no knob for
    # The fake replies about the first six words of its prompt, the system prompt first.
    assert result.choices[0].message.content == "Hello! This is a fake reply about: Answer like a pirate. Keep it"


def test_multi_turn_alternates_roles(client: openai.OpenAI, fake_upstream: FakeUpstream) -> None:
    result = completion(client, messages=[
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]},
        {"role": "user", "content": "Tell me"},
        {"role": "user", "content": [{"type": "text", "text": "about Paris"}]},
    ])
    assert sent_to_anthropic(fake_upstream)["messages"] == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": [{"type": "text", "text": "Tell me"}, {"type": "text", "text": "about Paris"}]},
    ]
    assert result.choices[0].finish_reason == "stop"


def test_tool_call_then_tool_result(client: openai.OpenAI, fake_upstream: FakeUpstream) -> None:
    first = completion(client, messages=USER, tools=TOOLS)
    sent = sent_to_anthropic(fake_upstream)
    assert sent["tools"] == [{"name": "get_weather", "description": "Current weather", "input_schema": WEATHER_SCHEMA},
                             {"name": "search", "description": "Web search",
                              "input_schema": TOOLS[1]["function"]["parameters"]}]
    assert "tool_choice" not in sent
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("toolu_01") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == EXPECTED_ARGS

    assistant = choice.message.model_dump(exclude_none=True)
    second = completion(client, tools=TOOLS, messages=[*USER, assistant,
                                                       {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"}])
    sent = sent_to_anthropic(fake_upstream)
    assert sent["messages"][1:] == [
        {"role": "assistant", "content": [{"type": "tool_use", "id": call.id, "name": "get_weather", "input": EXPECTED_ARGS}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C and sunny"}]},
    ]
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.tool_calls is None
    assert second.choices[0].message.content == "The get_weather tool returned: 18C and sunny"


def test_tool_choice(client: openai.OpenAI, fake_upstream: FakeUpstream) -> None:
    named = completion(client, messages=USER, tools=TOOLS, parallel_tool_calls=False,
                       tool_choice={"type": "function", "function": {"name": "search"}})
    assert sent_to_anthropic(fake_upstream)["tool_choice"] == {"type": "tool", "name": "search",
                                                                "disable_parallel_tool_use": True}
    call = (named.choices[0].message.tool_calls or [])[0]
    assert call.function.name == "search" and json.loads(call.function.arguments) == {"q": "fake search query"}

    none = completion(client, messages=USER, tools=TOOLS, tool_choice="none")
    assert sent_to_anthropic(fake_upstream)["tool_choice"] == {"type": "none"}
    assert none.choices[0].message.tool_calls is None and none.choices[0].finish_reason == "stop"

    completion(client, messages=USER, tools=TOOLS, tool_choice="required")
    assert sent_to_anthropic(fake_upstream)["tool_choice"] == {"type": "any"}
    completion(client, messages=USER, tools=TOOLS, tool_choice="auto")
    assert sent_to_anthropic(fake_upstream)["tool_choice"] == {"type": "auto"}


@pytest.mark.parametrize("status, error_class, kind, code", [
    (429, openai.RateLimitError, "requests", "rate_limit_exceeded"),
    (500, openai.InternalServerError, "server_error", None),
    (401, openai.AuthenticationError, "invalid_request_error", "invalid_api_key"),
])
def test_errors_come_back_in_openai_shape(client: openai.OpenAI, status: int, error_class: type[openai.APIStatusError],
                                          kind: str, code: str | None) -> None:
    for stream in (False, True):
        with pytest.raises(error_class) as caught:
            client.chat.completions.create(model="support-bot", messages=USER, stream=stream,
                                           extra_headers={"X-Fake-Status": str(status)})
        assert caught.value.status_code == status
        body = caught.value.response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
        assert (body["error"]["type"], body["error"]["param"], body["error"]["code"]) == (kind, None, code)
        assert body["error"]["message"] and caught.value.code == code


def test_unexpressible_parameters_are_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="support-bot", messages=USER, n=2)
    assert caught.value.code == "unsupported_parameter" and "'n'" in caught.value.message
    for extra in ({"logprobs": True}, {"top_logprobs": 3}, {"response_format": {"type": "json_object"}},
                  {"functions": [{"name": "f", "parameters": {}}]}, {"modalities": ["text", "audio"]},
                  {"tools": [{"type": "custom", "custom": {"name": "x"}}]}):
        with pytest.raises(RequestError) as refused:
            translate_request({"messages": USER, **extra}, TARGET, False)
        assert (refused.value.status, refused.value.code) == (400, "unsupported_parameter"), extra
    for body in ([], {"messages": []}, {"messages": [{"role": "wizard", "content": "x"}]},
                 {"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                                                     "function": {"name": "f", "arguments": "{oops"}}]}]}):
        with pytest.raises(RequestError) as invalid:
            translate_request(body, TARGET, False)
        assert invalid.value.status == 400 and invalid.value.error_type == "invalid_request_error"


def test_structured_output_uses_output_config(client: openai.OpenAI, fake_upstream: FakeUpstream) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    result = completion(client, messages=USER, response_format={"type": "json_schema",
                                                                "json_schema": {"name": "place", "schema": schema}})
    assert sent_to_anthropic(fake_upstream)["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert json.loads(result.choices[0].message.content or "") == {"city": "Paris"}


def test_request_translation_details() -> None:
    """Images, merged tool results, parallel tool calls off without a choice, and cache control."""
    sent = translate_request({
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Long rules", "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What are these?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
            ]},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "look", "arguments": '{"n": 1}'}},
                {"id": "call_b", "type": "function", "function": {"name": "look", "arguments": ""}},
            ]},
            {"role": "tool", "tool_call_id": "call_a", "content": [{"type": "text", "text": "a cat"}]},
            {"role": "tool", "tool_call_id": "call_b", "content": "a dog"},
        ],
        "tools": [{"type": "function", "function": {"name": "look"}}],
        "parallel_tool_calls": False,
        "max_tokens": 10,
        "logit_bias": {"50256": -100},
        "stream_options": {"include_usage": True},
    }, TARGET, True)
    assert sent == {
        "model": TARGET,
        "max_tokens": 10,
        "system": [{"type": "text", "text": "Long rules", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What are these?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
            ]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "call_a", "name": "look", "input": {"n": 1}},
                                              {"type": "tool_use", "id": "call_b", "name": "look", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_a", "content": [{"type": "text", "text": "a cat"}]},
                {"type": "tool_result", "tool_use_id": "call_b", "content": "a dog"},
            ]},
        ],
        "tools": [{"name": "look", "input_schema": {"type": "object", "properties": {}}}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        "stream": True,
    }


def test_error_bodies_that_are_not_anthropic_errors_are_wrapped() -> None:
    html = json.loads(TRANSLATION.response(502, b"<html>Bad gateway</html>"))
    assert html == {"error": {"message": "<html>Bad gateway</html>", "type": "server_error", "param": None, "code": None}}
    anthropic_error = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    overloaded = json.loads(TRANSLATION.response(529, anthropic_error))
    assert overloaded == {"error": {"message": "Overloaded", "type": "server_error", "param": None, "code": "overloaded"}}
    other = json.loads(TRANSLATION.response(404, b'{"detail":"no such route"}'))
    assert other["error"]["type"] == "invalid_request_error" and "no such route" in other["error"]["message"]


# --- streams ---------------------------------------------------------------------------------


def test_streamed_text(client: openai.OpenAI, gateway: str, fake_upstream: FakeUpstream) -> None:
    chunks = chunks_of(raw_stream(gateway, messages=USER))
    assert sent_to_anthropic(fake_upstream)["stream"] is True
    first = chunks[0].choices[0].delta
    assert (first.role, first.content) == ("assistant", "")
    assert chunks[0].id.startswith("msg_01") and chunks[0].model == TARGET and chunks[0].object == "chat.completion.chunk"
    assert all(c.usage is None for c in chunks)  # not asked for
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "Hello! This is a fake reply about: What is the weather in Paris?"
    assert [c.choices[0].finish_reason for c in chunks].count("stop") == 1 and chunks[-1].choices[0].finish_reason == "stop"

    # The SDK's own stream reads the same, and so does its accumulating helper.
    sdk_text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="support-bot", messages=USER, stream=True) if c.choices)
    assert sdk_text == text
    with client.chat.completions.stream(model="support-bot", messages=USER) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == text and final.choices[0].finish_reason == "stop"


def test_streamed_usage_when_asked(gateway: str, client: openai.OpenAI) -> None:
    whole = completion(client, messages=USER)
    chunks = chunks_of(raw_stream(gateway, messages=USER, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert all(c.usage is None for c in chunks[:-1]) and chunks[-2].choices[0].finish_reason == "stop"
    assert whole.usage is not None and whole.usage.prompt_tokens > 0
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens


def test_streamed_tool_call(gateway: str, client: openai.OpenAI) -> None:
    chunks = chunks_of(raw_stream(gateway, messages=USER, tools=TOOLS, stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    head = deltas[0]
    assert (head.index, head.type, head.function and head.function.name, head.function and head.function.arguments) == (
        0, "function", "get_weather", "")
    assert head.id and head.id.startswith("toolu_01")
    rest = deltas[1:]
    assert len(rest) > 1 and all(d.index == 0 and d.id is None and d.function and d.function.name is None for d in rest)
    assert json.loads("".join(d.function.arguments or "" for d in rest if d.function)) == EXPECTED_ARGS
    assert chunks[-2].choices[0].finish_reason == "tool_calls" and chunks[-1].usage is not None

    with client.chat.completions.stream(model="support-bot", messages=USER, tools=TOOLS) as stream:
        done = [e for e in stream if e.type == "tool_calls.function.arguments.done"]
        final = stream.get_final_completion()
    assert done[0].name == "get_weather" and json.loads(done[0].arguments) == EXPECTED_ARGS
    [call] = final.choices[0].message.tool_calls or []
    assert json.loads(call.function.arguments) == EXPECTED_ARGS and final.choices[0].finish_reason == "tool_calls"


def _without_created(raw: bytes) -> list[Any]:
    return [{k: v for k, v in json.loads(p).items() if k != "created"} if p != b"[DONE]" else p for p in events(raw)]


@pytest.mark.parametrize("tools", [None, TOOLS], ids=["text", "tool-call"])
def test_stream_split_at_every_byte(fake_upstream: FakeUpstream, tools: list[Any] | None) -> None:
    raw = anthropic_stream(fake_upstream, messages=USER, **({"tools": tools} if tools else {}))
    translator = TRANSLATION.stream(True)
    whole = translator.feed(raw) + translator.finish()
    expected = _without_created(whole)
    chunks_of(whole)  # valid to begin with

    def one_byte_at_a_time(source: bytes) -> bytes:
        translator = TRANSLATION.stream(True)
        pieces = [translator.feed(source[i : i + 1]) for i in range(len(source))]
        for piece in pieces:  # whole events only, as they complete
            assert piece == b"" or (piece.startswith(b"data: ") and piece.endswith(b"\n\n"))
        return b"".join(pieces) + translator.finish()

    assert _without_created(one_byte_at_a_time(raw)) == expected
    assert _without_created(one_byte_at_a_time(raw.replace(b"\n", b"\r\n"))) == expected
    for cut in range(len(raw) + 1):
        translator = TRANSLATION.stream(True)
        assert _without_created(translator.feed(raw[:cut]) + translator.feed(raw[cut:]) + translator.finish()) == expected


def test_error_event_mid_stream(fake_upstream: FakeUpstream) -> None:
    raw = anthropic_stream(fake_upstream, messages=USER)
    cut = raw.index(b"event: content_block_stop")
    error = b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    translator = TRANSLATION.stream(True)
    out = translator.feed(raw[:cut] + error + raw[cut:])
    assert translator.finish() == b"" and translator.feed(b"data: {}\n\n") == b""  # the stream has ended
    payloads = events(out)
    assert json.loads(payloads[-1]) == {"error": {"message": "Overloaded", "type": "server_error", "param": None,
                                                  "code": "overloaded"}}
    assert chunks_of(b"".join(b"data: " + p + b"\n\n" for p in payloads[:-1]), done=False)

    # The openai SDK raises on it, as on OpenAI's own stream errors.
    async def replay(request: web.Request) -> web.Response:
        return web.Response(body=out, content_type="text/event-stream")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", replay)
    with serve_in_thread(app) as url:
        sdk = openai.OpenAI(api_key="sk-test", base_url=url + "/v1", max_retries=0)
        with pytest.raises(openai.APIError, match="Overloaded"):
            list(sdk.chat.completions.create(model="support-bot", messages=USER, stream=True))


def test_stream_cut_short_ends_with_an_error(fake_upstream: FakeUpstream) -> None:
    raw = anthropic_stream(fake_upstream, messages=USER)
    translator = TRANSLATION.stream(True)
    out = translator.feed(raw[: raw.index(b"event: message_stop")]) + translator.finish()
    payloads = events(out)
    assert b"[DONE]" not in payloads and json.loads(payloads[-1])["error"]["type"] == "server_error"
