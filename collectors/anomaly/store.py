"""Reading and writing ``genops_anomalies`` and the jobs' state table.

Rows are immutable in ClickHouse, so an update is a new insert of the whole row with a
higher ``version`` into a ReplacingMergeTree keyed by (detector, entity, start); readers use
``FINAL`` (or the ``genops_anomalies_latest`` view). Chosen over ALTER UPDATE mutations,
which rewrite parts and are far too heavy for a row touched every few minutes.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import orjson

from genops.collectors.anomaly import queries
from genops.collectors.anomaly.episodes import EPOCH, Anomaly

ANOMALY_COLUMNS = (
    "detector", "entity", "start", "end", "observed", "expected", "score", "severity", "status",
    "metric", "unit", "details", "notified_at", "resolved_notified_at", "updated_at", "version",
)
WATERMARK = "anomaly.watermark"

_version_lock = threading.Lock()
_last_version = 0


def next_version() -> int:
    """A strictly increasing version (nanoseconds since the epoch)."""
    global _last_version
    with _version_lock:
        _last_version = max(_last_version + 1, time.time_ns())
        return _last_version


def _utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=dt.UTC)  # the driver reads naive datetimes as local time


def _clean(value: float) -> float:
    return 0.0 if value != value else float(value)  # NaN never reaches the table


def write_anomalies(client: Any, database: str, anomalies: list[Anomaly]) -> None:
    """Insert the current version of each anomaly (one insert)."""
    if not anomalies:
        return
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rows = []
    for a in anomalies:
        rows.append([
            a.detector, a.entity, _utc(a.start), _utc(a.end), _clean(a.observed), _clean(a.expected), _clean(a.score),
            a.severity, a.status, a.metric, a.unit, orjson.dumps(a.details, option=orjson.OPT_SERIALIZE_NUMPY,
                                                                  default=str).decode(),
            _utc(a.notified_at), _utc(a.resolved_notified_at), _utc(now), next_version(),
        ])
    client.insert(f"{database}.genops_anomalies", rows, column_names=ANOMALY_COLUMNS)


def _anomaly(row: dict[str, Any]) -> Anomaly:
    try:
        details = orjson.loads(row["details"]) if row["details"] else {}
    except orjson.JSONDecodeError:
        details = {}
    return Anomaly(
        row["detector"], row["entity"], queries.from_unix(row["start_ts"]), queries.from_unix(row["end_ts"]),
        float(row["observed"]), float(row["expected"]), float(row["score"]), row["severity"], row["status"],
        row["metric"], row["unit"], details, queries.from_unix(row["notified_ts"]),
        queries.from_unix(row["resolved_notified_ts"]),
    )


def open_anomalies(client: Any, database: str) -> list[Anomaly]:
    """Every anomaly whose latest version is open."""
    return [_anomaly(r) for r in queries.rows(client, "open_anomalies", database=database)]


def alert_candidates(client: Any, database: str, now: dt.datetime, fresh_s: int) -> list[Anomaly]:
    """Anomalies that may be owed an alert (new) or a resolved message."""
    return [_anomaly(r) for r in queries.rows(client, "alert_candidates", database=database, now_ts=now,
                                              fresh_s=fresh_s)]


def last_notified(client: Any, database: str, since: dt.datetime) -> dict[tuple[str, str], dt.datetime]:
    """(detector, entity) -> the last time an alert went out for it, since ``since``."""
    rows = queries.rows(client, "last_notified", database=database, since_ts=since)
    return {(r["detector"], r["entity"]): queries.from_unix(r["last_ts"]) for r in rows}


def get_state(client: Any, database: str, name: str) -> str | None:
    """A value of the jobs' state table, or None."""
    rows = queries.rows(client, "job_state", database=database, key=queries.sql_list([name])[1:-1])
    return rows[0]["value"] if rows else None


def set_state(client: Any, database: str, name: str, value: str) -> None:
    client.insert(f"{database}.genops_jobs_state", [[name, value, next_version()]],
                  column_names=("name", "value", "version"))


def get_watermark(client: Any, database: str) -> dt.datetime | None:
    """The last window end the live loop evaluated."""
    value = get_state(client, database, WATERMARK)
    return queries.from_unix(int(value)) if value else None


def set_watermark(client: Any, database: str, t: dt.datetime) -> None:
    set_state(client, database, WATERMARK, str(queries.unix(t)))


__all__ = ["EPOCH", "open_anomalies", "write_anomalies", "alert_candidates", "last_notified",
           "get_watermark", "set_watermark"]
