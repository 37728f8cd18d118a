"""Gemini API and Vertex AI end to end: ``google-genai`` and ``AnthropicVertex`` through a real proxy."""

from __future__ import annotations

import urllib.error
import urllib.request

import anthropic
import orjson
import pytest
from genai_prices import Usage, calc_price
from google import genai
from google.genai import errors, types
from google.oauth2.credentials import Credentials

pytestmark = pytest.mark.e2e

MODEL = "gemini-2.5-flash"
PROMPT = "What is the capital of France?"
NO_RETRY = types.HttpRetryOptions(attempts=1)


def gemini_clients(proxy, fake_upstream, request_id=None):
    headers = {"GenOps-Request-Id": request_id} if request_id else {}
    direct = genai.Client(api_key="AIza-direct", http_options=types.HttpOptions(base_url=fake_upstream.url,
                                                                               retry_options=NO_RETRY))
    via = genai.Client(api_key="AIzaSyTestSecretKey0001", http_options=types.HttpOptions(
        base_url=proxy.url + "/gemini", headers=headers, retry_options=NO_RETRY))
    return direct, via


def vertex_clients(proxy, fake_upstream, request_id=None, location="europe-west4"):
    headers = {"GenOps-Request-Id": request_id} if request_id else {}

    def client(base, extra):
        return genai.Client(vertexai=True, project="proj-1", location=location,
                            credentials=Credentials(token="ya29.test-vertex-token"),
                            http_options=types.HttpOptions(base_url=base, headers=extra, retry_options=NO_RETRY))

    return client(f"{fake_upstream.url}/vertex/{location}", {}), client(proxy.url + "/vertex", headers)


def dump(response):
    return response.model_dump(exclude={"sdk_http_response"})


def _raw(url, body, headers):
    request = urllib.request.Request(url, data=orjson.dumps(body), method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


BODY = {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}


# -- Gemini API ----------------------------------------------------------------------------


def test_generate_content_same_as_direct_with_thinking_and_cache_read_cost(proxy, fake_upstream, request_id):
    direct, via = gemini_clients(proxy, fake_upstream, request_id)
    config = types.GenerateContentConfig(
        temperature=0.2, max_output_tokens=200, top_k=4,
        http_options=types.HttpOptions(headers={"X-Fake-Cached-Tokens": "30", "X-Fake-Reasoning-Tokens": "12"}))
    expected = direct.models.generate_content(model=MODEL, contents=PROMPT, config=config)
    got = via.models.generate_content(model=MODEL, contents=PROMPT, config=config)
    assert dump(got) == dump(expected)
    assert got.text

    sent = fake_upstream.requests()[-1]
    assert sent["path"].endswith(f"/models/{MODEL}:generateContent")  # /v1beta or /v1, as the SDK chose
    assert sent["headers"]["x-goog-api-key"] == "AIzaSyTestSecretKey0001"

    span = proxy.span(request_id)
    attrs = span["SpanAttributes"]
    meta = expected.usage_metadata
    assert span["SpanName"] == f"generate_content {MODEL}"
    assert attrs["gen_ai.operation.name"] == "generate_content"
    assert attrs["gen_ai.provider.name"] == "gcp.gemini"
    assert attrs["gen_ai.request.model"] == MODEL
    assert attrs["gen_ai.response.model"] == expected.model_version
    assert attrs["gen_ai.response.id"] == expected.response_id
    assert attrs["gen_ai.response.finish_reasons"] == '["STOP"]'
    assert attrs["gen_ai.request.temperature"] == "0.2"
    assert attrs["gen_ai.request.max_tokens"] == "200"
    assert attrs["gen_ai.request.top_k"] == "4.0" or attrs["gen_ai.request.top_k"] == "4"
    assert attrs["gen_ai.usage.input_tokens"] == str(meta.prompt_token_count)
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == "30" == str(meta.cached_content_token_count)
    assert attrs["gen_ai.usage.reasoning.output_tokens"] == "12" == str(meta.thoughts_token_count)
    output = meta.candidates_token_count + meta.thoughts_token_count
    assert attrs["gen_ai.usage.output_tokens"] == str(output)
    price = calc_price(Usage(input_tokens=meta.prompt_token_count, cache_read_tokens=30, output_tokens=output),
                       expected.model_version, provider_id="google")
    assert float(attrs["genops.cost.usd"]) == pytest.approx(float(price.total_price))
    assert "AIzaSyTestSecretKey0001" not in str(span)


def test_sse_stream_same_as_direct_with_exact_usage(proxy, fake_upstream, request_id):
    direct, via = gemini_clients(proxy, fake_upstream, request_id)
    expected = [dump(c) for c in direct.models.generate_content_stream(model=MODEL, contents=PROMPT)]
    got = [dump(c) for c in via.models.generate_content_stream(model=MODEL, contents=PROMPT)]
    assert got == expected and len(got) > 2
    assert "alt=sse" in fake_upstream.requests()[-1]["query"]
    attrs = proxy.span(request_id)["SpanAttributes"]
    final = expected[-1]["usage_metadata"]
    assert attrs["gen_ai.request.stream"] == "true"
    assert attrs["gen_ai.usage.input_tokens"] == str(final["prompt_token_count"])
    assert attrs["gen_ai.usage.output_tokens"] == str(final["candidates_token_count"])
    assert "genops.usage.estimated" not in attrs
    assert attrs["genops.stream.chunks"] == str(len(expected))
    assert float(attrs["genops.latency.ttft_ms"]) > 0
    assert attrs["gen_ai.response.finish_reasons"] == '["STOP"]'
    assert float(attrs["genops.cost.usd"]) > 0


def test_json_array_stream_and_key_query_parameter_never_stored(proxy, fake_upstream, request_id):
    key = "AIzaSyQueryParamSecret99"
    path = f"/v1beta/models/{MODEL}:streamGenerateContent"
    headers = {"X-Fake-Chunk-Delay-Ms": "1"}
    direct = _raw(f"{fake_upstream.url}{path}?key={key}", BODY, headers)
    via = _raw(f"{proxy.url}/gemini{path}?key={key}", BODY, {**headers, "GenOps-Request-Id": request_id})
    assert via == direct and via[0] == 200
    elements = orjson.loads(direct[1])
    assert isinstance(elements, list) and len(elements) > 2
    assert fake_upstream.requests()[-1]["query"] == f"key={key}"  # forwarded as sent

    span = proxy.span(request_id)
    attrs = span["SpanAttributes"]
    assert attrs["gen_ai.usage.input_tokens"] == str(elements[-1]["usageMetadata"]["promptTokenCount"])
    assert attrs["gen_ai.usage.output_tokens"] == str(elements[-1]["usageMetadata"]["candidatesTokenCount"])
    assert attrs["genops.stream.chunks"] == str(len(elements))
    assert attrs["genops.upstream.url"] == f"{fake_upstream.url}{path}"
    # The key is nowhere in the stored rows (every column), nor in the logs.
    assert key not in str(span)
    assert key not in str(proxy.sql(f"SELECT * FROM genops_calls WHERE RequestId = '{request_id}'"))
    assert key not in proxy.logs()


def test_stream_without_usage_is_estimated(proxy, fake_upstream, request_id):
    from genops.proxy.tokenizer import count_tokens

    _, via = gemini_clients(proxy, fake_upstream, request_id)
    config = types.GenerateContentConfig(http_options=types.HttpOptions(headers={"X-Fake-Drop-Usage": "1"}))
    text = "".join(c.text for c in via.models.generate_content_stream(model=MODEL, contents=PROMPT, config=config))
    attrs = proxy.span(request_id)["SpanAttributes"]
    assert attrs["genops.usage.estimated"] == "true"
    assert attrs["gen_ai.usage.output_tokens"] == str(count_tokens(text))
    assert attrs["gen_ai.usage.input_tokens"] == str(count_tokens(PROMPT))


def test_count_tokens_and_embeddings(proxy, fake_upstream):
    direct, via = gemini_clients(proxy, fake_upstream)
    assert dump(via.models.count_tokens(model=MODEL, contents=PROMPT)) == \
        dump(direct.models.count_tokens(model=MODEL, contents=PROMPT))
    assert dump(via.models.embed_content(model="gemini-embedding-001", contents=["a b", "c"])) == \
        dump(direct.models.embed_content(model="gemini-embedding-001", contents=["a b", "c"]))
    rows = proxy.wait_rows("SELECT SpanAttributes['gen_ai.operation.name'] AS op FROM otel_traces "
                           "WHERE SpanName = 'embeddings gemini-embedding-001'")
    assert rows[0]["op"] == "embeddings"


@pytest.mark.parametrize("status", [400, 429, 503])
def test_gemini_upstream_errors_verbatim(proxy, fake_upstream, request_id, status):
    path = f"/v1beta/models/{MODEL}:generateContent"
    headers = {"x-goog-api-key": "AIza-x", "X-Fake-Status": str(status)}
    direct = _raw(fake_upstream.url + path, BODY, headers)
    via = _raw(proxy.url + "/gemini" + path, BODY, {**headers, "GenOps-Request-Id": request_id})
    assert via == direct and via[0] == status
    span = proxy.span(request_id)
    assert span["StatusCode"] == "Error"
    assert span["SpanAttributes"]["error.type"] == orjson.loads(direct[1])["error"]["status"]


def test_sdk_sees_gemini_error(proxy, fake_upstream):
    _, via = gemini_clients(proxy, fake_upstream)
    config = types.GenerateContentConfig(http_options=types.HttpOptions(headers={"X-Fake-Status": "429"}))
    with pytest.raises(errors.ClientError) as info:
        via.models.generate_content(model=MODEL, contents=PROMPT, config=config)
    assert info.value.code == 429 and info.value.status == "RESOURCE_EXHAUSTED"


def test_gemini_target_outside_allowlist_refused_in_google_shape(proxy, fake_upstream):
    fake_upstream.clear()
    status, body = _raw(f"{proxy.url}/gemini/v1beta/models/{MODEL}:generateContent", BODY,
                        {"x-goog-api-key": "AIza-x", "GenOps-Target-Url": "http://10.0.0.1:8080"})
    assert status == 403
    error = orjson.loads(body)["error"]
    assert error["code"] == 403 and error["status"] == "PERMISSION_DENIED" and "10.0.0.1" in error["message"]
    assert fake_upstream.requests() == []


# -- Vertex AI -----------------------------------------------------------------------------


def test_vertex_gemini_same_as_direct_region_host_and_bearer(proxy, fake_upstream, request_id):
    direct, via = vertex_clients(proxy, fake_upstream, request_id)
    expected = direct.models.generate_content(model=MODEL, contents=PROMPT)
    got = via.models.generate_content(model=MODEL, contents=PROMPT)
    assert dump(got) == dump(expected)
    sent = fake_upstream.requests()[-1]
    path = f"/v1beta1/projects/proj-1/locations/europe-west4/publishers/google/models/{MODEL}:generateContent"
    assert sent["path"] == "/vertex/europe-west4" + path  # the host follows the location
    assert sent["headers"]["Authorization"] == "Bearer ya29.test-vertex-token"
    span = proxy.span(request_id)
    attrs = span["SpanAttributes"]
    assert attrs["gen_ai.provider.name"] == "gcp.vertex_ai"
    assert attrs["gen_ai.operation.name"] == "generate_content"
    assert attrs["genops.route"] == "vertex"
    assert attrs["genops.upstream.url"] == f"{fake_upstream.url}/vertex/europe-west4{path}"
    meta = expected.usage_metadata
    price = calc_price(Usage(input_tokens=meta.prompt_token_count, output_tokens=meta.candidates_token_count),
                       expected.model_version, provider_id="google")
    assert float(attrs["genops.cost.usd"]) == pytest.approx(float(price.total_price))
    assert "ya29.test-vertex-token" not in str(span)


def test_vertex_gemini_stream(proxy, fake_upstream, request_id):
    direct, via = vertex_clients(proxy, fake_upstream, request_id, location="us-central1")
    expected = [dump(c) for c in direct.models.generate_content_stream(model=MODEL, contents=PROMPT)]
    got = [dump(c) for c in via.models.generate_content_stream(model=MODEL, contents=PROMPT)]
    assert got == expected
    attrs = proxy.span(request_id)["SpanAttributes"]
    assert attrs["gen_ai.usage.output_tokens"] == str(expected[-1]["usage_metadata"]["candidates_token_count"])
    assert attrs["gen_ai.request.stream"] == "true"


@pytest.mark.parametrize("stream", [False, True])
def test_vertex_claude_via_anthropic_vertex_sdk(proxy, fake_upstream, request_id, stream):
    def client(base, headers=None):
        return anthropic.AnthropicVertex(region="us-east5", project_id="proj-1", access_token="ya29.claude-token",
                                         base_url=base, max_retries=0, default_headers=headers)

    direct = client(f"{fake_upstream.url}/vertex/us-east5/v1")
    via = client(proxy.url + "/vertex/v1", {"GenOps-Request-Id": request_id})
    model = "claude-sonnet-4-6@20260101"
    kwargs = dict(model=model, max_tokens=64, messages=[{"role": "user", "content": PROMPT}],
                  extra_headers={"X-Fake-Cached-Tokens": "50"})
    if stream:
        expected = [e.model_dump() for e in direct.messages.create(stream=True, **kwargs)]
        got = [e.model_dump() for e in via.messages.create(stream=True, **kwargs)]
        usage = {**expected[0]["message"]["usage"],
                 "output_tokens": next(e for e in expected if e["type"] == "message_delta")["usage"]["output_tokens"]}
    else:
        expected = direct.messages.create(**kwargs).model_dump()
        got = via.messages.create(**kwargs).model_dump()
        usage = expected["usage"]
    assert got == expected
    sent = fake_upstream.requests()[-1]
    method = "streamRawPredict" if stream else "rawPredict"
    assert sent["path"] == f"/vertex/us-east5/v1/projects/proj-1/locations/us-east5/publishers/anthropic/models/{model}:{method}"
    attrs = proxy.span(request_id)["SpanAttributes"]
    total_input = usage["input_tokens"] + usage["cache_read_input_tokens"] + usage["cache_creation_input_tokens"]
    assert attrs["gen_ai.provider.name"] == "gcp.vertex_ai"
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == model
    assert attrs["gen_ai.usage.input_tokens"] == str(total_input)
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == "50"
    assert attrs["gen_ai.usage.output_tokens"] == str(usage["output_tokens"])
    price = calc_price(Usage(input_tokens=total_input, cache_read_tokens=50, output_tokens=usage["output_tokens"]),
                       "claude-sonnet-4-6", provider_id="anthropic")  # the @version suffix is normalised away
    assert float(attrs["genops.cost.usd"]) == pytest.approx(float(price.total_price))


def test_vertex_bad_location_and_upstream_error(proxy, fake_upstream, request_id):
    path = "/v1/projects/p/locations/{}/publishers/google/models/gemini-2.5-flash:generateContent"
    status, body = _raw(proxy.url + "/vertex" + path.format("evil.example.com%2F"), BODY,
                        {"Authorization": "Bearer t"})
    assert status == 400 and orjson.loads(body)["error"]["status"] == "INVALID_ARGUMENT"
    headers = {"Authorization": "Bearer t", "X-Fake-Status": "429"}
    direct = _raw(fake_upstream.url + "/vertex/us-central1" + path.format("us-central1"), BODY, headers)
    via = _raw(proxy.url + "/vertex" + path.format("us-central1"), BODY, {**headers, "GenOps-Request-Id": request_id})
    assert via == direct and via[0] == 429
    assert proxy.span(request_id)["SpanAttributes"]["error.type"] == "RESOURCE_EXHAUSTED"


@pytest.mark.parametrize("stream", [False, True])
def test_vertex_openai_compatible_endpoint(proxy, fake_upstream, request_id, stream):
    import openai

    path = "/v1beta1/projects/proj-1/locations/us-central1/endpoints/openapi"
    direct = openai.OpenAI(base_url=f"{fake_upstream.url}/vertex/us-central1{path}", api_key="ya29.t", max_retries=0)
    via = openai.OpenAI(base_url=f"{proxy.url}/vertex{path}", api_key="ya29.t", max_retries=0,
                        default_headers={"GenOps-Request-Id": request_id})
    model = "google/gemini-2.0-flash-001"
    messages = [{"role": "user", "content": PROMPT}]
    if stream:
        expected = [c.model_dump() for c in direct.chat.completions.create(model=model, messages=messages, stream=True)]
        assert [c.model_dump() for c in via.chat.completions.create(model=model, messages=messages, stream=True)] == expected
    else:
        expected = direct.chat.completions.create(model=model, messages=messages)
        assert via.chat.completions.create(model=model, messages=messages).model_dump() == expected.model_dump()
    assert fake_upstream.requests()[-1]["path"] == f"/vertex/us-central1{path}/chat/completions"
    attrs = proxy.span(request_id)["SpanAttributes"]
    assert attrs["gen_ai.provider.name"] == "gcp.vertex_ai"
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == model
    if stream:  # not asked for stream usage (unknown support): estimated, and marked so
        assert attrs["genops.usage.estimated"] == "true"
        assert float(attrs["genops.cost.usd"]) > 0
    else:
        price = calc_price(Usage(input_tokens=expected.usage.prompt_tokens, output_tokens=expected.usage.completion_tokens),
                           model, provider_id="google")
        assert float(attrs["genops.cost.usd"]) == pytest.approx(float(price.total_price))


def test_vertex_embedding_predict_token_statistics(proxy, fake_upstream, request_id):
    path = "/v1/projects/p/locations/us-central1/publishers/google/models/text-embedding-005:predict"
    body = {"instances": [{"content": "one two three"}, {"content": "four five"}]}
    headers = {"Authorization": "Bearer t"}
    direct = _raw(fake_upstream.url + "/vertex/us-central1" + path, body, headers)
    via = _raw(proxy.url + "/vertex" + path, body, {**headers, "GenOps-Request-Id": request_id})
    assert via == direct and via[0] == 200
    tokens = sum(p["embeddings"]["statistics"]["token_count"] for p in orjson.loads(direct[1])["predictions"])
    attrs = proxy.span(request_id)["SpanAttributes"]
    assert attrs["gen_ai.operation.name"] == "embeddings"
    assert attrs["gen_ai.usage.input_tokens"] == str(tokens) == "5"
