"""src/genops/tracetree.py in-process: call counting and line contents (no store needed)."""

from __future__ import annotations

import pytest

from genops.tracetree import build_tree, render, totals

pytestmark = pytest.mark.unit


def test_trace_tree_shows_tools_a_model_asked_for_and_counts_nested_proxy_calls_once():
    def row(span_id, parent, name, start, attrs):
        return {"TraceId": "t" * 32, "SpanId": span_id, "ParentSpanId": parent, "SpanName": name,
                "StartNs": start, "Duration": 1_000_000, "StatusCode": "Unset", "Attributes": attrs}

    rows = [
        # a client instrumentation span around the proxy's span of the same call
        row("01", "", "chat gpt-4o", 0, {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": "10",
                                         "gen_ai.usage.output_tokens": "5"}),
        row("02", "01", "chat gpt-4o", 1, {"gen_ai.operation.name": "chat", "genops.request.id": "r1",
                                           "gen_ai.usage.input_tokens": "10", "gen_ai.usage.output_tokens": "5",
                                           "genops.cost.usd": "0.001",
                                           "genops.response.tool_names": '["web_search","get_weather"]'}),
    ]
    forest = build_tree(rows, [])
    t = totals(forest)
    assert (t.calls, t.input_tokens, t.output_tokens, t.cost_usd) == (1, 10, 5, 0.001)
    text = render(forest, "head", ascii_only=True)
    assert "-> web_search, get_weather" in text.splitlines()[2]
