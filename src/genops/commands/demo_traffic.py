"""``genops demo-traffic``: a week (or any span) of realistic synthetic LLM traffic with
injected anomalies, written straight into the store, then the anomaly jobs run over it, so
dashboards and alerts light up without real traffic. Rows carry ScopeName 'genops.demo'.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections import Counter

from genops.commands.common import STORAGE_FLAGS, add_setting_flags, settings_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo-traffic", help="write synthetic traffic with injected anomalies")
    parser.add_argument("--days", type=float, default=7.0, help="simulated days, ending now (default 7)")
    parser.add_argument("--calls-per-minute", type=float, default=20.0, help="average calls per minute (default 20)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-anomalies", action="store_true", help="clean traffic only")
    parser.add_argument("--no-detect", action="store_true", help="do not run the anomaly jobs over it afterwards")
    add_setting_flags(parser, (*STORAGE_FLAGS, "retention_days"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from genops.collectors.anomaly import store
    from genops.collectors.anomaly.runner import AnomalyJobs, floor_time, utcnow
    from genops.collectors.anomaly.synthetic import generate, schedule_injections
    from genops.runtime.server import read_state
    from genops.storage.client import StorageError, open_client
    from genops.storage.migrate import migrate

    settings = settings_from_args(args)
    if settings.embedded and read_state(settings):
        print("genops: genops serve holds the embedded store; stop it, run demo-traffic, then start it again "
              "(or use a ClickHouse server via GENOPS_CLICKHOUSE_URL)", file=sys.stderr)
        return 1
    if args.days <= 0 or args.days > settings.retention_days:
        print(f"genops: --days must be between 0 and the retention ({settings.retention_days} days)", file=sys.stderr)
        return 2
    try:
        client = open_client(settings)
        migrate(client, settings.database, retention_days=settings.retention_days,
                cluster=settings.clickhouse_cluster)
    except StorageError as exc:
        print(f"genops: {exc}", file=sys.stderr)
        return 1
    end = floor_time(utcnow(), 5)
    start = end - dt.timedelta(days=args.days)
    injections = [] if args.no_anomalies else schedule_injections(start, args.days, seed=args.seed)
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        print(f"\r  {done * 100 // total:3d}% of {args.days:g} days", end="", file=sys.stderr, flush=True)

    rows = generate(client, settings.database, start, args.days, calls_per_minute=args.calls_per_minute,
                    seed=args.seed, injections=injections, progress=progress)
    print(file=sys.stderr)
    print(f"wrote {rows:,} calls from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC in "
          f"{time.perf_counter() - started:.1f}s ({settings.storage_description()})")
    if injections:
        kinds = Counter(i.kind for i in injections)
        print("injected anomalies: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    if not args.no_detect:
        jobs = AnomalyJobs(client, settings.database)
        report = jobs.backfill(start, end)
        store.set_watermark(client, settings.database, end)  # genops serve carries on from here
        found = ", ".join(f"{k} {v}" for k, v in report.hits.items() if v) or "none"
        print(f"anomaly jobs over the period ({report.seconds:.1f}s): firing windows per detector: {found}")
        print('see them: genops jobs list   or   genops sql "SELECT detector, entity, start, end, severity '
              'FROM genops_anomalies FINAL ORDER BY start DESC LIMIT 20"')
    return 0
