"""``genops rollout`` end to end: a real ``genops serve`` on the embedded store with a route in its
config file, and the CLI as a user runs it (start, status, promote, rollback, evaluate; the
refusals), the routing the proxies follow, the state across a restart, and the CLI on the
store itself once no server runs."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import FakeUpstream, Proxy, start_proxy, upstream_env

pytestmark = pytest.mark.e2e

CONFIG = """
[[routes]]
name = "support-bot"
strategy = "weighted"

[[routes.targets]]
target = "openai:gpt-4o-mini"
weight = 100
"""
CANARY = "anthropic:claude-haiku-4-5"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rollout-cli")


def proxy_env(data_dir: Path, fake_upstream: FakeUpstream) -> dict[str, str]:
    config = data_dir.parent / f"{data_dir.name}.toml"
    config.write_text(CONFIG)
    # the background evaluator stays out of the way: the test asks for passes itself
    return {**upstream_env(fake_upstream.url), "GENOPS_CONFIG": str(config), "GENOPS_ROLLOUT_CHECK_INTERVAL_S": "3600"}


@pytest.fixture(scope="module")
def proxy(data_dir: Path, fake_upstream: FakeUpstream) -> Iterator[Proxy]:
    proc = start_proxy(data_dir, proxy_env(data_dir, fake_upstream))
    yield proc
    proc.stop()


def run_cli(data_dir: str, config: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``genops rollout ...`` as a user runs it: a data directory and a config file, nothing else."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENOPS_")}
    env.update({"GENOPS_DATA_DIR": data_dir, "GENOPS_CONFIG": config})
    return subprocess.run([sys.executable, "-m", "genops", "rollout", *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=data_dir)


def cli(proxy: Proxy, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with the server's data directory and config file."""
    return run_cli(proxy.env["GENOPS_DATA_DIR"], proxy.env["GENOPS_CONFIG"], *args)


def routing(proxy: Proxy) -> dict[str, Any]:
    request = urllib.request.Request(proxy.url + "/genops/v1/rollouts/routing",
                                     headers={"Authorization": f"Bearer {proxy.token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return orjson.loads(response.read())["routes"]


def test_start_status_promote_rollback(proxy: Proxy) -> None:
    started = cli(proxy, "start", "support-bot", "--target", CANARY, "--steps", "5,50,100", "--interval", "30s",
                  "--min-calls", "50")
    assert started.returncode == 0, started.stderr
    assert f"started on support-bot: {CANARY} gets 5%" in started.stdout

    again = cli(proxy, "start", "support-bot", "--target", CANARY)
    assert again.returncode == 1 and "already running" in again.stderr  # 409

    status = cli(proxy, "status")
    assert status.returncode == 0, status.stderr
    text = status.stdout
    assert f"support-bot: running, canary {CANARY}" in text and "step 1 of 3: 5% to the canary" in text
    assert "at least 30s and 50 calls per step" in text and "baseline: openai:gpt-4o-mini=100" in text
    assert "calls: canary 0, baseline 0" in text
    for gate in ("error_rate", "p95_latency", "cost_per_call", "score", "safety_findings"):
        assert gate in text
    assert "insufficient" in text and "verdict: wait, next: wait" in text
    assert "last decision: start by cli" in text

    one = orjson.loads(cli(proxy, "status", "support-bot", "--json").stdout)
    rollout = one["rollout"]
    assert (rollout["route"], rollout["target"], rollout["steps"], rollout["interval_s"], rollout["min_calls"]) == (
        "support-bot", CANARY, [5, 50, 100], 30, 50)
    assert rollout["policy"]["cost_margin"] == 0.25 and rollout["policy"]["min_calls"] == 50
    assert [d["action"] for d in one["history"]] == ["start"]
    assert routing(proxy) == {"support-bot": {"rollout_id": rollout["rollout_id"], "target": CANARY, "percent": 5,
                                              "state": "running"}}

    evaluated = cli(proxy, "evaluate")
    assert evaluated.returncode == 0 and "no decision" in evaluated.stdout  # no calls yet: it waits

    promoted = cli(proxy, "promote", "support-bot")
    assert promoted.returncode == 0, promoted.stderr
    assert "sends all its calls to" in promoted.stdout and "genops.toml" in promoted.stdout
    assert routing(proxy)["support-bot"]["state"] == "promoted" and routing(proxy)["support-bot"]["percent"] == 100
    assert cli(proxy, "promote", "support-bot").returncode == 1  # already promoted
    status = cli(proxy, "status", "support-bot").stdout
    assert "support-bot: promoted" in status and "all calls to the canary until the config names it" in status

    rolled = cli(proxy, "rollback", "support-bot", "--reason", "changed our mind")
    assert rolled.returncode == 0, rolled.stderr
    assert routing(proxy) == {}  # the route's config applies again
    status = cli(proxy, "status", "support-bot")
    assert "support-bot: rolled_back" in status.stdout and "last decision: rollback by cli" in status.stdout
    assert "the route's config applies" in status.stdout
    assert "changed our mind" in status.stdout
    assert cli(proxy, "rollback", "support-bot").returncode == 1  # nothing left to roll back


@pytest.mark.parametrize("args, message", [
    (("start", "no-such-route", "--target", CANARY), "is not in the config file"),
    (("start", "support-bot", "--target", "nope:model"), "unknown provider 'nope'"),
    (("start", "support-bot", "--target", "anthropic"), "provider:model"),
    (("start", "support-bot", "--target", CANARY, "--steps", "5,1,100"), "steps: must increase"),
    (("start", "support-bot", "--target", CANARY, "--steps", "5,50"), "the last step must be 100"),
    (("start", "support-bot", "--target", CANARY, "--steps", "100"), "at least one step below 100"),
    (("start", "support-bot", "--target", CANARY, "--steps", "0,100"), "from 1 to 100"),
    (("promote", "no-such-route"), "no rollout on route"),
])
def test_refusals_say_why(proxy: Proxy, args: tuple[str, ...], message: str) -> None:
    result = cli(proxy, *args)
    assert result.returncode == 1 and message in result.stderr, (result.stdout, result.stderr)


def test_a_bad_interval_is_a_usage_error(proxy: Proxy) -> None:
    result = cli(proxy, "start", "support-bot", "--target", CANARY, "--interval", "ten minutes")
    assert result.returncode == 2 and "--interval" in result.stderr


def test_the_state_survives_a_restart_and_the_cli_reads_the_store_without_a_server(
        proxy: Proxy, data_dir: Path, fake_upstream: FakeUpstream) -> None:
    started = cli(proxy, "start", "support-bot", "--target", CANARY, "--interval", "10m")
    assert started.returncode == 0, started.stderr
    proxy.stop()
    # no server: the CLI opens the embedded store itself
    direct = cli(proxy, "status", "support-bot")
    assert direct.returncode == 0, direct.stderr
    assert "support-bot: running" in direct.stdout and "step 1 of 5: 1% to the canary" in direct.stdout
    again = start_proxy(data_dir, proxy_env(data_dir, fake_upstream))
    try:
        assert routing(again)["support-bot"]["percent"] == 1
        assert "support-bot: running" in cli(again, "status").stdout
        assert cli(again, "rollback", "support-bot").returncode == 0
    finally:
        again.stop()


def test_the_cli_runs_on_a_new_store_without_a_server(tmp_path: Path) -> None:
    """No server has ever run: the CLI creates the schema in the embedded store and keeps the rollout there."""
    config = tmp_path / "genops.toml"
    config.write_text(CONFIG)
    data = tmp_path / "data"
    data.mkdir()
    started = run_cli(str(data), str(config), "start", "support-bot", "--target", CANARY, "--steps", "10,100")
    assert started.returncode == 0, started.stderr
    status = run_cli(str(data), str(config), "status")
    assert status.returncode == 0, status.stderr
    assert "support-bot: running" in status.stdout and "step 1 of 2: 10% to the canary" in status.stdout
    assert "no decision" in run_cli(str(data), str(config), "evaluate").stdout
