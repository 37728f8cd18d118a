"""Coding agents pointed at the proxy: who they are and the ids they already send.

Claude Code, OpenAI's Codex CLI, Gemini CLI and the OpenAI Agents SDK each say who they are in
``User-Agent`` (and Codex in ``originator``), and Claude Code and Codex send a session id of their
own. :func:`agent_context` turns those into context keys (``agent-name``, ``session-id``,
``user-id``, ``property-<name>``) at the lowest rank, so ``GenOps-*`` / ``Helicone-*`` / Portkey
headers and body fields always win. :func:`claude_code_user_id` splits Claude Code's composite
``metadata.user_id`` (read by the Anthropic adapter).

What each tool sends (request shapes, see tests/test_coding_agents.py for sources):

- Claude Code: ``User-Agent: claude-cli/<version> (external, cli)``, ``x-app: cli``,
  ``anthropic-beta: claude-code-20250219,...``; ``metadata.user_id`` =
  ``user_<64 hex>_account_<account uuid or empty>_session_<uuid>`` (before v2.1.78) or the JSON
  string ``{"device_id": "<64 hex>", "account_uuid": "...", "session_id": "<uuid>"}`` (v2.1.78+);
  from v2.1.86 also ``X-Claude-Code-Session-Id: <uuid>``.
- Codex CLI: ``originator: codex_cli_rs`` (``codex_exec``, ``codex_vscode``...),
  ``User-Agent: codex_cli_rs/<version> (<os>; <arch>) <terminal>``, ``session_id: <conversation
  uuid>`` (older versions also ``conversation_id``), Responses ``prompt_cache_key`` = the same uuid.
- Gemini CLI: ``User-Agent: GeminiCLI/<version> (<platform>; <arch>)`` and, with usage statistics
  on (the default), ``x-gemini-api-privileged-user-id: <installation uuid>``; no session id.
- OpenAI Agents SDK: ``User-Agent: Agents/Python <version>`` on its model calls; its trace and
  group ids are not sent to the model API.

Cost: runs with the rest of the context after the response (never on the latency path): three
header lookups and a few ``str.startswith`` checks, 0.3-0.7 µs per call; splitting a Claude Code
``metadata.user_id`` adds ~1 µs (``str.partition``) or ~2 µs for the JSON form (one ``orjson.loads``
of ~150 bytes). Measured with timeit on the dev box.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from multidict import istr

CLAUDE_CODE, CODEX, GEMINI_CLI, OPENAI_AGENTS = "claude-code", "codex", "gemini-cli", "openai-agents"

_USER_AGENT, _ORIGINATOR, _X_APP = istr("User-Agent"), istr("originator"), istr("x-app")
_CLAUDE_SESSION = istr("X-Claude-Code-Session-Id")
# Codex's conversation id: ``session_id`` now, ``conversation_id`` in older versions; some
# Codex front-ends send ``x-codex-session-id``.
_CODEX_SESSION = (istr("session_id"), istr("conversation_id"), istr("x-codex-session-id"))
_GEMINI_INSTALLATION = istr("x-gemini-api-privileged-user-id")


def claude_code_user_id(raw: str) -> dict[str, Any] | None:
    """Context keys from Claude Code's ``metadata.user_id``, or None when it is not Claude Code's.

    User = ``user_<device hash>`` (the same id in both formats, so a machine keeps its UserId across
    Claude Code versions), session = the session uuid; the account uuid (when logged in with a
    Claude account) and the raw value are kept as properties.
    """
    if raw.startswith("user_"):
        user, sep, rest = raw.partition("_account_")
        account, sep2, session = rest.partition("_session_")
        if not (sep and sep2) or len(user) <= 5:
            return None
    elif raw.startswith("{"):
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(data, dict) or "session_id" not in data or "device_id" not in data:
            return None
        device, raw_account, raw_session = data.get("device_id"), data.get("account_uuid"), data.get("session_id")
        if not isinstance(device, str) or not device:
            return None
        user = "user_" + device
        account = raw_account if isinstance(raw_account, str) else ""
        session = raw_session if isinstance(raw_session, str) else ""
    else:
        return None
    out: dict[str, Any] = {"user-id": user, "property-claude_code.user_id": raw}
    if session:
        out["session-id"] = session
    if account:
        out["property-claude_code.account_uuid"] = account
    return out


def agent_context(headers: Mapping[str, str], request: Any) -> dict[str, Any]:
    """Context keys the coding agent's own headers (and Codex's ``prompt_cache_key``) carry."""
    user_agent = headers.get(_USER_AGENT) or ""
    if user_agent.startswith("claude-cli/") or headers.get(_X_APP) == "cli":
        out: dict[str, Any] = {"agent-name": CLAUDE_CODE}
        session = headers.get(_CLAUDE_SESSION)
        if session:
            out["session-id"] = session
        return out
    originator = headers.get(_ORIGINATOR) or ""
    if originator.startswith("codex") or user_agent.startswith("codex"):
        out = {"agent-name": CODEX}
        if originator:
            out["property-codex.originator"] = originator
        for name in _CODEX_SESSION:
            session = headers.get(name)
            if session:
                out["session-id"] = session
                break
        else:
            key = request.get("prompt_cache_key") if isinstance(request, dict) else None
            if isinstance(key, str) and key:
                out["session-id"] = key
        return out
    if user_agent.startswith("GeminiCLI/"):
        out = {"agent-name": GEMINI_CLI}
        installation = headers.get(_GEMINI_INSTALLATION)
        if installation:
            out["user-id"] = installation
        return out
    if user_agent.startswith("Agents/"):  # Agents/Python <version> (the JS SDK: Agents/JavaScript)
        return {"agent-name": OPENAI_AGENTS}
    return {}
