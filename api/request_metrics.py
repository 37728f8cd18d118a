"""Request metrics: every proxied call counted and timed from its finished span (``prometheus_client``).

:class:`RequestMetrics` is a span processor next to the export pipeline's: the proxy records one
span per call (:mod:`genops.proxy.spans`), and ``on_end`` reads what the metrics need from its
attributes, so the request path itself is not touched. Per call that is a few dict lookups (the
labelled children are cached) and two to four appends to pending counts (below).

Counts wait a moment before they are written: in a worker every ``inc`` and ``observe`` writes
prometheus_client's memory-mapped file (about 1 µs each, five per call), so ``on_end`` only adds
the call to its series' pending counts and :meth:`RequestMetrics.flush` writes each series once,
:data:`FLUSH_S` later (on the event loop), before this process's own registry is read, and at
shutdown. A histogram takes the pending observations as one count per bucket and one sum
(:func:`observe_all`; ``Histogram.observe`` for each is the reference, ``tests/test_request_metrics_unit.py``).

Labels stay bounded: ``route`` and ``provider`` come from the proxy's own adapters, ``status`` is
the HTTP status class (``2xx``... ``5xx``, ``none`` when no response was sent). ``model`` and
``error_type`` come from clients and upstreams, so each process keeps the first
:data:`MAX_MODELS` / :data:`MAX_ERROR_TYPES` distinct values (cut to :data:`MAX_LABEL_CHARS`
characters) and counts any later new value as ``other``.

With ``genops serve`` in worker processes each worker writes its values to files in a directory
the supervisor gives it (prometheus_client's multiprocess mode, :func:`worker_env`), and the
supervisor's ``/metrics`` adds them up (:func:`multiprocess_collector`). A worker that exits
leaves its counters and histograms there, so the totals never go back (as the pipeline's
counters of a replaced worker stay in :mod:`genops.runtime.worker_report`'s totals).
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import threading
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import prometheus_client
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from genops import semconv as sc
from genops.proxy.safety.scanner import REMEMBERED

# The `_created` series (a timestamp per labelled child) double every series and nobody graphs them.
prometheus_client.disable_created_metrics()

#: The environment variable prometheus_client reads at import to write values to files (multiprocess mode).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Under ``GENOPS_DATA_DIR``: the workers' metric files (emptied at each ``genops serve`` start).
MULTIPROC_DIRNAME = "metrics"

#: Seconds; model calls take from tens of milliseconds to minutes (long generations, reasoning).
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)

#: Distinct client-chosen label values one process keeps; later new ones are counted as ``other``.
MAX_MODELS = 100
MAX_ERROR_TYPES = 50
MAX_LABEL_CHARS = 64
OTHER = "other"
NONE = "none"  # the attribute is absent (no model in the request, no response sent)

CALL_LABELS = ("route", "provider", "model", "status")
MODEL_LABELS = ("route", "provider", "model")
ERROR_LABELS = ("route", "provider", "error_type")

_STATUS_CLASSES = {n: f"{n}xx" for n in range(1, 6)}
#: Seconds a call's counts wait before they are written (a worker's /metrics lags its calls by at most this).
FLUSH_S = 0.1


class BoundedLabel:
    """Client-chosen label values, at most ``limit`` distinct ones (then :data:`OTHER`)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._kept: dict[Any, str] = {}

    def __call__(self, value: Any) -> str:
        label = self._kept.get(value)
        if label is not None:
            return label
        if value is None or value == "":
            return NONE
        if len(self._kept) >= self.limit:
            return OTHER  # not remembered: a client sending random names must not grow this
        label = str(value)[:MAX_LABEL_CHARS]
        self._kept[value] = label
        return label


def status_class(code: Any) -> str:
    """``2xx``, ``4xx``...: the response's status class (``none`` when no response was sent)."""
    if isinstance(code, int):
        return _STATUS_CLASSES.get(code // 100, OTHER)
    return NONE


def observe_all(histogram: Any, amounts: Iterable[float]) -> None:
    """``histogram.observe(amount)`` for each of ``amounts``, writing each bucket and the sum once.

    Reads the labelled child's bucket bounds and values (``_upper_bounds``, ``_buckets``,
    ``_sum``: prometheus_client has no public way to observe many at once); a child without
    them (another version of the library) gets one ``observe`` per amount.
    """
    bounds, buckets, total = (getattr(histogram, name, None) for name in ("_upper_bounds", "_buckets", "_sum"))
    if bounds is None or buckets is None or total is None:
        for amount in amounts:
            histogram.observe(amount)
        return
    counts = [0] * len(bounds)
    added = 0.0
    for amount in amounts:
        added += amount
        counts[bisect_left(bounds, amount)] += 1  # the first bound >= amount, as observe() picks it
    total.inc(added)
    for bucket, count in zip(buckets, counts, strict=True):
        if count:
            bucket.inc(count)


class _CallChildren:
    """The labelled children of one (route, provider, model, status): looked up once, then reused;
    with the calls counted since the last flush."""

    __slots__ = ("requests", "duration", "upstream", "ttft", "calls", "durations", "upstreams", "ttfts")

    def __init__(self, metrics: RequestMetrics, route: str, provider: str, model: str, status: str) -> None:
        self.requests = metrics.requests.labels(route, provider, model, status)
        self.duration = metrics.duration.labels(route, provider, model, status)
        self.upstream = metrics.upstream.labels(route, provider, model)
        self.ttft = metrics.ttft.labels(route, provider, model)
        self.calls = 0
        self.durations: list[float] = []
        self.upstreams: list[float] = []
        self.ttfts: list[float] = []

    def write(self) -> None:
        """Write the pending counts to the children, and forget them."""
        calls, durations, upstreams, ttfts = self.calls, self.durations, self.upstreams, self.ttfts
        self.calls, self.durations, self.upstreams, self.ttfts = 0, [], [], []
        if calls:
            self.requests.inc(calls)
        if durations:
            observe_all(self.duration, durations)
        if upstreams:
            observe_all(self.upstream, upstreams)
        if ttfts:
            observe_all(self.ttft, ttfts)


class _FlushFirst(Collector):
    """Registered first in the registry: reading it writes the pending counts before the metrics are read."""

    def __init__(self, metrics: RequestMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Any]:
        return ()  # names no metric (and registering it does not collect)

    def collect(self) -> Iterable[Any]:
        self.metrics.flush()
        return ()


class RequestMetrics(SpanProcessor):
    """Counts and times each proxied call from its finished span (on the request path: keep it cheap)."""

    def __init__(self) -> None:
        #: This process's request metrics (served by ``/metrics`` when the proxy runs in this process).
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_FlushFirst(self))  # first: a scrape of this registry sees every ended call
        self.requests = Counter("genops_requests", "Proxied model calls, by route, provider, model and status class.",
                                CALL_LABELS, registry=self.registry)
        self.duration = Histogram("genops_request_duration_seconds",
                                  "Duration of proxied calls, from the request's arrival to the response's last byte.",
                                  CALL_LABELS, buckets=DURATION_BUCKETS, registry=self.registry)
        self.errors = Counter("genops_request_errors", "Proxied calls that failed, by error.type (the upstream's "
                              "error code or type, the HTTP status, or GenOps's own such as upstream_timeout).",
                              ERROR_LABELS, registry=self.registry)
        self.upstream = Histogram("genops_upstream_duration_seconds",
                                  "Duration of calls forwarded to an upstream (genops.latency.upstream_ms when the "
                                  "span has it, else the call's duration).",
                                  MODEL_LABELS, buckets=DURATION_BUCKETS, registry=self.registry)
        self.ttft = Histogram("genops_time_to_first_token_seconds",
                              "Streamed calls: time from the request's arrival to the first content chunk.",
                              MODEL_LABELS, buckets=TTFT_BUCKETS, registry=self.registry)
        self.safety_texts = Counter("genops_safety_texts",
                                    "Texts of 64+ characters in proxied calls' safety scans: scanned, or remembered "
                                    "from an earlier call (an agent's repeated system prompt and history).",
                                    ["result"], registry=self.registry)
        self._remembered, self._scanned = self.safety_texts.labels("remembered"), self.safety_texts.labels("scanned")
        self._seen = (REMEMBERED.hits, REMEMBERED.misses)  # this process's scans before these metrics
        self._models = BoundedLabel(MAX_MODELS)
        self._error_types = BoundedLabel(MAX_ERROR_TYPES)
        self._calls: dict[tuple[Any, Any, str, Any], _CallChildren] = {}
        self._errors: dict[tuple[Any, Any, str], Any] = {}
        self._pending: set[_CallChildren] = set()  # counted since the last flush (then one is scheduled)
        self._lock = threading.Lock()  # on_end and flush may run on different threads (a scrape)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        attrs: Mapping[str, Any] = span.attributes or {}
        route = attrs.get(sc.GENOPS_ROUTE)
        if route is None:
            return  # not a proxied call's span
        provider = attrs.get(sc.GEN_AI_PROVIDER_NAME)
        model = self._models(attrs.get(sc.GEN_AI_REQUEST_MODEL) or attrs.get(sc.GEN_AI_RESPONSE_MODEL))
        status = attrs.get(sc.HTTP_RESPONSE_STATUS_CODE)
        key = (route, provider, model, status)
        children = self._calls.get(key)
        if children is None:
            children = self._calls[key] = _CallChildren(self, str(route), str(provider or NONE), model,
                                                        status_class(status))
        start, end = span.start_time, span.end_time
        seconds = (end - start) / 1e9 if start is not None and end is not None else 0.0
        upstream_ms = attrs.get(sc.GENOPS_LATENCY_UPSTREAM_MS)
        ttft_ms = attrs.get(sc.GENOPS_LATENCY_TTFT_MS)
        with self._lock:
            children.calls += 1
            children.durations.append(seconds)
            if upstream_ms is not None:
                children.upstreams.append(upstream_ms / 1000)
            elif sc.GENOPS_UPSTREAM_URL in attrs:  # forwarded: the proxy's own share is a fraction of a millisecond
                children.upstreams.append(seconds)
            if ttft_ms is not None:
                children.ttfts.append(ttft_ms / 1000)
            scheduled = bool(self._pending)  # a flush is due already
            self._pending.add(children)
        if not scheduled:
            self._schedule_flush()
        error = attrs.get(sc.ERROR_TYPE)
        if error is not None:
            error_type = self._error_types(error)
            error_key = (route, provider, error_type)
            counter = self._errors.get(error_key)
            if counter is None:
                counter = self._errors[error_key] = self.errors.labels(str(route), str(provider or NONE), error_type)
            counter.inc()

    def _schedule_flush(self) -> None:
        """Write the pending counts :data:`FLUSH_S` from now on the event loop, or now without one."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop on this thread (a tool, a test): write them at once
            self.flush()
            return
        loop.call_later(FLUSH_S, self.flush)

    def flush(self) -> None:
        """Write every pending count to the metrics (prometheus_client's values or files)."""
        with self._lock:
            pending, self._pending = self._pending, set()
            for children in pending:
                children.write()
            # The scans of the calls ended since the last flush (the scanner counts; its threads too).
            hits, misses = REMEMBERED.hits, REMEMBERED.misses
            if (hits, misses) != self._seen:
                self._remembered.inc(hits - self._seen[0])
                self._scanned.inc(misses - self._seen[1])
                self._seen = (hits, misses)

    def shutdown(self) -> None:
        self.flush()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self.flush()
        return True


# -- multiprocess mode (``genops serve`` with the proxy in worker processes) ---------------------


def multiprocess_dir(data_path: Path) -> Path:
    """Where the workers of a ``genops serve`` on ``data_path`` write their metric files."""
    return data_path / MULTIPROC_DIRNAME


def prepare_multiprocess_dir(data_path: Path) -> Path:
    """An empty metrics directory for this start's workers (files of a previous run would add
    its counts to ours, and a dead process's pid may be reused). Call before starting them."""
    path = multiprocess_dir(data_path)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


_PID = [os.getpid()]
_CACHED_PID_VALUE: list[Any] = [None]


def _cached_pid() -> int:
    return _PID[0]


def _forked() -> None:
    _PID[0] = os.getpid()


def cache_pid_in_values() -> None:
    """In a worker (multiprocess mode), have prometheus_client's file-backed values ask for the
    process id from a cache instead of ``os.getpid()``: each value asks on every ``inc``, a system
    call each, some seven per call (3 µs of a worker's CPU per call here). The cache follows a
    ``fork()`` (``os.register_at_fork``), so it keeps the library's rule for a process identifier
    (processes running at once get distinct ones). Call before the request metrics are made."""
    if not os.environ.get(MULTIPROC_ENV) or _CACHED_PID_VALUE[0] is not None:
        return
    _PID[0] = os.getpid()
    os.register_at_fork(after_in_child=_forked)
    _CACHED_PID_VALUE[0] = values.ValueClass = values.MultiProcessValue(process_identifier=_cached_pid)


def worker_env(path: Path) -> dict[str, str]:
    """The environment that makes a worker process write its request metrics to ``path``
    (prometheus_client reads it when first imported, so it must be there when the process starts)."""
    return {MULTIPROC_ENV: str(path)}


def worker_exited(path: Path, pid: int) -> None:
    """Bookkeeping for a worker that exited: its live gauges' files go; its counters and
    histograms stay, so the totals do not go back."""
    try:
        mark_process_dead(pid, str(path))
    except OSError:
        pass  # the directory was removed under us: nothing to clean


class _WorkersCollector(MultiProcessCollector):
    """prometheus_client's multiprocess collector, skipping a file a worker is still creating: a worker
    starting (a rolling restart, a replaced worker) makes its file empty first, and the library's
    reader then raises ``struct.error``, which made the scrape a 500 (seen in a fresh-clone CI run)."""

    def collect(self) -> Any:
        files = [f for f in glob.glob(os.path.join(self._path, "*.db")) if _has_header(f)]
        return self.merge(files, accumulate=True)


def _has_header(path: str) -> bool:
    try:
        return os.path.getsize(path) >= 8  # the mmap file's used-bytes header and padding
    except OSError:  # removed meanwhile
        return False


def multiprocess_collector(path: Path) -> MultiProcessCollector | None:
    """A collector adding up every worker's request metrics in ``path`` (None when it is gone)."""
    if not os.path.isdir(path):
        return None
    return _WorkersCollector(None, path=str(path))
