"""``genops trace <trace_id | session_id | request_id>``: an agent run as a readable tree.

Runs read-only SQL wherever the data is reachable, like ``genops sql``: through a running
server's SQL endpoint (embedded chDB is locked to that process), else directly.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from genops import semconv as sc
from genops.commands.common import STORAGE_FLAGS, add_setting_flags, settings_from_args
from genops.commands.sql import query
from genops.config import Settings
from genops.storage import trace_sql
from genops.storage.sql import QueryError, QueryResult
from genops.tracetree import build_tree, first_attr, render, summary, totals


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("trace", help="print an agent run (trace, session or request) as a tree")
    parser.add_argument("id", help="a trace id, a session id (GenOps-Session-Id) or a request id (GenOps-Request-Id)")
    parser.add_argument("--ascii", action="store_true", help="ASCII branches instead of box-drawing characters")
    parser.add_argument("--url", default=None, help="a running proxy's URL (default: the one in the data directory)")
    add_setting_flags(parser, (*STORAGE_FLAGS, "admin_token"))
    parser.set_defaults(func=run)


def _rows(result: QueryResult) -> list[dict[str, Any]]:
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


def resolve(settings: Settings, ident: str, url: str | None) -> tuple[str, list[str]]:
    """What ``ident`` is ("trace", "request" or "session") and its trace ids; ("", []) when unknown."""
    for sql in (trace_sql.resolve_sql(ident), trace_sql.resolve_fallback_sql(ident)):
        rows = _rows(query(settings, sql, url=url))
        for kind in ("trace", "request", "session"):
            ids = [r["TraceId"] for r in rows if r["kind"] == kind and r["TraceId"]]
            if ids:
                return kind, ids
    return "", []


def trace_text(settings: Settings, ident: str, *, url: str | None = None, ascii_only: bool = False) -> str | None:
    """The rendered tree for ``ident``, or None when no trace, request or session has that id."""
    kind, trace_ids = resolve(settings, ident.strip(), url)
    if not trace_ids:
        return None
    more = len(trace_ids) > trace_sql.MAX_TRACES
    trace_ids = trace_ids[: trace_sql.MAX_TRACES]
    spans = _rows(query(settings, trace_sql.spans_sql(trace_ids), url=url, max_rows=trace_sql.MAX_SPANS))
    scores = _rows(query(settings, trace_sql.scores_sql(trace_ids), url=url))
    forest = build_tree(spans, scores)
    if kind == "session":
        head = f"session {ident}"
        name = first_attr(forest, sc.GENOPS_SESSION_NAME, where=(sc.GEN_AI_CONVERSATION_ID, ident))
        if name:
            head += f" ({name})"
    elif kind == "request":
        head = f"request {ident} · trace {trace_ids[0]}"
    else:
        head = f"trace {trace_ids[0]}"
    session = first_attr(forest, sc.GEN_AI_CONVERSATION_ID)
    if session and kind != "session":
        head += f" · session {session}"
    user = first_attr(forest, sc.GENOPS_USER_ID,
                      where=(sc.GEN_AI_CONVERSATION_ID, ident) if kind == "session" else None)
    if user:
        head += f" · user {user}"
    if kind == "session":
        head += f" · {len(trace_ids)}{'+' if more else ''} trace{'s' if len(trace_ids) != 1 else ''}"
    head += " · " + summary(totals(forest))
    if len(spans) >= trace_sql.MAX_SPANS:
        head += f" (first {trace_sql.MAX_SPANS} spans only)"
    return render(forest, head, mark_request=ident if kind == "request" else None, ascii_only=ascii_only)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    try:
        text = trace_text(settings, args.id, url=args.url, ascii_only=args.ascii)
    except QueryError as exc:
        print(f"genops: {exc}", file=sys.stderr)
        return 1
    if text is None:
        print(f"genops: no trace, session or request with id {args.id!r}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0
