"""The proxy's OpenTelemetry pipeline: tracer provider -> batch processor -> ClickHouse exporter.

The SDK's ``BatchSpanProcessor`` queues finished spans and exports them on its own thread,
so the request path only pays for creating the span.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from genops import __version__
from genops import semconv as sc
from genops.config import Settings
from genops.proxy.recorder import SpanRecorder
from genops.storage.exporter import ClickHouseSpanExporter


@dataclass
class Telemetry:
    """The pieces the app needs: a tracer, and a provider to flush at shutdown."""

    provider: TracerProvider
    tracer: SpanRecorder
    exporters: list[SpanExporter] = field(default_factory=list)

    def add_span_processor(self, processor: SpanProcessor) -> None:
        """Also hand every finished proxy span to ``processor`` (its ``on_end`` runs on the request
        path, after the response: keep it cheap). Flushed and shut down with the others."""
        self.tracer.processors.append(processor)
        self.provider.add_span_processor(processor)

    def shutdown(self) -> None:
        """Flush every pending span, then stop (called on SIGTERM / app cleanup)."""
        self.provider.force_flush()
        self.provider.shutdown()


def build_telemetry(settings: Settings, client: Any) -> Telemetry:
    """A private tracer provider (the global one is left to the host application)."""
    resource = Resource.create({"service.name": settings.service_name, "service.version": __version__})
    provider = TracerProvider(resource=resource, span_limits=SpanLimits(max_span_attributes=1024))
    exporters: list[SpanExporter] = [ClickHouseSpanExporter(client, settings.database)]
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otlp_endpoint
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        exporters.append(OTLPSpanExporter(endpoint=endpoint))
    processors = []
    for exporter in exporters:
        processor = BatchSpanProcessor(
            exporter,
            max_queue_size=settings.export_queue_size,
            schedule_delay_millis=settings.export_interval_ms,
            max_export_batch_size=min(settings.export_batch_size, settings.export_queue_size),
        )
        provider.add_span_processor(processor)  # so provider.shutdown() flushes it
        processors.append(processor)
    # The hot path records through SpanRecorder (same processors, far cheaper than Tracer.start_span).
    tracer = SpanRecorder(resource, InstrumentationScope(sc.PROXY_SCOPE, __version__), processors)
    return Telemetry(provider=provider, tracer=tracer, exporters=exporters)
