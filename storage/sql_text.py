"""Spelling values into SQL text, for the statements GenOps sends as plain text."""

from __future__ import annotations


def quote(value: str) -> str:
    """``value`` as a ClickHouse string literal (for SQL sent as plain text, e.g. through the SQL endpoint)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
