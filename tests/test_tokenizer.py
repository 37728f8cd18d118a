"""The bundled o200k_base tokenizer: verified by hash, loaded offline, used only for missing usage."""

from __future__ import annotations

import asyncio
import gzip
from importlib import resources

import pytest

from genops.proxy import tokenizer
from genops.proxy.providers.base import RequestFacts, ResponseFacts, Usage

pytestmark = pytest.mark.unit


def test_bundled_file_matches_tiktokens_expected_hash_and_encodes():
    raw = gzip.decompress(resources.files("genops.proxy.tokenizer").joinpath(tokenizer.DATA_FILE).read_bytes())
    ranks = tokenizer.load_ranks(raw)
    assert len(ranks) == 199998  # o200k_base's mergeable ranks
    enc = tokenizer.encoding()
    assert enc.encode_ordinary("hello world") == [24912, 2375]  # o200k_base ids
    text = "Grüße, 世界! def f(x): return x**2  # <|endoftext|>"
    assert enc.decode(enc.encode_ordinary(text)) == text
    assert tokenizer.count_tokens("") == 0


def test_tampered_file_is_refused():
    with pytest.raises(tokenizer.TokenizerDataError):
        tokenizer.load_ranks(b"aGVsbG8= 0\n")


def test_request_text_covers_each_wire_format():
    openai_body = {"model": "gpt-4o", "messages": [{"role": "system", "content": "Be brief."},
                                                   {"role": "user", "content": [{"type": "text", "text": "Hi"}]}]}
    anthropic_body = {"model": "claude", "system": "Sys", "messages": [{"role": "user", "content": "Yo"}]}
    gemini_body = {"contents": [{"role": "user", "parts": [{"text": "Hey"}]}],
                   "systemInstruction": {"parts": [{"text": "Sys2"}]}, "generationConfig": {"temperature": 1}}
    assert tokenizer.request_text(openai_body) == "Be brief.\nHi"
    assert tokenizer.request_text(anthropic_body) == "Sys\nYo"
    assert tokenizer.request_text(gemini_body) == "Hey\nSys2"


def test_reported_usage_always_wins():
    request = RequestFacts(operation="chat", request_json={"messages": [{"role": "user", "content": "one two three"}]})
    # the provider said 42: only the output is estimated
    streamed = ResponseFacts(output_text=["Hello", " there"], usage=Usage(input_tokens=42))
    usage = asyncio.run(tokenizer.estimate_missing_usage(request, streamed))
    assert usage is not None and usage.input_tokens == 42
    assert usage.output_tokens == tokenizer.count_tokens("Hello there") and usage.estimated
    assert streamed.usage == Usage(input_tokens=42)  # returned, not written into the response facts

    no_usage = ResponseFacts(output_text=["Hello", " there"])  # neither count reported: both estimated
    usage = asyncio.run(tokenizer.estimate_missing_usage(request, no_usage))
    assert usage is not None and usage.estimated
    assert (usage.input_tokens, usage.output_tokens) == (tokenizer.count_tokens("one two three"),
                                                         tokenizer.count_tokens("Hello there"))

    exact = ResponseFacts(usage=Usage(input_tokens=1, output_tokens=2))
    assert asyncio.run(tokenizer.estimate_missing_usage(request, exact)) is None
    assert (exact.usage.input_tokens, exact.usage.output_tokens, exact.usage.estimated) == (1, 2, False)

    passthrough = RequestFacts()  # no model call (e.g. GET /v1/models): nothing to estimate
    assert asyncio.run(tokenizer.estimate_missing_usage(passthrough, ResponseFacts())) is None
