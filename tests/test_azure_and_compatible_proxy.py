"""Azure OpenAI (``AzureOpenAI`` SDK), named OpenAI-compatible upstreams and the target-URL allowlist."""

from __future__ import annotations

import urllib.error
import urllib.request

import openai
import orjson
import pytest
from genai_prices import Usage, calc_price

from genops.config import Settings
from genops.proxy.targets import TargetPolicy

pytestmark = pytest.mark.e2e

API_VERSION = "2024-10-21"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def azure_clients(proxy, fake_upstream, request_id=None, resource="contoso-eu"):
    headers = {"GenOps-Request-Id": request_id} if request_id else None
    direct = openai.AzureOpenAI(azure_endpoint=f"{fake_upstream.url}/azure/{resource}", api_key="azure-direct",
                                api_version=API_VERSION, max_retries=0)
    via = openai.AzureOpenAI(azure_endpoint=f"{proxy.url}/azure/{resource}", api_key="azure-secret-key-0123",
                             api_version=API_VERSION, max_retries=0, default_headers=headers)
    return direct, via


def _raw(url, body, headers):
    request = urllib.request.Request(url, data=orjson.dumps(body), method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# -- Azure OpenAI ----------------------------------------------------------------------------


def test_azure_deployment_chat_same_as_direct_and_span(proxy, fake_upstream, request_id):
    direct, via = azure_clients(proxy, fake_upstream, request_id)
    expected = direct.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=40,
                                              extra_headers={"X-Fake-Cached-Tokens": "4"})
    got = via.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=40,
                                      extra_headers={"X-Fake-Cached-Tokens": "4"})
    assert got.model_dump() == expected.model_dump()
    sent = fake_upstream.requests()[-1]
    assert sent["path"] == "/azure/contoso-eu/openai/deployments/gpt-4o/chat/completions"
    assert sent["query"] == f"api-version={API_VERSION}"
    assert sent["headers"]["api-key"] == "azure-secret-key-0123"

    span = proxy.span(request_id)
    attrs = span["SpanAttributes"]
    assert span["SpanName"] == "chat gpt-4o"
    assert attrs["gen_ai.provider.name"] == "azure.ai.openai"
    assert attrs["genops.route"] == "azure"
    assert attrs["gen_ai.request.model"] == "gpt-4o"
    assert attrs["gen_ai.response.model"] == expected.model
    assert attrs["genops.upstream.url"] == f"{fake_upstream.url}/azure/contoso-eu/openai/deployments/gpt-4o/chat/completions"
    assert attrs["gen_ai.usage.input_tokens"] == str(expected.usage.prompt_tokens)
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == "4"
    price = calc_price(Usage(input_tokens=expected.usage.prompt_tokens, cache_read_tokens=4,
                             output_tokens=expected.usage.completion_tokens), expected.model, provider_id="azure")
    assert float(attrs["genops.cost.usd"]) == pytest.approx(float(price.total_price))
    assert "azure-secret-key-0123" not in str(span)


def test_azure_deployment_stream_unchanged_and_estimated_without_usage(proxy, fake_upstream, request_id):
    from genops.proxy.tokenizer import count_tokens

    direct, via = azure_clients(proxy, fake_upstream, request_id)
    expected = [c.model_dump() for c in direct.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)]
    got = [c.model_dump() for c in via.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)]
    assert got == expected
    # Deployment routes are never asked for usage (older api-versions reject stream_options)...
    assert "stream_options" not in fake_upstream.requests()[-1]["body"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in got if c["choices"])
    attrs = proxy.span(request_id)["SpanAttributes"]
    # ...so the counts are tiktoken estimates, marked as such.
    assert attrs["genops.usage.estimated"] == "true"
    assert attrs["gen_ai.usage.output_tokens"] == str(count_tokens(text))
    assert attrs["gen_ai.usage.input_tokens"] == str(count_tokens(MESSAGES[0]["content"]))
    assert float(attrs["genops.cost.usd"]) > 0


def test_azure_stream_with_usage_reported_is_exact(proxy, fake_upstream, request_id):
    _, via = azure_clients(proxy, fake_upstream, request_id)
    got = [c for c in via.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True,
                                                  stream_options={"include_usage": True})]
    attrs = proxy.span(request_id)["SpanAttributes"]
    assert "genops.usage.estimated" not in attrs
    assert attrs["gen_ai.usage.output_tokens"] == str(got[-1].usage.completion_tokens)


def test_azure_v1_route_gets_stream_usage_injected(proxy, fake_upstream, request_id):
    def client(base, headers=None):
        return openai.OpenAI(base_url=f"{base}/azure/contoso-eu/openai/v1", api_key="azure-v1-key", max_retries=0,
                             default_headers=headers)

    direct, via = client(fake_upstream.url), client(proxy.url, {"GenOps-Request-Id": request_id})
    expected = [c.model_dump() for c in direct.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)]
    got = [c.model_dump() for c in via.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)]
    assert got == expected
    assert '"include_usage":true' in fake_upstream.requests()[-1]["body"]
    attrs = proxy.span(request_id)["SpanAttributes"]
    assert attrs["genops.stream.usage_injected"] == "true"
    assert "genops.usage.estimated" not in attrs
    assert int(attrs["gen_ai.usage.output_tokens"]) > 0


@pytest.mark.parametrize("status", [404, 429])
def test_azure_upstream_errors_verbatim(proxy, fake_upstream, request_id, status):
    path = "/azure/contoso-eu/openai/deployments/gpt-4o/chat/completions?api-version=" + API_VERSION
    body = {"model": "gpt-4o", "messages": MESSAGES}
    headers = {"api-key": "k", "X-Fake-Status": str(status)}
    direct = _raw(fake_upstream.url + path, body, headers)
    via = _raw(proxy.url + path, body, {**headers, "GenOps-Request-Id": request_id})
    assert via == direct and via[0] == status
    assert proxy.span(request_id)["SpanAttributes"]["error.type"] == orjson.loads(direct[1])["error"]["code"]


def test_azure_sdk_error_and_bad_resource(proxy, fake_upstream):
    _, via = azure_clients(proxy, fake_upstream)
    with pytest.raises(openai.NotFoundError) as info:
        via.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers={"X-Fake-Status": "404"})
    assert info.value.code == "DeploymentNotFound"
    status, body = _raw(proxy.url + "/azure/evil.example.com:1/openai/v1/chat/completions",
                        {"model": "gpt-4o", "messages": MESSAGES}, {"api-key": "k"})
    assert status == 400 and orjson.loads(body)["error"]["code"] == "invalid_resource"


# -- Named OpenAI-compatible upstreams -----------------------------------------------------------


def test_named_upstream_known_service_is_priced(proxy, fake_upstream, request_id):
    via = openai.OpenAI(base_url=proxy.url + "/u/groq/v1", api_key="gsk-test", max_retries=0,
                        default_headers={"GenOps-Request-Id": request_id})
    direct = openai.OpenAI(base_url=fake_upstream.url + "/v1", api_key="gsk-test", max_retries=0)
    model = "llama-3.1-8b-instant"
    expected = direct.chat.completions.create(model=model, messages=MESSAGES)
    assert via.chat.completions.create(model=model, messages=MESSAGES).model_dump() == expected.model_dump()
    attrs = proxy.span(request_id)["SpanAttributes"]
    assert attrs["gen_ai.provider.name"] == "groq"
    assert attrs["genops.route"] == "upstream:groq"
    assert attrs["genops.upstream.url"] == fake_upstream.url + "/v1/chat/completions"
    price = calc_price(Usage(input_tokens=expected.usage.prompt_tokens, output_tokens=expected.usage.completion_tokens),
                       model, provider_id="groq")
    assert float(attrs["genops.cost.usd"]) == pytest.approx(float(price.total_price))


def test_named_upstream_self_hosted_streams_and_is_unpriced(proxy, fake_upstream, request_id):
    via = openai.OpenAI(base_url=proxy.url + "/u/local_vllm/v1", api_key="none", max_retries=0,
                        default_headers={"GenOps-Request-Id": request_id})
    chunks = list(via.chat.completions.create(model="meta-llama/Llama-3.1-8B-Instruct", messages=MESSAGES, stream=True))
    assert chunks and all(c.usage is None for c in chunks)
    attrs = proxy.span(request_id)["SpanAttributes"]
    assert attrs["gen_ai.provider.name"] == "local_vllm"
    assert attrs["genops.upstream.url"] == fake_upstream.url + "/v1/chat/completions"  # base ended in /v1 already
    assert int(attrs["gen_ai.usage.output_tokens"]) > 0
    assert attrs["genops.cost.unknown"] == "true"
    assert attrs["genops.cost.unknown_reason"] == "unpriced_provider"


# -- Target URL override ---------------------------------------------------------------------------


def test_openai_target_url_outside_allowlist_refused(proxy, fake_upstream, request_id):
    fake_upstream.clear()
    via = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-x", max_retries=0,
                        default_headers={"GenOps-Request-Id": request_id})
    with pytest.raises(openai.PermissionDeniedError) as info:
        via.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                    extra_headers={"GenOps-Target-Url": "http://127.0.0.1:1/internal"})
    assert info.value.code == "target_not_allowed"
    assert fake_upstream.requests() == []
    attrs = proxy.span(request_id)["SpanAttributes"]
    assert attrs["error.type"] == "target_not_allowed" and attrs["http.response.status_code"] == "403"


def test_openai_target_url_to_named_upstream_host(proxy, fake_upstream, request_id):
    via = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-x", max_retries=0,
                        default_headers={"GenOps-Request-Id": request_id, "GenOps-Target-Url": fake_upstream.url})
    via.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert proxy.span(request_id)["SpanAttributes"]["genops.upstream.url"] == fake_upstream.url + "/v1/chat/completions"


def test_target_policy_rules():
    settings = Settings(openai_base_url="http://127.0.0.1:9999", allowed_targets="llm.internal.example,*.corp.example:8443")
    policy = TargetPolicy.from_settings(settings, env={"GENOPS_UPSTREAM_VLLM": "http://10.1.2.3:8000/v1"})
    allowed = [
        "https://api.anthropic.com", "https://api.groq.com/openai", "https://us-central1-aiplatform.googleapis.com",
        "https://myres.openai.azure.com", "http://127.0.0.1:9999", "http://10.1.2.3:8000",
        "https://llm.internal.example", "https://a.b.corp.example:8443",
    ]
    refused = [
        "http://api.anthropic.com",  # known hosts over https only
        "http://127.0.0.1:9998",  # configured port only
        "http://10.1.2.3:8001", "http://169.254.169.254/latest", "https://evilapi.openai.com",
        "https://api.openai.com.evil.example", "https://user:pw@api.openai.com", "file:///etc/passwd",
        "https://corp.example:8443", "https://a.corp.example",  # wildcard needs a subdomain; port must match
        "https://openai.azure.com",
    ]
    assert [u for u in allowed if not policy.allowed(u)] == []
    assert [u for u in refused if policy.allowed(u)] == []


def test_openai_responses_stream_usage_from_response_completed(proxy, fake_upstream, request_id):
    via = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-x", max_retries=0,
                        default_headers={"GenOps-Request-Id": request_id})
    events = list(via.responses.create(model="gpt-4o-mini", input="Hello there", stream=True))
    completed = events[-1]
    assert completed.type == "response.completed"
    span = proxy.span(request_id)
    attrs = span["SpanAttributes"]
    assert span["SpanName"] == "responses gpt-4o-mini"
    assert attrs["gen_ai.operation.name"] == "responses"
    assert attrs["gen_ai.usage.input_tokens"] == str(completed.response.usage.input_tokens)
    assert attrs["gen_ai.usage.output_tokens"] == str(completed.response.usage.output_tokens)
    assert attrs["gen_ai.response.id"] == completed.response.id
    assert "genops.usage.estimated" not in attrs


def test_stored_upstream_url_has_no_credentials_or_query():
    from multidict import CIMultiDict

    from genops.proxy.providers.openai import OpenAIAdapter
    from genops.proxy.targets import route_upstream

    adapter = OpenAIAdapter("http://user:s3cret@vllm.internal:8000", name="upstream:vllm", prefix="/u/vllm/v1")
    policy = TargetPolicy.from_settings(Settings(), env={})
    upstream = route_upstream(adapter, policy, "/chat/completions", "key=abc", CIMultiDict())
    assert upstream.url == "http://user:s3cret@vllm.internal:8000/v1/chat/completions?key=abc"  # sent as configured
    assert upstream.stored_url == "http://vllm.internal:8000/v1/chat/completions"
    assert "Helicone-Target-URL" in upstream.drop_headers
