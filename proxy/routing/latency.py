"""Each target's recent latency as this process measured it, for least-latency routes."""

from __future__ import annotations

#: Weight of the newest measure in the moving average (about the last 10 calls count).
ALPHA = 0.2


class LatencyStats:
    """Exponentially weighted moving average of each target's time to response headers, in ms.
    A target not measured yet is expected at 0 ms, so it is tried (and measured) first."""

    def __init__(self) -> None:
        self._ewma: dict[str, float] = {}

    def observe(self, target: str, ms: float, failed: bool = False) -> None:
        """One attempt's time to its response headers; a failed attempt counts as slow (ten times its
        time, at least 1 s), so a failing target drops to the end of the order."""
        if failed:
            ms = max(ms * 10.0, 1000.0)
        before = self._ewma.get(target)
        self._ewma[target] = ms if before is None else before + ALPHA * (ms - before)

    def expected_ms(self, target: str) -> float:
        return self._ewma.get(target, 0.0)
