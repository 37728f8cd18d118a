"""Read-only SQL over the trace store, for ``genops sql`` and the admin SQL endpoint.

A user's statement is first checked on ClickHouse's own syntax tree
(:mod:`genops.storage.sql_guard`: reads only, no files, network, other databases,
settings or output files), then run on a client of its own (its own chDB connection or
server session, opened for this query and closed after it), so nothing one query does
outlives it and no other work waits behind it. Every query runs with limits
(:class:`QueryLimits`: time, result size, memory) and a marker that lets
:func:`cancel_query` stop it when its client goes away. ``readonly=2`` is set too, as a
second wall.
"""

from __future__ import annotations

import datetime as dt
import decimal
import ipaddress
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from genops.config import Settings
from genops.storage.sql_guard import QueryError, QueryRefused, check_query, first_line
from genops.storage.sql_text import quote

__all__ = ["QueryError", "QueryRefused", "QueryLimits", "QueryResult", "cancel_query", "json_safe", "quote",
           "run_readonly"]

READONLY_SETTINGS = {"readonly": 2}
MARKER_PREFIX = "/* genops-sql "


@dataclass(frozen=True)
class QueryLimits:
    """What one user query may use; past ``timeout_s`` or ``max_memory_bytes`` ClickHouse stops it."""

    timeout_s: float = 30.0
    max_result_bytes: int = 64 * 1024 * 1024
    max_memory_bytes: int = 1 << 30

    @classmethod
    def from_settings(cls, settings: Settings) -> QueryLimits:
        """The limits ``GENOPS_SQL_TIMEOUT_S``, ``GENOPS_SQL_MAX_RESULT_BYTES`` and ``GENOPS_SQL_MAX_MEMORY_BYTES`` set."""
        return cls(settings.sql_timeout_s, settings.sql_max_result_bytes, settings.sql_max_memory_bytes)

    def clickhouse_settings(self, max_rows: int) -> dict[str, Any]:
        """The per-query ClickHouse settings of these limits (rows past the cap are cut, not an error)."""
        return {
            **READONLY_SETTINGS,
            "max_execution_time": max(1, round(self.timeout_s)),
            "timeout_overflow_mode": "throw",
            "max_result_rows": max_rows + 1,
            "result_overflow_mode": "break",
            "max_memory_usage": self.max_memory_bytes,
            "max_block_size": 8192,  # the result is cut at max_result_bytes between blocks
        }


@dataclass
class QueryResult:
    """Column names, ClickHouse type names and rows of JSON-safe values."""

    columns: list[str]
    types: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    truncated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "types": self.types, "rows": self.rows, "truncated": self.truncated}


def json_safe(value: Any) -> Any:
    """A query value as something JSON can carry (datetimes as ISO 8601 strings)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (uuid.UUID, ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(json_safe(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [json_safe(v) for v in value]
    return str(value)


def new_query_id() -> str:
    """A random id that marks one user query (for :func:`cancel_query`)."""
    return uuid.uuid4().hex


def run_readonly(client: Any, sql: str, *, database: str, max_rows: int = 10_000,
                 limits: QueryLimits | None = None, query_id: str | None = None) -> QueryResult:
    """Check ``sql`` with ClickHouse's parser and run it read-only on ``client`` within ``limits``.

    ``client`` should be one opened for this query alone (``open_query_client``): a query
    that fails half-way leaves nothing behind on a client that is closed afterwards.
    At most ``max_rows`` rows are returned (``truncated`` tells when more existed, or when
    the result was cut at ``limits.max_result_bytes``). Raises :class:`QueryRefused` for a
    statement that is not an allowed read, :class:`QueryError` when ClickHouse fails it.
    """
    limits = limits or QueryLimits()
    statement = check_query(client, sql, database)
    marked = f"{MARKER_PREFIX}{query_id or new_query_id()} */ {statement.text}"
    settings = limits.clickhouse_settings(max_rows)
    try:
        if statement.is_select:
            return _streamed(client, marked, settings, max_rows, limits.max_result_bytes)
        result = client.query(marked, settings=settings)  # SHOW, DESCRIBE, ...: small, and chDB cannot stream them
    except Exception as exc:  # noqa: BLE001 - the driver raises several types; all mean "failed"
        raise QueryError(first_line(exc)) from None
    rows = [[json_safe(v) for v in row] for row in result.result_rows]
    return QueryResult(list(result.column_names), [t.name for t in result.column_types], rows[:max_rows],
                       len(rows) > max_rows)


def _streamed(client: Any, sql: str, settings: dict[str, Any], max_rows: int, max_bytes: int) -> QueryResult:
    """A SELECT's rows, read block by block and cut at ``max_rows`` rows or ``max_bytes`` of JSON.

    ClickHouse's own ``max_result_bytes`` does not cut a chDB result; leaving the stream
    early stops the query.
    """
    rows: list[list[Any]] = []
    size = 0
    truncated = False
    with client.query_row_block_stream(sql, settings=settings) as stream:
        columns = list(stream.source.column_names)
        types = [t.name for t in stream.source.column_types]
        for block in stream:
            for row in block:
                safe = [json_safe(v) for v in row]
                size += len(orjson.dumps(safe))
                if len(rows) >= max_rows or size > max_bytes:
                    truncated = True
                    break
                rows.append(safe)
            if truncated:
                break
    if not columns:  # an empty stream carries no header: ask for the (empty) result's columns
        result = client.query(sql, settings=settings)
        columns, types = list(result.column_names), [t.name for t in result.column_types]
    return QueryResult(columns=columns, types=types, rows=rows, truncated=truncated)


def cancel_query(client: Any, query_id: str) -> None:
    """Stop the user query marked with ``query_id`` (its client went away); a finished one is left alone.

    ``client`` must be another client than the query's own (which is busy running it).
    """
    client.command(f"KILL QUERY WHERE startsWith(query, {quote(MARKER_PREFIX + query_id + ' */')}) ASYNC")


