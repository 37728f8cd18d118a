"""The shape every detector shares: one compiled pattern, a cheap prefilter, a validator.

Detectors are plain data so the scanner can run them in a tight loop: a substring
``hints`` check skips the regex entirely for most texts (``"@"`` for e-mail, ``"sk-"``
for OpenAI keys), and the optional ``validate`` function turns a raw regex hit into a
confidence (Luhn, IBAN checksum, context words) or drops it (``None``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from genops.proxy.safety.findings import Match

#: ``validate(text, match) -> confidence or None`` (None drops the hit).
Validator = Callable[[str, "re.Match[str]"], "float | None"]


@dataclass(frozen=True)
class Detector:
    """One kind of sensitive content (``category`` pii|secrets|injection, ``name`` like ``email``)."""

    name: str
    category: str
    pattern: re.Pattern[str]
    severity: str
    confidence: float
    validate: Validator | None = None
    #: Substrings of which at least one must occur (case-sensitive) for the pattern to run.
    hints: tuple[str, ...] = ()
    #: Same, checked against the lower-cased text.
    lower_hints: tuple[str, ...] = ()
    #: Regex group holding the sensitive part (0 = the whole match).
    group: int = 0
    #: The pattern is written in lower case and runs on the lower-cased text (faster than
    #: ``re.IGNORECASE``); texts whose lower-casing changes their length use an IGNORECASE copy.
    lowercase: bool = False

    def applies(self, text: str, lower: str) -> bool:
        """Cheap prefilter: can this text contain a hit at all? (Plain loops: this runs per text.)"""
        if self.hints:
            for hint in self.hints:
                if hint in text:
                    break
            else:
                return False
        if self.lower_hints:
            for hint in self.lower_hints:
                if hint in lower:
                    break
            else:
                return False
        return True

    def scan(self, text: str, lower: str) -> list[Match]:
        """Every validated hit in ``text`` (``lower`` is ``text.lower()``, computed once by the caller)."""
        if not self.applies(text, lower):
            return []
        pattern, subject = self.pattern, text
        if self.lowercase:
            if len(lower) == len(text):
                subject = lower
            else:
                pattern = _ignorecase(self.pattern)
        out = []
        for m in pattern.finditer(subject):
            confidence = self.confidence
            if self.validate is not None:
                checked = self.validate(text, m)
                if checked is None:
                    continue
                confidence = checked
            start, end = m.span(self.group)
            if end > start:
                out.append(Match(self.name, self.category, start, end, confidence, self.severity))
        return out


_IGNORECASE: dict[re.Pattern[str], re.Pattern[str]] = {}


def _ignorecase(pattern: re.Pattern[str]) -> re.Pattern[str]:
    compiled = _IGNORECASE.get(pattern)
    if compiled is None:
        compiled = _IGNORECASE[pattern] = re.compile(pattern.pattern, pattern.flags | re.IGNORECASE)
    return compiled


def context_before(text: str, start: int, width: int = 24) -> str:
    """The lower-cased text just before a hit, for context-word checks."""
    return text[max(0, start - width) : start].lower()


def context_after(text: str, end: int, width: int = 24) -> str:
    """The lower-cased text just after a hit."""
    return text[end : end + width].lower()
