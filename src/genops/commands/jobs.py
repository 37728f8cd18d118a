"""``genops jobs``: the anomaly jobs (collectors/anomaly) by hand, on a schedule, or over history.

- ``genops jobs once`` — one pass (for cron or a Kubernetes CronJob);
- ``genops jobs run`` — a pass every ``--interval`` seconds until interrupted;
- ``--backfill FROM TO`` — evaluate history instead (no alerts; idempotent);
- ``genops jobs list`` — recent anomalies; ``genops jobs annotation-query`` — the Grafana SQL.

With the embedded store, ``genops serve`` owns the data directory and runs the jobs itself;
``genops jobs once`` (and ``--backfill``) then asks it to run the pass.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import time
from typing import Any

import orjson

from genops.commands.common import STORAGE_FLAGS, add_setting_flags, settings_from_args
from genops.config import ConfigError, Settings

JOB_FLAGS = ("jobs_interval_s", "jobs_lag_s", "alert_webhook_url", "alert_cooldown_s", "alert_min_severity",
             "log_level", "log_format")
_RELATIVE = re.compile(r"^-?(\d+)([dhm])(?: ago)?$")


def parse_time(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """``now``, ``7d`` / ``12h`` / ``30m`` (that long ago), or an ISO date/time (UTC unless it has an offset)."""
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    text = text.strip()
    if text == "now":
        return now
    match = _RELATIVE.match(text)
    if match:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[match.group(2)]
        return now - dt.timedelta(**{unit: int(match.group(1))})
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--backfill: cannot read {text!r} as a time "
                          "(use 2026-11-01, 2026-11-01T12:00, 7d for 7 days ago, or now)") from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("jobs", help="anomaly-detection jobs: once, run, list, backfill")
    sub = parser.add_subparsers(dest="jobs_command", metavar="ACTION")
    for name, help_text in (("once", "one pass (cron / Kubernetes CronJob)"), ("run", "a pass every --interval seconds")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--backfill", nargs=2, metavar=("FROM", "TO"),
                       help="evaluate history between FROM and TO (2026-11-01, 2026-11-01T12:00, 7d = 7 days ago, now); "
                            "no alerts")
        p.add_argument("--detectors", default="", help="comma-separated subset of detectors (default: all)")
        p.add_argument("--no-alerts", action="store_true", help="do not send webhook alerts")
        p.add_argument("--json", action="store_true", help="print each pass's report as JSON")
        if name == "run":
            p.add_argument("--interval", type=float, default=None, help="seconds between passes (GENOPS_JOBS_INTERVAL_S)")
        add_setting_flags(p, (*STORAGE_FLAGS, *JOB_FLAGS))
        p.set_defaults(func=run_once if name == "once" else run_loop)
    p = sub.add_parser("list", help="recent anomalies")
    p.add_argument("--status", choices=("open", "resolved", "all"), default="all")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--format", "-f", choices=("table", "json", "csv"), default="table")
    add_setting_flags(p, (*STORAGE_FLAGS, "admin_token"))
    p.set_defaults(func=list_anomalies)
    p = sub.add_parser("annotation-query", help="print the Grafana annotation SQL for genops_anomalies")
    p.set_defaults(func=annotation_query)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _open_jobs(settings: Settings, args: argparse.Namespace):
    from genops.collectors.anomaly.detectors import build_detectors
    from genops.collectors.anomaly.service import jobs_from_settings
    from genops.runtime.server import read_state
    from genops.storage.client import StorageError, open_client
    from genops.storage.migrate import migrate

    if settings.embedded:
        state = read_state(settings)
        if state:
            print(f"genops: genops serve (pid {state['pid']}) holds the embedded store at {settings.chdb_path} and "
                  f"runs the anomaly jobs itself every {settings.jobs_interval_s:g}s; `genops jobs once` goes "
                  "through it, for a loop of your own stop it or use a ClickHouse server (GENOPS_CLICKHOUSE_URL)",
                  file=sys.stderr)
            return None
    try:
        client = open_client(settings)
        migrate(client, settings.database, retention_days=settings.retention_days,
                cluster=settings.clickhouse_cluster)
    except StorageError as exc:
        print(f"genops: {exc}", file=sys.stderr)
        return None
    jobs = jobs_from_settings(client, settings)
    names = [n.strip() for n in args.detectors.split(",") if n.strip()]
    try:
        jobs.detectors = build_detectors(names or None)
    except ValueError as exc:
        raise ConfigError(f"--detectors: {exc}") from None
    if args.no_alerts:
        jobs.notifier = None
    return jobs


def _print_report(report: Any, as_json: bool) -> None:
    data = report.as_dict()
    if as_json:
        print(orjson.dumps(data).decode(), flush=True)
        return
    hits = ", ".join(f"{k} {v}" for k, v in data["hits"].items() if v) or "none"
    print(f"evaluated {data['windows']} windows ({data['from']} .. {data['to']}) in {data['seconds']}s; "
          f"hits: {hits}; anomaly rows written {data['anomaly_rows_written']}; "
          f"alerts sent {data['alerts_sent']}, resolved {data['resolved_sent']}, suppressed {data['alerts_suppressed']}"
          + (f"; FAILED detectors: {', '.join(data['failed_detectors'])}" if data["failed_detectors"] else ""),
          flush=True)


def _setup_logging(settings: Settings) -> None:
    from genops.logs import setup_logging

    setup_logging(settings.log_level, settings.log_format)


def _serving(settings: Settings) -> dict[str, Any] | None:
    if not settings.embedded:
        return None
    from genops.runtime.server import read_state

    return read_state(settings)


def _once_via_server(settings: Settings, state: dict[str, Any], args: argparse.Namespace) -> int:
    """``jobs once`` while ``genops serve`` holds the embedded store: the server runs the pass."""
    import urllib.error
    import urllib.request

    from genops.api.jobs import JOBS_PATH

    body: dict[str, Any] = {"detectors": [n.strip() for n in args.detectors.split(",") if n.strip()],
                            "no_alerts": args.no_alerts}
    if args.backfill:
        start, end = parse_time(args.backfill[0]), parse_time(args.backfill[1])
        body["backfill"] = [start.isoformat(), end.isoformat()]
    request = urllib.request.Request(
        state["url"].rstrip("/") + JOBS_PATH, data=orjson.dumps(body), method="POST",
        headers={"Authorization": f"Bearer {settings.resolved_admin_token()}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=3600) as response:
            report = orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            print("genops: the running genops serve does not run the anomaly jobs (GENOPS_JOBS_IN_SERVE=off); "
                  "stop it to run them by hand", file=sys.stderr)
            return 1
        try:
            message = orjson.loads(exc.read())["error"]["message"]
        except Exception:  # fall back to the status line
            message = f"HTTP {exc.code}"
        print(f"genops: {message}", file=sys.stderr)
        return 2 if exc.code == 400 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"genops: cannot reach genops serve at {state['url']}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 1
    _print_report(_Report(report), args.json)
    return 1 if report.get("failed_detectors") else 0


class _Report:
    """A report dict from the server, printable like a local PassReport."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def as_dict(self) -> dict[str, Any]:
        return self.data


def run_once(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    _setup_logging(settings)
    state = _serving(settings)
    if state:
        return _once_via_server(settings, state, args)
    jobs = _open_jobs(settings, args)
    if jobs is None:
        return 1
    if args.backfill:
        start, end = parse_time(args.backfill[0]), parse_time(args.backfill[1])
        if end <= start:
            raise ConfigError("--backfill: TO must be after FROM")
        report = jobs.backfill(start, end)
    else:
        report = jobs.run_once(notify=not args.no_alerts)
    _print_report(report, args.json)
    return 1 if report.failed_detectors else 0


def run_loop(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    _setup_logging(settings)
    jobs = _open_jobs(settings, args)
    if jobs is None:
        return 1
    from genops.collectors.anomaly.runner import loop

    if args.backfill:
        start, end = parse_time(args.backfill[0]), parse_time(args.backfill[1])
        _print_report(jobs.backfill(start, end), args.json)
    interval = args.interval if args.interval is not None else settings.jobs_interval_s
    print(f"anomaly jobs: a pass every {interval:g}s on {settings.storage_description()} (Ctrl-C stops)",
          file=sys.stderr, flush=True)
    try:
        loop(jobs, interval, stop=lambda: False, sleep=time.sleep)
    except KeyboardInterrupt:
        return 0
    return 0


def list_anomalies(args: argparse.Namespace) -> int:
    from genops.collectors.anomaly.queries import render
    from genops.commands.sql import query
    from genops.commands.sql import render as render_result
    from genops.storage.sql import QueryError

    settings = settings_from_args(args)
    status_filter = "1" if args.status == "all" else f"status = '{args.status}'"  # choices: no injection
    try:
        result = query(settings, render("list_anomalies", status_filter=status_filter, limit=max(1, int(args.limit))))
    except QueryError as exc:
        print(f"genops: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(render_result(result, args.format))
    return 0


def annotation_query(args: argparse.Namespace) -> int:
    from genops.collectors.anomaly.queries import load

    print(load("annotations"))
    return 0
