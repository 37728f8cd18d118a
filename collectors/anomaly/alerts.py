"""Webhook alerts: a Slack-compatible JSON payload when an anomaly opens, and a resolved
message when it closes; at most one alert per (detector, entity) per cooldown.

State lives in the anomaly rows themselves (``notified_at``, ``resolved_notified_at``), so a
restart neither repeats nor loses an alert, and a failed POST is retried on the next pass.
"""

from __future__ import annotations

import datetime as dt
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from genops.collectors.anomaly import store
from genops.collectors.anomaly.episodes import EPOCH, SEVERITY_RANK, Anomaly

log = logging.getLogger("genops.collectors.anomaly.alerts")

COLORS = {"critical": "#d32f2f", "warning": "#f9a825", "info": "#1976d2", "resolved": "#2e7d32"}


def _fmt(value: float, unit: str) -> str:
    if unit == "USD":
        return f"${value:,.4f}"
    if unit == "ratio":
        return f"{value * 100:.1f}%"
    if unit == "ms":
        return f"{value:,.0f} ms"
    return f"{value:,.4g} {unit}".strip()


def payload(anomaly: Anomaly, *, resolved: bool = False) -> dict[str, Any]:
    """The Slack incoming-webhook JSON for ``anomaly`` (``text`` alone suffices for Slack-compatible
    receivers such as Mattermost, Rocket.Chat or Discord's ``/slack`` endpoint; ``blocks`` and
    ``attachments`` add layout and colour in Slack)."""
    when = anomaly.start.strftime("%Y-%m-%d %H:%M UTC")
    if resolved:
        icon, head = ":white_check_mark:", "RESOLVED"
        color = COLORS["resolved"]
        until = anomaly.end.strftime("%H:%M UTC")
        summary = (f"{icon} *{head}* `{anomaly.detector}` on *{anomaly.entity}* "
                   f"(from {when} to {until}; peak {anomaly.metric} {_fmt(anomaly.observed, anomaly.unit)} "
                   f"vs expected {_fmt(anomaly.expected, anomaly.unit)})")
    else:
        icon = ":rotating_light:" if anomaly.severity == "critical" else ":warning:"
        head = anomaly.severity.upper()
        color = COLORS.get(anomaly.severity, COLORS["warning"])
        summary = (f"{icon} *{head}* `{anomaly.detector}` on *{anomaly.entity}*: {anomaly.metric} "
                   f"{_fmt(anomaly.observed, anomaly.unit)} vs expected {_fmt(anomaly.expected, anomaly.unit)} "
                   f"(score {anomaly.score:.1f}) since {when}")
    fields = [
        {"title": "detector", "value": anomaly.detector, "short": True},
        {"title": "entity", "value": anomaly.entity, "short": True},
        {"title": "observed", "value": _fmt(anomaly.observed, anomaly.unit), "short": True},
        {"title": "expected", "value": _fmt(anomaly.expected, anomaly.unit), "short": True},
        {"title": "score", "value": f"{anomaly.score:.2f}", "short": True},
        {"title": "status", "value": "resolved" if resolved else anomaly.status, "short": True},
    ]
    return {
        "text": summary.replace("*", "").replace("`", ""),
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": summary}}],
        "attachments": [{"color": color, "fallback": summary, "fields": fields,
                         "footer": "GenOps anomaly jobs", "ts": int((anomaly.start - EPOCH).total_seconds())}],
    }


def post_json(url: str, body: dict[str, Any], timeout: float = 10.0) -> None:
    """POST ``body``; raises on a non-2xx answer or a network error."""
    request = urllib.request.Request(url, data=orjson.dumps(body), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()


@dataclass
class AlertReport:
    sent: int = 0
    resolved_sent: int = 0
    suppressed: int = 0
    failed: int = 0


@dataclass
class Notifier:
    """Sends what is owed; ``post`` is injectable for tests of the payload logic."""

    url: str
    cooldown: dt.timedelta = dt.timedelta(minutes=30)
    min_severity: str = "warning"
    fresh: dt.timedelta = dt.timedelta(hours=1)
    post: Callable[[str, dict[str, Any]], None] = post_json

    def run(self, client: Any, database: str, now: dt.datetime) -> AlertReport:
        """One alerting pass over ``genops_anomalies``."""
        report = AlertReport()
        if not self.url:
            return report
        candidates = store.alert_candidates(client, database, now, int(self.fresh.total_seconds()))
        if not candidates:
            return report
        recent = store.last_notified(client, database, now - self.cooldown)
        updated: list[Anomaly] = []
        for anomaly in candidates:
            resolved = anomaly.status == "resolved"
            if not resolved:
                if SEVERITY_RANK.get(anomaly.severity, 0) < SEVERITY_RANK.get(self.min_severity, 1):
                    continue
                last = recent.get(anomaly.key)
                if last is not None and now - last < self.cooldown:
                    report.suppressed += 1
                    continue
            try:
                self.post(self.url, payload(anomaly, resolved=resolved))
            except (urllib.error.URLError, OSError, ValueError) as exc:
                report.failed += 1
                log.warning("alert webhook failed", extra={"detector": anomaly.detector, "entity": anomaly.entity,
                                                           "error": str(exc)[:200]})
                continue
            if resolved:
                anomaly.resolved_notified_at = now
                report.resolved_sent += 1
            else:
                anomaly.notified_at = now
                recent[anomaly.key] = now
                report.sent += 1
            updated.append(anomaly)
        store.write_anomalies(client, database, updated)
        return report
