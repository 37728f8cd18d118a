"""``genops config``: the settings in effect, or (``--markdown``) the configuration reference.

The reference, ``docs/configuration.md``, is rendered from the settings' own metadata
(``Settings`` in ``genops.config``: each field's default and help), so it cannot drift from
the code; ``tests/test_configuration_doc.py`` fails when the committed file is stale.
Regenerate it with the one command in :data:`REGENERATE`.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from genops.config import ENV_PREFIX, FIELDS, Settings, env_name, load_settings

REGENERATE = ".venv/bin/genops config --markdown > docs/configuration.md"

# Sections of the reference, in order. An entry ending in "_" is a name prefix, any other
# entry a field name; exact names are matched first, then prefixes in this order. A setting
# no entry matches is listed under "Other settings", so a new one is never left out.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Where GenOps listens and stores", (
        "host", "port", "data_dir", "clickhouse_url", "database", "retention_days", "clickhouse_", "storage_")),
    ("Processes and shutdown", ("workers", "store_", "drain_")),
    ("Tokens and SQL access", ("admin_token", "feedback_", "otlp_token", "otlp_trusted_token", "sql_")),
    ("Providers and upstream calls", (
        "upstream_base_url", "allowed_targets", "connect_timeout_s", "dns_cache_ttl_s", "stream_usage",
        "openai_", "anthropic_", "gemini_", "vertex_", "azure_", "upstream_")),
    ("Client requests", ("max_body_bytes", "client_")),
    ("Export pipeline", ("exporter", "otlp_endpoint", "service_name", "export_", "spool_")),
    ("OTLP receiver", ("otlp_",)),
    ("Safety and content capture", ("capture", "capture_", "safety_")),
    ("Anomaly jobs, canary rollouts and alerts", ("jobs_", "alert_", "rollout_")),
    ("Grafana", ("grafana_",)),
    ("Logs", ("log_",)),
)
OTHER = "Other settings"

HEADER = f"""\
# Configuration reference

<!-- Generated from the settings' metadata in src/genops/config.py; do not edit by hand.
     Regenerate: {REGENERATE} -->

Every setting is an environment variable with the `GENOPS_` prefix, a matching `--flag` on
the commands that use it (`genops <command> --help`), or a key in a TOML file
(`$GENOPS_CONFIG`, else `./genops.toml`; keys are the variable's name without the prefix,
lower-cased: `GENOPS_PORT` is `port = 8080`; they may also sit in a `[genops]` table).
Precedence: flags > environment > file > defaults. A malformed value stops the start with
one line naming the setting; `genops config` prints the settings in effect (secrets hidden)
and fails the same way.

This page is generated from the settings' own metadata (`Settings` in
`src/genops/config.py`) by `{REGENERATE}`; a test fails when it is stale.
"""

FOOTER = """\
## Not in the table

**`GENOPS_CONFIG`**: the TOML file to read (default `./genops.toml` if it exists).

**`GENOPS_UPSTREAM_<NAME>`** (environment only): a named OpenAI-compatible upstream
(vLLM, Ollama, Groq, Mistral, OpenRouter...), served at `/u/<name>/v1/...` (the name is
lower-cased; letters, digits, `_` and `-`). Names that are settings in the table
(`GENOPS_UPSTREAM_TIMEOUT_S`, `GENOPS_UPSTREAM_BASE_URL`, ...) are not upstreams. See
[providers.md](providers.md).

**Tokens left empty** are generated into the data directory on first use (`admin_token`,
`feedback_token`; `otlp_token` only when the receiver listens beyond loopback), files 0600 in
a 0700 directory: see [../SECURITY.md](../SECURITY.md).

**Outbound proxies.** `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` (or their lower-case forms,
which win) are read once at start, parsed as Python's `urllib` and aiohttp's `trust_env` parse
them: https upstreams go through a `CONNECT` tunnel (TLS and certificate checks stay end to
end), http upstreams are sent to the proxy in absolute form. `NO_PROXY` takes comma-separated
hosts, domain suffixes (`example.com` or `.example.com` match `api.example.com`), `host:port`,
or `*`. Only `http://` proxy URLs are supported; `http://user:pass@proxy:3128` sends
`Proxy-Authorization: Basic` (URL-encode special characters), and the credentials are never
logged. Upstream certificates are checked against the system's CAs; `SSL_CERT_FILE` /
`SSL_CERT_DIR` add your own. As aiohttp does by default, a response header line over 8190
bytes or more than 128 header fields fails the call with a 502.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "config", help="print the settings in effect (secrets hidden), or the configuration reference")
    parser.add_argument("--markdown", action="store_true",
                        help="print the configuration reference (docs/configuration.md) instead")
    # every command's parser, for the flags column (registered by the time a command runs)
    parser.set_defaults(func=run, all_commands=subparsers)


def run(args: argparse.Namespace) -> int:
    print(render_markdown(args.all_commands) if args.markdown else render_effective(load_settings()), end="")
    return 0


# -- the reference ---------------------------------------------------------------------------


def grouped() -> list[tuple[str, list[dataclasses.Field]]]:
    """Every setting, in its section (declaration order within a section)."""
    exact = {entry: title for title, entries in GROUPS for entry in entries if not entry.endswith("_")}
    prefixes = [(entry, title) for title, entries in GROUPS for entry in entries if entry.endswith("_")]
    sections: dict[str, list[dataclasses.Field]] = {title: [] for title, _ in GROUPS}
    sections[OTHER] = []
    for name, field in FIELDS.items():
        title = exact.get(name) or next((t for prefix, t in prefixes if name.startswith(prefix)), OTHER)
        sections[title].append(field)
    return [(title, fields) for title, fields in sections.items() if fields]


def format_default(name: str, value: Any) -> str:
    """A default as the reference shows it: what you would write, sizes also in KiB/MiB/GiB."""
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == "":
        return "empty"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and name.endswith("_bytes") and value >= 1024:
        for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if value % size == 0:
                return f"`{value}` ({value // size} {unit})"
    return f"`{value}`"


def setting_flags(commands: argparse.ArgumentParser | argparse._SubParsersAction) -> dict[str, str]:
    """Field name -> its ``--flag``, for the settings some command takes as a flag.

    ``commands``: the ``genops`` parser (``genops.cli.build_parser()``) or its subcommands.
    """

    def walk(node: argparse.ArgumentParser | argparse.Action) -> Iterator[argparse.Action]:
        if isinstance(node, argparse._SubParsersAction):
            for sub in node.choices.values():
                yield from walk(sub)
        elif isinstance(node, argparse.ArgumentParser):
            for action in node._actions:  # argparse has no public walk over a parser's actions
                yield from walk(action)
        else:
            yield node

    flags: dict[str, str] = {}
    for action in walk(commands):
        if action.dest in FIELDS and action.option_strings:
            flags.setdefault(action.dest, action.option_strings[0])
    return flags


def _cell(text: str) -> str:
    """Text for a table cell: ``|`` escaped, and ``<``/``>`` outside code spans (``<data dir>`` is no HTML tag)."""
    parts = text.replace("\n", " ").split("`")
    for i in range(0, len(parts), 2):  # even parts are outside backticks
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts).replace("|", "\\|")


def render_markdown(commands: argparse.ArgumentParser | argparse._SubParsersAction) -> str:
    """``docs/configuration.md``: every setting with its variable, default, flag and meaning.

    ``commands``: the ``genops`` parser, whose commands' flags fill the flag column.
    """
    flags = setting_flags(commands)
    out = [HEADER]
    for title, fields in grouped():
        out += [f"## {title}", "", "| variable | default | flag | meaning |", "|---|---|---|---|"]
        for field in fields:
            flag = f"`{flags[field.name]}`" if field.name in flags else ""
            out.append(f"| `{env_name(field.name)}` | {_cell(format_default(field.name, field.default))} | {flag} "
                       f"| {_cell(field.metadata['help'])} |")
        out.append("")
    out.append(FOOTER)
    return "\n".join(out)


# -- the settings in effect ------------------------------------------------------------------

SECRET_WORDS = ("token", "password")
SECRET_URLS = ("alert_webhook_url",)  # the URL itself is the credential (Slack incoming webhooks)


def shown_value(name: str, value: Any) -> str:
    """A setting's value for the terminal: secrets hidden, URLs without passwords or paths that are keys."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value)
    if not text:
        return ""
    if any(word in name for word in SECRET_WORDS):
        return "<set, hidden>"
    if "://" in text:
        parts = urlsplit(text)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username}:***@{netloc.rpartition('@')[2]}"
        if name in SECRET_URLS:
            return urlunsplit((parts.scheme, netloc, "/<hidden>" if parts.path.strip("/") else "", "", ""))
        return urlunsplit((parts.scheme, netloc, parts.path, "<hidden>" if parts.query else "", ""))
    return text


def render_effective(settings: Settings) -> str:
    """``GENOPS_NAME=value`` for every setting in effect, by section; a ``#`` marks those changed from the default."""
    out = [f"# {ENV_PREFIX}* settings in effect (flags > environment > file > defaults); secrets hidden"]
    for title, fields in grouped():
        out += ["", f"# {title}"]
        for field in fields:
            value = getattr(settings, field.name)
            changed = "" if value == field.default else "  # changed from the default"
            out.append(f"{env_name(field.name)}={shown_value(field.name, value)}{changed}")
    return "\n".join(out) + "\n"
