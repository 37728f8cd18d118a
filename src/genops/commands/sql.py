"""``genops sql``: read-only SQL over the traces, whether or not ``genops serve`` is running.

Embedded chDB locks its data directory to one process, so when a server is running
the query goes through its token-protected SQL endpoint; otherwise it opens the store
directly. With a ClickHouse server URL it always queries the server directly.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from typing import Any

import orjson

from genops.commands.admin_http import AdminCallError, admin_call
from genops.commands.common import STORAGE_FLAGS, add_setting_flags, settings_from_args
from genops.config import Settings
from genops.storage.sql import QueryError, QueryResult


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("sql", help="run a read-only SQL query over the traces")
    parser.add_argument("query", help='e.g. "SELECT SpanName, Duration FROM otel_traces LIMIT 5"')
    parser.add_argument("--format", "-f", choices=("table", "json", "csv"), default="table")
    parser.add_argument("--max-rows", type=int, default=10_000)
    parser.add_argument("--url", default=None, help="a running proxy's URL (default: the one in the data directory)")
    add_setting_flags(parser, (*STORAGE_FLAGS, "admin_token"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    try:
        result = query(settings, args.query, url=args.url, max_rows=args.max_rows)
    except QueryError as exc:
        print(f"genops: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(render(result, args.format))
    if result.truncated and args.format == "table":
        print(f"(first {len(result.rows)} rows shown; use --max-rows or LIMIT)", file=sys.stderr)
    return 0


def query(settings: Settings, sql: str, *, url: str | None = None, max_rows: int = 10_000) -> QueryResult:
    """Run ``sql`` read-only wherever the data is reachable; raises :class:`QueryError`."""
    if url is None and settings.embedded:
        from genops.runtime.server import read_state

        state = read_state(settings)
        url = state["url"] if state else None
    if url:
        return _query_http(url, settings.resolved_admin_token(), sql, max_rows)
    return _query_direct(settings, sql, max_rows)


def _query_http(url: str, token: str, sql: str, max_rows: int) -> QueryResult:
    from genops.api.admin import SQL_PATH

    try:
        data = admin_call(url, token, "POST", SQL_PATH, {"query": sql, "max_rows": max_rows})
    except AdminCallError as exc:
        raise QueryError(str(exc)) from None
    return QueryResult(data["columns"], data["types"], data["rows"], data.get("truncated", False))


def _query_direct(settings: Settings, sql: str, max_rows: int) -> QueryResult:
    from genops.storage.client import StorageError, open_query_client
    from genops.storage.sql import QueryLimits, run_readonly

    try:
        client = open_query_client(settings)
    except StorageError as exc:
        raise QueryError(str(exc)) from None
    try:
        return run_readonly(client, sql, database=settings.database, max_rows=max_rows,
                            limits=QueryLimits.from_settings(settings))
    finally:
        client.close()


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return str(value)


def render(result: QueryResult, fmt: str) -> str:
    """The result as an aligned table, JSON (a list of objects) or CSV with a header."""
    if fmt == "json":
        objects = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
        return orjson.dumps(objects, option=orjson.OPT_INDENT_2).decode() + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows([_cell(v) for v in row] for row in result.rows)
        return out.getvalue()
    cells = [[_cell(v) for v in row] for row in result.rows]
    widths = [len(c) for c in result.columns]
    for row in cells:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], min(len(value), 80))
    def line(values: list[str]) -> str:
        return "  ".join(
            (v if len(v) <= 80 else v[:77] + "...").ljust(widths[i]) for i, v in enumerate(values)
        ).rstrip()
    rule = "  ".join("-" * w for w in widths)
    body = [line(result.columns), rule, *(line(r) for r in cells)]
    body.append(f"({len(cells)} row{'s' if len(cells) != 1 else ''})")
    return "\n".join(body) + "\n"
