"""OTLP ingest benchmark: protobuf batches of 512 spans into a ``genops collector`` on chDB.

Starts the collector in a fresh data directory, posts pre-built payloads from a few
client connections, waits until every span is inserted (the collector's ``/metrics``),
and reports spans/s of wall time and spans per CPU-second of the collector process
(user + system time of the process and its threads, from /proc): the "per core" figure.
``spans_per_cpu_second_settled`` also counts the CPU the process spends in the next
``--settle`` seconds (ClickHouse's background merges of the parts the run wrote), and
``peak_rss_mb`` is the collector's peak resident memory, ``cpu_s_by_thread`` the run's CPU
by thread name (the event loop, the pipeline's batcher and sender, ClickHouse's pools). ``--decode python`` measures the
Python decoder instead of ClickHouse's (``GENOPS_OTLP_DECODE``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_seconds, free_port, metric, peak_rss_mb, start_process, stop_process, thread_cpu_seconds, wait_http
from otlp_payload import make_request


def run(batches: int = 400, spans_per_batch: int = 512, connections: int = 2, distinct: int = 16,
        decode: str = "clickhouse", settle: float = 0.0, extra_env: dict[str, str] | None = None) -> dict:
    """Run the benchmark; returns the figures."""
    data_dir = Path(tempfile.mkdtemp(prefix="genops-bench-ingest-"))
    port = free_port()
    env = {"GENOPS_DATA_DIR": str(data_dir), "GENOPS_OTLP_PORT": str(port), "GENOPS_LOG_LEVEL": "warning",
           "GENOPS_EXPORT_INTERVAL_MS": "1000",  # default batching otherwise
           "GENOPS_OTLP_DECODE": decode, **(extra_env or {})}
    process = start_process(["collector"], env, data_dir / "collector.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/healthz", process)
        payloads = [make_request(spans_per_batch, seed=i) for i in range(distinct)]
        total = batches * spans_per_batch
        cpu_before = cpu_seconds(process.pid)
        threads_before = thread_cpu_seconds(process.pid)
        started = time.perf_counter()
        errors: list[str] = []

        def client(worker: int) -> None:
            for i in range(worker, batches, connections):
                body = payloads[i % distinct]
                request = urllib.request.Request(base + "/v1/traces", data=body,
                                                 headers={"Content-Type": "application/x-protobuf"})
                for _attempt in range(50):
                    try:
                        with urllib.request.urlopen(request, timeout=60) as response:
                            response.read()
                        break
                    except urllib.error.HTTPError as exc:
                        if exc.code != 503:
                            errors.append(f"HTTP {exc.code}")
                            return
                        time.sleep(float(exc.headers.get("Retry-After", "1")) / 10)

        threads = [threading.Thread(target=client, args=(w,)) for w in range(connections)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        accepted_at = time.perf_counter()
        while metric(base, "genops_spans_exported_total") < total:
            if time.perf_counter() - started > 600:
                raise RuntimeError("spans not exported within 600 s")
            time.sleep(0.05)
        stored_at = time.perf_counter()
        cpu = cpu_seconds(process.pid) - cpu_before
        if errors:
            raise RuntimeError(f"requests failed: {errors[:3]}")
        wall = stored_at - started
        threads = thread_cpu_seconds(process.pid)
        by_thread = {name: round(cpu_s - threads_before.get(name, 0.0), 2) for name, cpu_s in threads.items()}
        settled = {}
        if settle:
            time.sleep(settle)
            cpu_settled = cpu_seconds(process.pid) - cpu_before
            settled = {"collector_cpu_s_settled": round(cpu_settled, 3),
                       "spans_per_cpu_second_settled": round(total / cpu_settled)}
        return {
            "decode": decode,
            "spans": total,
            "batch_size": spans_per_batch,
            "wall_s": round(wall, 3),
            "spans_per_s_wall": round(total / wall),
            "accept_spans_per_s": round(total / (accepted_at - started)),
            "collector_cpu_s": round(cpu, 3),
            "spans_per_cpu_second": round(total / cpu) if cpu else None,
            **settled,
            "python_fallback_batches": metric(base, "genops_otlp_python_fallback_batches_total"),
            "peak_rss_mb": peak_rss_mb(process.pid),
            # where the run's CPU went, by thread name (threads that ended are not listed)
            "cpu_s_by_thread": dict(sorted(((n, s) for n, s in by_thread.items() if s >= 0.05),
                                           key=lambda item: -item[1])),
            "cores": os.cpu_count(),
        }
    finally:
        stop_process(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--decode", choices=("clickhouse", "python"), default="clickhouse")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds of background merges to count after")
    parser.add_argument("--env", action="append", default=[], metavar="GENOPS_X=VALUE", help="collector setting")
    args = parser.parse_args()
    extra_env = dict(item.split("=", 1) for item in args.env)
    print(json.dumps(run(args.batches, connections=args.connections, decode=args.decode, settle=args.settle,
                         extra_env=extra_env), indent=2))


if __name__ == "__main__":
    main()
