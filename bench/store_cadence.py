"""The store's CPU per span at a steady rate, by how often it inserts (GENOPS_EXPORT_INSERT_INTERVAL_MS).

The store process's own path, in this process: a span pipeline inserting into a fresh embedded
chDB (``SpanPipeline`` + ``ClickHouseSink``, background merges running, as in production) is
handed, every second, one compact batch of ``--rate`` chat-call spans per simulated worker
(``accept_handoff``, as the ingest endpoint calls it), for ``--seconds``; then it is flushed.
The figure is this process's CPU (ClickHouse's threads included) over the whole run, merges
after the last insert included (``--settle`` seconds of them), divided by the spans stored.

One run per insert interval in ``--linger`` (0: every hand-off is its own insert, as before
the store grouped them), alternated over ``--repeat`` rounds; medians.

    .venv/bin/python bench/store_cadence.py                       # 1,000 spans/s, 0 vs 5 s
    .venv/bin/python bench/store_cadence.py --rate 250 --workers 2 --linger 0,1,5
    .venv/bin/python bench/store_cadence.py --linger 5 --spelling python,sql
    .venv/bin/python bench/store_cadence.py --smoke               # seconds, for the test suite
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import clickhouse_connect

from genops.storage.migrate import migrate
from genops.storage.pipeline import REMEMBERED_TOKENS, SpanPipeline
from genops.storage.sinks import SPANS, ClickHouseSink
from genops.storage.spool import Spool

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: --spelling's names: the store's ClickHouseSink(sql_spelling=...)
SPELLINGS = {"sql": True, "python": False}

from store_insert_cost import compact_batch  # noqa: E402 - bench/'s own helpers, next to this script


def cpu_s() -> float:
    """This process's CPU seconds, every thread (ClickHouse's) included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(client: object, batch: bytes, spans: int, *, workers: int, seconds: int, linger_s: float,
        settle_s: float, sql_spelling: bool = True) -> dict[str, float]:
    """One steady run into a fresh database: CPU ms per span and inserts made."""
    name = "cadence_" + uuid.uuid4().hex[:8]
    migrate(client, name)
    work = Path(tempfile.mkdtemp(prefix="genops-cadence-"))
    sink = ClickHouseSink(client, name, sql_spelling=sql_spelling)
    pipeline = SpanPipeline(sink, Spool(work, max_bytes=1 << 30, remember_tokens=REMEMBERED_TOKENS),
                            batch_size=8192, insert_linger_s=linger_s)
    pipeline.start()
    started_cpu, started = cpu_s(), time.monotonic()
    for second in range(seconds):
        for _ in range(workers):
            while not pipeline.accept_handoff(batch, spans, SPANS, uuid.uuid4().hex):
                time.sleep(0.01)
        time.sleep(max(0.0, started + second + 1 - time.monotonic()))
    pipeline.flush(60)
    time.sleep(settle_s)  # the merges the run's parts cause
    cpu = cpu_s() - started_cpu
    stored = pipeline.counters.exported
    inserts = pipeline.counters.batches_exported
    pipeline.shutdown(5)
    client.command(f"DROP DATABASE {name}")  # type: ignore[attr-defined]
    return {"cpu_ms_per_span": cpu * 1000 / max(1, stored), "inserts": inserts, "spans": stored}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=1000, help="spans per second per simulated worker")
    parser.add_argument("--workers", type=int, default=1, help="hand-offs per second (one per worker)")
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--linger", default="0,5", help="insert intervals to compare, seconds, comma-separated")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds of merges counted after the flush")
    parser.add_argument("--spelling", default="sql",
                        help="who spells the proxy's lines into rows, comma-separated: sql (migration 0090's view, "
                             "the default) and/or python (span_batch.compact_rows, the fallback)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="a tiny run that only checks everything works")
    args = parser.parse_args()
    if args.smoke:
        args.rate, args.seconds, args.settle, args.repeat = 20, 2, 0.0, 1
    lingers = [float(x) for x in args.linger.split(",")]
    spellings = [SPELLINGS[x] for x in args.spelling.split(",")]
    batch = compact_batch(args.rate)
    client = clickhouse_connect.get_client(dsn=f"chdb://{tempfile.mkdtemp(prefix='genops-cadence-db-')}")
    settings = [(linger, sql) for sql in spellings for linger in lingers]
    results: dict[tuple[float, bool], list[dict[str, float]]] = {setting: [] for setting in settings}
    for round_ in range(args.repeat):
        for linger, sql in settings:
            print(f"round {round_ + 1}/{args.repeat}: insert interval {linger:g} s, spelled by "
                  f"{'ClickHouse' if sql else 'Python'} ...", flush=True)
            results[(linger, sql)].append(run(client, batch, args.rate, workers=args.workers, seconds=args.seconds,
                                              linger_s=linger, settle_s=args.settle, sql_spelling=sql))
    print(f"\n{args.workers} hand-off(s) a second of {args.rate} spans, {args.seconds} s, merges running "
          f"(+{args.settle:g} s after); medians of {args.repeat}")
    print(f"{'insert interval':<16} {'spelled by':<11} {'inserts':>8} {'CPU ms/span':>12}  rounds")
    for (linger, sql), runs in results.items():
        per_span = [r["cpu_ms_per_span"] for r in runs]
        print(f"{linger:>14g} s {'ClickHouse' if sql else 'Python':<11} "
              f"{statistics.median(r['inserts'] for r in runs):>8.0f} "
              f"{statistics.median(per_span):>12.3f}  " + ", ".join(f"{v:.3f}" for v in per_span))


if __name__ == "__main__":
    main()
