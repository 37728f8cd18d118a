"""Token buckets: at most ``rate`` units per second per key, with a burst of ``burst_s`` seconds' worth.

Used by the feedback endpoint (one bucket per token, counted in scores). A bucket starts full,
refills continuously, and a request either takes its whole cost or nothing: a refused request
costs nothing, so a client that waits ``Retry-After`` seconds gets in.

Everything runs on the event loop's thread (no lock); the clock is ``time.monotonic`` unless
a test passes its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

#: The burst: this many seconds' worth of the rate may be spent at once.
BURST_SECONDS = 10.0


@dataclass
class Bucket:
    """One key's bucket: ``tokens`` available at ``updated`` (monotonic seconds)."""

    tokens: float
    updated: float


class RateLimiter:
    """Per-key token buckets of ``rate`` units per second and ``rate * burst_s`` capacity."""

    def __init__(self, rate: float, burst_s: float = BURST_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = rate * burst_s
        self.clock = clock
        self._buckets: dict[str, Bucket] = {}

    def take(self, key: str, cost: float) -> float:
        """Spend ``cost`` from ``key``'s bucket: 0.0 when spent, else the seconds until it would fit.

        A ``cost`` above the capacity never fits (``math.inf``): the caller should say to split it.
        """
        if cost > self.capacity:
            return math.inf
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = Bucket(self.capacity, now)
        bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return 0.0
        return (cost - bucket.tokens) / self.rate


def retry_after(wait_s: float) -> str:
    """A ``Retry-After`` header value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(wait_s)))
