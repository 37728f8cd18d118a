"""Precision and recall of the detectors on the labelled corpus (``corpus/labelled.jsonl``).

PII and secrets are scored per span: a finding is a true positive when it overlaps a labelled
span of its category; a label is recalled when some finding of its category overlaps it.
Injection labels mark whole texts (phrasing has no crisp span), so injection is scored per text.
Every text is scanned with every category, so a PII hit inside a secrets example counts against
PII precision unless that text labels it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import orjson

from genops.proxy.safety.findings import CATEGORIES
from genops.proxy.safety.scanner import scan_text


@dataclass
class Scores:
    """Counts and ratios of one category; ``misses`` / ``false_alarms`` name the corpus lines."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    misses: list[str] = field(default_factory=list)
    false_alarms: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def load_corpus() -> list[dict[str, Any]]:
    """The bundled labelled corpus: ``{"category", "text", "labels": [{"detector", "text"?}], "note"?}``."""
    data = resources.files("genops.proxy.safety.corpus").joinpath("labelled.jsonl").read_bytes()
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]


def _spans(text: str, labels: Iterable[dict[str, Any]]) -> list[tuple[int, int]]:
    out = []
    for label in labels:
        start = text.find(label["text"])
        out.append((start, start + len(label["text"])))
    return out


def evaluate(rows: list[dict[str, Any]] | None = None) -> dict[str, Scores]:
    """Scores per category over ``rows`` (default: the bundled corpus)."""
    rows = load_corpus() if rows is None else rows
    scores = {c: Scores() for c in CATEGORIES}
    for number, row in enumerate(rows, 1):
        text = row["text"]
        where = f"line {number}: {row.get('note') or text[:60]!r}"
        hits = scan_text(text)
        for category in ("pii", "secrets"):
            labels = _spans(text, row["labels"]) if row["category"] == category else []
            found = [(m.start, m.end, m.detector) for m in hits if m.category == category]
            s = scores[category]
            for start, end, detector in found:
                if any(start < le and end > ls for ls, le in labels):
                    s.tp += 1
                else:
                    s.fp += 1
                    s.false_alarms.append(f"{where} [{detector}: {text[start:end]!r}]")
            for ls, le in labels:
                if not any(start < le and end > ls for start, end, _ in found):
                    s.fn += 1
                    s.misses.append(f"{where} [{text[ls:le]!r}]")
        s = scores["injection"]
        labelled = row["category"] == "injection" and bool(row["labels"])
        detected = [m.detector for m in hits if m.category == "injection"]
        if labelled and detected:
            s.tp += 1
        elif labelled:
            s.fn += 1
            s.misses.append(where)
        elif detected:
            s.fp += 1
            s.false_alarms.append(f"{where} {detected}")
    return scores


def report(scores: dict[str, Scores]) -> str:
    """A small table of the figures."""
    lines = [f"{'category':<10} {'precision':>9} {'recall':>7} {'tp':>4} {'fp':>4} {'fn':>4}"]
    for category, s in scores.items():
        lines.append(f"{category:<10} {s.precision:>9.3f} {s.recall:>7.3f} {s.tp:>4} {s.fp:>4} {s.fn:>4}")
    return "\n".join(lines)


if __name__ == "__main__":
    result = evaluate()
    print(report(result))
    for category, s in result.items():
        for line in s.misses:
            print(f"MISS  {category}: {line}")
        for line in s.false_alarms:
            print(f"FALSE {category}: {line}")
