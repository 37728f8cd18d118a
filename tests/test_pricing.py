"""Prices match genai-prices exactly, fast path included; unknown models are never $0."""

from __future__ import annotations

import random

import pytest
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from genops.proxy.pricing import UnknownPrice, normalize_model, price_call
from genops.proxy.providers.base import Usage

pytestmark = pytest.mark.unit

MODELS = [
    ("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("openai", "o3-mini"), ("openai", "text-embedding-3-small"),
    ("anthropic", "claude-sonnet-4-5"), ("anthropic", "claude-3-5-haiku-latest"),
    ("google", "gemini-2.5-pro"), ("google", "gemini-2.0-flash"),
]


@pytest.mark.parametrize("provider,model", MODELS)
def test_matches_genai_prices_across_tiers(provider, model):
    rng = random.Random(7)
    for _ in range(40):
        # Sizes on both sides of long-context tiers (e.g. 200k tokens).
        input_tokens = rng.choice([rng.randint(1, 5000), rng.randint(150_000, 400_000)])
        cache_read = rng.randint(0, input_tokens // 2)
        cache_write = rng.randint(0, (input_tokens - cache_read) // 2) if provider == "anthropic" else 0
        output = rng.randint(0, 4000)
        got = price_call(provider, model, Usage(input_tokens, output, cache_read, cache_write))
        expected = calc_price(PriceUsage(input_tokens=input_tokens, output_tokens=output,
                                         cache_read_tokens=cache_read or None, cache_write_tokens=cache_write or None),
                              model, provider_id=provider)
        assert got.total_usd == pytest.approx(float(expected.total_price), rel=1e-9, abs=1e-15)
        assert got.input_usd == pytest.approx(float(expected.input_price), rel=1e-9, abs=1e-15)


def test_unknown_model_and_missing_usage_are_not_zero():
    assert price_call("openai", "no-such-model", Usage(10, 10)) == UnknownPrice("unknown_model")
    assert price_call("openai", "gpt-4o", Usage()) == UnknownPrice("no_usage")
    assert price_call(None, "gpt-4o", Usage(1, 1)) == UnknownPrice("unpriced_provider")


@pytest.mark.parametrize("raw,expected", [
    ("models/gemini-2.0-flash", "gemini-2.0-flash"),
    ("claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet-v2"),
    ("us.anthropic.claude-3-5-sonnet-20240620-v1:0", "anthropic.claude-3-5-sonnet-20240620-v1:0"),
    ("publishers/google/models/gemini-1.5-pro", "gemini-1.5-pro"),
    ("gpt-4o", "gpt-4o"),
])
def test_normalize_model(raw, expected):
    assert normalize_model(raw) == expected
