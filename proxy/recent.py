"""The calls this proxy served recently: request id -> (trace id, span id).

Feedback usually arrives seconds after the answer, and the call's span may still sit in
the export batch then (``GENOPS_EXPORT_INTERVAL_MS``, longer under load). The feedback
endpoint checks this memory first, so a score for a call the proxy just served is
accepted at once; older ids are looked up in storage. It is a span processor, so the
request path does nothing extra: ``on_end`` runs when the handler ends the span, after
the client has its response.

When the proxy runs in worker processes (store in its own process, ``--workers N``), the
feedback endpoint lives in the supervisor: workers report the ids they served there every
few milliseconds (:mod:`genops.proxy.worker_report`), which :meth:`RecentCalls.add` records.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from genops import semconv as sc
from genops.storage.scores import SpanRef

DEFAULT_CAPACITY = 50_000  # ~10 MB; at 1,000 calls/s that is 50 s, far beyond the export delay


def span_ref(span: ReadableSpan) -> tuple[str, SpanRef] | None:
    """(request id, span reference) of a proxy span, or None when it has no request id."""
    request_id = (span.attributes or {}).get(sc.GENOPS_REQUEST_ID)
    if not isinstance(request_id, str):
        return None
    ctx = span.get_span_context()
    return request_id, SpanRef(f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")


class RecentCalls(SpanProcessor):
    """A bounded, insertion-ordered memory of the request ids (and trace ids) of ended spans."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        # OrderedDicts, not dicts: evicting a plain dict's oldest key (``next(iter(d))``) scans
        # past every slot deleted before it until the next resize, ~40 µs per call at capacity
        # (bench: 50,000 ids); ``popitem(last=False)`` is O(1).
        self._requests: OrderedDict[str, SpanRef] = OrderedDict()
        self._traces: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        found = span_ref(span)
        if found is not None:
            self.add(*found)

    def add(self, request_id: str, ref: SpanRef) -> None:
        """Remember one served call."""
        with self._lock:
            requests, traces = self._requests, self._traces
            requests[request_id] = ref
            requests.move_to_end(request_id)  # a repeated id counts as new
            traces[ref.trace_id] = None
            traces.move_to_end(ref.trace_id)
            while len(requests) > self.capacity:
                requests.popitem(last=False)
            while len(traces) > self.capacity:
                traces.popitem(last=False)

    def request(self, request_id: str) -> SpanRef | None:
        """The span of a recently served request id, or None."""
        with self._lock:
            return self._requests.get(request_id)

    def has_trace(self, trace_id: str) -> bool:
        """True when a recently served call belongs to ``trace_id``."""
        with self._lock:
            return trace_id in self._traces

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

