"""Usage parsing per wire format (no server): cache and 1-hour cache writes, thinking tokens."""

from __future__ import annotations

import pytest
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from genops.proxy.pricing import price_call
from genops.proxy.providers import anthropic, gemini
from genops.proxy.providers.base import Call, Usage


def test_anthropic_usage_sums_cache_and_prices_one_hour_writes():
    call = Call(operation="chat")
    anthropic.read_usage(call, {"input_tokens": 100, "cache_creation_input_tokens": 3000,
                                "cache_read_input_tokens": 500, "output_tokens": 40,
                                "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000}})
    u = call.usage
    assert (u.input_tokens, u.cache_write_tokens, u.cache_read_tokens, u.cache_write_1h_tokens, u.output_tokens) == \
        (3600, 3000, 500, 2000, 40)
    expected = calc_price(PriceUsage(input_tokens=3600, cache_write_tokens=3000, cache_write_1h_tokens=2000,
                                     cache_read_tokens=500, output_tokens=40), "claude-sonnet-4-6", provider_id="anthropic")
    five_minute_only = calc_price(PriceUsage(input_tokens=3600, cache_write_tokens=3000, cache_read_tokens=500,
                                             output_tokens=40), "claude-sonnet-4-6", provider_id="anthropic")
    assert expected.total_price > five_minute_only.total_price  # 1-hour writes cost more
    assert price_call("anthropic", "claude-sonnet-4-6", u).total_usd == pytest.approx(float(expected.total_price))


def test_anthropic_message_delta_with_cumulative_input_overrides_start():
    call = Call(operation="chat")
    anthropic.read_usage(call, {"input_tokens": 10, "output_tokens": 1})
    anthropic.read_usage_delta(call, {"output_tokens": 25})
    assert (call.usage.input_tokens, call.usage.output_tokens) == (10, 25)
    anthropic.read_usage_delta(call, {"input_tokens": 12, "cache_read_input_tokens": 4, "output_tokens": 30})
    assert (call.usage.input_tokens, call.usage.cache_read_tokens, call.usage.output_tokens) == (16, 4, 30)


def test_gemini_usage_metadata_thoughts_tool_prompt_and_long_context_tier():
    call = Call(operation="generate_content")
    gemini.read_usage(call, {"promptTokenCount": 250_000, "toolUsePromptTokenCount": 1000, "candidatesTokenCount": 900,
                             "thoughtsTokenCount": 300, "cachedContentTokenCount": 200_000})
    u = call.usage
    assert (u.input_tokens, u.output_tokens, u.reasoning_tokens, u.cache_read_tokens) == (251_000, 1200, 300, 200_000)
    # Above 200k input tokens gemini-2.5-pro has its long-context price tier.
    expected = calc_price(PriceUsage(input_tokens=251_000, cache_read_tokens=200_000, output_tokens=1200),
                          "gemini-2.5-pro", provider_id="google")
    assert price_call("google", "models/gemini-2.5-pro", u).total_usd == pytest.approx(float(expected.total_price))
    low = price_call("google", "gemini-2.5-pro", Usage(input_tokens=100_000)).total_usd
    high = price_call("google", "gemini-2.5-pro", Usage(input_tokens=300_000)).total_usd
    assert high > 3 * low  # the per-token input rate is higher above the tier boundary
