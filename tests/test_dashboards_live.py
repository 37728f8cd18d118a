"""The dashboards on what the proxy itself records: SDK calls through a real ``genops serve``.

The seeded tests (test_dashboards.py) cover every shape; this one proves the panels read
the proxy's own spellings (provider names, user/session/property headers, cache and safety
attributes) by running every panel through the proxy's read-only SQL endpoint.
"""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import types
from grafana_sim import ALL, QueryContext, interpolate

from genops.dashboards.push import load_dashboards

pytestmark = pytest.mark.e2e

DASHBOARDS = {m["uid"].removeprefix("genops-"): m for m in load_dashboards()}


def sql(proxy: Any, query: str) -> tuple[list[str], list[str], list[list[Any]]]:
    request = urllib.request.Request(proxy.url + "/genops/v1/sql", data=json.dumps({"query": query}).encode(),
                                     headers={"Authorization": f"Bearer {proxy.token}"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            data = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"SQL failed: {exc.read().decode()}\n{query}") from None
    return data["columns"], data["types"], data["rows"]


def headers(user: str, session: str) -> dict[str, str]:
    return {"GenOps-User-Id": user, "GenOps-Session-Id": session, "GenOps-Property-Team": "growth"}


@pytest.fixture(scope="module")
def traffic(proxy: Any, fake_upstream: Any) -> int:
    """Calls from three SDKs and users; returns how many model calls were made."""
    oa = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-test", max_retries=0, default_headers=headers("alice", "s-1"))
    msgs = [{"role": "user", "content": "Write to jane.doe@example.com about the invoice."}]
    oa.chat.completions.create(model="gpt-4o-mini", messages=msgs, extra_headers={"X-Fake-Cached-Tokens": "6"})
    for _ in oa.chat.completions.create(model="gpt-4o-mini", messages=msgs, stream=True):
        pass
    with pytest.raises(openai.APIStatusError):
        oa.chat.completions.create(model="gpt-4o", messages=msgs, extra_headers={"X-Fake-Status": "500"})
    an = anthropic.Anthropic(base_url=proxy.url + "/anthropic", api_key="sk-ant-test", max_retries=0,
                             default_headers=headers("bob", "s-2"))
    an.messages.create(model="claude-sonnet-4-6", max_tokens=50, messages=[{"role": "user", "content": "Hello"}])
    ge = genai.Client(api_key="AIzaSyTestKey000000001", http_options=types.HttpOptions(
        base_url=proxy.url + "/gemini", headers=headers("carol", "s-3"),
        retry_options=types.HttpRetryOptions(attempts=1)))
    ge.models.generate_content(model="gemini-2.5-flash", contents="Hello")
    calls = 5
    proxy.wait_rows("SELECT 1 FROM genops_calls", calls)
    return calls


def context(values: dict[str, Any]) -> QueryContext:
    now = datetime.now(UTC)
    return QueryContext(now - timedelta(hours=1), now + timedelta(minutes=1), 60_000, values)


@pytest.mark.parametrize("mode", ["all", "one"])
def test_every_panel_runs_on_the_proxys_own_spans(proxy: Any, traffic: int, mode: str) -> None:
    if mode == "all":
        values: dict[str, Any] = {v: [ALL] for v in ("provider", "model", "service", "user", "source", "detector",
                                                     "severity")}
    else:
        values = {"provider": ["openai"], "model": ["gpt-4o-mini"], "service": ["genops-proxy"], "user": ["alice"],
                  "source": ["genops.proxy"], "detector": [ALL], "severity": [ALL]}
    values.update(property="team", trace_id="", route="")  # no routed traffic here: the Rollouts panels run empty
    results: dict[str, dict[str, Any]] = {}
    for name, model in DASHBOARDS.items():
        ctx = context(dict(values))
        for variable in model["templating"]["list"]:
            if variable["type"] == "query":
                ctx.options[variable["name"]] = [r[0] for r in sql(proxy, interpolate(variable["query"]["rawSql"], ctx))[2]]
        for panel in model["panels"]:
            columns, types, rows = sql(proxy, interpolate(panel["targets"][0]["rawSql"], ctx))
            if panel["type"] == "timeseries" and rows:  # chDB gives no column metadata for an empty result
                assert columns and columns[0] == "time" and types[0].startswith("DateTime"), (name, panel["title"], columns, rows)
            if panel["type"] == "stat":
                assert len(rows) == 1 and len(rows[0]) == 1, (name, panel["title"])
            results[f"{name}/{panel['title']}"] = {"columns": columns, "rows": rows}
    stat = lambda key: results[key]["rows"][0][0]  # noqa: E731
    if mode == "all":
        assert stat("overview/Requests") == traffic
        providers = {r[1] for r in results["cost/Cost by provider"]["rows"]}
        assert providers == {"openai", "anthropic", "gcp.gemini"}
        assert stat("overview/Error rate") == pytest.approx(1 / traffic)
        assert {r[0] for r in results["cost/Top spenders"]["rows"]} == {"alice", "bob", "carol"}
        assert {r[1] for r in results["cost/Cost by custom property ${property}"]["rows"]} == {"growth"}
        assert results["agents/Trace ${trace_id}"]["rows"], "the trace view shows the latest trace"
    else:
        assert stat("overview/Requests") == 2
        assert stat("overview/p95 time to first token") > 0
    assert stat("cost/Saved by cached input") > 0
    assert stat("safety/PII findings") >= 1
