"""proxy/context.py in-process: precedence, normalisation, caps and malformed input (no server needed)."""

from __future__ import annotations

import orjson
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from genops.proxy.context import MAX_PROPERTIES, call_context, context_attributes, property_name, session_path
from genops.proxy.providers.base import ProviderAdapter, RequestFacts
from genops.proxy.providers.openai import OpenAIAdapter

pytestmark = pytest.mark.unit


def test_precedence_genops_over_helicone_over_portkey_over_body():
    headers = [
        ("x-portkey-metadata", orjson.dumps({"_user": "portkey", "env": "portkey", "team": "portkey"}).decode()),
        ("Helicone-User-Id", "helicone"),
        ("Helicone-Property-Env", "helicone"),
        ("GenOps-User-Id", "genops"),
    ]
    body = {"user-id": "body", "property-env": "body", "property-team": "body", "property-ticket": "body"}
    attrs = context_attributes(headers, body)
    assert attrs["genops.user.id"] == "genops"
    assert attrs["genops.property.env"] == "helicone"
    assert attrs["genops.property.team"] == "portkey"
    assert attrs["genops.property.ticket"] == "body"


def test_helicone_has_no_agent_or_version_alias_and_other_headers_are_ignored():
    attrs = context_attributes([("Helicone-Agent-Name", "x"), ("Helicone-Prompt-Version", "x"),
                                ("Helicone-Auth", "Bearer k"), ("GenOps-Target-Url", "http://x"),
                                ("GenOps-Request-Id", "r"), ("Authorization", "Bearer k")])
    assert attrs == {}


def test_normalisation():
    assert session_path("planner//researcher/ ") == "/planner/researcher"
    assert session_path("/") == "/"
    assert property_name("Feature Flag/2") == "feature_flag_2"
    attrs = context_attributes([("genops-property-Feature.Flag", "on"), ("GenOps-Session-Path", "a/b")])
    assert attrs == {"genops.property.feature.flag": "on", "genops.session.path": "/a/b"}


def test_empty_values_and_nested_metadata_are_skipped():
    attrs = context_attributes([("GenOps-User-Id", "  "), ("x-portkey-metadata", '{"a": {"b": 1}, "n": 3, "t": true}')])
    assert attrs == {"genops.property.n": "3", "genops.property.t": "true"}


def test_malformed_or_huge_portkey_metadata_is_ignored():
    assert context_attributes([("x-portkey-metadata", "{not json")]) == {}
    assert context_attributes([("x-portkey-metadata", "[1, 2]")]) == {}
    huge = orjson.dumps({"k": "v" * 20_000}).decode()
    assert context_attributes([("x-portkey-metadata", huge)]) == {"genops.context.truncated": True}


def test_property_cap_counts_all_sources():
    headers = [(f"GenOps-Property-H{i}", "h") for i in range(MAX_PROPERTIES - 1)]
    attrs = context_attributes(headers, {"property-b1": "b", "property-b2": "b"})
    assert sum(k.startswith("genops.property.") for k in attrs) == MAX_PROPERTIES
    assert attrs["genops.context.truncated"] is True


def test_openai_body_context_and_a_broken_adapter_never_breaks_the_span():
    headers = CIMultiDictProxy(CIMultiDict({"GenOps-Session-Id": "s"}))
    call = RequestFacts(request_json={"model": "m", "safety_identifier": "hashed-user", "metadata": {"k": "v"},
                              "prompt": {"id": "pmpt_1", "version": 3}})
    attrs = call_context(headers, OpenAIAdapter("http://x"), call)
    assert attrs == {"gen_ai.conversation.id": "s", "genops.user.id": "hashed-user", "genops.property.k": "v",
                     "genops.prompt.id": "pmpt_1", "genops.prompt.version": "3"}
    # a Completions "prompt" is text, not a prompt reference
    assert call_context(headers, OpenAIAdapter("http://x"), RequestFacts(request_json={"prompt": "Say hi"})) == {
        "gen_ai.conversation.id": "s"}

    class Broken(ProviderAdapter):
        def request_context(self, call):
            raise KeyError("bug")

    assert call_context(headers, Broken(), call) == {"gen_ai.conversation.id": "s"}


def test_every_adapter_reads_its_own_body_fields():
    from genops.proxy.providers.anthropic import AnthropicAdapter
    from genops.proxy.providers.vertex import VertexAdapter

    headers = CIMultiDictProxy(CIMultiDict())
    anthropic_call = RequestFacts(request_json={"metadata": {"user_id": "ant-user"}})
    assert call_context(headers, AnthropicAdapter("http://x"), anthropic_call) == {"genops.user.id": "ant-user"}

    vertex = VertexAdapter("http://x/{location}")
    gemini_call = RequestFacts(request_json={"contents": [], "labels": {"team": "search", "env": "prod"}},
                               variant="google")
    assert call_context(headers, vertex, gemini_call) == {"genops.property.team": "search",
                                                           "genops.property.env": "prod"}
    claude_call = RequestFacts(request_json={"metadata": {"user_id": "vertex-claude-user"}}, variant="anthropic")
    assert call_context(headers, vertex, claude_call) == {"genops.user.id": "vertex-claude-user"}
    mistral_call = RequestFacts(request_json={"user": "mistral-user"}, variant="mistralai")
    assert call_context(headers, vertex, mistral_call) == {"genops.user.id": "mistral-user"}

