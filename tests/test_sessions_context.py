"""Session, user, agent, prompt and property context: headers, aliases and body fields land on the span.

Through a real ``genops serve`` with the official ``openai`` SDK (``default_headers``), checking
the stored span, the typed ``genops_calls`` row, and what the fake upstream received.
"""

from __future__ import annotations

import urllib.error
import urllib.request

import openai
import orjson
import pytest

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "Plan the trip."}]
PROXY_PREFIXES = ("genops-", "helicone-", "x-portkey-")


def sdk(proxy, headers: dict[str, str]) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-test", max_retries=0, default_headers=headers)


def forwarded_headers(fake_upstream) -> dict[str, str]:
    return {k.lower(): v for k, v in fake_upstream.requests()[-1]["headers"].items()}


def test_genops_headers_land_on_span_and_never_go_upstream(proxy, fake_upstream, request_id):
    client = sdk(proxy, {
        "GenOps-Request-Id": request_id,
        "GenOps-Session-Id": "sess-42",
        "genops-session-path": "planner//researcher/",  # any case; normalised to /planner/researcher
        "GENOPS-SESSION-NAME": "Trip planning",
        "GenOps-User-Id": "user-7",
        "GenOps-Agent-Name": "researcher",
        "GenOps-Prompt-Id": "plan-trip",
        "GenOps-Prompt-Version": "v3",
        "GenOps-Property-Environment": "staging",
        "genops-property-Feature-Flag": "new-ui",
    })
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    assert raw.headers["genops-request-id"] == request_id

    upstream = forwarded_headers(fake_upstream)
    assert not [name for name in upstream if name.startswith(PROXY_PREFIXES)], upstream
    assert upstream["authorization"] == "Bearer sk-test"

    attrs = proxy.span(request_id)["SpanAttributes"]
    assert attrs["gen_ai.conversation.id"] == "sess-42"
    assert attrs["genops.session.path"] == "/planner/researcher"
    assert attrs["genops.session.name"] == "Trip planning"
    assert attrs["genops.user.id"] == "user-7"
    assert attrs["gen_ai.agent.name"] == "researcher"
    assert attrs["genops.prompt.id"] == "plan-trip"
    assert attrs["genops.prompt.version"] == "v3"
    assert attrs["genops.property.environment"] == "staging"
    assert attrs["genops.property.feature-flag"] == "new-ui"
    assert "genops.context.truncated" not in attrs

    row = proxy.wait_rows(f"SELECT UserId, SessionId, SessionPath, AgentName, PromptId, PromptVersion, Properties "
                          f"FROM genops_calls WHERE RequestId = '{request_id}'")[0]
    assert row == {"UserId": "user-7", "SessionId": "sess-42", "SessionPath": "/planner/researcher",
                   "AgentName": "researcher", "PromptId": "plan-trip", "PromptVersion": "v3",
                   "Properties": {"environment": "staging", "feature-flag": "new-ui"}}


def test_helicone_aliases_and_precedence(proxy, fake_upstream, request_id):
    client = sdk(proxy, {
        "GenOps-Request-Id": request_id,
        "Helicone-Session-Id": "h-sess",
        "Helicone-Session-Path": "/parent/child",
        "Helicone-Session-Name": "Helicone session",
        "Helicone-User-Id": "h-user",
        "GenOps-User-Id": "g-user",  # the GenOps header wins over its alias
        "Helicone-Prompt-Id": "h-prompt",
        "Helicone-Property-Tier": "gold",
        "Helicone-Auth": "Bearer sk-helicone-key",  # Helicone's own key: never forwarded
        "Helicone-Target-URL": fake_upstream.url,  # read by the proxy (issue 3), then stripped too
    })
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    upstream = forwarded_headers(fake_upstream)
    assert not [name for name in upstream if name.startswith(PROXY_PREFIXES)], upstream

    span = proxy.span(request_id)
    attrs = span["SpanAttributes"]
    assert attrs["gen_ai.conversation.id"] == "h-sess"
    assert attrs["genops.session.path"] == "/parent/child"
    assert attrs["genops.session.name"] == "Helicone session"
    assert attrs["genops.user.id"] == "g-user"
    assert attrs["genops.prompt.id"] == "h-prompt"
    assert attrs["genops.property.tier"] == "gold"
    assert "sk-helicone-key" not in str(span)


def test_portkey_metadata_alias(proxy, fake_upstream, request_id):
    metadata = {"_user": "pk-user", "environment": "prod", "Team": "search", "nested": {"ignored": True}}
    client = sdk(proxy, {"GenOps-Request-Id": request_id, "x-portkey-metadata": orjson.dumps(metadata).decode(),
                         "x-portkey-trace-id": "pk-trace"})
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert not [n for n in forwarded_headers(fake_upstream) if n.startswith(PROXY_PREFIXES)]
    attrs = proxy.span(request_id)["SpanAttributes"]
    assert attrs["genops.user.id"] == "pk-user"
    assert attrs["genops.property.environment"] == "prod"
    assert attrs["genops.property.team"] == "search"
    assert "genops.property.nested" not in attrs
    assert "genops.property._user" not in attrs


def test_openai_body_user_and_metadata(proxy, fake_upstream, request_id):
    client = sdk(proxy, {"GenOps-Request-Id": request_id, "GenOps-Property-Environment": "header-wins"})
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, user="body-user", store=True,
                                   metadata={"environment": "body", "ticket": "T-1"})
    # The body is the provider's: it travels upstream unchanged.
    assert orjson.loads(fake_upstream.requests()[-1]["body"])["user"] == "body-user"
    attrs = proxy.span(request_id)["SpanAttributes"]
    assert attrs["genops.user.id"] == "body-user"
    assert attrs["genops.property.ticket"] == "T-1"
    assert attrs["genops.property.environment"] == "header-wins"


def test_responses_api_prompt_reference_and_user(proxy, fake_upstream, request_id):
    client = sdk(proxy, {"GenOps-Request-Id": request_id})
    client.responses.create(model="gpt-4o-mini", input="Hello", user="resp-user",
                            prompt={"id": "pmpt_abc", "version": "2"})
    attrs = proxy.span(request_id)["SpanAttributes"]
    assert attrs["genops.user.id"] == "resp-user"
    assert attrs["genops.prompt.id"] == "pmpt_abc"
    assert attrs["genops.prompt.version"] == "2"


def test_values_are_capped_and_flagged(proxy, fake_upstream, request_id):
    headers = {"GenOps-Request-Id": request_id, "GenOps-Session-Id": "s" * 1000,
               "GenOps-Property-Long": "v" * 5000}
    headers.update({f"GenOps-Property-P{i:03d}": str(i) for i in range(80)})
    sdk(proxy, headers).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    attrs = proxy.span(request_id)["SpanAttributes"]
    assert attrs["gen_ai.conversation.id"] == "s" * 256
    assert attrs["genops.context.truncated"] == "true"
    properties = {k for k in attrs if k.startswith("genops.property.")}
    assert len(properties) == 64
    assert attrs["genops.property.long"] == "v" * 1024  # sent first, so kept; P063.. dropped
    assert "genops.property.p062" in attrs and "genops.property.p063" not in attrs


def _raw(proxy, path: str, method: str = "POST", body: bytes | None = b"{", headers=None):
    request = urllib.request.Request(proxy.url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def test_request_id_on_every_response_path(proxy, fake_upstream):
    # generated id: success, upstream error, proxy-made error, pass-through, stream
    client = sdk(proxy, {"GenOps-Session-Id": "sess-ids"})
    ok = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    generated = ok.headers["genops-request-id"]
    assert len(generated) == 32
    assert proxy.span(generated)["SpanAttributes"]["gen_ai.conversation.id"] == "sess-ids"

    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_headers={"X-Fake-Status": "429"})
        raise AssertionError("expected a 429")
    except openai.RateLimitError as exc:
        upstream_error_id = exc.response.headers["genops-request-id"]
    span = proxy.span(upstream_error_id)
    assert span["StatusCode"] == "Error"
    assert span["SpanAttributes"]["gen_ai.conversation.id"] == "sess-ids"

    status, headers, _ = _raw(proxy, "/v1/chat/completions", body=b"{not json",
                              headers={"Content-Type": "application/json", "GenOps-Request-Id": "bad-json-1",
                                       "GenOps-User-Id": "u-bad"})
    assert status == 400 and headers["GenOps-Request-Id"] == "bad-json-1"
    assert proxy.span("bad-json-1")["SpanAttributes"]["genops.user.id"] == "u-bad"

    status, headers, _ = _raw(proxy, "/v1/models", method="GET", body=None, headers={"GenOps-Request-Id": "models-1"})
    assert status == 200 and headers["GenOps-Request-Id"] == "models-1"
    proxy.span("models-1")

    stream = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    list(stream.parse())
    assert proxy.span(stream.headers["genops-request-id"])["SpanAttributes"]["gen_ai.request.stream"] == "true"

    status, headers, _ = _raw(proxy, "/no/such/route", method="GET", body=None)
    assert status == 404 and headers.get("GenOps-Request-Id")


def test_helicone_request_id_alias_and_request_id_cap(proxy, fake_upstream, request_id):
    client = sdk(proxy, {"Helicone-Request-Id": request_id})
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    assert raw.headers["genops-request-id"] == request_id
    proxy.span(request_id)
    assert "helicone-request-id" not in forwarded_headers(fake_upstream)

    long_id = "r" * 300
    raw = sdk(proxy, {"GenOps-Request-Id": long_id, "Helicone-Request-Id": "loses"}) \
        .chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    assert raw.headers["genops-request-id"] == long_id[:256]
    proxy.span(long_id[:256])


def test_anthropic_sdk_headers_aliases_and_metadata_user(proxy, fake_upstream, request_id):
    import anthropic

    client = anthropic.Anthropic(base_url=proxy.url + "/anthropic", api_key="sk-ant-test", max_retries=0,
                                 default_headers={
                                     "GenOps-Request-Id": request_id,
                                     "Helicone-Session-Id": "ant-sess",
                                     "GenOps-Session-Path": "/triage",
                                     "GenOps-Agent-Name": "triager",
                                     "GenOps-Prompt-Id": "triage",
                                     "GenOps-Prompt-Version": "v9",
                                     "Helicone-Property-Channel": "email",
                                     "x-portkey-metadata": '{"region": "eu"}',
                                 })
    raw = client.messages.with_raw_response.create(model="claude-sonnet-4-6", max_tokens=32, messages=MESSAGES,
                                                   metadata={"user_id": "ant-user"})
    assert raw.headers["genops-request-id"] == request_id
    sent = fake_upstream.requests()[-1]
    assert sent["path"] == "/v1/messages"
    assert not [n for n in sent["headers"] if n.lower().startswith(PROXY_PREFIXES)], sent["headers"]
    attrs = proxy.span(request_id)["SpanAttributes"]
    assert attrs["gen_ai.provider.name"] == "anthropic"
    assert attrs["gen_ai.conversation.id"] == "ant-sess"
    assert attrs["genops.session.path"] == "/triage"
    assert attrs["gen_ai.agent.name"] == "triager"
    assert (attrs["genops.prompt.id"], attrs["genops.prompt.version"]) == ("triage", "v9")
    assert attrs["genops.property.channel"] == "email"
    assert attrs["genops.property.region"] == "eu"
    assert attrs["genops.user.id"] == "ant-user"
