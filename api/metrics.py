"""``GET /metrics``: the span pipeline's, the receiver's and the proxy's request metrics, in
Prometheus's text format (``prometheus_client``).

:class:`PipelineCollector` is a custom collector over the pipeline's own counters (plain integers
on its threads, :mod:`genops.storage.pipeline_counters`) and the latest reports of the proxy
workers; the request metrics are prometheus_client metrics (:mod:`genops.api.request_metrics`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from genops.collectors.receiver import ReceiverStats
from genops.storage.pipeline import SpanPipeline

#: The classic text format (0.0.4): what every Prometheus scrapes, and what the receiver's extra lines are in.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


def snapshot(pipeline: SpanPipeline) -> dict[str, Any]:
    """A pipeline's counters and gauges as plain numbers (what a proxy worker reports to its supervisor)."""
    c, spool = pipeline.counters, pipeline.spool
    # A worker's sink hands batches to the store process, which counts them exported once inserted.
    forwards = pipeline.sink.forwards
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


def _counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, help_text, value=value)


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=value)


class PipelineCollector(Collector):
    """The span pipeline's counters (this process's plus the latest reports of its proxy
    ``workers``) and the OTLP receiver's, read at each scrape."""

    def __init__(self, pipeline: SpanPipeline | None, receiver: ReceiverStats | None = None,
                 workers: Iterable[dict[str, Any]] = ()) -> None:
        self.pipeline = pipeline
        self.receiver = receiver
        self.workers = workers

    def collect(self) -> Iterator[Metric]:
        if self.pipeline is not None:
            yield from self._pipeline(self.pipeline)
        if self.receiver is not None:
            yield from self._receiver(self.receiver)

    def _pipeline(self, pipeline: SpanPipeline) -> Iterator[Metric]:
        m = _merged([snapshot(pipeline), *self.workers])
        received = CounterMetricFamily("genops_spans_received_total", "Spans handed to the export pipeline, by source.",
                                       labels=["source"])
        for source, n in sorted(m["received"].items()) or [("proxy", 0)]:
            received.add_metric([source], n)
        yield received
        yield _counter("genops_spans_spooled_total",
                       "Spans written to the on-disk spool (ahead of every insert; a proxy worker's "
                       "only when its hand-off to the store fails or falls behind).", m["spooled"])
        yield _counter("genops_spans_exported_total", "Spans inserted into ClickHouse.", m["exported"])
        yield _counter("genops_spans_forwarded_total",
                       "Spans proxy workers handed to the store process (spooled there, then inserted).",
                       m.get("forwarded", 0))
        yield _counter("genops_spans_replayed_total",
                       "Spans inserted from the spool after a failed attempt or a restart.", m["replayed"])
        dropped = CounterMetricFamily("genops_spans_dropped_total", "Spans dropped, by reason.", labels=["reason"])
        dropped.add_metric(["queue_full"], m["dropped_queue_full"])
        dropped.add_metric(["spool_full"], m["dropped_spool_full"])
        dropped.add_metric(["invalid"], m["dropped_invalid"])
        yield dropped
        yield _counter("genops_export_failures_total", "Failed insert attempts (each is retried).", m["export_failures"])
        yield _counter("genops_export_batches_total", "Batches inserted into ClickHouse.", m["batches_exported"])
        yield _counter("genops_spool_write_errors_total", "Batches that could not be written to the spool.",
                       m["spool_write_errors"])
        yield _counter("genops_otlp_python_fallback_batches_total",
                       "OTLP protobuf batches ClickHouse left to the Python decoder (values it does not spell alike).",
                       pipeline.sink.python_fallbacks)
        yield _counter("genops_span_python_fallback_groups_total",
                       "Groups of the proxy's own spans ClickHouse left to the Python spelling (lines it cannot read).",
                       pipeline.sink.span_fallbacks)
        yield _gauge("genops_export_queue_spans", "Spans waiting in memory.", m["queued"])
        yield _gauge("genops_spool_spans", "Spans in the spool waiting for ClickHouse.", m["spool_spans"])
        yield _gauge("genops_spool_bytes", "Size of the spool on disk.", m["spool_bytes"])
        if pipeline.store is not None:  # this process owns the store (not a proxy worker)
            status = pipeline.store.status(pipeline)
            yield _gauge("genops_storage_up",
                         "1 when the store is migrated and the last insert succeeded; 0 while spans wait in the "
                         "spool for it (the proxy serves either way).", int(status.up))
            yield _gauge("genops_storage_migrated",
                         "1 once the store answered and its schema is current (until then nothing is inserted).",
                         int(status.migrated))
        hist = pipeline.counters.latency
        buckets: list[tuple[str, float]] = []
        cumulative = 0
        for bound, count in zip(hist.buckets, hist.counts, strict=False):
            cumulative += count
            buckets.append((f"{bound:g}", cumulative))
        buckets.append(("+Inf", hist.count))
        yield HistogramMetricFamily("genops_export_latency_seconds", "Duration of successful inserts into ClickHouse.",
                                    buckets=buckets, sum_value=hist.total)

    @staticmethod
    def _receiver(receiver: ReceiverStats) -> Iterator[Metric]:
        requests = CounterMetricFamily("genops_otlp_requests_total", "OTLP/HTTP export requests, by encoding and status.",
                                       labels=["encoding", "code"])
        for (encoding, code), n in sorted(receiver.requests.items()) or [(("protobuf", 200), 0)]:
            requests.add_metric([encoding, str(code)], n)
        yield requests
        yield _counter("genops_otlp_spans_rejected_total",
                       "Spans rejected by validation (reported as OTLP partial success).", receiver.rejected_spans)


def registry(pipeline: SpanPipeline | None, receiver: ReceiverStats | None = None,
             workers: Iterable[dict[str, Any]] = (), requests: Iterable[Collector] = ()) -> CollectorRegistry:
    """What one scrape reads: the pipeline and receiver (:class:`PipelineCollector`) and the
    ``requests`` collectors (this process's request metrics, or every worker's)."""
    scrape = CollectorRegistry(auto_describe=False)  # names are unique by construction: no describe pass per scrape
    scrape.register(PipelineCollector(pipeline, receiver, workers))
    for collector in requests:
        scrape.register(collector)
    return scrape


def render(pipeline: SpanPipeline | None, receiver: ReceiverStats | None = None,
           workers: Iterable[dict[str, Any]] = (), requests: Iterable[Collector] = ()) -> str:
    """The exposition text: this process's pipeline plus the latest reports of its proxy ``workers``,
    then the ``requests`` collectors'."""
    return generate_latest(registry(pipeline, receiver, workers, requests)).decode()


def metrics_handler(pipeline: SpanPipeline | None, receiver: ReceiverStats | None = None,
                    workers: Callable[[], Iterable[dict[str, Any]]] = lambda: (),
                    extra: Callable[[], str] = lambda: "",
                    requests: Callable[[], Iterable[Collector]] = lambda: ()):
    """An aiohttp handler serving :func:`render` (``workers()``: the proxy workers' latest reports;
    ``extra()``: more exposition text, such as the idempotent OTLP requests' lines; ``requests()``:
    the request metrics' collectors)."""

    async def handler(request: web.Request) -> web.Response:
        text = render(pipeline, receiver, workers(), requests()) + extra()
        return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})

    return handler
