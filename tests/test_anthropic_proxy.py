"""Anthropic's Messages API end to end: the official SDK through a real ``genops serve`` on chDB."""

from __future__ import annotations

import urllib.error
import urllib.request

import anthropic
import orjson
import pytest
from genai_prices import Usage, calc_price

pytestmark = pytest.mark.e2e

MODEL = "claude-sonnet-4-6"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def clients(proxy, fake_upstream, request_id=None, key="sk-ant-test-secret-key"):
    headers = {"GenOps-Request-Id": request_id} if request_id else None
    direct = anthropic.Anthropic(base_url=fake_upstream.url, api_key="sk-ant-direct", max_retries=0)
    via = anthropic.Anthropic(base_url=proxy.url + "/anthropic", api_key=key, max_retries=0, default_headers=headers)
    return direct, via


def test_message_same_as_direct_span_and_cache_write_cost(proxy, fake_upstream, request_id):
    direct, via = clients(proxy, fake_upstream, request_id)
    extra = {"X-Fake-Cache-Write-Tokens": "40"}
    kwargs = dict(model=MODEL, max_tokens=64, messages=MESSAGES, system="Be brief.",
                  extra_body={"temperature": 0.3, "top_k": 5}, extra_headers=extra)
    expected = direct.messages.create(**kwargs)
    got = via.messages.with_raw_response.create(**kwargs)
    assert got.parse().model_dump() == expected.model_dump()
    assert got.headers["anthropic-ratelimit-requests-remaining"] == "3999"
    assert got.headers["genops-request-id"] == request_id

    direct_sent, sent = fake_upstream.requests()[-2:]
    assert sent["path"] == "/v1/messages"
    assert sent["body"] == direct_sent["body"]
    credential = sent["headers"].get("x-api-key") or sent["headers"].get("Authorization")
    assert credential.endswith("sk-ant-test-secret-key")  # SDKs send x-api-key or a Bearer token
    assert sent["headers"]["anthropic-version"] == direct_sent["headers"]["anthropic-version"]

    span = proxy.span(request_id)
    attrs = span["SpanAttributes"]
    u = expected.usage
    total_input = u.input_tokens + u.cache_creation_input_tokens + u.cache_read_input_tokens
    assert span["SpanName"] == f"chat {MODEL}"
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "anthropic"
    assert attrs["genops.route"] == "anthropic"
    assert attrs["gen_ai.request.model"] == MODEL
    assert attrs["gen_ai.response.model"] == expected.model
    assert attrs["gen_ai.response.id"] == expected.id
    assert attrs["gen_ai.response.finish_reasons"] == '["end_turn"]'
    assert attrs["gen_ai.request.max_tokens"] == "64"
    assert attrs["gen_ai.request.top_k"] == "5"
    assert attrs["gen_ai.usage.input_tokens"] == str(total_input)
    assert attrs["gen_ai.usage.cache_creation.input_tokens"] == "40"
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == "0"
    assert attrs["gen_ai.usage.output_tokens"] == str(u.output_tokens)
    price = calc_price(Usage(input_tokens=total_input, cache_write_tokens=40, output_tokens=u.output_tokens),
                       expected.model, provider_id="anthropic")
    assert float(attrs["genops.cost.usd"]) == pytest.approx(float(price.total_price))
    assert "sk-ant-test-secret-key" not in str(span)


def test_stream_same_as_direct_with_exact_usage_and_cache_read_cost(proxy, fake_upstream, request_id):
    direct, via = clients(proxy, fake_upstream, request_id)
    extra = {"X-Fake-Cached-Tokens": "120"}
    kwargs = dict(model=MODEL, max_tokens=64, messages=MESSAGES, stream=True, extra_headers=extra)
    expected = [e.model_dump() for e in direct.messages.create(**kwargs)]
    got = [e.model_dump() for e in via.messages.create(**kwargs)]
    assert got == expected
    assert [e["type"] for e in got][:2] == ["message_start", "content_block_start"]
    assert got[-1]["type"] == "message_stop"

    # The SDK's stream helper accumulates the same final message.
    with clients(proxy, fake_upstream)[1].messages.stream(model=MODEL, max_tokens=64, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
    assert text and text == "".join(e["delta"]["text"] for e in got if e["type"] == "content_block_delta")

    attrs = proxy.span(request_id)["SpanAttributes"]
    start_usage = got[0]["message"]["usage"]
    output = next(e for e in got if e["type"] == "message_delta")["usage"]["output_tokens"]
    total_input = start_usage["input_tokens"] + 120
    assert attrs["gen_ai.request.stream"] == "true"
    assert attrs["gen_ai.usage.input_tokens"] == str(total_input)
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == "120"
    assert attrs["gen_ai.usage.output_tokens"] == str(output)
    assert "genops.usage.estimated" not in attrs
    assert float(attrs["genops.latency.ttft_ms"]) > 0
    assert attrs["gen_ai.response.finish_reasons"] == '["end_turn"]'
    price = calc_price(Usage(input_tokens=total_input, cache_read_tokens=120, output_tokens=output), MODEL,
                       provider_id="anthropic")
    assert float(attrs["genops.cost.usd"]) == pytest.approx(float(price.total_price))


def test_stream_without_usage_is_estimated_with_tiktoken(proxy, fake_upstream, request_id):
    from genops.proxy.tokenizer import count_tokens

    _, via = clients(proxy, fake_upstream, request_id)
    events = list(via.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES, stream=True,
                                      extra_headers={"X-Fake-Drop-Usage": "1"}))
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    attrs = proxy.span(request_id)["SpanAttributes"]
    assert attrs["genops.usage.estimated"] == "true"
    assert attrs["gen_ai.usage.output_tokens"] == str(count_tokens(text))
    assert attrs["gen_ai.usage.input_tokens"] == str(count_tokens(MESSAGES[0]["content"]))
    row = proxy.wait_rows(f"SELECT TokensEstimated FROM genops_calls WHERE RequestId = '{request_id}'")[0]
    assert row["TokensEstimated"] == 1


def test_x_api_key_forwarded_never_stored(proxy, fake_upstream, request_id):
    body = {"model": MODEL, "max_tokens": 10, "messages": MESSAGES}
    status, raw = _raw(proxy.url + "/anthropic/v1/messages", body,
                       {"x-api-key": "sk-ant-raw-secret-123", "anthropic-version": "2023-06-01",
                        "GenOps-Request-Id": request_id})
    assert status == 200 and orjson.loads(raw)["type"] == "message"
    sent = {k.lower(): v for k, v in fake_upstream.requests()[-1]["headers"].items()}
    assert sent["x-api-key"] == "sk-ant-raw-secret-123"
    assert sent["anthropic-version"] == "2023-06-01"
    assert "sk-ant-raw-secret-123" not in str(proxy.span(request_id))
    assert "sk-ant-raw-secret-123" not in proxy.logs()


def test_count_tokens_passes_through(proxy, fake_upstream):
    direct, via = clients(proxy, fake_upstream)
    assert via.messages.count_tokens(model=MODEL, messages=MESSAGES).model_dump() == \
        direct.messages.count_tokens(model=MODEL, messages=MESSAGES).model_dump()


def _raw(url, body, headers):
    request = urllib.request.Request(url, data=orjson.dumps(body), method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.parametrize("status", [400, 429, 529])
def test_upstream_errors_come_back_verbatim(proxy, fake_upstream, request_id, status):
    body = {"model": MODEL, "max_tokens": 10, "messages": MESSAGES}
    headers = {"x-api-key": "sk-ant-x", "anthropic-version": "2023-06-01", "X-Fake-Status": str(status)}
    direct = _raw(fake_upstream.url + "/v1/messages", body, headers)
    via = _raw(proxy.url + "/anthropic/v1/messages", body, {**headers, "GenOps-Request-Id": request_id})
    assert via == direct and via[0] == status
    span = proxy.span(request_id)
    assert span["StatusCode"] == "Error"
    assert span["SpanAttributes"]["error.type"] == orjson.loads(direct[1])["error"]["type"]


def test_sdk_error_types_through_proxy(proxy, fake_upstream):
    _, via = clients(proxy, fake_upstream)
    with pytest.raises(anthropic.RateLimitError) as info:
        via.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES, extra_headers={"X-Fake-Status": "429"})
    assert info.value.body["error"]["type"] == "rate_limit_error"


def test_target_url_outside_allowlist_is_refused_in_anthropic_shape(proxy, fake_upstream, request_id):
    fake_upstream.clear()
    _, via = clients(proxy, fake_upstream, request_id)
    for header in ("GenOps-Target-Url", "Helicone-Target-URL"):
        with pytest.raises(anthropic.PermissionDeniedError) as info:
            via.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES,
                                extra_headers={header: "http://169.254.169.254/latest/meta-data"})
        assert info.value.status_code == 403
        assert info.value.body["type"] == "error"
        assert info.value.body["error"]["type"] == "permission_error"
        assert "169.254.169.254" in info.value.body["error"]["message"]
    assert fake_upstream.requests() == []  # nothing was forwarded


def test_target_url_inside_allowlist_is_used_and_not_forwarded(proxy, fake_upstream, request_id):
    _, via = clients(proxy, fake_upstream, request_id)
    via.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES,
                        extra_headers={"Helicone-Target-URL": fake_upstream.url + "/"})
    sent = fake_upstream.requests()[-1]
    assert sent["path"] == "/v1/messages"
    assert not any(k.lower() == "helicone-target-url" for k in sent["headers"])
    assert proxy.span(request_id)["SpanAttributes"]["genops.upstream.url"] == fake_upstream.url + "/v1/messages"
