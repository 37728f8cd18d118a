"""Anomaly jobs on chDB: generation, backfill and live-pass times for simulated traffic.

    python bench/anomaly_jobs.py --days 7 --calls-per-minute 40

Writes the traffic into a temporary embedded store, backfills all detectors over it, then
times live passes (one 5-minute window each, as ``genops serve`` runs them) at the end of
the period, per detector too. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time

import orjson

from genops.collectors.anomaly import store
from genops.collectors.anomaly.detectors import PassContext
from genops.collectors.anomaly.runner import AnomalyJobs
from genops.collectors.anomaly.synthetic import generate, schedule_injections
from genops.config import Settings
from genops.storage.client import open_client
from genops.storage.migrate import migrate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=float, default=7)
    parser.add_argument("--calls-per-minute", type=float, default=40)
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        client = open_client(Settings(data_dir=data_dir))
        database = "bench"
        migrate(client, database)
        start = dt.datetime(2026, 11, 2)
        end = start + dt.timedelta(days=args.days)
        t = time.perf_counter()
        calls = generate(client, database, start, args.days, calls_per_minute=args.calls_per_minute,
                         injections=schedule_injections(start, args.days))
        generate_s = time.perf_counter() - t
        jobs = AnomalyJobs(client, database)
        t = time.perf_counter()
        report = jobs.backfill(start, end)
        backfill_s = time.perf_counter() - t
        now = [end]
        live = AnomalyJobs(client, database, lag=dt.timedelta(0), clock=lambda: now[0])
        store.set_watermark(client, database, end - dt.timedelta(minutes=5))
        pass_s = []
        for k in range(args.passes):
            now[0] = end + dt.timedelta(minutes=5 * k)
            t = time.perf_counter()
            live.run_once(notify=False)
            pass_s.append(time.perf_counter() - t)
        per_detector = {}
        for detector in live.detectors:
            t = time.perf_counter()
            detector.detect(PassContext(client, database), end - dt.timedelta(minutes=5), end)
            per_detector[detector.name] = round((time.perf_counter() - t) * 1000, 1)
        rollups = {name: client.query(f"SELECT count() FROM {database}.{name}").result_rows[0][0]
                   for name in ("genops_rollup_model_1m", "genops_rollup_dim_1m", "genops_rollup_session_1m")}
    print(orjson.dumps({
        "days": args.days, "calls": calls, "generate_s": round(generate_s, 2),
        "backfill_s": round(backfill_s, 2), "backfill_windows": report.windows,
        "anomaly_rows": report.written, "live_pass_ms_median": round(statistics.median(pass_s) * 1000, 1),
        "live_pass_ms_max": round(max(pass_s) * 1000, 1), "detector_ms": per_detector, "rollup_rows": rollups,
    }, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
