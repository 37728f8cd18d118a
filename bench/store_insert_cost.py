"""What the embedded store spends on the proxy's own spans: per insert, per span, per view, per format.

In a fresh in-process chDB (so this process's CPU time is ClickHouse's plus the Python call),
with background merges stopped so they do not land in the figures:

- the store's Python spelling of a compact batch (``span_batch.compact_rows``, what the sink
  inserts, against ``json_rows``, the JSONEachRow objects it used to insert), per span;
- one insert of 1 span and of ``--spans`` spans into ``otel_traces`` as migrated (every view),
  and with the views left out one group at a time: the fixed cost of an insert and the cost
  per span, and the share of each view;
- the proxy's compact batch inserted as the store inserts it, spelled into rows by Python
  (``span_batch.compact_rows``) and by ClickHouse (migration 0090's view, ``span_batch_sql``),
  Python's time included;
- the same insert through the view, step by step: the spelling alone (its rows into a Null copy
  of ``otel_traces``), then the ``otel_traces`` write, then each group of views after it;
- ClickHouse's parsing alone: the same rows into a Null-engine copy of ``otel_traces`` in
  several input formats.

The spans are those of a non-streamed chat call through the proxy (the attributes of
``bench/proxy_bench.py``'s calls), each with its own ids. CPU milliseconds, median of ``--repeat``.

    .venv/bin/python bench/store_insert_cost.py
    .venv/bin/python bench/store_insert_cost.py --spans 8000 --repeat 7
    .venv/bin/python bench/store_insert_cost.py --smoke    # seconds, for the test suite
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import clickhouse_connect
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind

from genops.proxy.recorder import SpanRecorder
from genops.storage.migrate import migrate
from genops.storage.rows import TRACE_COLUMNS, insert_compact_payload
from genops.storage.sinks import SPANS, ClickHouseSink
from genops.storage.span_batch import SpanEncoder, batch_payload, compact_rows, json_rows

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest_breakdown import cpu_per_span  # noqa: E402 - bench/'s own helpers, next to this script

#: The views filled from ``otel_traces`` (directly or through ``genops_calls``), in groups left out together.
VIEW_GROUPS = {
    "genops_calls and its two rollups": ("genops_calls_mv", "genops_rollup_model_1m_mv", "genops_rollup_dim_1m_mv"),
    "trace-id lookup": ("otel_traces_trace_id_ts_mv",),
    "session rollup": ("genops_rollup_session_1m_mv",),
    "cache savings": ("genops_cache_savings_mv",),
}
ALL_VIEWS = tuple(v for group in VIEW_GROUPS.values() for v in group)
FORMATS = ("JSONEachRow", "JSONCompactEachRow", "RowBinary", "Native")

# A chat call's span as the proxy records it (bench/proxy_bench.py's request and answer).
ATTRIBUTES = {
    "genops.safety.pii.count": 0, "genops.safety.secrets.count": 0, "genops.safety.injection.count": 0,
    "genops.safety.action": "none", "genops.safety.policy": "pii=annotate,secrets=annotate,injection=annotate",
    "genops.safety.scan_ms": 0.045, "genops.content.input.chars": 88, "genops.content.input.messages": 2,
    "genops.content.output.chars": 31, "genops.route": "openai", "http.response.status_code": 200,
    "genops.upstream.url": "http://127.0.0.1:8931/v1/chat/completions", "server.address": "127.0.0.1",
    "server.port": 8931, "genops.latency.upstream_ms": 0.929, "genops.request.body_bytes": 184,
    "genops.response.body_bytes": 591, "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini", "gen_ai.request.stream": False, "gen_ai.response.id": "chatcmpl-bench",
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18", "gen_ai.response.finish_reasons": ("stop",),
    "gen_ai.usage.input_tokens": 24, "gen_ai.usage.output_tokens": 8, "gen_ai.usage.cache_read.input_tokens": 0,
    "gen_ai.usage.reasoning.output_tokens": 0, "genops.latency.output_tokens_per_second": 1663.209,
    "genops.cost.usd": 8.4e-06, "genops.cost.input_usd": 3.6e-06, "genops.cost.output_usd": 4.8e-06,
}


class _Keep(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def compact_batch(spans: int) -> bytes:
    """A compact batch (``span_batch``'s payload) of ``spans`` chat-call spans ending now."""
    keep = _Keep()
    recorder = SpanRecorder(Resource.create({"service.name": "genops-proxy"}), InstrumentationScope("genops.proxy", "0"),
                            [keep])
    now = time.time_ns()
    for i in range(spans):
        span = recorder.start_span("chat gpt-4o-mini", kind=SpanKind.CLIENT, start_time=now - 5_000_000 + i)
        span.set_attributes({**ATTRIBUTES, "genops.request.id": f"{i:032x}"})
        span.end(end_time=now + i)
    encoder = SpanEncoder()
    lines = [encoder.encode(span) for span in keep.spans]
    return batch_payload(encoder.header(), lines)


def cpu_ms(fn: Callable[[], object], repeat: int) -> float:
    """Median CPU milliseconds of ``fn()`` in this process (ClickHouse's threads included), after a warm-up."""
    return cpu_per_span(fn, 1, repeat) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=2000, help="spans per insert (the proxy's ~1 s of calls)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="a tiny run that only checks everything works")
    args = parser.parse_args()
    if args.smoke:
        args.spans, args.repeat = 50, 1

    batch, one = compact_batch(args.spans), compact_batch(1)
    n = args.spans
    spelled: dict[str, list[float]] = {"json_rows": [], "compact_rows": []}
    for _ in range(3 * args.repeat):  # alternated: a busy moment of a shared machine hits both
        for fn in (json_rows, compact_rows):
            started = time.process_time()
            fn(batch)
            spelled[fn.__name__].append((time.process_time() - started) * 1e6 / n)
    print("store-side Python per span (median): " +
          ", ".join(f"{name} {statistics.median(values):.1f} µs" for name, values in spelled.items()))

    client = clickhouse_connect.get_client(dsn=f"chdb://{tempfile.mkdtemp(prefix='genops-insert-cost-')}")
    rows, row = compact_rows(batch), compact_rows(one)
    tokens = iter(range(1 << 30))

    def database(name: str, leave_out: tuple[str, ...]) -> str:
        migrate(client, name)
        client.command(f"SYSTEM STOP MERGES {name}.otel_traces")
        for view in leave_out:
            client.command(f"DROP VIEW {name}.{view}")
        return name

    def insert(name: str, payload: bytes) -> Callable[[], None]:
        # A token per insert, as the pipeline sends: the same rows again are not a duplicate here.
        return lambda: insert_compact_payload(client, name, payload, insert_deduplication_token=f"t{next(tokens)}",
                                              deduplicate_blocks_in_dependent_materialized_views=1)

    print(f"\ninsert into otel_traces (CPU ms, median of {args.repeat}; merges stopped)")
    print(f"{'views':<40} {'1 span':>8} {f'{n} spans':>11} {'per span':>9}")
    setups = {"all (as migrated)": (), "none": ALL_VIEWS,
              **{f"all but {group}": views for group, views in VIEW_GROUPS.items()}}
    for i, (label, leave_out) in enumerate(setups.items()):
        name = database(f"cost{i}", leave_out)
        fixed, full = cpu_ms(insert(name, row), args.repeat), cpu_ms(insert(name, rows), args.repeat)
        print(f"{label:<40} {fixed:>8.1f} {full:>11.1f} {(full - fixed) * 1000 / (n - 1):>7.1f}µs")

    print(f"\nthe proxy's compact batch into otel_traces, every view (CPU ms, median of {args.repeat}, Python included)")
    print(f"{'spelled by':<40} {'1 span':>8} {f'{n} spans':>11} {'per span':>9}")
    for label, sql in (("Python (span_batch.compact_rows)", False), ("ClickHouse (migration 0090's view)", True)):
        name = database(f"spell{int(sql)}", ())

        def spelled(payload: bytes, name: str = name, sql: bool = sql) -> Callable[[], None]:
            sink = ClickHouseSink(client, name, sql_spelling=sql)
            return lambda: sink.insert(payload, f"t{next(tokens)}", SPANS, 0)

        fixed, full = cpu_ms(spelled(one), args.repeat), cpu_ms(spelled(batch), args.repeat)
        print(f"{label:<40} {fixed:>8.1f} {full:>11.1f} {(full - fixed) * 1000 / (n - 1):>7.1f}µs")

    print(f"\nthe same through the view, step by step (CPU ms, median of {args.repeat}, Python included)")
    print(f"{'what the insert does':<46} {'1 span':>8} {f'{n} spans':>11} {'per span':>9}")
    steps = {"spell only (into a Null otel_traces)": None, "+ write otel_traces, no view after it": ALL_VIEWS,
             **{f"+ write, + {group}": tuple(v for v in ALL_VIEWS if v not in views)
                for group, views in VIEW_GROUPS.items()},
             "+ write, + every view (as migrated)": ()}
    for i, (label, leave_out) in enumerate(steps.items()):
        name = database(f"step{i}", ALL_VIEWS if leave_out is None else leave_out)
        if leave_out is None:  # the spelling view's rows go nowhere: its own cost, and the parse's
            spell = client.query(f"SELECT as_select FROM system.tables WHERE database = '{name}' "
                                 "AND name = 'otel_traces_genops_in_mv'").result_rows[0][0]
            client.command(f"DROP VIEW {name}.otel_traces_genops_in_mv")
            client.command(f"CREATE TABLE {name}.spelled AS {name}.otel_traces ENGINE = Null")
            client.command(f"CREATE MATERIALIZED VIEW {name}.spelled_mv TO {name}.spelled AS {spell}")

        def step(payload: bytes, name: str = name) -> Callable[[], None]:
            sink = ClickHouseSink(client, name, sql_spelling=True)
            return lambda: sink.insert(payload, f"t{next(tokens)}", SPANS, 0)

        fixed, full = cpu_ms(step(one), args.repeat), cpu_ms(step(batch), args.repeat)
        print(f"{label:<46} {fixed:>8.1f} {full:>11.1f} {(full - fixed) * 1000 / (n - 1):>7.1f}µs")

    print(f"\nClickHouse parsing alone: {n} rows into a Null-engine copy of otel_traces (CPU ms)")
    client.command("CREATE TABLE cost0.parse AS cost0.otel_traces ENGINE = Null")
    client.command("SYSTEM START MERGES cost0.otel_traces")
    for fmt in FORMATS:
        data = client.raw_query(f"SELECT {', '.join(f'`{c}`' for c in TRACE_COLUMNS)} FROM cost0.otel_traces "
                                f"LIMIT {n} FORMAT {fmt}")
        ms = cpu_ms(lambda data=data, fmt=fmt: client.raw_insert("cost0.parse", TRACE_COLUMNS, data, fmt=fmt),
                       args.repeat)
        print(f"{fmt:<20} {ms:>8.1f} ms  {len(data) / n:>6.0f} bytes per row")


if __name__ == "__main__":
    main()
