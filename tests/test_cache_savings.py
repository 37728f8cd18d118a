"""What prompt caching saved: recorded on the proxy's span and typed into genops_cache_savings for the Cost dashboard."""

from __future__ import annotations

import openai
import pytest
from genai_prices import Usage, calc_price

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "Summarise the attached report in one line."}]


def test_cache_reads_record_what_they_saved(proxy, fake_upstream, request_id):
    via = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-test", max_retries=0,
                        default_headers={"GenOps-Request-Id": request_id})
    result = via.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers={"X-Fake-Cached-Tokens": "8"})
    attrs = proxy.span(request_id)["SpanAttributes"]
    usage = dict(input_tokens=result.usage.prompt_tokens, output_tokens=result.usage.completion_tokens)
    cached = calc_price(Usage(**usage, cache_read_tokens=8), result.model, provider_id="openai").total_price
    uncached = calc_price(Usage(**usage), result.model, provider_id="openai").total_price
    assert float(uncached) > float(cached)
    assert float(attrs["genops.cost.cache_savings_usd"]) == pytest.approx(float(uncached - cached))
    row = proxy.wait_rows(f"SELECT * FROM genops_cache_savings WHERE SpanId = '{proxy.span(request_id)['SpanId']}'")[0]
    assert row["Provider"] == "openai" and row["RequestModel"] == "gpt-4o" and row["Operation"] == "chat"
    assert row["ScopeName"] == "genops.proxy"  # added by 0051 (the view changed in place)
    assert row["CacheReadTokens"] == 8
    assert row["SavingsUsd"] == pytest.approx(float(uncached - cached))


def test_no_cache_reads_no_savings_row(proxy, fake_upstream, request_id):
    via = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-test", max_retries=0,
                        default_headers={"GenOps-Request-Id": request_id})
    via.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    span = proxy.span(request_id)
    assert "genops.cost.cache_savings_usd" not in span["SpanAttributes"]
    assert float(span["SpanAttributes"]["genops.cost.usd"]) > 0
    assert proxy.sql(f"SELECT count() AS n FROM genops_cache_savings WHERE SpanId = '{span['SpanId']}'")[0]["n"] == 0
