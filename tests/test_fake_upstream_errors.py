"""The fake upstream's per-model error rate (``X-Fake-Error-Rate`` / ``X-Fake-Error-Model``).

A canary test needs one target failing a known share of its calls while another model through
the same server stays healthy: the share is exact (every 5th request at 0.2), counted per model,
answered as each provider's own 500, and the official SDKs see a server error.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from conftest import serve_in_thread
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from genops.fake_upstream.server import create_app

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "Hello there"}]


@pytest.fixture()
def fake() -> Iterator[str]:
    """A fresh fake upstream per test, so every model's count starts at zero."""
    with serve_in_thread(create_app()) as url:
        yield url


def post(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def openai_chat(base: str, model: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    return post(base + "/v1/chat/completions", {"model": model, "messages": MESSAGES},
                {"Authorization": "Bearer sk-test", **headers})


def anthropic_messages(base: str, model: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    return post(base + "/v1/messages", {"model": model, "max_tokens": 20, "messages": MESSAGES},
                {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01", **headers})


def gemini_generate(base: str, model: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    return post(base + f"/v1beta/models/{model}:generateContent", {"contents": [{"parts": [{"text": "Hello there"}]}]},
                {"x-goog-api-key": "AIza-test", **headers})


def failing(statuses: list[int]) -> list[int]:
    """1-based positions of the failed requests."""
    return [i for i, status in enumerate(statuses, start=1) if status != 200]


@pytest.mark.parametrize("call,canary_model,healthy_model,error_check", [
    (openai_chat, "gpt-4o", "gpt-4o-mini",
     lambda body: body["error"]["type"] == "server_error" and body["error"]["message"]),
    (anthropic_messages, "claude-haiku-4-5", "claude-sonnet-4-6",
     lambda body: body["type"] == "error" and body["error"]["type"] == "api_error"),
    (gemini_generate, "gemini-2.5-flash-lite", "gemini-2.5-flash",
     lambda body: body["error"]["code"] == 500 and body["error"]["status"] == "INTERNAL"),
], ids=["openai", "anthropic", "gemini"])
def test_every_fifth_request_of_the_named_model_fails_and_the_other_model_is_healthy(
        fake: str, call: Any, canary_model: str, healthy_model: str, error_check: Any) -> None:
    headers = {"X-Fake-Error-Rate": "0.2", "X-Fake-Error-Model": canary_model}
    canary, healthy = [], []
    for _ in range(20):  # interleaved, with the same headers on both, as a route's arms would send them
        status, body = call(fake, canary_model, headers)
        canary.append(status)
        if status != 200:
            assert status == 500 and error_check(body), body
        healthy.append(call(fake, healthy_model, headers)[0])
    assert failing(canary) == [5, 10, 15, 20]
    assert failing(healthy) == []


def test_without_a_model_every_model_fails_at_the_rate_counted_separately(fake: str) -> None:
    rate = {"X-Fake-Error-Rate": "0.3"}
    haiku = [anthropic_messages(fake, "claude-haiku-4-5", rate)[0] for _ in range(10)]
    sonnet = [anthropic_messages(fake, "claude-sonnet-4-6", rate)[0] for _ in range(5)]
    haiku += [anthropic_messages(fake, "claude-haiku-4-5", rate)[0] for _ in range(10)]
    # 0.3 as an exact fraction: request n fails when floor(0.3 n) steps up, 6 of the first 20.
    assert failing(haiku) == [4, 7, 10, 14, 17, 20]
    assert failing(sonnet) == [4]
    # Requests without the header neither fail nor count.
    assert [openai_chat(fake, "gpt-4o-mini", {})[0] for _ in range(10)] == [200] * 10


def test_x_fake_status_still_wins_and_clearing_the_log_restarts_the_counts(fake: str) -> None:
    rate = {"X-Fake-Error-Rate": "0.2", "X-Fake-Error-Model": "gpt-4o"}
    for _ in range(4):
        assert openai_chat(fake, "gpt-4o", rate)[0] == 200
    assert openai_chat(fake, "gpt-4o", rate | {"X-Fake-Status": "429"})[0] == 429
    assert openai_chat(fake, "gpt-4o", rate)[0] == 500  # the 5th counted one
    urllib.request.urlopen(urllib.request.Request(fake + "/_fake/requests", method="DELETE")).read()
    statuses = [openai_chat(fake, "gpt-4o", rate)[0] for _ in range(5)]
    assert failing(statuses) == [5]


def test_the_official_sdks_see_a_server_error_on_the_failing_turn(fake: str) -> None:
    """Plain and streamed calls: the 500 comes before any byte of the answer."""
    headers = {"X-Fake-Error-Rate": "0.5"}
    oa = openai.OpenAI(base_url=fake + "/v1", api_key="sk-test", max_retries=0, default_headers=headers)
    oa.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    with pytest.raises(openai.InternalServerError):
        list(oa.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    an = anthropic.Anthropic(base_url=fake, api_key="sk-ant-test", max_retries=0, default_headers=headers)
    an.messages.create(model="claude-haiku-4-5", max_tokens=20, messages=MESSAGES)
    with pytest.raises(anthropic.InternalServerError):
        an.messages.create(model="claude-haiku-4-5", max_tokens=20, messages=MESSAGES)
    ge = genai.Client(api_key="AIza-test", http_options=types.HttpOptions(
        base_url=fake, headers=headers, retry_options=types.HttpRetryOptions(attempts=1)))
    ge.models.generate_content(model="gemini-2.5-flash", contents="Hello")
    with pytest.raises(genai_errors.ServerError):
        list(ge.models.generate_content_stream(model="gemini-2.5-flash", contents="Hello"))


def test_error_status_and_a_delay_kept_to_one_model(fake_upstream):
    """``X-Fake-Error-Status`` picks the failures' status; ``X-Fake-Delay-Model`` keeps the delay to one model
    (the routing tests need a slow or rate-limited target beside a healthy one)."""
    import urllib.error
    import urllib.request

    import orjson

    def post(model: str, **headers: str) -> tuple[int, dict[str, str]]:
        request = urllib.request.Request(fake_upstream.url + "/v1/chat/completions", method="POST",
                                         data=orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
                                         headers={"Authorization": "Bearer sk", "Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers)

    rated = {"X-Fake-Error-Rate": "0.5", "X-Fake-Error-Model": "status-model", "X-Fake-Error-Status": "429"}
    assert [post("status-model", **rated)[0] for _ in range(4)] == [200, 429, 200, 429]
    assert post("status-model", **rated)[0] == 200
    status, headers = post("status-model", **rated)
    assert status == 429 and headers.get("retry-after") == "1"
    # a delay kept to another model does not slow this one: it answers (the delay would be 60 s)
    assert post("fast-model", **{"X-Fake-Delay-Ms": "60000", "X-Fake-Delay-Model": "slow-model"})[0] == 200
