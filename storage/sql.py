"""Read-only SQL over the trace store, for ``genops sql`` and the admin SQL endpoint.

Enforced by ClickHouse itself (``readonly=2``: reads and setting changes only), not by
parsing the statement, so no clever SQL slips a write through.
"""

from __future__ import annotations

import datetime as dt
import decimal
import ipaddress
import uuid
from dataclasses import dataclass, field
from typing import Any

READONLY_SETTINGS = {"readonly": 2}


class QueryError(ValueError):
    """The query was refused or failed; the message is ClickHouse's own first line."""


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


def run_readonly(client: Any, sql: str, *, max_rows: int = 10_000) -> QueryResult:
    """Run one read-only statement; writes and DDL are refused by ClickHouse.

    At most ``max_rows`` rows are returned (``truncated`` tells when more existed).
    """
    text = sql.strip().rstrip(";").strip()
    if not text:
        raise QueryError("empty query")
    settings = dict(READONLY_SETTINGS)
    settings.update({"max_result_rows": max_rows + 1, "result_overflow_mode": "break"})
    try:
        result = client.query(text, settings=settings)
    except Exception as exc:  # noqa: BLE001 - the driver raises several types; all mean "refused/failed"
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QueryError(message) from None
    rows = [[json_safe(v) for v in row] for row in result.result_rows]
    truncated = len(rows) > max_rows
    return QueryResult(
        columns=list(result.column_names),
        types=[t.name for t in result.column_types],
        rows=rows[:max_rows],
        truncated=truncated,
    )


def quote(value: str) -> str:
    """``value`` as a ClickHouse string literal (for SQL sent as plain text, e.g. through the SQL endpoint)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
