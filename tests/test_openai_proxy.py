"""The OpenAI path end to end: the official SDK through a real ``genops serve`` on chDB."""

from __future__ import annotations

import asyncio

import openai
import pytest
from genai_prices import Usage, calc_price

pytestmark = pytest.mark.e2e


def clients(proxy, fake_upstream, request_id=None):
    headers = {"GenOps-Request-Id": request_id} if request_id else None
    direct = openai.OpenAI(base_url=fake_upstream.url + "/v1", api_key="sk-test-direct", max_retries=0)
    via = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-test-secret-key", max_retries=0,
                        default_headers=headers)
    return direct, via


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}]


def test_chat_completion_same_as_direct_and_span_recorded(proxy, fake_upstream, request_id):
    direct, via = clients(proxy, fake_upstream, request_id)
    expected = direct.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0.2, max_tokens=50)
    got = via.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0.2,
                                                         max_tokens=50)
    assert got.parse().model_dump() == expected.model_dump()
    # Provider headers (rate limits) come back; the proxy adds its request id and traceparent.
    assert got.headers["x-ratelimit-remaining-requests"] == "499"
    assert got.headers["genops-request-id"] == request_id
    assert got.headers["traceparent"].startswith("00-")

    span = proxy.span(request_id)
    attrs = span["SpanAttributes"]
    assert span["SpanName"] == "chat gpt-4o-mini"
    assert span["SpanKind"] == "Client"
    assert span["ScopeName"] == "genops.proxy"
    assert span["ServiceName"] == "genops-proxy"
    assert span["StatusCode"] == "Unset"
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.response.model"] == expected.model
    assert attrs["gen_ai.response.id"] == expected.id
    assert attrs["gen_ai.response.finish_reasons"] == '["stop"]'
    assert attrs["gen_ai.request.temperature"] == "0.2"
    assert attrs["gen_ai.request.max_tokens"] == "50"
    assert attrs["gen_ai.usage.input_tokens"] == str(expected.usage.prompt_tokens)
    assert attrs["gen_ai.usage.output_tokens"] == str(expected.usage.completion_tokens)
    assert attrs["http.response.status_code"] == "200"
    price = calc_price(Usage(input_tokens=expected.usage.prompt_tokens, output_tokens=expected.usage.completion_tokens),
                       expected.model, provider_id="openai")
    assert float(attrs["genops.cost.usd"]) == pytest.approx(float(price.total_price))
    assert span["Duration"] > 0
    # the upstream's share of the call: from the request leaving to its last byte, within the call
    assert 0 < float(attrs["genops.latency.upstream_ms"]) <= span["Duration"] / 1e6
    # The SDK's key travelled upstream but was never stored anywhere in the row.
    assert "sk-test-secret-key" not in str(span)
    assert fake_upstream.requests()[-1]["headers"]["Authorization"] == "Bearer sk-test-secret-key"


def test_cached_and_reasoning_tokens_priced(proxy, fake_upstream, request_id):
    _, via = clients(proxy, fake_upstream, request_id)
    result = via.chat.completions.create(
        model="gpt-4o", messages=MESSAGES,
        extra_headers={"X-Fake-Cached-Tokens": "6", "X-Fake-Reasoning-Tokens": "4"},
    )
    attrs = proxy.span(request_id)["SpanAttributes"]
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == "6"
    assert attrs["gen_ai.usage.reasoning.output_tokens"] == "4"
    price = calc_price(Usage(input_tokens=result.usage.prompt_tokens, cache_read_tokens=6,
                             output_tokens=result.usage.completion_tokens), result.model, provider_id="openai")
    assert float(attrs["genops.cost.usd"]) == pytest.approx(float(price.total_price))


def test_stream_without_include_usage_is_unchanged_but_has_exact_usage(proxy, fake_upstream, request_id):
    direct, via = clients(proxy, fake_upstream, request_id)
    expected = [c.model_dump() for c in direct.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)]
    got = [c.model_dump() for c in via.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)]
    assert got == expected  # no extra usage chunk, no "usage": null fields leaking
    assert all(c["usage"] is None for c in got)

    # What went upstream asked for usage; what the client got has none of it.
    upstream_body = fake_upstream.requests()[-1]["body"]
    assert '"include_usage":true' in upstream_body

    attrs = proxy.span(request_id)["SpanAttributes"]
    assert attrs["gen_ai.request.stream"] == "true"
    assert attrs["genops.stream.usage_injected"] == "true"
    assert int(attrs["gen_ai.usage.input_tokens"]) > 0
    assert int(attrs["gen_ai.usage.output_tokens"]) > 0
    assert "genops.usage.estimated" not in attrs
    assert float(attrs["genops.latency.ttft_ms"]) > 0
    assert float(attrs["genops.latency.output_tokens_per_second"]) > 0
    assert attrs["gen_ai.response.finish_reasons"] == '["stop"]'


def test_stream_bytes_identical_to_direct(proxy, fake_upstream):
    import urllib.request

    import orjson

    def post(base):
        body = orjson.dumps({"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True})
        request = urllib.request.Request(base + "/v1/chat/completions", data=body, method="POST",
                                         headers={"Authorization": "Bearer sk-x", "Content-Type": "application/json"})
        with urllib.request.urlopen(request) as response:
            return response.read()

    direct = post(fake_upstream.url)
    via = post(proxy.url)
    assert via == direct
    assert b'"usage"' not in via


def test_stream_with_include_usage_passes_usage_chunk(proxy, fake_upstream, request_id):
    direct, via = clients(proxy, fake_upstream, request_id)
    kwargs = dict(model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    expected = [c.model_dump() for c in direct.chat.completions.create(**kwargs)]
    got = [c.model_dump() for c in via.chat.completions.create(**kwargs)]
    assert got == expected
    assert got[-1]["usage"]["prompt_tokens"] > 0
    attrs = proxy.span(request_id)["SpanAttributes"]
    assert "genops.stream.usage_injected" not in attrs
    assert attrs["gen_ai.usage.output_tokens"] == str(got[-1]["usage"]["completion_tokens"])


def test_async_client_and_async_stream(proxy, fake_upstream):
    async def main():
        direct = openai.AsyncOpenAI(base_url=fake_upstream.url + "/v1", api_key="sk-a", max_retries=0)
        via = openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="sk-a", max_retries=0)
        a = await direct.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        b = await via.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert a.model_dump() == b.model_dump()
        sa = [c.model_dump()
              async for c in await direct.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)]
        sb = [c.model_dump()
              async for c in await via.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)]
        assert sa == sb
        # Concurrency: many calls at once all come back right.
        results = await asyncio.gather(*[
            via.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"n {i}"}])
            for i in range(20)
        ])
        assert [r.choices[0].message.content.endswith(f"n {i}") for i, r in enumerate(results)] == [True] * 20

    asyncio.run(main())


def test_embeddings_completions_responses_and_models(proxy, fake_upstream):
    direct, via = clients(proxy, fake_upstream)
    assert via.embeddings.create(model="text-embedding-3-small", input=["a b", "c"]).model_dump() == \
        direct.embeddings.create(model="text-embedding-3-small", input=["a b", "c"]).model_dump()
    assert via.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi").model_dump() == \
        direct.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi").model_dump()
    assert via.responses.create(model="gpt-4o-mini", input="hello").model_dump() == \
        direct.responses.create(model="gpt-4o-mini", input="hello").model_dump()
    events_direct = [e.model_dump() for e in direct.responses.create(model="gpt-4o-mini", input="hi", stream=True)]
    events_via = [e.model_dump() for e in via.responses.create(model="gpt-4o-mini", input="hi", stream=True)]
    assert events_via == events_direct
    assert [m.id for m in via.models.list()] == [m.id for m in direct.models.list()]

    rows = proxy.wait_rows(
        "SELECT SpanName, SpanAttributes['gen_ai.operation.name'] AS op, SpanAttributes['gen_ai.usage.input_tokens'] AS inp "
        "FROM otel_traces WHERE SpanName IN ('embeddings text-embedding-3-small', 'text_completion gpt-3.5-turbo-instruct', "
        "'responses gpt-4o-mini', 'GET /v1/models')", 5)
    ops = {r["SpanName"]: r for r in rows}
    assert ops["embeddings text-embedding-3-small"]["op"] == "embeddings"
    assert ops["text_completion gpt-3.5-turbo-instruct"]["op"] == "text_completion"
    assert ops["GET /v1/models"]["op"] == ""
    assert all(int(r["inp"]) > 0 for r in rows if r["op"] == "responses")


def test_typed_columns_in_genops_calls(proxy, fake_upstream, request_id):
    _, via = clients(proxy, fake_upstream, request_id)
    result = via.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    list(result)
    rows = proxy.wait_rows(f"SELECT * FROM genops_calls WHERE RequestId = '{request_id}'")
    row = rows[0]
    assert row["Provider"] == "openai" and row["Operation"] == "chat" and row["Stream"] == 1
    assert row["InputTokens"] > 0 and row["OutputTokens"] > 0
    assert row["CostUsd"] > 0 and row["CostKnown"] == 1
    assert row["TtftMs"] is not None and row["TtftMs"] > 0


def test_unknown_model_cost_is_absent_and_flagged(proxy, fake_upstream, request_id):
    _, via = clients(proxy, fake_upstream, request_id)
    via.chat.completions.create(model="my-private-finetune-xyz", messages=MESSAGES)
    attrs = proxy.span(request_id)["SpanAttributes"]
    assert "genops.cost.usd" not in attrs
    assert attrs["genops.cost.unknown"] == "true"
    assert attrs["genops.cost.unknown_reason"] == "unknown_model"
    row = proxy.wait_rows(f"SELECT CostUsd, CostKnown FROM genops_calls WHERE RequestId = '{request_id}'")[0]
    assert row == {"CostUsd": None, "CostKnown": 0}


def test_traceparent_puts_span_in_callers_trace(proxy, fake_upstream, request_id):
    _, via = clients(proxy, fake_upstream, request_id)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = "00f067aa0ba902b7"
    raw = via.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers={"traceparent": f"00-{trace_id}-{parent}-01"})
    span = proxy.span(request_id)
    assert span["TraceId"] == trace_id
    assert span["ParentSpanId"] == parent
    assert raw.headers["traceparent"] == f"00-{trace_id}-{span['SpanId']}-01"
    # The trace-id lookup table that Grafana uses was fed by its materialized view.
    assert proxy.wait_rows(f"SELECT * FROM otel_traces_trace_id_ts WHERE TraceId = '{trace_id}'")
