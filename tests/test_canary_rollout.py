"""Canary rollouts end to end, as a user drives them: `genops rollout start` on a running proxy,
real calls through the openai SDK split between canary and baseline by the proxy's workers,
the evaluator judging them from ClickHouse, and the rollout rolled back (alert posted) or
promoted; the proxies follow each decision."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from typing import Any

import openai
import orjson
import pytest
from aiohttp import web

from tests.conftest import serve_in_thread, start_proxy, upstream_env

pytestmark = pytest.mark.e2e

ROUTES = """
[[routes]]
name = "risky-bot"
targets = ["openai:gpt-4o-mini"]

[[routes]]
name = "healthy-bot"
targets = ["openai:gpt-4o-mini"]
"""


@pytest.fixture(scope="module")
def alerts():
    received: list[Any] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(orjson.loads(await request.read()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    with serve_in_thread(app) as url:
        yield url + "/hook", received


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, fake_upstream, alerts):
    data_dir = tmp_path_factory.mktemp("canary")
    (data_dir / "genops.toml").write_text(textwrap.dedent(ROUTES))
    env = upstream_env(fake_upstream.url)
    # only the passes the test asks for decide (no background pass in between): deterministic
    env.update({"GENOPS_ROLLOUT_CHECK_INTERVAL_S": "3600", "GENOPS_ALERT_WEBHOOK_URL": alerts[0]})
    running = start_proxy(data_dir, env)
    yield running
    running.stop()


def genops(proxy, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENOPS_")}
    env["GENOPS_DATA_DIR"] = str(proxy.data_dir)
    done = subprocess.run([sys.executable, "-m", "genops", *args], env=env, cwd=str(proxy.data_dir),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def calls(proxy, route: str, n: int, **headers: str) -> dict[str, int]:
    """``n`` calls of ``route``; the models that answered (and "error") counted."""
    via = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-client", max_retries=0, default_headers=headers)
    counts: dict[str, int] = {}
    for _ in range(n):
        try:
            model = via.chat.completions.create(model=route, messages=[{"role": "user", "content": "hi"}]).model
        except openai.InternalServerError:
            model = "error"
        counts[model] = counts.get(model, 0) + 1
    return counts


def wait_until(what, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = what()
        if result:
            return result
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def stored_calls(proxy, route: str, variant: str) -> int:
    rows = proxy.sql(f"SELECT count() AS n FROM genops_calls WHERE RouteName = '{route}' AND RouteVariant = '{variant}'")
    return int(rows[0]["n"])


def decisions(proxy, route: str) -> list[dict[str, Any]]:
    return proxy.sql(f"SELECT Action, Percent, Reason, Actor FROM genops_rollouts WHERE Route = '{route}' ORDER BY Timestamp")


def test_a_canary_with_20_percent_errors_is_rolled_back_by_itself(proxy, alerts):
    genops(proxy, "rollout", "start", "risky-bot", "--target", "openai:gpt-4o", "--steps", "50,100",
           "--interval", "1s", "--min-calls", "50", "--max-cost-increase", "none")
    failing = {"X-Fake-Error-Rate": "0.2", "X-Fake-Error-Model": "gpt-4o"}
    # the workers follow the new rollout within their poll: half the calls go to the canary
    wait_until(lambda: any(m.startswith("gpt-4o-2024") or m == "error" for m in calls(proxy, "risky-bot", 10, **failing)))
    counts = calls(proxy, "risky-bot", 300, **failing)
    assert counts.get("error", 0) > 0
    wait_until(lambda: stored_calls(proxy, "risky-bot", "canary") >= 100
               and stored_calls(proxy, "risky-bot", "baseline") >= 100)

    output = genops(proxy, "rollout", "evaluate", "--json")
    decided = orjson.loads(output)["decisions"]
    assert [d["action"] for d in decided] == ["rollback"]
    assert "error_rate" in decided[0]["reason"], decided[0]
    rows = decisions(proxy, "risky-bot")
    assert [r["Action"] for r in rows] == ["start", "rollback"] and rows[1]["Actor"] == "auto"
    # the alert webhook heard of it, naming the gate
    wait_until(lambda: alerts[1])
    assert "risky-bot" in orjson.dumps(alerts[1][-1]).decode() and "error" in orjson.dumps(alerts[1][-1]).decode()
    # and the proxy stops sending calls to the canary
    wait_until(lambda: set(calls(proxy, "risky-bot", 20, **failing)) == {"gpt-4o-mini-2024-07-18"})
    assert "rolled_back" in genops(proxy, "rollout", "status", "risky-bot")


def test_a_healthy_canary_is_promoted(proxy):
    genops(proxy, "rollout", "start", "healthy-bot", "--target", "openai:gpt-4o", "--steps", "50,100",
           "--interval", "1s", "--min-calls", "50", "--max-cost-increase", "none")
    wait_until(lambda: any(m.startswith("gpt-4o-2024") for m in calls(proxy, "healthy-bot", 10)))
    calls(proxy, "healthy-bot", 240)
    wait_until(lambda: stored_calls(proxy, "healthy-bot", "canary") >= 60
               and stored_calls(proxy, "healthy-bot", "baseline") >= 60)
    time.sleep(1.0)  # the step's interval (1 s) is over: a pass may move it on
    # passing the step before 100% promotes (at 100% there would be no baseline of the same time)
    assert [d["action"] for d in orjson.loads(genops(proxy, "rollout", "evaluate", "--json"))["decisions"]] == ["promote"]
    assert [(r["Action"], r["Percent"]) for r in decisions(proxy, "healthy-bot")] == [("start", 50), ("promote", 100)]
    # promoted: the route now sends everything to the canary target, in every worker
    wait_until(lambda: set(calls(proxy, "healthy-bot", 10)) == {"gpt-4o-2024-08-06"})
    assert set(calls(proxy, "healthy-bot", 20)) == {"gpt-4o-2024-08-06"}
    assert "promoted" in genops(proxy, "rollout", "status", "healthy-bot")


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/genops/v1/rollouts"), ("GET", "/genops/v1/rollouts/routing"), ("GET", "/genops/v1/rollouts/risky-bot"),
    ("POST", "/genops/v1/rollouts"), ("POST", "/genops/v1/rollouts/evaluate"),
    ("POST", "/genops/v1/rollouts/risky-bot/promote"), ("POST", "/genops/v1/rollouts/risky-bot/rollback"),
])
def test_the_rollout_endpoints_need_the_admin_token(proxy, method, path):
    import urllib.error
    import urllib.request

    feedback_token = (proxy.data_dir / "feedback_token").read_text().strip() if (
        proxy.data_dir / "feedback_token").exists() else "not-a-token"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {feedback_token}"}):
        request = urllib.request.Request(proxy.url + path, method=method, headers=headers,
                                         data=b'{"route": "risky-bot", "target": "openai:gpt-4o"}' if method == "POST" else None)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=30)
        assert caught.value.code in (401, 403), (path, headers, caught.value.code)
