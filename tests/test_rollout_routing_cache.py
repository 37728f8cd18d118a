"""The rollout routing the proxies poll is read from the store at most every few seconds, and a
decision made through the service is seen at once (api/rollouts.py). Every worker asks every 2 s;
a query each time cost the embedded store 7% of its CPU at 50 clients."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import open_chdb

from genops.api.rollouts import RolloutService
from genops.config import load_settings
from genops.storage.migrate import migrate

pytestmark = pytest.mark.integration


class CountingClient:
    """The real chDB client, counting the queries that reach it."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.queries = 0

    def query(self, *args: Any, **kwargs: Any) -> Any:
        self.queries += 1
        return self.client.query(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


@pytest.fixture()
def service(chdb_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[RolloutService, CountingClient]]:
    client = open_chdb(chdb_dir)
    database = "rollout_cache_" + uuid.uuid4().hex[:8]
    migrate(client, database)
    (tmp_path / "genops.toml").write_text('[[routes]]\nname = "bot"\ntargets = ["openai:gpt-4o-mini"]\n')
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={"GENOPS_DATA_DIR": str(tmp_path / "data"), "GENOPS_DATABASE": database})
    counting = CountingClient(client)
    yield RolloutService(counting, settings), counting
    client.command(f"DROP DATABASE IF EXISTS {database}")


def test_polls_within_the_max_age_cost_one_read_and_a_start_is_seen_at_once(service):
    rollouts, client = service
    assert rollouts.routing() == {"routes": {}}
    reads = client.queries
    assert reads > 0  # the first poll read the store
    for _ in range(20):  # twenty workers' polls
        assert rollouts.routing() == {"routes": {}}
    assert client.queries == reads  # served from the copy

    rollouts.start({"route": "bot", "target": "anthropic:claude-haiku-4-5", "steps": [10, 100], "interval_s": 60,
                    "min_calls": 10}, "cli")
    routing = rollouts.routing()["routes"]
    assert routing["bot"]["target"] == "anthropic:claude-haiku-4-5" and routing["bot"]["percent"] == 10

    rollouts.rollback("bot", "cli", "test")
    assert rollouts.routing() == {"routes": {}}
