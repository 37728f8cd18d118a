"""The detectors, one class per module; each class docstring documents its method."""

from __future__ import annotations

from genops.collectors.anomaly.detectors.base import Detector, Hit, PassContext
from genops.collectors.anomaly.detectors.cost_surge import CostSurge
from genops.collectors.anomaly.detectors.drift import ModelDrift
from genops.collectors.anomaly.detectors.error_rate import ErrorRateSpike
from genops.collectors.anomaly.detectors.latency import LatencyRegression
from genops.collectors.anomaly.detectors.loop import AgentLoop
from genops.collectors.anomaly.detectors.rate_limit import RateLimitBurst
from genops.collectors.anomaly.detectors.runaway import RunawayAgent
from genops.collectors.anomaly.detectors.safety import SafetySurge
from genops.collectors.anomaly.detectors.traffic_drop import TrafficDrop
from genops.collectors.anomaly.detectors.ttft import TtftRegression

DETECTOR_CLASSES: tuple[type[Detector], ...] = (
    LatencyRegression,
    TtftRegression,
    ErrorRateSpike,
    RateLimitBurst,
    TrafficDrop,
    CostSurge,
    RunawayAgent,
    AgentLoop,
    SafetySurge,
    ModelDrift,
)


def build_detectors(names: list[str] | None = None) -> list[Detector]:
    """Instances of all detectors, or of the ones named (unknown names raise ValueError)."""
    known = {cls.name: cls for cls in DETECTOR_CLASSES}
    if not names:
        return [cls() for cls in DETECTOR_CLASSES]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown detector(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return [known[n]() for n in names]


__all__ = ["DETECTOR_CLASSES", "Detector", "Hit", "PassContext", "build_detectors"]
