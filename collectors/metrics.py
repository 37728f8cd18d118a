"""``GET /metrics``: the span pipeline's and the receiver's counters in Prometheus text format."""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from aiohttp import web

from genops.storage.pipeline import SpanPipeline

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ReceiverStats:
    """Counters of the OTLP receiver (requests by HTTP status, spans rejected by validation)."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()  # (encoding, status)
        self.rejected_spans = 0


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _family(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines.extend(f"{name}{labels} {value:g}" if isinstance(value, float) else f"{name}{labels} {value}"
                 for labels, value in samples)
    return lines


def render(pipeline: SpanPipeline | None, receiver: ReceiverStats | None = None) -> str:
    """The exposition text."""
    lines: list[str] = []
    if pipeline is not None:
        c = pipeline.counters
        spool = pipeline.spool
        received = dict(c.received)
        lines += _family("genops_spans_received_total", "counter", "Spans handed to the export pipeline, by source.",
                         [(f'{{source="{_label(s)}"}}', n) for s, n in sorted(received.items())] or [('{source="proxy"}', 0)])
        lines += _family("genops_spans_spooled_total", "counter",
                         "Spans written to the on-disk spool (every batch is written ahead of its insert).",
                         [("", c.spooled)])
        lines += _family("genops_spans_exported_total", "counter", "Spans inserted into ClickHouse.", [("", c.exported)])
        lines += _family("genops_spans_replayed_total", "counter",
                         "Spans inserted from the spool after a failed attempt or a restart.", [("", c.replayed)])
        lines += _family("genops_spans_dropped_total", "counter", "Spans dropped, by reason.", [
            ('{reason="queue_full"}', c.dropped_queue_full),
            ('{reason="spool_full"}', spool.dropped_spans),
            ('{reason="invalid"}', c.dropped_invalid),
        ])
        lines += _family("genops_export_failures_total", "counter", "Failed insert attempts (each is retried).",
                         [("", c.export_failures)])
        lines += _family("genops_export_batches_total", "counter", "Batches inserted into ClickHouse.",
                         [("", c.batches_exported)])
        lines += _family("genops_spool_write_errors_total", "counter", "Batches that could not be written to the spool.",
                         [("", c.spool_write_errors)])
        lines += _family("genops_otlp_python_fallback_batches_total", "counter",
                         "OTLP protobuf batches ClickHouse left to the Python decoder (values it does not spell alike).",
                         [("", getattr(pipeline.sink, "python_fallbacks", 0))])
        lines += _family("genops_export_queue_spans", "gauge", "Spans waiting in memory.", [("", pipeline.queued)])
        lines += _family("genops_spool_spans", "gauge", "Spans in the spool waiting for ClickHouse.",
                         [("", spool.pending_spans)])
        lines += _family("genops_spool_bytes", "gauge", "Size of the spool on disk.", [("", spool.bytes_on_disk)])
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


def metrics_handler(pipeline: SpanPipeline | None, receiver: ReceiverStats | None = None):
    """An aiohttp handler serving :func:`render`."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=render(pipeline, receiver).encode(), headers={"Content-Type": CONTENT_TYPE})

    return handler
