"""An OpenTelemetry SDK span exporter that writes ``otel_traces`` rows to ClickHouse.

It sits behind the SDK's ``BatchSpanProcessor``, which batches spans off the request
path on its own thread; this class only converts and inserts.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from genops.storage.rows import insert_rows, spans_to_rows

log = logging.getLogger("genops.storage.exporter")


class ClickHouseSpanExporter(SpanExporter):
    """Writes each exported batch as one insert into ``{database}.otel_traces``."""

    def __init__(self, client: Any, database: str) -> None:
        self._client = client
        self._database = database
        self._lock = threading.Lock()
        self._shutdown = False
        self.exported = 0
        self.failed = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        rows = spans_to_rows(spans)
        started = time.perf_counter()
        try:
            with self._lock:
                insert_rows(self._client, self._database, rows)
        except Exception as exc:  # noqa: BLE001 - a failed batch must never kill the export thread
            self.failed += len(rows)
            log.warning("span export failed", extra={"spans": len(rows), "error": str(exc).splitlines()[0][:300]})
            return SpanExportResult.FAILURE
        self.exported += len(rows)
        log.debug("spans exported", extra={"spans": len(rows), "ms": round((time.perf_counter() - started) * 1000, 2)})
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._shutdown = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
