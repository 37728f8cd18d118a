"""Issue #18 part 5: a stream the proxy asked usage for reaches the client byte for byte as the
upstream sends it when not asked, whatever unknown fields sit around ``"usage":null``.

The real OpenAI API puts ``"usage":null`` before ``"obfuscation":"..."`` in every chunk when
``stream_options.include_usage`` is set. The local upstream below streams real-shaped chunks with
``"usage":null`` in several positions (first member, middle, last, spaced) when asked, and the same
chunks without it when not; the client's bytes through GenOps must equal the direct bytes.
"""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Iterator

import orjson
import pytest
from aiohttp import web
from conftest import serve_in_thread, start_proxy

pytestmark = pytest.mark.e2e

PROMPT_TOKENS, COMPLETION_TOKENS, CACHED = 17, 5, 4

# Each chunk: the members as they appear, with "USAGE" where "usage":null goes when asked.
CHUNKS: list[list[str]] = [
    ['"id":"chatcmpl-1"', '"object":"chat.completion.chunk"', '"created":1', '"model":"gpt-4o-mini"',
     '"service_tier":"default"', '"system_fingerprint":"fp_1"',
     '"choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]',
     'USAGE', '"obfuscation":"abc"'],
    ['USAGE', '"id":"chatcmpl-1"', '"object":"chat.completion.chunk"', '"created":1', '"model":"gpt-4o-mini"',
     '"choices":[{"index":0,"delta":{"content":"Hel \\"usage\\":null"},"logprobs":null,"finish_reason":null}]',
     '"obfuscation":"x,\\"usage\\":null}"'],
    ['"id":"chatcmpl-1"', '"object":"chat.completion.chunk"', '"created":1', '"model":"gpt-4o-mini"',
     '"choices":[{"index":0,"delta":{"content":"lo"},"logprobs":null,"finish_reason":null}]', 'USAGE'],
    ['"id":"chatcmpl-1"', 'USAGE', '"object":"chat.completion.chunk"', '"created":1', '"model":"gpt-4o-mini"',
     '"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]', '"obfuscation":"q9"'],
]
USAGE_CHUNK = ('{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",'  # noqa: UP031 - a JSON template: an f-string would double every brace
               '"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d,'
               '"prompt_tokens_details":{"cached_tokens":%d,"audio_tokens":0}},"obfuscation":"zz"}'
               % (PROMPT_TOKENS, COMPLETION_TOKENS, PROMPT_TOKENS + COMPLETION_TOKENS, CACHED))


def chunk_bytes(members: list[str], with_usage: bool, spaced: bool) -> bytes:
    usage = '"usage": null' if spaced else '"usage":null'
    parts = [usage if m == "USAGE" else m for m in members if m != "USAGE" or with_usage]
    return ("{" + ",".join(parts) + "}").encode()


async def stream(request: web.Request) -> web.StreamResponse:
    body = orjson.loads(await request.read())
    with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    spaced = request.headers.get("X-Spaced") == "1"
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
    await response.prepare(request)
    for members in CHUNKS:
        await response.write(b"data: " + chunk_bytes(members, with_usage, spaced) + b"\n\n")
    if with_usage:
        await response.write(b"data: " + USAGE_CHUNK.encode() + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    app = web.Application()
    app.router.add_post("/{tail:.*}", stream)
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture(scope="module")
def stream_proxy(tmp_path_factory, upstream):
    proc = start_proxy(tmp_path_factory.mktemp("genops-stream"), {
        "GENOPS_OPENAI_BASE_URL": upstream,
        "GENOPS_AZURE_BASE_URL": upstream + "/azure/{resource}",
        "GENOPS_UPSTREAM_LOCAL": upstream + "/v1",
        "GENOPS_STREAM_USAGE": "inject",
    })
    yield proc
    proc.stop()


def _post(url: str, headers: dict[str, str]) -> bytes:
    body = orjson.dumps({"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer sk-t",
                                              **headers})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        return response.read()


@pytest.mark.parametrize("spaced", [False, True], ids=["compact", "spaced"])
@pytest.mark.parametrize("route", ["/v1/chat/completions", "/azure/res1/openai/v1/chat/completions",
                                   "/u/local/v1/chat/completions"], ids=["openai", "azure-v1", "named"])
def test_stream_bytes_identical_to_direct(stream_proxy, upstream, route, spaced):
    extra = {"X-Spaced": "1"} if spaced else {}
    direct = _post(upstream + "/v1/chat/completions", extra)
    assert b'"usage"' not in direct  # the client did not ask: the upstream sends none
    request_id = "stream-" + uuid.uuid4().hex
    via = _post(stream_proxy.url + route, {**extra, "GenOps-Request-Id": request_id})
    assert via == direct
    attrs = stream_proxy.span(request_id)["SpanAttributes"]
    assert attrs["genops.stream.usage_injected"] == "true"
    assert attrs["gen_ai.usage.input_tokens"] == str(PROMPT_TOKENS)
    assert attrs["gen_ai.usage.output_tokens"] == str(COMPLETION_TOKENS)
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == str(CACHED)
    assert "genops.usage.estimated" not in attrs
