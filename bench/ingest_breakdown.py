"""Where an OTLP span's CPU goes on the ClickHouse side: one insert of SpanRows, stage by stage.

In a fresh in-process chDB (so CPU time of this process is ClickHouse's plus the tiny
Python call), inserts the same batch of SpanRows (``--spans``, default 32768: the receiver's
default insert) into: the Null staging table with no view (Protobuf parsing only); a copy
of it whose view writes into a plain MergeTree copy of ``otel_traces`` (parsing + the
view's spelling + writing the row); and the real ``otel_traces_otlp_in`` (+ ``otel_traces``'s
own views: genops_calls, the trace-id lookup, rollups). Also times the Python side per span
(validation + framing) and, for comparison, the same spans through the Python decoder and
a JSONEachRow insert. CPU seconds per span, median of ``--repeat`` runs; background merges
are stopped so they do not land in the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from otlp_payload import make_request


def cpu_per_span(fn, spans: int, repeat: int) -> float:
    """Median CPU µs per span of ``fn`` (this process: ClickHouse runs in it)."""
    fn()  # warm up (schema and query caches)
    samples = []
    for _ in range(repeat):
        started = time.process_time()
        fn()
        samples.append((time.process_time() - started) / spans * 1e6)
    return round(statistics.median(samples), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spans", type=int, default=32768)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from genops.config import Settings
    from genops.storage.client import open_client
    from genops.storage.migrate import migrate
    from genops.storage.otlp_native import TABLE, insert_settings, insert_span_rows
    from genops.storage.otlp_rows import decode_protobuf, decode_protobuf_for_clickhouse
    from genops.storage.rows import insert_json_payload, json_rows_payload

    requests = [make_request(512, seed=i) for i in range(max(1, args.spans // 512))]
    spans = 512 * len(requests)
    client = open_client(Settings(data_dir=tempfile.mkdtemp(prefix="genops-breakdown-")))
    db = "bench"
    migrate(client, db)
    client.command("SYSTEM STOP MERGES")
    view = client.query(f"SELECT as_select FROM system.tables WHERE database = '{db}' "
                        "AND name = 'otel_traces_otlp_in_mv'").result_rows[0][0]
    client.command(f"CREATE TABLE {db}.parse_only AS {db}.{TABLE} ENGINE = Null")
    client.command(f"CREATE TABLE {db}.view_in AS {db}.{TABLE} ENGINE = Null")
    client.command(f"CREATE TABLE {db}.traces_copy AS {db}.otel_traces")
    client.command(f"CREATE MATERIALIZED VIEW {db}.view_mv TO {db}.traces_copy AS "
                   + view.replace(f"{db}.{TABLE}", f"{db}.view_in"))

    def python_side() -> bytes:
        return b"".join(decode_protobuf_for_clickhouse(body).payload for body in requests)

    payload = python_side()
    json_payload = json_rows_payload([row for body in requests for row in decode_protobuf(body).rows])

    def insert(table: str) -> None:
        client.raw_insert(f"{db}.{table}", None, payload, fmt="Protobuf", settings=insert_settings(client))

    figures = {
        "spans_per_insert": spans,
        "python_validate_and_frame_us": cpu_per_span(python_side, spans, args.repeat),
        "clickhouse_parse_us": cpu_per_span(lambda: insert("parse_only"), spans, args.repeat),
        "clickhouse_parse_view_write_otel_traces_us": cpu_per_span(lambda: insert("view_in"), spans, args.repeat),
        "clickhouse_full_insert_with_downstream_views_us": cpu_per_span(
            lambda: insert_span_rows(client, db, payload, insert_deduplication_token=uuid.uuid4().hex,
                                     deduplicate_blocks_in_dependent_materialized_views=1), spans, args.repeat),
        "python_decoder_us": cpu_per_span(lambda: [decode_protobuf(body) for body in requests], spans, args.repeat),
        "orjson_rows_us": cpu_per_span(
            lambda: json_rows_payload([row for body in requests for row in decode_protobuf(body).rows]),
            spans, args.repeat),
        "clickhouse_json_full_insert_us": cpu_per_span(
            lambda: insert_json_payload(client, db, json_payload, insert_deduplication_token=uuid.uuid4().hex,
                                        deduplicate_blocks_in_dependent_materialized_views=1), spans, args.repeat),
    }
    figures["orjson_rows_us"] = round(figures["orjson_rows_us"] - figures["python_decoder_us"], 2)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
