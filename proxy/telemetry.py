"""The proxy's OpenTelemetry pipeline: tracer provider -> pipeline span processor -> span pipeline.

:class:`~genops.storage.exporter.PipelineSpanProcessor` only queues each finished span;
conversion, batching, the disk spool and the inserts run on the pipeline's own threads
(:mod:`genops.storage.pipeline`), so the request path only pays for creating the span.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Tracer

from genops import __version__
from genops import semconv as sc
from genops.config import Settings
from genops.storage.exporter import PipelineSpanProcessor
from genops.storage.pipeline import SpanPipeline


@dataclass
class Telemetry:
    """The pieces the app needs: a tracer, the provider and the span pipeline (None when export is off)."""

    provider: TracerProvider
    tracer: Tracer
    pipeline: SpanPipeline | None = None
    exporters: list[SpanExporter] = field(default_factory=list)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Hand every pending span to the pipeline, then spool and insert them (SIGTERM / app cleanup)."""
        self.provider.force_flush()
        self.provider.shutdown()
        if self.pipeline is not None:
            self.pipeline.shutdown(timeout_s)


def build_telemetry(settings: Settings, pipeline: SpanPipeline | None) -> Telemetry:
    """A private tracer provider (the global one is left to the host application).

    ``pipeline`` stores the spans; None stores nothing (``GENOPS_EXPORT_ENABLED=false``).
    ``GENOPS_OTLP_ENDPOINT`` adds an OTLP/HTTP exporter to another collector.
    """
    resource = Resource.create({"service.name": settings.service_name, "service.version": __version__})
    provider = TracerProvider(resource=resource, span_limits=SpanLimits(max_span_attributes=1024))
    if pipeline is not None:
        provider.add_span_processor(PipelineSpanProcessor(pipeline))
    exporters: list[SpanExporter] = []
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otlp_endpoint
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        exporter = OTLPSpanExporter(endpoint=endpoint)
        exporters.append(exporter)
        provider.add_span_processor(
            BatchSpanProcessor(
                exporter,
                max_queue_size=settings.export_queue_size,
                schedule_delay_millis=settings.export_interval_ms,
                max_export_batch_size=min(settings.export_batch_size, settings.export_queue_size),
            )
        )
    tracer = provider.get_tracer(sc.PROXY_SCOPE, __version__)
    return Telemetry(provider=provider, tracer=tracer, pipeline=pipeline, exporters=exporters)
