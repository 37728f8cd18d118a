"""The calls this proxy served recently: request id -> (trace id, span id).

Feedback usually arrives seconds after the answer, and the call's span may still sit in
the export batch then (``GENOPS_EXPORT_INTERVAL_MS``, longer under load). The feedback
endpoint checks this memory first, so a score for a call the proxy just served is
accepted at once; older ids are looked up in storage. It is a span processor, so the
request path does nothing extra: ``on_end`` runs when the handler ends the span, after
the client has its response.

When the proxy runs in worker processes (store in its own process, ``--workers N``), the
feedback endpoint lives in the supervisor: workers report the ids they served there every
few milliseconds (:mod:`genops.runtime.worker_report`), which :meth:`RecentCalls.add` records.

Request ids are client-chosen, so one id can name several calls (two users who sent the same
``GenOps-Request-Id``). A repeated id therefore does not replace the call it named: the memory
keeps every distinct span of an id (up to :data:`~genops.storage.scores.MAX_CALLS_PER_ID`) with
the call's user, and :meth:`RecentCalls.calls` returns them all, so the feedback endpoint can
refuse an ambiguous id instead of scoring whichever call came last. It also keeps the users of
each recent trace, for trace scores scoped to a user. Only the proxy's own spans are recorded
(scope ``genops.proxy``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from genops import semconv as sc
from genops.storage.scores import MAX_CALLS_PER_ID, CallRef, SpanRef

DEFAULT_CAPACITY = 50_000  # ~15 MB; at 1,000 calls/s that is 50 s, far beyond the export delay
#: Users kept per recent trace; a trace with more is looked up in storage for the others.
MAX_RECENT_USERS_PER_TRACE = 16


def span_ref(span: ReadableSpan) -> tuple[str, SpanRef] | None:
    """(request id, span reference) of a proxy span, or None when it has no request id."""
    found = call_ref(span)
    return None if found is None else (found[0], found[1].span)


def call_ref(span: ReadableSpan) -> tuple[str, CallRef] | None:
    """(request id, call reference with its user) of a span the proxy recorded, else None."""
    scope = span.instrumentation_scope
    if scope is None or scope.name != sc.PROXY_SCOPE:
        return None  # only the proxy's own calls can be scored
    attributes = span.attributes or {}
    request_id = attributes.get(sc.GENOPS_REQUEST_ID)
    if not isinstance(request_id, str):
        return None
    user_id = attributes.get(sc.GENOPS_USER_ID)
    ctx = span.get_span_context()
    if ctx is None:
        return None
    return request_id, CallRef(f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}",
                               user_id if isinstance(user_id, str) else "")


class RecentCalls(SpanProcessor):
    """A bounded, insertion-ordered memory of the request ids (and trace ids) of ended spans."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        # OrderedDicts, not dicts: evicting a plain dict's oldest key (``next(iter(d))``) scans
        # past every slot deleted before it until the next resize, ~40 µs per call at capacity
        # (bench: 50,000 ids); ``popitem(last=False)`` is O(1).
        # Values are tuples (oldest call first): one small object per id in the common case.
        self._requests: OrderedDict[str, tuple[CallRef, ...]] = OrderedDict()
        self._traces: OrderedDict[str, tuple[str, ...]] = OrderedDict()  # trace -> users of its calls
        self._lock = threading.Lock()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        found = call_ref(span)
        if found is not None:
            request_id, call = found
            self.add(request_id, call.span, call.user_id)

    def add(self, request_id: str, ref: SpanRef, user_id: str = "") -> None:
        """Remember one served call (a repeated id keeps its earlier calls too, and counts as new)."""
        self.add_served(((request_id, ref.trace_id, ref.span_id, user_id),))

    def add_served(self, served: Iterable[Sequence[str]]) -> None:
        """Remember served calls, oldest first: ``[request id, trace id, span id(, user id)]`` each
        (a worker's report), under one lock: a busy worker reports a hundred calls at a time.
        ``ValueError`` for an entry that is not 3 or 4 strings; the entries before it are kept."""
        requests, traces, capacity = self._requests, self._traces, self.capacity
        with self._lock:
            for entry in served:
                if len(entry) == 3:
                    request_id, trace_id, span_id = entry
                    user_id = ""
                else:
                    request_id, trace_id, span_id, user_id = entry
                if not (type(request_id) is type(trace_id) is type(span_id) is type(user_id) is str):
                    raise ValueError(f"a served call is 3 or 4 strings, not {entry!r:.200}")
                call = CallRef(trace_id, span_id, user_id)
                known = requests.get(request_id)
                if known is None:
                    requests[request_id] = (call,)
                    if len(requests) > capacity:  # the oldest goes as each new one comes, as with add()
                        requests.popitem(last=False)
                else:
                    if len(known) < MAX_CALLS_PER_ID and all(c.span_id != span_id for c in known):
                        requests[request_id] = known + (call,)
                    requests.move_to_end(request_id)
                users = traces.get(trace_id)
                if users is None:
                    traces[trace_id] = (user_id,)
                    if len(traces) > capacity:
                        traces.popitem(last=False)
                else:
                    if user_id not in users and len(users) < MAX_RECENT_USERS_PER_TRACE:
                        traces[trace_id] = users + (user_id,)
                    traces.move_to_end(trace_id)

    def request(self, request_id: str) -> SpanRef | None:
        """The span of the latest recently served call with ``request_id``, or None."""
        with self._lock:
            calls = self._requests.get(request_id)
        return None if calls is None else calls[-1].span

    def calls(self, request_id: str) -> tuple[CallRef, ...]:
        """Every recently served call with ``request_id`` (distinct spans, oldest first)."""
        with self._lock:
            return self._requests.get(request_id, ())

    def has_trace(self, trace_id: str) -> bool:
        """True when a recently served call belongs to ``trace_id``."""
        with self._lock:
            return trace_id in self._traces

    def trace_users(self, trace_id: str) -> tuple[str, ...] | None:
        """The users ("" for none) of the recently served calls of ``trace_id``; None when it has none."""
        with self._lock:
            return self._traces.get(trace_id)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

