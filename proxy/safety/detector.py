"""The shape every detector shares: one compiled pattern, a cheap prefilter, a validator.

Detectors are plain data so the scanner can run them in a tight loop: a substring
``hints`` check skips the regex entirely for most texts (``"@"`` for e-mail, ``"sk-"``
for OpenAI keys), ``needs`` gates skip it when a text lacks something every match must
contain (an ASCII digit, a non-ASCII character), and the optional ``validate`` function
turns a raw regex hit into a confidence (Luhn, IBAN checksum, context words) or drops it (``None``).

Hints and gates are prefilters only: each must be a *necessary* condition of the pattern
matching, so skipping a detector never changes what it would have found.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from genops.proxy.safety.findings import Match

#: ``validate(text, match) -> confidence or None`` (None drops the hit).
Validator = Callable[[str, "re.Match[str]"], "float | None"]
#: ``gate(text) -> bool``: False means the pattern cannot match ``text``.
Gate = Callable[[str], bool]

_ASCII_DIGIT = re.compile(r"[0-9]")
_DIGIT = re.compile(r"\d")  # Unicode decimal digits, as ``\d`` matches in a str pattern


def has_ascii_digit(text: str) -> bool:
    """Gate of patterns that cannot match without ``[0-9]``."""
    return _ASCII_DIGIT.search(text) is not None


def has_digit(text: str) -> bool:
    """Gate of patterns that cannot match without a ``\\d`` (any Unicode decimal digit)."""
    return _DIGIT.search(text) is not None


def has_long_token(text: str) -> bool:
    """Gate of patterns that need 24 non-whitespace characters in a row (base64 and hex blobs).

    Texts over 2 KB are not split (that costs more than it saves): the gate then lets them through.
    """
    if len(text) < 24:
        return False
    return len(text) > 2048 or max(map(len, text.split()), default=0) >= 24


def has_non_ascii(text: str) -> bool:
    """Gate of patterns made of non-ASCII characters only."""
    return not text.isascii()


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
    #: Gates (see :data:`Gate`), each a necessary condition of a match; the scanner evaluates
    #: each gate at most once per text and shares the result between detectors.
    needs: tuple[Gate, ...] = ()

    def applies(self, text: str, lower: str) -> bool:
        """Cheap prefilter: can this text contain a hit at all? (Plain loops: this runs per text.)"""
        for gate in self.needs:
            if not gate(text):
                return False
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
        return self.run(text, lower)

    def run(self, text: str, lower: str) -> list[Match]:
        """:meth:`scan` without the prefilter (the scanner has already checked hints and gates)."""
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
