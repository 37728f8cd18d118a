"""One trace from agent to model call: the agent's OTLP spans and the proxy's span in one tree.

An instrumented agent (``otel_agent.py``, its own process) opens ``invoke_agent`` and
``execute_tool`` spans with the plain SDK and calls a model with the ``openai`` SDK through
the proxy, instrumented by a real package from PyPI, exporting OTLP/HTTP to the proxy's
embedded receiver. The tree is read back with the trace-by-id query Grafana's ClickHouse
plugin runs.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import Proxy

pytestmark = pytest.mark.e2e

GRAFANA_TRACE_QUERY = "\n".join(
    line for line in Path(__file__).with_name("grafana_trace_by_id.sql").read_text().splitlines()
    if not line.startswith("--"))
AGENT = Path(__file__).with_name("otel_agent.py")


def run_agent(proxy: Proxy, kind: str) -> dict[str, str]:
    """Run the agent once; returns its trace id and the proxy's response headers."""
    service = "agent-" + uuid.uuid4().hex[:8]
    done = subprocess.run([sys.executable, str(AGENT), kind, proxy.url, proxy.otlp_url, service],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return orjson.loads(done.stdout.strip().splitlines()[-1])


def grafana_trace(proxy: Proxy, trace_id: str, spans: int) -> list[dict[str, Any]]:
    """The rows Grafana's trace view gets for ``trace_id`` (waits for ``spans`` of them)."""
    return proxy.wait_rows(GRAFANA_TRACE_QUERY.replace("{trace_id}", trace_id), spans)


def check_tree(rows: list[dict[str, Any]], proxy_span_id: str, request_id: str,
               instrumentation_scope: str) -> dict[str, dict[str, Any]]:
    """The stored spans form one tree: agent -> tool -> instrumentation's model span -> proxy span."""
    by_id = {row["spanID"]: row for row in rows}
    assert len(by_id) == len(rows) == 4, [(r["operationName"], r["instrumentationLibraryName"]) for r in rows]
    roots = [row for row in rows if not row["parentSpanID"]]
    assert [r["operationName"] for r in roots] == ["invoke_agent researcher"]
    for row in rows:  # every parent link resolves inside the trace
        assert not row["parentSpanID"] or row["parentSpanID"] in by_id, row
    proxy_span = by_id[proxy_span_id]
    assert proxy_span["serviceName"] == "genops-proxy"
    assert proxy_span["operationName"] == "chat gpt-4o-mini"
    tags = {t["key"]: t["value"] for t in proxy_span["tags"]}
    assert tags["genops.request.id"] == request_id
    assert tags["gen_ai.usage.input_tokens"] != ""
    model_span = by_id[proxy_span["parentSpanID"]]
    assert model_span["instrumentationLibraryName"] == instrumentation_scope
    tool = by_id[model_span["parentSpanID"]]
    assert tool["operationName"] == "execute_tool web_search"
    assert by_id[tool["parentSpanID"]]["operationName"] == "invoke_agent researcher"
    return by_id


def proxy_span_id(result: dict[str, str]) -> str:
    """The proxy's span id from its ``traceparent`` response header, which is in the agent's trace."""
    version, trace_id, span_id, _flags = result["traceparent"].split("-")
    assert (version, trace_id) == ("00", result["trace_id"])
    return span_id


@pytest.mark.parametrize("kind, scope", [
    ("openllmetry", "opentelemetry.instrumentation.openai.v1"),  # opentelemetry-instrumentation-openai
    ("openai-v2", "opentelemetry.util.genai.handler"),  # opentelemetry-instrumentation-openai-v2 (via util-genai)
])
def test_agent_tool_model_call_and_proxy_span_form_one_tree(proxy: Proxy, kind: str, scope: str) -> None:
    result = run_agent(proxy, kind)
    rows = grafana_trace(proxy, result["trace_id"], 4)
    by_id = check_tree(rows, proxy_span_id(result), result["request_id"], scope)
    model_span = by_id[by_id[proxy_span_id(result)]["parentSpanID"]]
    assert "chat" in model_span["operationName"], model_span["operationName"]
