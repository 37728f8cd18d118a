"""What every detector shares: the pass context, the hit it reports, and scoring helpers.

A detector evaluates every window end ``t`` in ``(t_from, t_to]`` (one per step) in a
single query over the rollups, so a live pass and a week-long backfill cost the same few
queries. It returns :class:`Hit` s; turning consecutive hits into one anomaly row is the
episode tracker's job (``episodes.py``), not the detector's.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from genops.collectors.anomaly import queries
from genops.collectors.anomaly.baseline import Baseline, robust_baseline
from genops.collectors.anomaly.series import Grid, Series, to_series


@dataclass
class Hit:
    """One window in which a detector saw ``entity`` misbehave."""

    detector: str
    entity: str
    t: dt.datetime  # window end
    observed: float
    expected: float
    score: float
    severity: str  # warning | critical
    metric: str
    unit: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class PassContext:
    """One evaluation pass: where the data is, the step, and a per-pass query cache."""

    client: Any
    database: str
    step_minutes: int = 5
    _cache: dict[tuple, list[dict[str, Any]]] = field(default_factory=dict)

    def rows(self, name: str, **params: Any) -> list[dict[str, Any]]:
        """Rows of ``sql/<name>.sql``; identical queries in one pass run once."""
        key = (name, tuple(sorted((k, str(v)) for k, v in params.items())))
        if key not in self._cache:
            self._cache[key] = queries.rows(self.client, name, database=self.database,
                                            step=self.step_minutes, **params)
        return self._cache[key]


def severity_for(score: float, threshold: float) -> str:
    """``critical`` at twice the firing threshold, else ``warning``."""
    return "critical" if score >= 2 * threshold else "warning"


class Detector(ABC):
    """A detector: ``name`` is the ``detector`` column; the method is in each class docstring."""

    name: ClassVar[str]
    window_minutes: ClassVar[int] = 15
    lookback_minutes: ClassVar[int] = 24 * 60

    @abstractmethod
    def detect(self, ctx: PassContext, t_from: dt.datetime, t_to: dt.datetime) -> list[Hit]:
        """Hits for every window end in ``(t_from, t_to]``."""

    def grid(self, ctx: PassContext, t_from: dt.datetime, t_to: dt.datetime, history_minutes: int) -> Grid:
        """The grid covering ``history_minutes`` before ``t_from`` up to ``t_to``."""
        step = ctx.step_minutes
        first = t_from - dt.timedelta(minutes=history_minutes)
        first = first - dt.timedelta(minutes=(first.minute % step), seconds=first.second,
                                     microseconds=first.microsecond)
        return Grid(first, t_to, step)

    def fetch(self, ctx: PassContext, sql: str, grid: Grid, fills: dict[str, float],
              text_columns: tuple[str, ...] = (), *, slices: list[tuple[dt.datetime, dt.datetime]] | None = None,
              **params: Any) -> dict[str, Series]:
        """Window rows of ``sql`` over the grid, as per-entity series.

        With ``slices`` (minute ranges), only those minutes are read and every window not
        wholly inside one of them is NaN in every column: "unknown", never "zero calls".
        """
        minute_filter = "1"
        if slices:
            minute_filter = " OR ".join(
                f"(Minute >= toDateTime({queries.unix(a)}) AND Minute < toDateTime({queries.unix(b)}))"
                for a, b in slices)
        rows = ctx.rows(sql, from_ts=grid.first - dt.timedelta(minutes=ctx.step_minutes), to_ts=grid.last,
                        window=self.window_minutes, minute_filter=minute_filter, **params)
        data = to_series(rows, grid, fills, text_columns)
        if slices:
            times = grid.times
            known = np.zeros(len(times), dtype=bool)
            for a, b in slices:
                known |= (times >= queries.unix(a) + self.window_minutes * 60) & (times <= queries.unix(b))
            for series in data.values():
                for column in series.columns.values():
                    column[~known] = np.nan
        return data


class BaselineDetector(Detector):
    """Compares a windowed metric with a robust baseline of its own history.

    Fires when ``score = (observed - expected) / max(sigma, floor)`` reaches ``threshold``
    in the configured ``direction``, the ratio to the expected value is large enough
    (``min_ratio`` up, ``max_ratio`` down) and the window has the minimum volume.
    """

    threshold: ClassVar[float] = 5.0
    use_seasonality: ClassVar[bool] = False
    min_history_points: ClassVar[int] = 12

    def baseline(self, values: np.ndarray, at: np.ndarray, step: int, *, seasonal: bool | None = None) -> Baseline:
        return robust_baseline(values, at, step_minutes=step, window_minutes=self.window_minutes,
                               lookback_minutes=self.lookback_minutes, min_points=self.min_history_points,
                               use_seasonality=self.use_seasonality if seasonal is None else seasonal)

    recent_minutes: ClassVar[int] = 0  # history a seasonal detector needs in full (beyond the lookback)
    min_seasonal_strength: ClassVar[float] = 0.3
    min_seasonal_days: ClassVar[int] = 3

    def seasonal_entities(self, ctx: PassContext, t_from: dt.datetime, dimension_filter: str) -> set[str]:
        """Entities with a daily cycle worth modelling: STL strength >= ``min_seasonal_strength``
        (ClickHouse's seriesDecomposeSTL over the hourly calls of the week before ``t_from``)
        and calls from at least ``min_seasonal_days`` days back. Others use the trailing baseline.
        """
        to = t_from.replace(minute=0, second=0, microsecond=0)
        hours = 7 * 24
        rows = ctx.rows("seasonality", from_ts=to - dt.timedelta(hours=hours), to_ts=to, hours=hours,
                        dimension_filter=dimension_filter)
        return {r["entity"] for r in rows if r["strength"] is not None and r["strength"] >= self.min_seasonal_strength
                and r["first_hour"] <= hours - 24 * self.min_seasonal_days}

    def history_minutes(self) -> int:
        return (7 * 24 * 60 + 30) if self.use_seasonality else self.lookback_minutes + self.window_minutes

    def seasonal_slices(self, ctx: PassContext, t_from: dt.datetime, t_to: dt.datetime
                        ) -> list[tuple[dt.datetime, dt.datetime]] | None:
        """For a short (live) pass of a seasonal detector: the minutes its baselines read.

        The recent trailing history plus the same hours on each of the previous 7 days, so
        a live pass reads a fraction of a week of rollups instead of all of it. Long
        (backfill) passes read everything in one go instead: None.
        """
        if not self.use_seasonality or t_to - t_from > dt.timedelta(hours=6):
            return None
        step = dt.timedelta(minutes=ctx.step_minutes)
        window = dt.timedelta(minutes=self.window_minutes)
        recent = dt.timedelta(minutes=max(self.lookback_minutes, self.recent_minutes))
        slices = [(t_from - recent - window - step, t_to)]
        for k in range(1, 8):
            day = dt.timedelta(days=k)
            slices.append((t_from - day - window - 2 * step, t_to - day + 2 * step))
        return slices


def hits_from_scores(detector: Detector, grid: Grid, entity: str, at: np.ndarray, fire: np.ndarray,
                     observed: np.ndarray, expected: np.ndarray, score: np.ndarray, threshold: float,
                     metric: str, unit: str, details: dict[str, np.ndarray] | None = None) -> list[Hit]:
    """Hits for the evaluated indexes ``at`` where ``fire`` is true (arrays are indexed like ``at``)."""
    out = []
    for j in np.nonzero(fire)[0]:
        i = int(at[j])
        extra = {k: (None if v[j] is None or (isinstance(v[j], float) and np.isnan(v[j])) else
                     (round(float(v[j]), 6) if isinstance(v[j], (float, np.floating, int, np.integer)) else v[j]))
                 for k, v in (details or {}).items()}
        out.append(Hit(detector.name, entity, grid.time_at(i), round(float(observed[j]), 6),
                       round(float(expected[j]), 6), round(float(score[j]), 3),
                       severity_for(float(score[j]), threshold), metric, unit, extra))
    return out
