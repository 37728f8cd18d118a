"""The OpenTelemetry SDK span processor that feeds the proxy's finished spans to the span pipeline.

:class:`PipelineSpanProcessor` replaces the SDK's ``BatchSpanProcessor``: ``on_end`` only
encodes the span as one compact line (~2-4 µs, :mod:`genops.storage.span_batch`) and appends
it to the pipeline's bounded queue (no I/O, no lock held). Batching (:mod:`genops.storage.batcher`),
the disk spool and the inserts (:mod:`genops.storage.sender`) happen on the pipeline's threads
(:mod:`genops.storage.pipeline`); spelling the spans as table rows happens in the process that
owns the store, just before the insert.
"""

from __future__ import annotations

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from genops.storage.pipeline import SpanPipeline


class PipelineSpanProcessor(SpanProcessor):
    """An SDK span processor that queues every sampled, finished span into a :class:`SpanPipeline`."""

    def __init__(self, pipeline: SpanPipeline) -> None:
        self.pipeline = pipeline

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        if span.context.trace_flags.sampled:
            self.pipeline.submit_sdk_spans([span])

    def shutdown(self) -> None:
        """The pipeline is shut down by its owner (it may also serve the OTLP receiver)."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.pipeline.flush(timeout_millis / 1000)
