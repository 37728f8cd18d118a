"""The proxy's OpenTelemetry pipeline: span recorder -> span processors -> span pipeline.

The hot path records through :class:`~genops.proxy.recorder.SpanRecorder`; at ``end()`` it
hands each finished span to the processors. :class:`~genops.storage.span_processor.PipelineSpanProcessor`
only encodes and queues it: batching, the disk spool and the inserts run on the pipeline's
own threads (:mod:`genops.storage.pipeline`), and the rows are spelled by the store's process.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from genops import __version__
from genops import semconv as sc
from genops.api.request_metrics import RequestMetrics
from genops.config import Settings
from genops.proxy.recorder import SpanRecorder
from genops.storage.pipeline import SpanPipeline
from genops.storage.span_processor import PipelineSpanProcessor


@dataclass
class Telemetry:
    """The pieces the app needs: the recorder, the provider, the span pipeline (None when export is off)
    and the request metrics (``/metrics``)."""

    provider: TracerProvider
    tracer: SpanRecorder
    pipeline: SpanPipeline | None = None
    exporters: list[SpanExporter] = field(default_factory=list)
    request_metrics: RequestMetrics = field(default_factory=RequestMetrics)

    def add_span_processor(self, processor: SpanProcessor) -> None:
        """Also hand every finished proxy span to ``processor`` (its ``on_end`` runs on the request
        path, after the response: keep it cheap). Flushed and shut down with the others."""
        self.tracer.processors.append(processor)
        self.provider.add_span_processor(processor)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Hand every pending span on, then spool and insert them (SIGTERM / app cleanup).

        No ``force_flush`` first: the pipeline's processor queues each span as it ends, and its
        flush waits for the inserts, which with the store down would hold the exit for its whole
        timeout; the provider's shutdown flushes the other processors (an extra OTLP exporter).
        """
        self.provider.shutdown()
        if self.pipeline is not None:
            self.pipeline.shutdown(timeout_s)


def build_telemetry(settings: Settings, pipeline: SpanPipeline | None) -> Telemetry:
    """A private tracer provider (the global one is left to the host application).

    ``pipeline`` stores the spans; None stores nothing (``GENOPS_EXPORT_ENABLED=false``).
    ``GENOPS_OTLP_ENDPOINT`` adds a best-effort OTLP/HTTP exporter to another collector, except
    with ``GENOPS_EXPORTER=otlp``: then the pipeline itself exports there, durably
    (:mod:`genops.storage.otlp_sink`), and a second copy would store every span twice.
    """
    resource = Resource.create({
        "service.name": settings.service_name,
        "service.version": __version__,
        # which process recorded the span (one per worker with --workers N)
        "service.instance.id": f"{socket.gethostname()}-{os.getpid()}",
    })
    provider = TracerProvider(resource=resource, span_limits=SpanLimits(max_span_attributes=1024))
    processors: list[SpanProcessor] = []
    if pipeline is not None:
        processors.append(PipelineSpanProcessor(pipeline))
    # Request counts and latencies come from the finished spans, stored or not (GENOPS_EXPORT_ENABLED=false).
    request_metrics = RequestMetrics()
    processors.append(request_metrics)
    exporters: list[SpanExporter] = []
    if settings.otlp_endpoint and settings.exporter != "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otlp_endpoint
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        exporters.append(OTLPSpanExporter(endpoint=endpoint))
        processors.append(BatchSpanProcessor(
            exporters[-1],
            max_queue_size=settings.export_queue_size,
            schedule_delay_millis=settings.export_interval_ms,
            max_export_batch_size=min(512, settings.export_batch_size, settings.export_queue_size),  # OTLP requests stay small
        ))
    for processor in processors:
        provider.add_span_processor(processor)  # so provider.shutdown() flushes it
    # The hot path records through SpanRecorder (same processors, far cheaper than Tracer.start_span).
    tracer = SpanRecorder(resource, InstrumentationScope(sc.PROXY_SCOPE, __version__), processors)
    return Telemetry(provider=provider, tracer=tracer, pipeline=pipeline, exporters=exporters,
                     request_metrics=request_metrics)
