"""Issue #18 part 4: coding agents at their documented settings, through a real ``genops serve``.

Each request replays the headers and body fields the tool really sends, at the base URL its docs
set (the bare proxy URL for Claude Code and Gemini CLI, ``<proxy>/v1`` for Codex and the Agents
SDK), and the ``genops_calls`` row must carry provider, tokens, cost, the agent name and the user
and session the tool's own identifiers name. Sources for the request shapes (public code and
threads, read 2026):

- Claude Code: ``User-Agent: claude-cli/<v> (external, cli)``, ``x-app: cli``, ``anthropic-beta:
  claude-code-20250219,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14``,
  ``anthropic-dangerous-direct-browser-access: true``, ``?beta=true`` (captured requests in
  proxies' fixtures, e.g. request logs of ``claude-cli/1.0.119`` and ``claude-cli/2.0.76``);
  ``metadata.user_id`` = ``user_<sha256>_account_<uuid|empty>_session_<uuid>`` and, from v2.1.78,
  the JSON string ``{"device_id","account_uuid","session_id"}``; from v2.1.86 the
  ``X-Claude-Code-Session-Id`` header (coder/aibridge PR #241, ding113/claude-code-hub PR #939).
- Codex CLI: ``originator: codex_cli_rs``, ``User-Agent: codex_cli_rs/<v> (<os>; <arch>) <term>``,
  ``session_id`` (+ ``conversation_id`` in older versions) = the conversation uuid, which is also
  the Responses ``prompt_cache_key`` (openai/codex codex-rs/codex-api/src/requests/headers.rs;
  captured headers of codex_cli_rs/0.38.0); body: ``instructions``, ``input`` items, function
  ``tools``, ``tool_choice: auto``, ``parallel_tool_calls: false``, ``reasoning: {effort,
  summary: auto}``, ``store: false``, ``stream: true``, ``include: [reasoning.encrypted_content]``.
- Gemini CLI: google-genai (JS) with ``User-Agent: GeminiCLI/<v> (<platform>; <arch>)`` and
  ``x-gemini-api-privileged-user-id: <installation uuid>`` (gemini-cli
  packages/core/src/core/contentGenerator.ts); base URL from ``GOOGLE_GEMINI_BASE_URL``.
- OpenAI Agents SDK: the ``openai`` client with ``User-Agent: Agents/Python <v>`` on model calls
  (openai-agents-python src/agents/models/openai_responses.py / chatcmpl_helpers.py).
"""

from __future__ import annotations

import urllib.request
import uuid
from typing import Any

import orjson
import pytest

pytestmark = pytest.mark.e2e

# Claude Code's device hash (64 hex) and two developers / three sessions.
DEV_A = "a" * 63 + "1"
DEV_B = "b" * 63 + "2"
CLAUDE_TOOLS = [
    {"name": "Bash", "description": "Executes a given bash command in a persistent shell session.",
     "input_schema": {"type": "object", "properties": {
         "command": {"type": "string", "description": "The command to execute"},
         "timeout": {"type": "number", "description": "Optional timeout in milliseconds (max 600000)"},
         "description": {"type": "string", "description": "Clear, concise description of what this command does"}},
         "required": ["command"], "additionalProperties": False,
         "$schema": "http://json-schema.org/draft-07/schema#"}},
    {"name": "Read", "description": "Reads a file from the local filesystem.",
     "input_schema": {"type": "object", "properties": {
         "file_path": {"type": "string", "description": "The absolute path to the file to read"}},
         "required": ["file_path"], "additionalProperties": False,
         "$schema": "http://json-schema.org/draft-07/schema#"}},
]


def post(url: str, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=orjson.dumps(body), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, dict(response.headers), response.read()


def claude_headers(request_id: str, version: str = "2.0.14", session_header: str | None = None) -> dict[str, str]:
    headers = {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "User-Agent": f"claude-cli/{version} (external, cli)",
        "X-Stainless-Lang": "js",
        "X-Stainless-Package-Version": "0.60.0",
        "X-Stainless-Runtime": "node",
        "X-Stainless-Retry-Count": "0",
        "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14",
        "anthropic-dangerous-direct-browser-access": "true",
        "anthropic-version": "2023-06-01",
        "x-api-key": "sk-ant-api03-coding-agent-test",
        "x-app": "cli",
        "GenOps-Request-Id": request_id,  # only to find the row; identity comes from the tool's own fields
    }
    if session_header:
        headers["X-Claude-Code-Session-Id"] = session_header
    return headers


def claude_body(user_id: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 32000,
        "stream": True,
        "temperature": 1,
        "system": [
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.",
             "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "You are an interactive CLI tool that helps users with software engineering tasks.",
             "cache_control": {"type": "ephemeral"}},
        ],
        "messages": messages,
        "tools": CLAUDE_TOOLS,
        "metadata": {"user_id": user_id},
    }


def legacy_user_id(device: str, session: str, account: str = "") -> str:
    return f"user_{device}_account_{account}_session_{session}"


def json_user_id(device: str, session: str, account: str = "") -> str:
    return orjson.dumps({"device_id": device, "account_uuid": account, "session_id": session}).decode()


def call_row(proxy, request_id: str) -> dict[str, Any]:
    return proxy.wait_rows(
        "SELECT Provider, Operation, InputTokens, OutputTokens, ReasoningTokens, CostUsd, CostKnown, "
        "UserId, SessionId, AgentName, Properties, HttpStatus, Stream "
        f"FROM genops_calls WHERE RequestId = '{request_id}'")[0]


def claude_turns(proxy, request_id: str, user_id: str, session_header: str | None = None,
                 version: str = "2.0.14") -> tuple[bytes, bytes]:
    """A Claude Code tool loop: the model calls Bash (streamed tool_use), then answers the result."""
    url = proxy.url + "/v1/messages?beta=true"
    first = [{"role": "user", "content": [{"type": "text", "text": "<system-reminder>context</system-reminder>"},
                                          {"type": "text", "text": "List the files in this repository."}]}]
    status, _, stream = post(url, claude_headers(request_id, version, session_header), claude_body(user_id, first))
    assert status == 200
    tool_use = None
    for line in stream.split(b"\n"):
        if line.startswith(b"data: ") and b'"content_block_start"' in line:
            tool_use = orjson.loads(line[6:])["content_block"]
    assert tool_use and tool_use["type"] == "tool_use" and tool_use["name"] == "Bash", stream
    second = first + [
        {"role": "assistant", "content": [{**tool_use, "input": {"command": "ls", "description": "List files"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use["id"],
                                      "content": "README.md\nproxy\ntests", "is_error": False}]},
    ]
    status, _, answer = post(url, claude_headers(request_id + "-2", version, session_header),
                             claude_body(user_id, second))
    assert status == 200 and b"message_stop" in answer
    return stream, answer


def test_claude_code_legacy_user_id_at_root(proxy, fake_upstream):
    session, request_id = str(uuid.uuid4()), "cc-" + uuid.uuid4().hex
    raw = legacy_user_id(DEV_A, session)
    claude_turns(proxy, request_id, raw)

    sent = [r for r in fake_upstream.requests() if r["path"] == "/v1/messages"][-1]
    assert orjson.loads(sent["body"])["metadata"]["user_id"] == raw  # forwarded untouched
    sent_headers = {k.lower(): v for k, v in sent["headers"].items()}
    assert sent_headers["anthropic-beta"].startswith("claude-code-20250219")
    assert sent_headers["user-agent"].startswith("claude-cli/")

    for rid in (request_id, request_id + "-2"):
        row = call_row(proxy, rid)
        assert row["Provider"] == "anthropic" and row["Operation"] == "chat" and row["Stream"] in (1, True)
        assert row["InputTokens"] > 0 and row["OutputTokens"] > 0
        assert row["CostKnown"] in (1, True) and row["CostUsd"] > 0
        assert row["UserId"] == "user_" + DEV_A
        assert row["SessionId"] == session
        assert row["AgentName"] == "claude-code"
        assert row["Properties"]["claude_code.user_id"] == raw
        assert "claude_code.account_uuid" not in row["Properties"]  # API-key login: empty account
    attrs = proxy.span(request_id)["SpanAttributes"]
    assert attrs["genops.response.tool_names"] in ("Bash", '["Bash"]') or "Bash" in attrs["genops.response.tool_names"]


def test_claude_code_json_user_id_and_session_header_with_count_tokens(proxy):
    """Claude Code >= 2.1.86: JSON ``metadata.user_id`` plus ``X-Claude-Code-Session-Id``; its
    ``count_tokens`` calls carry no metadata, so the header names the session there."""
    session, account = str(uuid.uuid4()), str(uuid.uuid4())
    request_id = "cc-json-" + uuid.uuid4().hex
    claude_turns(proxy, request_id, json_user_id(DEV_A, session, account), session_header=session, version="2.1.90")
    row = call_row(proxy, request_id)
    assert (row["UserId"], row["SessionId"], row["AgentName"]) == ("user_" + DEV_A, session, "claude-code")
    assert row["Properties"]["claude_code.account_uuid"] == account

    count_id = "cc-count-" + uuid.uuid4().hex
    body = {"model": "claude-sonnet-4-5-20250929", "messages": [{"role": "user", "content": "foo"}],
            "tools": CLAUDE_TOOLS}
    status, _, data = post(proxy.url + "/v1/messages/count_tokens?beta=true",
                           {**claude_headers(count_id, "2.1.90", session),
                            "anthropic-beta": "claude-code-20250219,token-counting-2024-11-01"}, body)
    assert status == 200 and orjson.loads(data)["input_tokens"] > 0
    attrs = proxy.span(count_id)["SpanAttributes"]  # traced as HTTP (no tokens billed): a span, not a genops_calls row
    assert attrs["genops.route"] == "anthropic" and attrs["http.response.status_code"] == "200"
    assert (attrs["gen_ai.conversation.id"], attrs["gen_ai.agent.name"]) == (session, "claude-code")


def test_explicit_genops_headers_win_over_claude_code_ids(proxy):
    session, request_id = str(uuid.uuid4()), "cc-explicit-" + uuid.uuid4().hex
    headers = {**claude_headers(request_id, session_header=session),
               "GenOps-User-Id": "alice@example.com", "GenOps-Session-Id": "ticket-123",
               "GenOps-Agent-Name": "reviewer"}
    first = [{"role": "user", "content": "Review the diff."}]
    body = {**claude_body(legacy_user_id(DEV_A, session), first), "tools": []}
    assert post(proxy.url + "/v1/messages?beta=true", headers, body)[0] == 200
    row = call_row(proxy, request_id)
    assert (row["UserId"], row["SessionId"], row["AgentName"]) == ("alice@example.com", "ticket-123", "reviewer")


def test_plain_metadata_user_id_is_kept_whole(proxy):
    """An app's own ``metadata.user_id`` (not Claude Code's shape) stays the user id."""
    request_id = "ant-plain-" + uuid.uuid4().hex
    body = {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}],
            "metadata": {"user_id": "user_42"}}
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01", "x-api-key": "sk-ant-x",
               "User-Agent": "Anthropic/Python 0.69.0", "GenOps-Request-Id": request_id}
    assert post(proxy.url + "/v1/messages", headers, body)[0] == 200
    row = call_row(proxy, request_id)
    assert (row["UserId"], row["SessionId"], row["AgentName"]) == ("user_42", "", "")


def codex_headers(request_id: str, conversation: str) -> dict[str, str]:
    return {
        "Authorization": "Bearer sk-proj-codex-test",
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        "originator": "codex_cli_rs",
        "version": "0.46.0",
        "User-Agent": "codex_cli_rs/0.46.0 (Mac OS 15.0.1; arm64) iTerm.app/3.6.1",
        "session_id": conversation,
        "conversation_id": conversation,
        "GenOps-Request-Id": request_id,
        "GenOps-User-Id": "bob",  # Codex sends no developer id: set one (config.toml http_headers)
    }


def codex_body(conversation: str) -> dict[str, Any]:
    return {
        "model": "gpt-5-codex",
        "instructions": "You are Codex, based on GPT-5. You are running as a coding agent in the Codex CLI.",
        "input": [
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "<environment_context>\n  <cwd>/home/bob/billing</cwd>\n"
                                               "  <approval_policy>on-request</approval_policy>\n</environment_context>"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Run the tests."}]},
        ],
        "tools": [{"type": "function", "name": "shell", "description": "Runs a shell command and returns its output.",
                   "strict": False, "parameters": {"type": "object", "properties": {
                       "command": {"type": "array", "items": {"type": "string"}},
                       "workdir": {"type": "string"}, "timeout_ms": {"type": "number"}},
                       "required": ["command"], "additionalProperties": False}}],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": conversation,
    }


def test_codex_cli_responses_stream_with_reasoning(proxy, fake_upstream):
    conversation, request_id = str(uuid.uuid4()), "codex-" + uuid.uuid4().hex
    status, _, stream = post(proxy.url + "/v1/responses",
                             {**codex_headers(request_id, conversation), "X-Fake-Reasoning-Tokens": "64"},
                             codex_body(conversation))
    assert status == 200
    assert b'"type":"reasoning"' in stream and b'"function_call"' in stream and b"response.completed" in stream
    sent = fake_upstream.requests()[-1]
    assert sent["path"] == "/v1/responses"
    assert {k.lower(): v for k, v in sent["headers"].items()}["session_id"] == conversation  # forwarded

    row = call_row(proxy, request_id)
    assert row["Provider"] == "openai" and row["Operation"] == "responses"
    assert row["InputTokens"] > 0 and row["OutputTokens"] > 0 and row["ReasoningTokens"] == 64
    assert row["CostKnown"] in (1, True) and row["CostUsd"] > 0
    assert (row["UserId"], row["SessionId"], row["AgentName"]) == ("bob", conversation, "codex")
    assert row["Properties"]["codex.originator"] == "codex_cli_rs"


def test_codex_exec_session_from_prompt_cache_key(proxy):
    """No session header (a Codex build or front-end without it): the ``prompt_cache_key`` names it."""
    conversation, request_id = str(uuid.uuid4()), "codex-exec-" + uuid.uuid4().hex
    headers = {k: v for k, v in codex_headers(request_id, conversation).items()
               if k not in ("session_id", "conversation_id")}
    headers["originator"] = "codex_exec"
    headers["User-Agent"] = "codex_exec/0.46.0 (Ubuntu 24.4.0; x86_64) unknown (codex_exec; 0.46.0)"
    assert post(proxy.url + "/v1/responses", headers, codex_body(conversation))[0] == 200
    row = call_row(proxy, request_id)
    assert (row["SessionId"], row["AgentName"]) == (conversation, "codex")
    assert row["Properties"]["codex.originator"] == "codex_exec"


def test_gemini_cli_at_root(proxy):
    installation, request_id = str(uuid.uuid4()), "gemini-cli-" + uuid.uuid4().hex
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GeminiCLI/0.8.2 (linux; x64)",
        "x-goog-api-client": "google-genai-sdk/1.16.0 gl-node/v22.19.0",
        "x-goog-api-key": "AIza-gemini-cli-test",
        "x-gemini-api-privileged-user-id": installation,
        "GenOps-Request-Id": request_id,
    }
    body = {
        "contents": [{"role": "user", "parts": [{"text": "This is the Gemini CLI. Summarise the repo."}]}],
        "systemInstruction": {"role": "user", "parts": [{"text": "You are an interactive CLI agent."}]},
        "tools": [{"functionDeclarations": [{"name": "list_directory", "description": "Lists a directory.",
                                             "parameters": {"type": "OBJECT", "properties": {
                                                 "path": {"type": "STRING"}}, "required": ["path"]}}]}],
        "generationConfig": {"temperature": 0, "topP": 1,
                             "thinkingConfig": {"includeThoughts": True, "thinkingBudget": -1}},
    }
    status, _, stream = post(proxy.url + "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse", headers, body)
    assert status == 200 and b"data: " in stream
    row = call_row(proxy, request_id)
    assert row["Provider"] == "gcp.gemini" and row["InputTokens"] > 0 and row["OutputTokens"] > 0
    assert row["CostKnown"] in (1, True) and row["CostUsd"] > 0
    assert (row["UserId"], row["AgentName"]) == (installation, "gemini-cli")


def test_openai_agents_sdk(proxy):
    """The Agents SDK's model calls say ``Agents/Python``; the session is the app's GenOps-Session-Id."""
    import openai

    request_id, group = "agents-" + uuid.uuid4().hex, "thread-" + uuid.uuid4().hex
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-test", max_retries=0, default_headers={
        "GenOps-Session-Id": group, "GenOps-User-Id": "carol", "GenOps-Request-Id": request_id})
    # What OpenAIResponsesModel sends: extra_headers={"User-Agent": "Agents/Python <version>"}.
    client.responses.create(model="gpt-4o-mini", input="Plan the trip.", instructions="You are a planner.",
                            extra_headers={"User-Agent": "Agents/Python 0.3.3"})
    row = call_row(proxy, request_id)
    assert (row["UserId"], row["SessionId"], row["AgentName"]) == ("carol", group, "openai-agents")
    assert row["CostUsd"] > 0


def test_cost_per_developer_and_session(proxy):
    """Two developers, three Claude Code sessions: the SQL in docs/coding-agents.md gives each one's cost."""
    tag = uuid.uuid4().hex[:8]
    dev_a, dev_b = DEV_A[:-8] + tag, DEV_B[:-8] + tag
    sessions = {(dev, str(uuid.uuid4())): turns for dev, turns in ((dev_a, 2), (dev_a, 1), (dev_b, 1))}
    ids: list[str] = []
    for (dev, session), turns in sessions.items():
        for _ in range(turns):
            request_id = f"cc-cost-{tag}-{len(ids)}"
            claude_turns(proxy, request_id, legacy_user_id(dev, session))
            ids += [request_id, request_id + "-2"]
    users = f"('user_{dev_a}', 'user_{dev_b}')"
    proxy.wait_rows(f"SELECT RequestId FROM genops_calls WHERE UserId IN {users}", count=len(ids))

    per_session = proxy.sql(
        "SELECT UserId, SessionId, count() AS calls, sum(CostUsd) AS cost FROM genops_calls "
        f"WHERE AgentName = 'claude-code' AND UserId IN {users} GROUP BY UserId, SessionId ORDER BY UserId, calls DESC")
    assert [(r["UserId"], r["SessionId"], r["calls"]) for r in per_session] == [
        (f"user_{dev}", session, 2 * turns) for (dev, session), turns in sessions.items()]
    assert all(r["cost"] > 0 for r in per_session)

    per_dev = {r["UserId"]: r for r in proxy.sql(
        "SELECT UserId, uniqExact(SessionId) AS sessions, sum(CostUsd) AS cost FROM genops_calls "
        f"WHERE UserId IN {users} GROUP BY UserId")}
    assert per_dev[f"user_{dev_a}"]["sessions"] == 2 and per_dev[f"user_{dev_b}"]["sessions"] == 1
    a_sessions = [r["cost"] for r in per_session if r["UserId"] == f"user_{dev_a}"]
    assert per_dev[f"user_{dev_a}"]["cost"] == pytest.approx(sum(a_sessions))
