"""The anomaly jobs' SQL: one ``.sql`` file per query in ``sql/``, filled and run here.

Times cross the boundary as Unix seconds (``toDateTime(N)`` in, ``toUnixTimestamp`` out),
so no time zone of the server or the driver ever shifts a window.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from functools import cache
from importlib import resources
from typing import Any

EPOCH = dt.datetime(1970, 1, 1)


def unix(t: dt.datetime) -> int:
    """Naive-UTC datetime to Unix seconds."""
    return int((t - EPOCH).total_seconds())


def from_unix(seconds: int | float) -> dt.datetime:
    """Unix seconds to a naive-UTC datetime."""
    return EPOCH + dt.timedelta(seconds=int(seconds))


@cache
def load(name: str) -> str:
    """The text of ``sql/<name>.sql`` (comment lines dropped)."""
    text = resources.files("genops.collectors.anomaly").joinpath("sql", f"{name}.sql").read_text()
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--")).strip()


def sql_list(values: Iterable[str]) -> str:
    """A ClickHouse tuple literal of strings: ('a', 'b')."""
    quoted = ["'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for v in values]
    return "(" + ", ".join(quoted) + ")"


def render(name: str, **params: Any) -> str:
    """``sql/<name>.sql`` with placeholders filled; datetimes become Unix seconds."""
    filled = {k: unix(v) if isinstance(v, dt.datetime) else v for k, v in params.items()}
    return load(name).format(**filled)


def rows(client: Any, name: str, **params: Any) -> list[dict[str, Any]]:
    """Run ``sql/<name>.sql`` and return its rows as dicts."""
    result = client.query(render(name, **params))
    columns = list(result.column_names)
    return [dict(zip(columns, row, strict=True)) for row in result.result_rows]
