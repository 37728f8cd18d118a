"""Issue #18 part 3: requests at the root are routed by wire format, and a provider's key never
reaches another provider.

``anthropic.Anthropic(base_url=<proxy>)`` (Claude Code with ``ANTHROPIC_BASE_URL``) sends
``/v1/messages``; google-genai with ``base_url=<proxy>`` sends ``/v1beta/models/{m}:...``. The
OpenAI upstream here is a recorder that logs every request it gets: it must get none of them.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from conftest import serve_in_thread, start_proxy, upstream_env

pytestmark = pytest.mark.e2e

MODEL = "claude-sonnet-4-5"
MESSAGES = [{"role": "user", "content": "Say hello to the routing test"}]


class Recorder:
    """A stand-in OpenAI upstream that records every request (and answers a tiny chat completion)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.requests.append({"path": request.path, "headers": dict(request.headers)})
        body = {"id": "chatcmpl-rec", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}
        return web.json_response(body)


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    with serve_in_thread(app) as url:
        rec.url = url
        yield rec


@pytest.fixture(scope="module")
def root_proxy(tmp_path_factory, fake_upstream, recorder):
    env = upstream_env(fake_upstream.url)
    env["GENOPS_OPENAI_BASE_URL"] = recorder.url  # the OpenAI route's upstream: must never see another's key
    proc = start_proxy(tmp_path_factory.mktemp("genops-root"), env)
    yield proc
    proc.stop()


def _no_key_at_openai(recorder: Recorder, key: str) -> None:
    for seen in recorder.requests:
        assert key not in str(seen), seen


def _call_row(proxy, request_id: str) -> dict[str, Any]:
    return proxy.wait_rows(
        "SELECT Provider, Operation, InputTokens, OutputTokens, Stream, HttpStatus FROM genops_calls "
        f"WHERE RequestId = '{request_id}'")[0]


def _anthropic(proxy, key: str, request_id: str):
    import anthropic

    return anthropic.Anthropic(base_url=proxy.url, api_key=key, max_retries=0,
                               default_headers={"GenOps-Request-Id": request_id})


def test_anthropic_sdk_at_root(root_proxy, fake_upstream, recorder, request_id):
    key = "sk-ant-root-secret-0001"
    fake_upstream.clear()
    message = _anthropic(root_proxy, key, request_id).messages.create(model=MODEL, max_tokens=32, messages=MESSAGES)
    assert message.type == "message" and message.content
    row = _call_row(root_proxy, request_id)
    assert row["Provider"] == "anthropic" and row["Operation"] == "chat"
    assert int(row["InputTokens"]) > 0 and int(row["OutputTokens"]) > 0
    seen = [r for r in fake_upstream.requests() if r["path"] == "/v1/messages"]
    assert seen and any(key in str(r["headers"]) for r in seen)  # x-api-key or Bearer, as the SDK sends it
    _no_key_at_openai(recorder, key)


def test_anthropic_sdk_stream_at_root(root_proxy, recorder, request_id):
    key = "sk-ant-root-secret-0002"
    with _anthropic(root_proxy, key, request_id).messages.stream(model=MODEL, max_tokens=32,
                                                                 messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
    assert text
    row = _call_row(root_proxy, request_id)
    assert row["Provider"] == "anthropic" and int(row["Stream"]) == 1
    assert int(row["InputTokens"]) > 0 and int(row["OutputTokens"]) > 0
    _no_key_at_openai(recorder, key)


def test_anthropic_count_tokens_at_root(root_proxy, recorder, request_id):
    key = "sk-ant-root-secret-0003"
    counted = _anthropic(root_proxy, key, request_id).messages.count_tokens(model=MODEL, messages=MESSAGES)
    assert counted.input_tokens > 0
    attrs = root_proxy.span(request_id)["SpanAttributes"]
    assert attrs["genops.route"] == "anthropic"
    assert attrs["http.response.status_code"] == "200"
    _no_key_at_openai(recorder, key)


def test_gemini_sdk_at_root(root_proxy, recorder, request_id):
    from google import genai
    from google.genai import types

    key = "AIzaRootSecret0004"
    client = genai.Client(api_key=key, http_options=types.HttpOptions(
        base_url=root_proxy.url, headers={"GenOps-Request-Id": request_id}))
    response = client.models.generate_content(model="gemini-2.0-flash", contents="hello from the root")
    assert response.text
    row = _call_row(root_proxy, request_id)
    assert row["Provider"] == "gcp.gemini" and int(row["InputTokens"]) > 0 and int(row["OutputTokens"]) > 0
    stream_id = request_id + "-stream"
    client = genai.Client(api_key=key, http_options=types.HttpOptions(
        base_url=root_proxy.url, headers={"GenOps-Request-Id": stream_id}))
    assert "".join(chunk.text or "" for chunk in client.models.generate_content_stream(
        model="gemini-2.0-flash", contents="hello again"))
    row = _call_row(root_proxy, stream_id)
    assert row["Provider"] == "gcp.gemini" and int(row["Stream"]) == 1 and int(row["OutputTokens"]) > 0
    _no_key_at_openai(recorder, key)


def _post(proxy, path: str, headers: dict[str, str], body: bytes = b'{"model":"gpt-4o-mini","messages":[]}'):
    request = urllib.request.Request(proxy.url + path, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def test_anthropic_headers_on_an_openai_path_are_refused(root_proxy, recorder, request_id):
    key = "sk-ant-root-secret-0005"
    status, body = _post(root_proxy, "/v1/chat/completions",
                         {"x-api-key": key, "anthropic-version": "2023-06-01", "GenOps-Request-Id": request_id})
    assert status == 400
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"  # Anthropic's shape
    assert "ANTHROPIC_BASE_URL" in body["error"]["message"]
    attrs = root_proxy.span(request_id)["SpanAttributes"]
    assert attrs["genops.route"] == "anthropic" and attrs["error.type"] == "wrong_base_url"
    _no_key_at_openai(recorder, key)


def test_google_key_on_an_openai_path_is_refused(root_proxy, recorder, request_id):
    key = "AIzaRootSecret0006"
    status, body = _post(root_proxy, "/v1/chat/completions", {"x-goog-api-key": key, "GenOps-Request-Id": request_id})
    assert status == 400
    assert body["error"]["status"] == "INVALID_ARGUMENT" and body["error"]["code"] == 400  # Google's shape
    assert "/gemini" in body["error"]["message"]
    attrs = root_proxy.span(request_id)["SpanAttributes"]
    assert attrs["genops.route"] == "gemini" and attrs["error.type"] == "wrong_base_url"
    _no_key_at_openai(recorder, key)


def test_openai_at_root_unchanged(root_proxy, recorder, request_id):
    import openai

    before = len(recorder.requests)
    client = openai.OpenAI(base_url=root_proxy.url + "/v1", api_key="sk-openai-root", max_retries=0,
                           default_headers={"GenOps-Request-Id": request_id})
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "ok"
    # /v1/models/{fine-tune id with colons} is OpenAI's, not a Gemini method.
    with urllib.request.urlopen(root_proxy.url + "/v1/models/ft:gpt-4o-mini:org::abc123", timeout=30) as response:
        assert response.status == 200
    paths = [r["path"] for r in recorder.requests[before:]]
    assert paths == ["/v1/chat/completions", "/v1/models/ft:gpt-4o-mini:org::abc123"]
    assert _call_row(root_proxy, request_id)["Provider"] == "openai"
