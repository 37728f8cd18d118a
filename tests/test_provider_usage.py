"""Usage parsing per wire format (no server): cache and 1-hour cache writes, thinking tokens."""

from __future__ import annotations

import pytest
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from genops.proxy.pricing import price_call
from genops.proxy.providers import anthropic, gemini
from genops.proxy.providers.base import NO_USAGE, RequestFacts, ResponseAccumulator, Usage

pytestmark = pytest.mark.unit


def test_anthropic_usage_sums_cache_and_prices_one_hour_writes():
    u = anthropic.read_usage(NO_USAGE, {"input_tokens": 100, "cache_creation_input_tokens": 3000,
                                        "cache_read_input_tokens": 500, "output_tokens": 40,
                                        "cache_creation": {"ephemeral_5m_input_tokens": 1000,
                                                           "ephemeral_1h_input_tokens": 2000}})
    assert (u.input_tokens, u.cache_write_tokens, u.cache_read_tokens, u.cache_write_1h_tokens, u.output_tokens) == \
        (3600, 3000, 500, 2000, 40)
    expected = calc_price(PriceUsage(input_tokens=3600, cache_write_tokens=3000, cache_write_1h_tokens=2000,
                                     cache_read_tokens=500, output_tokens=40), "claude-sonnet-4-6", provider_id="anthropic")
    five_minute_only = calc_price(PriceUsage(input_tokens=3600, cache_write_tokens=3000, cache_read_tokens=500,
                                             output_tokens=40), "claude-sonnet-4-6", provider_id="anthropic")
    assert expected.total_price > five_minute_only.total_price  # 1-hour writes cost more
    assert price_call("anthropic", "claude-sonnet-4-6", u).total_usd == pytest.approx(float(expected.total_price))


def test_anthropic_message_delta_with_cumulative_input_overrides_start():
    started = anthropic.read_usage(NO_USAGE, {"input_tokens": 10, "output_tokens": 1})
    u = anthropic.read_usage_delta(started, {"output_tokens": 25})
    assert (u.input_tokens, u.output_tokens) == (10, 25)
    assert (started.input_tokens, started.output_tokens) == (10, 1)  # a new Usage: the earlier one is unchanged
    u = anthropic.read_usage_delta(u, {"input_tokens": 12, "cache_read_input_tokens": 4, "output_tokens": 30})
    assert (u.input_tokens, u.cache_read_tokens, u.output_tokens) == (16, 4, 30)


def test_gemini_usage_metadata_thoughts_tool_prompt_and_long_context_tier():
    u = gemini.read_usage(NO_USAGE, {"promptTokenCount": 250_000, "toolUsePromptTokenCount": 1000,
                                     "candidatesTokenCount": 900, "thoughtsTokenCount": 300,
                                     "cachedContentTokenCount": 200_000})
    assert (u.input_tokens, u.output_tokens, u.reasoning_tokens, u.cache_read_tokens) == (251_000, 1200, 300, 200_000)
    # Above 200k input tokens gemini-2.5-pro has its long-context price tier.
    expected = calc_price(PriceUsage(input_tokens=251_000, cache_read_tokens=200_000, output_tokens=1200),
                          "gemini-2.5-pro", provider_id="google")
    assert price_call("google", "models/gemini-2.5-pro", u).total_usd == pytest.approx(float(expected.total_price))
    low = price_call("google", "gemini-2.5-pro", Usage(input_tokens=100_000)).total_usd
    high = price_call("google", "gemini-2.5-pro", Usage(input_tokens=300_000)).total_usd
    assert high > 3 * low  # the per-token input rate is higher above the tier boundary


def _sse(payload: dict, event: str | None = None) -> bytes:
    import orjson

    return (f"event: {event}\n".encode() if event else b"") + b"data: " + orjson.dumps(payload) + b"\n\n"


def test_tool_calls_read_from_every_wire_format():
    import orjson

    from genops import semconv as sc
    from genops.proxy.call_result import call_result
    from genops.proxy.providers.base import Upstream
    from genops.proxy.providers.openai import OpenAIAdapter
    from genops.proxy.spans import call_attributes

    # Anthropic: tool_use blocks, whole and streamed.
    response = anthropic.read_response(200, orjson.dumps({"id": "msg_1", "model": "claude-sonnet-4-6",
        "stop_reason": "tool_use", "content": [{"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]}))
    assert response.tool_calls == ["get_weather"]
    with pytest.raises(AttributeError):  # frozen: what the reader read, nobody writes afterwards
        response.tool_calls = []  # type: ignore[misc]
    stream = anthropic.AnthropicStream(RequestFacts(operation="chat", stream=True), 0)
    stream.observe(_sse({"type": "content_block_start", "index": 1, "content_block":
                         {"type": "tool_use", "id": "toolu_2", "name": "search", "input": {}}}, "content_block_start")
                   + _sse({"type": "content_block_delta", "index": 1, "delta":
                           {"type": "input_json_delta", "partial_json": "{\"q\":"}}, "content_block_delta"))
    assert stream.result().tool_calls == ["search"] and stream.first_token_ns is not None

    # Gemini: functionCall parts.
    acc = ResponseAccumulator()
    gemini.read_chunk(acc, {"candidates": [{"content": {"parts": [{"functionCall": {"name": "lookup", "args": {}}}]},
                                            "finishReason": "STOP"}]})
    assert acc.freeze().tool_calls == ["lookup"]

    # OpenAI: chat tool_calls (whole; streamed, named once per call), Responses function_call items.
    adapter = OpenAIAdapter("http://unused")
    response = adapter.parse_response(RequestFacts(operation="chat"), 200, orjson.dumps({
        "id": "c", "model": "gpt-4o", "choices": [{"finish_reason": "tool_calls",
        "message": {"role": "assistant", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
            {"id": "call_2", "type": "function", "function": {"name": "b", "arguments": "{}"}}]}}]}))
    assert response.tool_calls == ["a", "b"]
    stream = adapter.new_stream(RequestFacts(operation="chat", stream=True), 0)
    for delta in ({"index": 0, "id": "call_1", "type": "function", "function": {"name": "a", "arguments": ""}},
                  {"index": 0, "function": {"arguments": "{\"x\":1}"}}):
        stream.observe(_sse({"id": "c", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"tool_calls": [delta]}}]}))
    assert stream.result().tool_calls == ["a"]
    request = RequestFacts(operation="responses")
    response = adapter.parse_response(request, 200, orjson.dumps({"id": "r", "model": "gpt-4o", "status": "completed",
                                      "output": [{"type": "function_call", "name": "f", "arguments": "{}"}]}))
    assert response.tool_calls == ["f"]

    attrs = call_attributes(call_result(adapter, request, response, Upstream(url="http://u/v1/responses", stored_url="http://u/v1/responses"),
                                        200, "rid", 0, 1))
    assert attrs[sc.GENOPS_RESPONSE_TOOL_CALLS] == 1 and attrs[sc.GENOPS_RESPONSE_TOOL_NAMES] == ["f"]
