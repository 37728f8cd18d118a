"""The fake upstream speaks tools, JSON mode and large embeddings in each provider's wire format.

Every check drives the fake with the official SDK (openai, anthropic, google-genai), so the
SDK's own parsers and stream accumulators are the judges of the format; one round trip per
provider goes through a real ``genops serve`` to check the span records the tool call.
"""

from __future__ import annotations

import base64
import json
import struct

import anthropic
import openai
import pytest
from google import genai
from google.genai import types
from pydantic import BaseModel

pytestmark = pytest.mark.e2e

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "location": {"type": "string", "description": "City and country"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 2},
        "verbose": {"type": "boolean"},
    },
    "required": ["location", "unit", "days"],
    "additionalProperties": False,
}
EXPECTED_ARGS = {"location": "Paris, France", "unit": "celsius", "days": 2}
CHAT_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                                      "parameters": WEATHER_SCHEMA}},
    {"type": "function", "function": {"name": "search", "description": "Web search",
                                      "parameters": {"type": "object", "properties": {"q": {"type": "string"}},
                                                     "required": ["q"]}}},
]
RESPONSES_TOOLS = [{"type": "function", "name": t["function"]["name"], "description": t["function"]["description"],
                    "parameters": t["function"]["parameters"], "strict": False} for t in CHAT_TOOLS]
ANTHROPIC_TOOLS = [{"name": t["function"]["name"], "description": t["function"]["description"],
                    "input_schema": t["function"]["parameters"]} for t in CHAT_TOOLS]
USER = [{"role": "user", "content": "What is the weather in Paris?"}]
NO_RETRY = types.HttpRetryOptions(attempts=1)


def oai(base: str, request_id: str | None = None) -> openai.OpenAI:
    headers = {"GenOps-Request-Id": request_id} if request_id else None
    return openai.OpenAI(base_url=base + "/v1", api_key="sk-test", max_retries=0, default_headers=headers)


def claude(base: str, request_id: str | None = None) -> anthropic.Anthropic:
    headers = {"GenOps-Request-Id": request_id} if request_id else None
    return anthropic.Anthropic(base_url=base, api_key="sk-ant-test", max_retries=0, default_headers=headers)


def gemini(base: str, request_id: str | None = None) -> genai.Client:
    headers = {"GenOps-Request-Id": request_id} if request_id else {}
    return genai.Client(api_key="AIza-test", http_options=types.HttpOptions(base_url=base, headers=headers,
                                                                            retry_options=NO_RETRY))


# --- OpenAI Chat Completions ---------------------------------------------------------------


def test_chat_tool_call_whole(fake_upstream):
    result = oai(fake_upstream.url).chat.completions.create(model="gpt-4o-mini", messages=USER, tools=CHAT_TOOLS)
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None and choice.message.role == "assistant"
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == EXPECTED_ARGS
    assert result.usage.completion_tokens > 0 and result.usage.prompt_tokens > 0


def test_chat_tool_call_streamed_as_the_api_does(fake_upstream):
    client = oai(fake_upstream.url)
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=USER, tools=CHAT_TOOLS, stream=True,
                                                 stream_options={"include_usage": True}))
    first = chunks[0].choices[0].delta
    assert first.role == "assistant" and first.content is None
    head = first.tool_calls[0]
    assert (head.index, head.type, head.function.name, head.function.arguments) == (0, "function", "get_weather", "")
    assert head.id.startswith("call_")
    middle = [c.choices[0].delta.tool_calls[0] for c in chunks[1:-2]]
    assert len(middle) > 1 and all(t.index == 0 and t.id is None and t.function.name is None for t in middle)
    assert json.loads("".join(t.function.arguments for t in middle)) == EXPECTED_ARGS
    assert chunks[-2].choices[0].finish_reason == "tool_calls" and chunks[-2].choices[0].delta.tool_calls is None
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0

    # The SDK's stream helper accumulates the deltas into the same call.
    with client.chat.completions.stream(model="gpt-4o-mini", messages=USER, tools=CHAT_TOOLS) as stream:
        done = [e for e in stream if e.type == "tool_calls.function.arguments.done"]
        final = stream.get_final_completion()
    assert done[0].name == "get_weather" and done[0].parsed_arguments is None
    assert json.loads(final.choices[0].message.tool_calls[0].function.arguments) == EXPECTED_ARGS
    assert final.choices[0].finish_reason == "tool_calls"


def test_chat_tool_choice_named_none_and_strict_pydantic_tools(fake_upstream):
    client = oai(fake_upstream.url)
    named = client.chat.completions.create(model="gpt-4o-mini", messages=USER, tools=CHAT_TOOLS,
                                           tool_choice={"type": "function", "function": {"name": "search"}})
    call = named.choices[0].message.tool_calls[0]
    assert call.function.name == "search" and json.loads(call.function.arguments) == {"q": "fake search query"}
    none = client.chat.completions.create(model="gpt-4o-mini", messages=USER, tools=CHAT_TOOLS, tool_choice="none")
    assert none.choices[0].message.tool_calls is None and none.choices[0].finish_reason == "stop"
    assert none.choices[0].message.content.startswith("Hello! This is a fake reply")

    class Lookup(BaseModel):
        """Look an order up."""

        order_id: str
        quantity: int
        express: bool

    parsed = client.chat.completions.parse(model="gpt-4o-mini", messages=USER,
                                           tools=[openai.pydantic_function_tool(Lookup)])
    arguments = parsed.choices[0].message.tool_calls[0].function.parsed_arguments
    assert isinstance(arguments, Lookup) and arguments.quantity == 3 and arguments.express is True


def test_chat_tool_result_answered_with_text(fake_upstream):
    messages = USER + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees and sunny"},
    ]
    client = oai(fake_upstream.url)
    result = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=CHAT_TOOLS)
    assert result.choices[0].finish_reason == "stop" and result.choices[0].message.tool_calls is None
    assert "get_weather" in result.choices[0].message.content and "18 degrees and sunny" in result.choices[0].message.content
    streamed = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=CHAT_TOOLS, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == result.choices[0].message.content


def test_chat_json_modes(fake_upstream):
    client = oai(fake_upstream.url)
    plain = client.chat.completions.create(model="gpt-4o-mini", messages=USER, response_format={"type": "json_object"})
    assert isinstance(json.loads(plain.choices[0].message.content), dict)

    class City(BaseModel):
        name: str
        population: int
        landmarks: list[str]

    parsed = client.chat.completions.parse(model="gpt-4o-mini", messages=USER, response_format=City)
    city = parsed.choices[0].message.parsed
    assert isinstance(city, City) and city.population == 3 and len(city.landmarks) == 1
    with client.chat.completions.stream(model="gpt-4o-mini", messages=USER, response_format=City) as stream:
        assert isinstance(stream.get_final_completion().choices[0].message.parsed, City)


# --- OpenAI Responses ----------------------------------------------------------------------


def test_responses_function_call_whole_and_streamed(fake_upstream):
    client = oai(fake_upstream.url)
    result = client.responses.create(model="gpt-4o-mini", input="What is the weather in Paris?", tools=RESPONSES_TOOLS)
    [item] = result.output
    assert item.type == "function_call" and item.status == "completed" and item.name == "get_weather"
    assert item.id.startswith("fc_") and item.call_id.startswith("call_")
    assert json.loads(item.arguments) == EXPECTED_ARGS
    assert [t.name for t in result.tools] == ["get_weather", "search"]

    events = list(client.responses.create(model="gpt-4o-mini", input="What is the weather in Paris?",
                                          tools=RESPONSES_TOOLS, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-4:] == ["response.function_call_arguments.delta", "response.function_call_arguments.done",
                          "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    added = events[2].item
    assert (added.type, added.status, added.arguments, added.name) == ("function_call", "in_progress", "", "get_weather")
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(deltas) == EXPECTED_ARGS == json.loads(events[-2].item.arguments)
    assert events[-1].response.output[0].call_id == added.call_id
    assert events[-1].response.usage.output_tokens > 0

    # The SDK's stream helper parses the arguments of the (non-strict) call.
    with client.responses.stream(model="gpt-4o-mini", input="Weather?", tools=RESPONSES_TOOLS) as stream:
        final = stream.get_final_response()
    assert json.loads(final.output[0].arguments) == EXPECTED_ARGS


def test_responses_function_call_output_and_reasoning(fake_upstream):
    client = oai(fake_upstream.url)
    first = client.responses.create(model="gpt-4o-mini", input="Weather in Paris?", tools=RESPONSES_TOOLS)
    call = first.output[0]
    follow_up = [{"role": "user", "content": "Weather in Paris?"}, call.model_dump(exclude_none=True),
                 {"type": "function_call_output", "call_id": call.call_id, "output": "18 degrees and sunny"}]
    answer = client.responses.create(model="gpt-4o-mini", input=follow_up, tools=RESPONSES_TOOLS)
    assert answer.output[0].type == "message"
    assert "get_weather" in answer.output_text and "18 degrees and sunny" in answer.output_text

    with client.responses.stream(model="o3", input="Weather in Paris?", tools=RESPONSES_TOOLS,
                                 reasoning={"effort": "low", "summary": "auto"}) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert [i.type for i in final.output] == ["reasoning", "function_call"]
    assert final.output[0].summary[0].text and final.usage.output_tokens_details.reasoning_tokens > 0
    assert "response.reasoning_summary_text.delta" in kinds
    assert final.output[1].parsed_arguments == EXPECTED_ARGS or json.loads(final.output[1].arguments) == EXPECTED_ARGS


def test_responses_json_schema_text_format(fake_upstream):
    class City(BaseModel):
        name: str
        population: int

    parsed = oai(fake_upstream.url).responses.parse(model="gpt-4o-mini", input="Paris?", text_format=City)
    assert isinstance(parsed.output_parsed, City)


# --- Anthropic Messages ----------------------------------------------------------------------


def test_anthropic_tool_use_whole_and_streamed(fake_upstream):
    client = claude(fake_upstream.url)
    message = client.messages.create(model="claude-sonnet-4-6", max_tokens=200, messages=USER, tools=ANTHROPIC_TOOLS)
    assert message.stop_reason == "tool_use"
    [block] = message.content
    assert block.type == "tool_use" and block.id.startswith("toolu_") and block.name == "get_weather"
    assert block.input == EXPECTED_ARGS

    with client.messages.stream(model="claude-sonnet-4-6", max_tokens=200, messages=USER, tools=ANTHROPIC_TOOLS,
                                tool_choice={"type": "tool", "name": "search"}) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and final.content[0].name == "search"
    assert final.content[0].input == {"q": "fake search query"}
    start = next(e for e in events if e.type == "content_block_start")
    assert start.content_block.type == "tool_use" and start.content_block.input == {}
    partial = [e.delta.partial_json for e in events if e.type == "content_block_delta"]
    assert partial[0] == "" and json.loads("".join(partial)) == {"q": "fake search query"}
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0

    none = client.messages.create(model="claude-sonnet-4-6", max_tokens=200, messages=USER, tools=ANTHROPIC_TOOLS,
                                  tool_choice={"type": "none"})
    assert none.stop_reason == "end_turn" and none.content[0].type == "text"


def test_anthropic_tool_result_and_count_tokens(fake_upstream):
    client = claude(fake_upstream.url)
    messages = USER + [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                           "input": {"location": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": [{"type": "text", "text": "18 degrees and sunny"}]}]},
    ]
    message = client.messages.create(model="claude-sonnet-4-6", max_tokens=200, messages=messages, tools=ANTHROPIC_TOOLS)
    assert message.stop_reason == "end_turn"
    assert "get_weather" in message.content[0].text and "18 degrees and sunny" in message.content[0].text
    with client.messages.stream(model="claude-sonnet-4-6", max_tokens=200, messages=messages,
                                tools=ANTHROPIC_TOOLS) as stream:
        assert stream.get_final_text() == message.content[0].text
    counted = client.messages.count_tokens(model="claude-sonnet-4-6", messages=USER, tools=ANTHROPIC_TOOLS)
    created = client.messages.create(model="claude-sonnet-4-6", max_tokens=200, messages=USER, tools=ANTHROPIC_TOOLS)
    assert counted.input_tokens == created.usage.input_tokens > 0


# --- Gemini ----------------------------------------------------------------------------------


def get_weather(location: str, unit: str) -> str:
    """Current weather in a city."""
    return "18 degrees and sunny"


def test_gemini_function_call_whole_streamed_and_answered(fake_upstream):
    client = gemini(fake_upstream.url)
    config = types.GenerateContentConfig(tools=[get_weather],
                                         automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
    result = client.models.generate_content(model="gemini-2.5-flash", contents="Weather in Paris?", config=config)
    [call] = result.function_calls
    assert call.name == "get_weather" and call.args == {"location": "Paris, France", "unit": "celsius"}
    assert result.candidates[0].finish_reason == types.FinishReason.STOP
    assert result.usage_metadata.candidates_token_count > 0

    chunks = list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="Weather in Paris?",
                                                        config=config))
    assert [c.function_calls[0].name for c in chunks if c.function_calls] == ["get_weather"]
    assert chunks[-1].usage_metadata.candidates_token_count == result.usage_metadata.candidates_token_count

    # Automatic function calling: the SDK runs the tool and sends a functionResponse back.
    answered = client.models.generate_content(model="gemini-2.5-flash", contents="Weather in Paris?",
                                              config=types.GenerateContentConfig(tools=[get_weather]))
    assert "get_weather" in answered.text and "18 degrees and sunny" in answered.text

    declared = types.Tool(function_declarations=[types.FunctionDeclaration(name="search", parameters_json_schema={
        "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]})])
    forced = client.models.generate_content(model="gemini-2.5-flash", contents="Find it", config=types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[types.FunctionDeclaration(name="noop")]), declared],
        tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(
            mode="ANY", allowed_function_names=["search"]))))
    assert forced.function_calls[0].name == "search" and forced.function_calls[0].args == {"q": "fake search query"}


def test_gemini_json_mode_and_embedding_size(fake_upstream):
    class City(BaseModel):
        name: str
        population: int

    client = gemini(fake_upstream.url)
    result = client.models.generate_content(model="gemini-2.5-flash", contents="Paris?", config=types.GenerateContentConfig(
        response_mime_type="application/json", response_schema=City))
    assert isinstance(result.parsed, City)
    embedded = client.models.embed_content(model="gemini-embedding-001", contents=["a b", "c"],
                                           config=types.EmbedContentConfig(output_dimensionality=768))
    assert [len(e.values) for e in embedded.embeddings] == [768, 768]


# --- Embeddings of any size ------------------------------------------------------------------


@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_openai_embeddings_300_by_1536(fake_upstream, encoding_format):
    texts = [f"document number {i} about something" for i in range(300)]
    result = oai(fake_upstream.url).embeddings.create(model="text-embedding-3-small", input=texts,
                                                      encoding_format=encoding_format)
    assert [d.index for d in result.data] == list(range(300))
    assert result.usage.prompt_tokens == 300 * 5
    vectors = [d.embedding for d in result.data]
    if encoding_format == "base64":  # asked for explicitly, the SDK hands over base64 of float32 little-endian
        vectors = [list(struct.unpack("<1536f", base64.b64decode(v))) for v in vectors]
        floats = oai(fake_upstream.url).embeddings.create(model="text-embedding-3-small", input=texts[:2],
                                                          encoding_format="float")
        assert vectors[1] == pytest.approx(floats.data[1].embedding, abs=1e-6)
    assert {len(v) for v in vectors} == {1536}
    assert vectors[0] != vectors[1]


def test_openai_embedding_sizes_follow_model_and_dimensions(fake_upstream):
    client = oai(fake_upstream.url)
    assert len(client.embeddings.create(model="text-embedding-3-large", input="x").data[0].embedding) == 3072
    assert len(client.embeddings.create(model="text-embedding-3-large", input="x", dimensions=256).data[0].embedding) == 256
    # The SDK's default (no encoding_format) asks for base64 and decodes it.
    assert len(client.embeddings.create(model="text-embedding-3-small", input=["x", "y"]).data[1].embedding) == 1536


# --- Through GenOps: the span records the tool call ------------------------------------------


def _tool_attrs(proxy, request_id):
    attrs = proxy.span(request_id)["SpanAttributes"]
    row = proxy.wait_rows(f"SELECT InputTokens, OutputTokens FROM genops_calls WHERE RequestId = '{request_id}'")[0]
    return attrs, row


@pytest.mark.parametrize("stream", [False, True])
def test_openai_chat_tool_call_through_genops(proxy, fake_upstream, request_id, stream):
    client = oai(proxy.url, request_id)
    if stream:
        with client.chat.completions.stream(model="gpt-4o-mini", messages=USER, tools=CHAT_TOOLS) as s:
            final = s.get_final_completion()
    else:
        final = client.chat.completions.create(model="gpt-4o-mini", messages=USER, tools=CHAT_TOOLS)
    assert json.loads(final.choices[0].message.tool_calls[0].function.arguments) == EXPECTED_ARGS
    direct = oai(fake_upstream.url).chat.completions.create(model="gpt-4o-mini", messages=USER, tools=CHAT_TOOLS)
    attrs, row = _tool_attrs(proxy, request_id)
    assert attrs["genops.response.tool_calls"] == "1"
    assert "get_weather" in attrs["genops.response.tool_names"]
    assert attrs["gen_ai.response.finish_reasons"] == '["tool_calls"]'
    assert (row["InputTokens"], row["OutputTokens"]) == (direct.usage.prompt_tokens, direct.usage.completion_tokens)


def test_openai_responses_function_call_through_genops(proxy, fake_upstream, request_id):
    with oai(proxy.url, request_id).responses.stream(model="gpt-4o-mini", input="Weather in Paris?",
                                                     tools=RESPONSES_TOOLS) as stream:
        final = stream.get_final_response()
    assert final.output[0].name == "get_weather"
    attrs, row = _tool_attrs(proxy, request_id)
    assert attrs["genops.response.tool_calls"] == "1" and "get_weather" in attrs["genops.response.tool_names"]
    assert (row["InputTokens"], row["OutputTokens"]) == (final.usage.input_tokens, final.usage.output_tokens)


def test_anthropic_tool_use_through_genops(proxy, fake_upstream, request_id):
    client = anthropic.Anthropic(base_url=proxy.url + "/anthropic", api_key="sk-ant-test", max_retries=0,
                                 default_headers={"GenOps-Request-Id": request_id})
    with client.messages.stream(model="claude-sonnet-4-6", max_tokens=200, messages=USER, tools=ANTHROPIC_TOOLS) as s:
        final = s.get_final_message()
    assert final.content[0].input == EXPECTED_ARGS
    attrs, row = _tool_attrs(proxy, request_id)
    assert attrs["genops.response.tool_calls"] == "1" and "get_weather" in attrs["genops.response.tool_names"]
    assert attrs["gen_ai.response.finish_reasons"] == '["tool_use"]'
    assert (row["InputTokens"], row["OutputTokens"]) == (final.usage.input_tokens, final.usage.output_tokens)


def test_gemini_function_call_through_genops(proxy, fake_upstream, request_id):
    client = gemini(proxy.url + "/gemini", request_id)
    config = types.GenerateContentConfig(tools=[get_weather],
                                         automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
    chunks = list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="Weather in Paris?",
                                                        config=config))
    assert [c.function_calls[0].name for c in chunks if c.function_calls] == ["get_weather"]
    usage = chunks[-1].usage_metadata
    attrs, row = _tool_attrs(proxy, request_id)
    assert attrs["genops.response.tool_calls"] == "1" and "get_weather" in attrs["genops.response.tool_names"]
    assert (row["InputTokens"], row["OutputTokens"]) == (usage.prompt_token_count, usage.candidates_token_count)
