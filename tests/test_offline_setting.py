"""Offline with one setting: ``GENOPS_UPSTREAM_BASE_URL`` points every provider at one upstream
laid out as ``genops fake-upstream`` serves them (README, "Offline: one setting")."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import anthropic
import openai
import orjson
import pytest
from conftest import start_proxy
from google import genai
from google.genai import types
from google.oauth2.credentials import Credentials

from genops.config import ConfigError, Settings, load_settings, named_upstreams

pytestmark = pytest.mark.e2e

NO_RETRY = types.HttpRetryOptions(attempts=1)


@pytest.fixture(scope="module")
def offline_proxy(tmp_path_factory, fake_upstream):
    """``genops serve`` with GENOPS_UPSTREAM_BASE_URL as its only upstream setting."""
    data_dir = tmp_path_factory.mktemp("offline") / ".genops"  # the default ./.genops of its parent
    proxy = start_proxy(data_dir, {"GENOPS_UPSTREAM_BASE_URL": fake_upstream.url + "/"})
    assert not any(k.endswith("_BASE_URL") and k != "GENOPS_UPSTREAM_BASE_URL" for k in proxy.env)
    yield proxy
    proxy.stop()


def new_id() -> str:
    return "offline-" + uuid.uuid4().hex


def call_row(proxy, request_id: str) -> dict:
    """The call's genops_calls row, plus the upstream URL its span recorded."""
    row = proxy.wait_rows("SELECT Provider, RequestModel, InputTokens, OutputTokens, CostUsd, ErrorType "
                          f"FROM genops_calls WHERE RequestId = '{request_id}'")[0]
    return {**row, "upstream": proxy.span(request_id)["SpanAttributes"]["genops.upstream.url"]}


def test_openai_and_anthropic_sdks_answer_through_the_one_setting(offline_proxy, fake_upstream):
    rid = new_id()
    client = openai.OpenAI(base_url=offline_proxy.url + "/v1", api_key="sk-offline", max_retries=0,
                           default_headers={"GenOps-Request-Id": rid})
    answer = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hi"}])
    assert answer.choices[0].message.content
    row = call_row(offline_proxy, rid)
    assert row["upstream"] == fake_upstream.url + "/v1/chat/completions"
    assert (row["Provider"], row["RequestModel"], row["ErrorType"]) == ("openai", "gpt-4o-mini", "")
    assert row["InputTokens"] > 0 and row["OutputTokens"] > 0 and row["CostUsd"] > 0

    rid = new_id()
    claude = anthropic.Anthropic(base_url=offline_proxy.url + "/anthropic", api_key="sk-ant-offline", max_retries=0,
                                 default_headers={"GenOps-Request-Id": rid})
    message = claude.messages.create(model="claude-sonnet-4-5", max_tokens=64,
                                     messages=[{"role": "user", "content": "Say hi"}])
    assert message.content[0].text
    row = call_row(offline_proxy, rid)
    assert row["upstream"] == fake_upstream.url + "/v1/messages"
    assert (row["Provider"], row["ErrorType"]) == ("anthropic", "")
    assert row["InputTokens"] > 0 and row["OutputTokens"] > 0 and row["CostUsd"] > 0


def test_gemini_vertex_and_azure_follow_it_too(offline_proxy, fake_upstream):
    rid = new_id()
    gemini = genai.Client(api_key="AIza-offline", http_options=types.HttpOptions(
        base_url=offline_proxy.url + "/gemini", headers={"GenOps-Request-Id": rid}, retry_options=NO_RETRY))
    assert gemini.models.generate_content(model="gemini-2.5-flash", contents="Say hi").text
    upstream = call_row(offline_proxy, rid)["upstream"]  # /v1beta/... or /v1/..., as the SDK's version sends it
    assert upstream.startswith(fake_upstream.url + "/v1") and upstream.endswith("/models/gemini-2.5-flash:generateContent")

    rid = new_id()
    vertex = genai.Client(vertexai=True, project="proj-1", location="europe-west4",
                          credentials=Credentials(token="ya29.offline"),
                          http_options=types.HttpOptions(base_url=offline_proxy.url + "/vertex",
                                                         headers={"GenOps-Request-Id": rid}, retry_options=NO_RETRY))
    assert vertex.models.generate_content(model="gemini-2.5-flash", contents="Say hi").text
    upstream = call_row(offline_proxy, rid)["upstream"]
    assert upstream.startswith(fake_upstream.url + "/vertex/europe-west4/v1")
    assert "/projects/proj-1/locations/europe-west4/publishers/google/models/gemini-2.5-flash:" in upstream

    rid = new_id()
    azure = openai.AzureOpenAI(azure_endpoint=offline_proxy.url + "/azure/contoso", api_key="azure-offline",
                               api_version="2024-10-21", max_retries=0, default_headers={"GenOps-Request-Id": rid})
    answer = azure.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Say hi"}])
    assert answer.choices[0].message.content
    assert call_row(offline_proxy, rid)["upstream"] == (
        fake_upstream.url + "/azure/contoso/openai/deployments/gpt-4o/chat/completions")


def test_a_providers_own_setting_wins(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./genops.toml from elsewhere
    env = {"GENOPS_UPSTREAM_BASE_URL": "http://127.0.0.1:9100/", "GENOPS_ANTHROPIC_BASE_URL": "https://claude.internal"}
    settings = load_settings({"gemini_base_url": "https://generativelanguage.googleapis.com"}, env=env)
    assert settings.upstream_base_url == "http://127.0.0.1:9100"
    assert settings.openai_base_url == "http://127.0.0.1:9100"
    assert settings.anthropic_base_url == "https://claude.internal"  # environment
    assert settings.gemini_base_url == "https://generativelanguage.googleapis.com"  # flag, though equal to the default
    assert settings.vertex_base_url == "http://127.0.0.1:9100/vertex/{location}"
    assert settings.azure_base_url == "http://127.0.0.1:9100/azure/{resource}"

    (tmp_path / "genops.toml").write_text('upstream_base_url = "http://fake:9100"\nazure_base_url = "https://{resource}.example"\n')
    from_file = load_settings(env={})
    assert (from_file.openai_base_url, from_file.azure_base_url) == ("http://fake:9100", "https://{resource}.example")

    (tmp_path / "genops.toml").unlink()
    unset = load_settings(env={})
    assert unset.upstream_base_url == ""
    for name in ("openai_base_url", "anthropic_base_url", "gemini_base_url", "vertex_base_url", "azure_base_url"):
        assert getattr(unset, name) == getattr(Settings(), name) != ""


def test_malformed_value_names_the_setting_and_is_no_named_upstream(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="GENOPS_UPSTREAM_BASE_URL"):
        load_settings(env={"GENOPS_UPSTREAM_BASE_URL": "127.0.0.1:9100"})
    # GENOPS_UPSTREAM_<NAME> declares named upstreams; this setting is not one (no /u/base_url/v1 route)
    assert named_upstreams({"GENOPS_UPSTREAM_BASE_URL": "http://127.0.0.1:9100", "GENOPS_UPSTREAM_VLLM": "http://x"}) == {
        "vllm": "http://x"}


def test_the_readme_quick_start_shows_that_calls_row(offline_proxy):
    """The README's quick start, offline: its curl call through the proxy, then its `genops sql` finds that row."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    quick = readme[readme.index("## Quick start"):]
    curl = re.search(r"```bash\n(curl .*?)```", quick, re.S).group(1)
    url = re.search(r"curl -s (\S+)", curl).group(1)
    headers = dict(h.split(": ", 1) for h in re.findall(r'-H "([^"]+)"', curl))
    headers["Authorization"] = "Bearer sk-fake"  # $OPENAI_API_KEY; the fake only wants one
    body = re.search(r"-d '([^']+)'", curl).group(1)
    query = re.search(r'\$ \.venv/bin/genops sql "([^"]+)"', quick).group(1)
    assert headers["GenOps-Request-Id"] == "quickstart-1" and "quickstart-1" in query

    request = urllib.request.Request(url.replace("http://127.0.0.1:8080", offline_proxy.url), data=body.encode(),
                                     headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert orjson.loads(response.read())["choices"][0]["message"]["content"]
    offline_proxy.wait_rows("SELECT RequestId FROM genops_calls WHERE RequestId = 'quickstart-1'")

    env = {k: v for k, v in os.environ.items() if not k.startswith("GENOPS_")}
    result = subprocess.run([sys.executable, "-m", "genops", "sql", query], capture_output=True, text=True,
                            env=env, cwd=offline_proxy.data_dir.parent, timeout=120)  # "in the same directory"
    assert result.returncode == 0, result.stderr
    header, _, row, count = result.stdout.splitlines()
    assert header.split() == ["Provider", "RequestModel", "InputTokens", "OutputTokens", "CostUsd", "ms"]
    provider, model, input_tokens, output_tokens, cost, _ms = row.split()
    assert (provider, model, count) == ("openai", "gpt-4o-mini", "(1 row)")
    assert int(input_tokens) > 0 and int(output_tokens) > 0 and float(cost) > 0
