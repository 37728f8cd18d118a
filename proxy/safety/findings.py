"""What a detector reports: where something sensitive is, never what it is.

A :class:`Finding` names its category, detector, location (request/response), message and
part index, character span and confidence. It deliberately has no field for the matched
text: findings go into spans and logs, and the text they point at must not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from genops.proxy.providers.base import TextPart  # noqa: F401 - re-exported for detectors and tests
from genops.safety_policy import CATEGORIES  # noqa: F401 - one list: the settings' grammar names them too

SEVERITIES = ("low", "medium", "high", "critical")


@dataclass(frozen=True, slots=True)
class Match:
    """One detector hit inside one text (offsets into that text)."""

    detector: str
    category: str
    start: int
    end: int
    confidence: float
    severity: str


@dataclass(frozen=True, slots=True)
class Finding:
    """A hit placed in the call: request or response, message index, part index, span."""

    category: str
    detector: str
    location: str  # "request" | "response"
    role: str  # role of the message the text belongs to ("user", "tool", "assistant", ...)
    message_index: int
    part_index: int
    start: int
    end: int
    confidence: float
    severity: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for span attributes (no matched text by construction)."""
        return {
            "category": self.category,
            "detector": self.detector,
            "location": self.location,
            "role": self.role,
            "message_index": self.message_index,
            "part_index": self.part_index,
            "span": [self.start, self.end],
            "confidence": round(self.confidence, 3),
            "severity": self.severity,
        }


def severity_rank(severity: str) -> int:
    """Order of severities, for "highest severity" roll-ups."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1

