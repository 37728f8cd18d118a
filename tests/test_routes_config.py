"""Gateway routes in genops.toml: what is accepted, and one line naming the problem otherwise."""

from __future__ import annotations

import textwrap

import pytest

from genops.config import ConfigError, load_settings
from genops.proxy.routing.live import LiveRoutes
from genops.routes import RetryPolicy, Target, load_routes, parse_routes, parse_target, target_key_env

pytestmark = pytest.mark.unit

EXAMPLE = """
[[routes]]
name = "support-bot"
strategy = "weighted"
sticky = "user"
retry = { attempts = 2, on = [429, 500, 502, 503, 504, "timeout"] }

[[routes.targets]]
target = "openai:gpt-4o-mini"
weight = 90

[[routes.targets]]
target = "anthropic:claude-haiku-4-5"
weight = 10

[routes.fallback]
targets = ["openai:gpt-4o"]
"""


def write(tmp_path, text):
    path = tmp_path / "genops.toml"
    path.write_text(textwrap.dedent(text))
    return {"GENOPS_CONFIG": str(path)}


def test_the_issue_example_reads_as_written(tmp_path):
    table = load_routes(write(tmp_path, EXAMPLE))
    route = table.routes["support-bot"]
    assert route.strategy == "weighted" and route.sticky == "user"
    assert [str(t.target) for t in route.targets] == ["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"]
    assert [t.weight for t in route.targets] == [90, 10]
    assert [str(t.target) for t in route.fallback] == ["openai:gpt-4o"]
    assert route.retry.attempts == 2
    assert route.retry.on_status == frozenset({429, 500, 502, 503, 504})
    assert route.retry.on_timeout and not route.retry.on_connection


def test_settings_and_routes_share_one_file(tmp_path):
    env = write(tmp_path, 'port = 9999\n' + EXAMPLE)
    assert load_settings(env=env).port == 9999  # the settings reader skips [[routes]]
    assert list(load_routes(env).routes) == ["support-bot"]


def test_no_file_no_routes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert dict(load_routes({}).routes) == {}


def test_defaults_of_a_minimal_route():
    routes = parse_routes([{"name": "r", "targets": ["openai:gpt-4o"]}], "f")
    route = routes["r"]
    assert route.strategy == "weighted" and route.sticky == "none" and route.fallback == ()
    assert route.retry == RetryPolicy()
    assert route.retry.attempts == 1 and 429 in route.retry.on_status and route.retry.on_connection


@pytest.mark.parametrize(("route", "problem"), [
    ({"name": "r", "strategy": "random", "targets": ["openai:a"]}, "strategy: 'random' is not one of"),
    ({"name": "r", "sticky": "ip", "targets": ["openai:a"]}, "sticky: 'ip' is not one of"),
    ({"name": "r", "targets": []}, "needs at least one target"),
    ({"name": "r", "targets": ["cohere:command"]}, "unknown provider 'cohere'"),
    ({"name": "r", "targets": ["gpt-4o"]}, 'expected "provider:model"'),
    ({"name": "r", "targets": ["openai:"]}, "names no model"),
    ({"name": "r", "targets": [{"target": "openai:a", "weight": 0}]}, "needs a target with weight > 0"),
    ({"name": "r", "targets": [{"target": "openai:a", "weight": -1}]}, "weight: must be a number >= 0"),
    ({"name": "r", "targets": [{"target": "openai:a", "wieght": 5}]}, "unknown key 'wieght'"),
    ({"name": "r", "targets": ["openai:a"], "retry": {"attempts": 0}}, "attempts: must be an integer >= 1"),
    ({"name": "r", "targets": ["openai:a"], "retry": {"on": [200]}}, "200 is neither a 4xx/5xx status"),
    ({"name": "r", "targets": ["openai:a"], "fallback": {"targets": ["nope"]}}, "fallback.targets[0]"),
    ({"name": "r", "targets": ["u/vllm:llama"]}, "GENOPS_UPSTREAM_VLLM is not set"),
    ({"name": "has space", "targets": ["openai:a"]}, "a route needs a name without spaces"),
    ({"name": "r", "targets": ["openai:a"], "colour": "red"}, "unknown key 'colour'"),
])
def test_a_bad_route_is_refused_with_one_line_naming_it(route, problem):
    with pytest.raises(ConfigError) as caught:
        parse_routes([route], "genops.toml", env={})
    message = str(caught.value)
    assert problem in message, message
    assert message.startswith("genops.toml: routes[0]")
    assert "\n" not in message


def test_two_routes_with_one_name_are_refused():
    with pytest.raises(ConfigError, match=r"routes\[1\]: a second route named 'r'"):
        parse_routes([{"name": "r", "targets": ["openai:a"]}, {"name": "r", "targets": ["openai:b"]}], "f")


def test_a_named_upstream_target_needs_its_variable():
    routes = parse_routes([{"name": "r", "targets": ["u/vllm:meta/llama:8b"]}], "f",
                          env={"GENOPS_UPSTREAM_VLLM": "http://127.0.0.1:8000/v1"})
    target = routes["r"].targets[0].target
    assert target == Target("u/vllm", "meta/llama:8b")  # a model may hold ':' and '/'
    assert target.adapter_name == "upstream:vllm"
    assert target_key_env(routes["r"].targets[0]) == "GENOPS_KEY_VLLM"


def test_where_genops_finds_a_targets_key():
    routes = parse_routes([{"name": "r", "targets": ["anthropic:claude", {"target": "openai:a", "key_env": "TEAM_KEY"}]}],
                          "f")
    assert target_key_env(routes["r"].targets[0]) == "ANTHROPIC_API_KEY"
    assert target_key_env(routes["r"].targets[1]) == "TEAM_KEY"


def test_parse_target_refuses_unknown_providers():
    with pytest.raises(ConfigError, match="unknown provider"):
        parse_target("azure:gpt-4o")


def test_a_toml_syntax_error_is_one_line(tmp_path):
    env = write(tmp_path, '[[routes]]\nname = "r\n')
    with pytest.raises(ConfigError) as caught:
        load_routes(env)
    assert "cannot read the config file" in str(caught.value) and "\n" not in str(caught.value)


def test_reload_applies_a_good_file_and_refuses_a_bad_one(tmp_path, caplog):
    env = write(tmp_path, EXAMPLE)
    live = LiveRoutes.load(env)
    assert live.names == {"support-bot"}
    assert live.reload() is False  # unchanged file: nothing read

    path = tmp_path / "genops.toml"
    path.write_text(EXAMPLE.replace("support-bot", "helpdesk"))
    assert live.reload(force=True) is True
    assert live.names == {"helpdesk"}

    path.write_text(EXAMPLE.replace('strategy = "weighted"', 'strategy = "fastest"').replace("support-bot", "other"))
    with caplog.at_level("ERROR", logger="genops.proxy.routing"):
        assert live.reload(force=True) is False
    assert live.names == {"helpdesk"}  # the running routes stay
    assert "strategy: 'fastest' is not one of" in (live.last_error or "")
    assert any("config reload refused" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("doc", ["README.md", "docs/routing.md"])
def test_the_routes_the_docs_show_are_accepted(doc, tmp_path):
    """Every ``[[routes]]`` TOML block the docs show reads without a problem (a user copies them)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / doc).read_text()
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", text, re.S) if "[[routes]]" in b]
    assert blocks
    for block in blocks:
        table = load_routes(write(tmp_path, block))
        assert table.routes
