"""Time-to-first-token (p95) regression per model."""

from __future__ import annotations

from typing import ClassVar

from genops.collectors.anomaly.detectors.latency import LatencyRegression


class TtftRegression(LatencyRegression):
    """p95 time-to-first-token regression per provider/model (streaming calls).

    Method: as ``latency_p95`` but on the TTFT t-digest states: the 15-minute windowed p95
    TTFT against the median/MAD of the trailing 24 hours; score = (p95 - median) /
    max(1.4826 * MAD, 10% of median, median / sqrt(calls)); fires at score >= 5 and p95 >= 1.5x median.
    Minimum volume: 12 streaming calls with a first token in the window (the
    median / sqrt(calls) noise term already discounts a p95 of few calls).
    """

    name: ClassVar[str] = "ttft_p95"
    metric: ClassVar[str] = "ttft_p95_ms"
    value_column: ClassVar[str] = "ttft_p95"
    volume_column: ClassVar[str] = "ttft_calls"
    min_volume: ClassVar[int] = 12
