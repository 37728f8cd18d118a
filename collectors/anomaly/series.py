"""Window rows from ClickHouse as regular per-entity numpy series (one point per step)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from genops.collectors.anomaly.queries import unix


@dataclass
class Series:
    """Columns of one entity on the shared time grid; missing points hold the column's fill."""

    entity: str
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict[str, list[Any]] = field(default_factory=dict)  # non-numeric columns, by index

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]


@dataclass
class Grid:
    """Window ends ``t`` from ``first`` to ``last`` (inclusive) every ``step_minutes``."""

    first: dt.datetime
    last: dt.datetime
    step_minutes: int

    @property
    def times(self) -> np.ndarray:
        return np.arange(unix(self.first), unix(self.last) + 1, self.step_minutes * 60, dtype=np.int64)

    def __len__(self) -> int:
        return int((unix(self.last) - unix(self.first)) // (self.step_minutes * 60)) + 1

    def index_of(self, t_unix: int) -> int:
        return int((t_unix - unix(self.first)) // (self.step_minutes * 60))

    def eval_indexes(self, t_from: dt.datetime) -> np.ndarray:
        """Indexes of the points after ``t_from`` (the ones a pass evaluates)."""
        start = max(0, self.index_of(unix(t_from)) + 1)
        return np.arange(start, len(self), dtype=np.int64)

    def time_at(self, index: int) -> dt.datetime:
        return self.first + dt.timedelta(minutes=self.step_minutes * int(index))


def to_series(rows: Iterable[dict[str, Any]], grid: Grid, fills: dict[str, float],
              text_columns: tuple[str, ...] = ()) -> dict[str, Series]:
    """Rows with ``entity``, ``t`` (Unix seconds) and the ``fills`` columns, as grids per entity."""
    out: dict[str, Series] = {}
    n = len(grid)
    for row in rows:
        series = out.get(row["entity"])
        if series is None:
            series = Series(row["entity"], {c: np.full(n, fill, dtype=float) for c, fill in fills.items()},
                            {c: [None] * n for c in text_columns})
            out[row["entity"]] = series
        i = grid.index_of(int(row["t"]))
        if 0 <= i < n:
            for column in fills:
                value = row[column]
                series.columns[column][i] = np.nan if value is None else float(value)
            for column in text_columns:
                series.extra[column][i] = row[column]
    return out
