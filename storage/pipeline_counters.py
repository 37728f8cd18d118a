"""What the span pipeline counts, for ``/metrics`` (:mod:`genops.api.metrics`).

One :class:`Counters` per pipeline, shared by its stages: the batcher counts what it takes in
and drops at intake (:mod:`genops.storage.batcher`), the sender what it spools, exports and
retries (:mod:`genops.storage.sender`). Plain integers without a lock (none on the hot path):
a ``/metrics`` read may be an increment behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Export latency histogram buckets (seconds).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Histogram:
    """A Prometheus histogram (cumulative buckets are computed when rendered)."""

    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value
        self.count += 1


@dataclass
class Counters:
    """Everything ``/metrics`` reports about the pipeline (monotonic unless named a gauge)."""

    received: dict[str, int] = field(default_factory=dict)  # by source
    spooled: int = 0
    exported: int = 0
    replayed: int = 0
    dropped_queue_full: int = 0
    dropped_invalid: int = 0
    export_failures: int = 0
    batches_exported: int = 0
    spool_write_errors: int = 0
    latency: Histogram = field(default_factory=Histogram)
