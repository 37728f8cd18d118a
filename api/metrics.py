"""``GET /metrics``: the span pipeline's and the receiver's counters in Prometheus text format."""

from __future__ import annotations

from typing import Any, Callable, Iterable

from aiohttp import web

from genops.collectors.receiver import ReceiverStats
from genops.storage.pipeline import SpanPipeline

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _family(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines.extend(f"{name}{labels} {value:g}" if isinstance(value, float) else f"{name}{labels} {value}"
                 for labels, value in samples)
    return lines


def snapshot(pipeline: SpanPipeline) -> dict[str, Any]:
    """A pipeline's counters and gauges as plain numbers (what a proxy worker reports to its supervisor)."""
    c, spool = pipeline.counters, pipeline.spool
    # A worker's sink hands batches to the store process, which counts them exported once inserted.
    forwards = getattr(pipeline.sink, "forwards", False)
    return {
        "received": dict(c.received), "spooled": c.spooled, "replayed": c.replayed,
        "exported": 0 if forwards else c.exported, "forwarded": c.exported if forwards else 0,
        "dropped_queue_full": c.dropped_queue_full, "dropped_spool_full": spool.dropped_spans,
        "dropped_invalid": c.dropped_invalid, "export_failures": c.export_failures,
        "batches_exported": 0 if forwards else c.batches_exported, "spool_write_errors": c.spool_write_errors,
        "queued": pipeline.queued, "spool_spans": spool.pending_spans, "spool_bytes": spool.bytes_on_disk,
    }


def _merged(snapshots: Iterable[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {"received": {}}
    for snap in snapshots:
        for key, value in snap.items():
            if key == "received":
                for source, n in value.items():
                    total["received"][source] = total["received"].get(source, 0) + int(n)
            else:
                total[key] = total.get(key, 0) + int(value)
    return total


def render(pipeline: SpanPipeline | None, receiver: ReceiverStats | None = None,
           workers: Iterable[dict[str, Any]] = ()) -> str:
    """The exposition text: this process's pipeline plus the latest reports of its proxy ``workers``."""
    lines: list[str] = []
    if pipeline is not None:
        c = pipeline.counters
        m = _merged([snapshot(pipeline), *workers])
        lines += _family("genops_spans_received_total", "counter", "Spans handed to the export pipeline, by source.",
                         [(f'{{source="{_label(s)}"}}', n) for s, n in sorted(m["received"].items())]
                         or [('{source="proxy"}', 0)])
        lines += _family("genops_spans_spooled_total", "counter",
                         "Spans written to the on-disk spool (ahead of every insert; a proxy worker's "
                         "only when its hand-off to the store fails or falls behind).",
                         [("", m["spooled"])])
        lines += _family("genops_spans_exported_total", "counter", "Spans inserted into ClickHouse.", [("", m["exported"])])
        lines += _family("genops_spans_forwarded_total", "counter",
                         "Spans proxy workers handed to the store process (spooled there, then inserted).",
                         [("", m.get("forwarded", 0))])
        lines += _family("genops_spans_replayed_total", "counter",
                         "Spans inserted from the spool after a failed attempt or a restart.", [("", m["replayed"])])
        lines += _family("genops_spans_dropped_total", "counter", "Spans dropped, by reason.", [
            ('{reason="queue_full"}', m["dropped_queue_full"]),
            ('{reason="spool_full"}', m["dropped_spool_full"]),
            ('{reason="invalid"}', m["dropped_invalid"]),
        ])
        lines += _family("genops_export_failures_total", "counter", "Failed insert attempts (each is retried).",
                         [("", m["export_failures"])])
        lines += _family("genops_export_batches_total", "counter", "Batches inserted into ClickHouse.",
                         [("", m["batches_exported"])])
        lines += _family("genops_spool_write_errors_total", "counter", "Batches that could not be written to the spool.",
                         [("", m["spool_write_errors"])])
        lines += _family("genops_otlp_python_fallback_batches_total", "counter",
                         "OTLP protobuf batches ClickHouse left to the Python decoder (values it does not spell alike).",
                         [("", getattr(pipeline.sink, "python_fallbacks", 0))])
        lines += _family("genops_export_queue_spans", "gauge", "Spans waiting in memory.", [("", m["queued"])])
        lines += _family("genops_spool_spans", "gauge", "Spans in the spool waiting for ClickHouse.",
                         [("", m["spool_spans"])])
        lines += _family("genops_spool_bytes", "gauge", "Size of the spool on disk.", [("", m["spool_bytes"])])
        if pipeline.store is not None:  # this process owns the store (not a proxy worker)
            status = pipeline.store.status(pipeline)
            lines += _family("genops_storage_up", "gauge",
                             "1 when the store is migrated and the last insert succeeded; 0 while spans wait in the "
                             "spool for it (the proxy serves either way).", [("", int(status.up))])
            lines += _family("genops_storage_migrated", "gauge",
                             "1 once the store answered and its schema is current (until then nothing is inserted).",
                             [("", int(status.migrated))])
        hist = c.latency
        lines += [
            "# HELP genops_export_latency_seconds Duration of successful inserts into ClickHouse.",
            "# TYPE genops_export_latency_seconds histogram",
        ]
        cumulative = 0
        for bound, count in zip(hist.buckets, hist.counts):
            cumulative += count
            lines.append(f'genops_export_latency_seconds_bucket{{le="{bound:g}"}} {cumulative}')
        lines.append(f'genops_export_latency_seconds_bucket{{le="+Inf"}} {hist.count}')
        lines.append(f"genops_export_latency_seconds_sum {hist.total:.6f}")
        lines.append(f"genops_export_latency_seconds_count {hist.count}")
    if receiver is not None:
        lines += _family("genops_otlp_requests_total", "counter", "OTLP/HTTP export requests, by encoding and status.",
                         [(f'{{encoding="{enc}",code="{code}"}}', n) for (enc, code), n in sorted(receiver.requests.items())]
                         or [('{encoding="protobuf",code="200"}', 0)])
        lines += _family("genops_otlp_spans_rejected_total", "counter",
                         "Spans rejected by validation (reported as OTLP partial success).", [("", receiver.rejected_spans)])
    return "\n".join(lines) + "\n"


def metrics_handler(pipeline: SpanPipeline | None, receiver: ReceiverStats | None = None,
                    workers: Callable[[], Iterable[dict[str, Any]]] = lambda: (),
                    extra: Callable[[], str] = lambda: ""):
    """An aiohttp handler serving :func:`render` (``workers()``: the proxy workers' latest reports;
    ``extra()``: more exposition text, such as the idempotent OTLP requests' lines)."""

    async def handler(request: web.Request) -> web.Response:
        text = render(pipeline, receiver, workers()) + extra()
        return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})

    return handler
