"""Run the detectors over a call's texts, and mask what they found.

``scan_parts`` is synchronous and pure (used by tests, the corpus evaluation and bench);
``scan_parts_async`` runs big inputs on a small thread pool in slices, so a 1 MB prompt
never holds the event loop that serves other requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

try:
    import ahocorasick  # pyahocorasick, a declared dependency
except ImportError:  # an environment installed before the dependency was added: plain substring search
    ahocorasick = None

from genops.proxy.safety import injection, pii, secrets
from genops.proxy.safety.detector import Detector, Gate
from genops.proxy.safety.findings import Finding, Match, TextPart, severity_rank

DETECTORS: dict[str, tuple[Detector, ...]] = {
    "pii": pii.DETECTORS,
    "secrets": secrets.DETECTORS,
    "injection": injection.DETECTORS,
}

#: Inputs larger than this (characters, all parts together) are scanned off the event loop.
INLINE_LIMIT = 4 * 1024
#: Long texts are scanned in slices of this size, overlapping so no hit is cut in two.
SLICE = 32 * 1024
OVERLAP = 4 * 1024
#: Roles whose content came from tools or retrieval: injection there is "indirect".
INDIRECT_ROLES = frozenset({"tool", "function", "tool_result", "document", "retrieved"})

_executor: ThreadPoolExecutor | None = None


class _HintIndex:
    """Which of many hints occur in a text, for one pass over it instead of one per hint.

    Multi-character hints go through one Aho-Corasick automaton (pyahocorasick: every match,
    overlapping ones included, so no hint hides another; it keeps the GIL, unlike ahocorasick-rs,
    whose GIL release per call made the event loop wait for the export threads); single
    characters are a plain ``in`` (a memchr). ``present`` returns the union of the id sets of
    the hints found.
    """

    def __init__(self, hints: dict[str, set[int]]) -> None:
        self.single = tuple((h, frozenset(ids)) for h, ids in hints.items() if len(h) == 1)
        multi = [(h, frozenset(ids)) for h, ids in hints.items() if len(h) > 1]
        self.multi = tuple(multi)
        self.multi_ids = tuple(ids for _, ids in multi)
        self.automaton: Any = None
        if multi and ahocorasick is not None:
            self.automaton = ahocorasick.Automaton()
            for i, (hint, _) in enumerate(multi):
                self.automaton.add_word(hint, i)
            self.automaton.make_automaton()

    def present(self, text: str, into: set[int]) -> set[int]:
        """``into`` plus the ids of every hint that occurs in ``text``."""
        for hint, ids in self.single:
            if hint in text:
                into |= ids
        if self.automaton is None:
            for hint, ids in self.multi:
                if hint in text:
                    into |= ids
        else:
            for i in {i for _, i in self.automaton.iter(text)}:
                into |= self.multi_ids[i]
        return into


class _Plan:
    """How to scan for one tuple of categories: the detectors in order, and which of them a text needs.

    Built once per categories tuple. The hints of all detectors are looked for in one pass per
    text (:class:`_HintIndex`); each gate is evaluated at most once per text, and only when a
    detector still in the running needs it; only the detectors left run.
    """

    def __init__(self, categories: tuple[str, ...]) -> None:
        self.steps: list[tuple[Detector, int]] = []  # (detector, category slot), in scanning order
        self.categories = categories
        case: dict[str, set[int]] = {}
        lower: dict[str, set[int]] = {}
        gated: dict[Gate, set[int]] = {}
        no_case: set[int] = set()
        no_lower: set[int] = set()
        for slot, category in enumerate(categories):
            for detector in DETECTORS[category]:
                i = len(self.steps)
                self.steps.append((detector, slot))
                for hint in detector.hints:
                    case.setdefault(hint, set()).add(i)
                for hint in detector.lower_hints:
                    lower.setdefault(hint, set()).add(i)
                for gate in detector.needs:
                    gated.setdefault(gate, set()).add(i)
                if not detector.hints:
                    no_case.add(i)
                if not detector.lower_hints:
                    no_lower.add(i)
        self.case_hints = _HintIndex(case)
        self.lower_hints = _HintIndex(lower)
        self.gated = tuple((gate, frozenset(ids)) for gate, ids in gated.items())
        self.no_case = frozenset(no_case)
        self.no_lower = frozenset(no_lower)

    def runnable(self, text: str, lower: str) -> list[int]:
        """Positions of the detectors to run on ``text``, ascending (the detectors' order).

        A detector with case-sensitive ``hints`` needs one of them in ``text``, one with
        ``lower_hints`` one of those in ``lower`` (both, when it has both kinds), and every one
        of its gates must pass.
        """
        selected = self.case_hints.present(text, set(self.no_case))
        selected &= self.lower_hints.present(lower, set(self.no_lower))
        for gate, ids in self.gated:
            if not selected.isdisjoint(ids) and not gate(text):
                selected -= ids
        return sorted(selected)


_PLANS: dict[tuple[str, ...], _Plan] = {}


def _plan(categories: Iterable[str]) -> _Plan:
    key = categories if isinstance(categories, tuple) else tuple(categories)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = _Plan(key)
    return plan


def scan_text(text: str, categories: Iterable[str] = ("pii", "secrets", "injection")) -> list[Match]:
    """All non-overlapping hits in one text (per category, the most confident hit wins an overlap)."""
    if not text:
        return []
    if len(text) > SLICE + OVERLAP:
        return _scan_sliced(text, categories)
    plan = _plan(categories)
    lower = text.lower()
    # On a worker thread, hand the GIL back to the event loop between detectors of a long text,
    # instead of making it wait for the interpreter's switch interval (5 ms) each time.
    polite = len(text) > 4096 and threading.current_thread() is not threading.main_thread()
    per_slot: list[list[Match]] | None = None
    steps = plan.steps
    for i in plan.runnable(text, lower):
        detector, slot = steps[i]
        found = detector.run(text, lower)
        if found:
            if per_slot is None:
                per_slot = [[] for _ in plan.categories]
            per_slot[slot].extend(found)
        if polite:
            time.sleep(0)
    if per_slot is None:
        return []
    out: list[Match] = []
    for hits in per_slot:
        if hits:
            out.extend(_resolve(hits))
    return out


def _scan_sliced(text: str, categories: Iterable[str]) -> list[Match]:
    categories = tuple(categories)
    seen: set[tuple[str, int, int]] = set()
    out: list[Match] = []
    for offset in range(0, len(text), SLICE):
        piece = text[offset : offset + SLICE + OVERLAP]
        for m in scan_text(piece, categories):
            start, end = m.start + offset, m.end + offset
            # A hit inside the overlap is found twice; one wholly past the slice belongs to the next.
            if m.start >= SLICE and offset + SLICE < len(text):
                continue
            key = (m.detector, start, end)
            if key not in seen:
                seen.add(key)
                out.append(Match(m.detector, m.category, start, end, m.confidence, m.severity))
    return out


def _resolve(hits: list[Match]) -> list[Match]:
    """Drop overlapping hits: within each cluster of overlapping hits, the most confident (then longest) wins."""
    if len(hits) < 2:
        return hits
    hits.sort(key=lambda h: (h.start, -h.end))
    kept: list[Match] = []
    cluster: list[Match] = [hits[0]]
    cluster_end = hits[0].end
    for h in hits[1:]:
        if h.start < cluster_end:
            cluster.append(h)
            cluster_end = max(cluster_end, h.end)
        else:
            kept.extend(_resolve_cluster(cluster))
            cluster, cluster_end = [h], h.end
    kept.extend(_resolve_cluster(cluster))
    return kept


def _resolve_cluster(cluster: list[Match]) -> list[Match]:
    if len(cluster) == 1:
        return cluster
    chosen: list[Match] = []
    for m in sorted(cluster, key=lambda h: (-h.confidence, -(h.end - h.start), h.start)):
        if all(m.end <= k.start or m.start >= k.end for k in chosen):
            chosen.append(m)
    chosen.sort(key=lambda h: h.start)
    return chosen


#: Joins a call's small texts into one scan; no pattern matches across it (NUL is neither \\s nor \\w).
SEPARATOR = "\n\x00\n"


def scan_parts(parts: Sequence[TextPart], location: str,
               categories: Iterable[str] = ("pii", "secrets", "injection")) -> list[Finding]:
    """Findings for a call's texts; ``location`` is ``"request"`` or ``"response"``."""
    return scan_groups([(parts, location)], categories)[0]


def scan_groups(groups: Sequence[tuple[Sequence[TextPart], str]],
                categories: Iterable[str] = ("pii", "secrets", "injection")) -> list[list[Finding]]:
    """Findings for several locations' texts at once (a call's request and its response), one list per group.

    A text of :data:`REMEMBER_MIN_CHARS` or more is scanned on its own, once per process while
    remembered (:data:`REMEMBERED`): an agent sends its system prompt and its whole history
    again on every call, so without this each call scanned every earlier message again. Shorter
    texts are scanned as one joined text (one pass of each detector per call instead of one per
    message and location), then each hit is mapped back to its part and location. Findings come
    in the order of the parts.
    """
    categories = tuple(categories)
    out: list[list[Finding]] = [[] for _ in groups]
    flat = [(part, g) for g, (parts, _) in enumerate(groups) for part in parts]
    found: list[list[Finding]] = [[] for _ in flat]
    short = []  # indexes into flat
    for i, (part, g) in enumerate(flat):
        if len(part.text) >= REMEMBER_MIN_CHARS:
            location = groups[g][1]
            found[i] = [_finding(m, part, location, m.start, m.end) for m in REMEMBERED.matches(part.text, categories)]
        else:
            short.append(i)
    total = sum(len(flat[i][0].text) for i in short) + len(SEPARATOR) * len(short)
    if len(short) > 1 and total <= SLICE:
        starts = []
        position = 0
        for i in short:
            starts.append(position)
            position += len(flat[i][0].text) + len(SEPARATOR)
        for m in scan_text(SEPARATOR.join(flat[i][0].text for i in short), categories):
            k = bisect_right(starts, m.start) - 1
            i, offset = short[k], starts[k]
            part, g = flat[i]
            end = min(m.end - offset, len(part.text))
            if end > m.start - offset:
                found[i].append(_finding(m, part, groups[g][1], m.start - offset, end))
    else:
        for i in short:
            part, g = flat[i]
            found[i] = [_finding(m, part, groups[g][1], m.start, m.end) for m in scan_text(part.text, categories)]
    for i, (_, g) in enumerate(flat):
        out[g].extend(found[i])
    return out


class RememberedScans:
    """The matches of texts scanned before, by the text's digest (BLAKE2b, 128 bits: the texts
    themselves are not kept), least recently used first out; shared by the event loop and the
    scanning threads.

    A text's matches depend on the text and the categories scanned only, so a remembered text
    gets exactly the matches scanning it again would find.
    """

    def __init__(self, entries: int) -> None:
        self.limit = entries
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[tuple[str, ...], bytes], tuple[Match, ...]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(text: str, categories: tuple[str, ...]) -> tuple[tuple[str, ...], bytes]:
        return categories, hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def matches(self, text: str, categories: tuple[str, ...]) -> tuple[Match, ...]:
        """``scan_text(text, categories)``, scanned only if not remembered."""
        key = self._key(text, categories)
        with self._lock:
            known = self._entries.get(key)
            if known is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return known
        scanned = tuple(scan_text(text, categories))
        with self._lock:
            self.misses += 1
            self._entries[key] = scanned
            while len(self._entries) > self.limit:
                self._entries.popitem(last=False)
        return scanned

    def knows(self, text: str, categories: tuple[str, ...]) -> bool:
        """Whether ``text``'s matches for ``categories`` are remembered (nothing to scan)."""
        key = self._key(text, categories)
        with self._lock:
            return key in self._entries

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def chars_to_scan(parts: Sequence[TextPart], categories: Iterable[str]) -> int:
    """How many characters of ``parts`` a scan would read: remembered texts cost nothing (what
    decides whether a call's texts are scanned on the event loop or on a thread)."""
    categories = tuple(categories)
    size = 0
    for part in parts:
        n = len(part.text)
        if n < REMEMBER_MIN_CHARS or not REMEMBERED.knows(part.text, categories):
            size += n
    return size


#: Texts at least this long are scanned on their own and remembered (about a sentence;
#: shorter ones cost less to scan joined than to look up).
REMEMBER_MIN_CHARS = 64
#: Texts remembered per process: about 200 bytes each (a digest and a few matches), so ~3 MB.
REMEMBERED_TEXTS = 16_384
REMEMBERED = RememberedScans(REMEMBERED_TEXTS)


def _finding(m: Match, part: TextPart, location: str, start: int, end: int) -> Finding:
    severity = m.severity
    if m.category == "injection" and part.role in INDIRECT_ROLES:
        severity = "critical"  # instructions arriving in data the model will trust
    return Finding(m.category, m.detector, location, part.role, part.message_index, part.part_index,
                   start, end, m.confidence, severity)


async def scan_parts_async(parts: Sequence[TextPart], location: str,
                           categories: Iterable[str] = ("pii", "secrets", "injection")) -> list[Finding]:
    """:func:`scan_parts`, on a worker thread when the input is large."""
    categories = tuple(categories)
    if chars_to_scan(parts, categories) <= INLINE_LIMIT:
        return scan_parts(parts, location, categories)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool(), scan_parts, parts, location, categories)


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="genops-safety")
    return _executor


def placeholder(finding: Finding | Match) -> str:
    """What replaces a masked span: names the kind, never the content."""
    return f"[REDACTED:{finding.detector}]"


def mask_text(text: str, spans: Iterable[Finding | Match]) -> str:
    """``text`` with every span replaced by its placeholder (overlaps merged, left to right)."""
    ordered = sorted(spans, key=lambda f: (f.start, -f.end))
    out: list[str] = []
    pos = 0
    for f in ordered:
        if f.start < pos:
            continue  # overlapped by an earlier, already masked span
        out.append(text[pos : f.start])
        out.append(placeholder(f))
        pos = f.end
    out.append(text[pos:])
    return "".join(out)


def mask_parts(parts: Sequence[TextPart], findings: Iterable[Finding]) -> dict[int, str]:
    """``{position in parts: masked text}`` for the parts that have findings.

    Findings are matched to parts by (message_index, part_index).
    """
    by_key: dict[tuple[int, int], list[Finding]] = {}
    for f in findings:
        by_key.setdefault((f.message_index, f.part_index), []).append(f)
    out: dict[int, str] = {}
    for position, part in enumerate(parts):
        hits = by_key.get((part.message_index, part.part_index))
        if hits:
            out[position] = mask_text(part.text, hits)
    return out


def highest_severity(findings: Iterable[Finding]) -> str | None:
    """The most severe severity among ``findings`` (None when empty)."""
    best: str | None = None
    for f in findings:
        if best is None or severity_rank(f.severity) > severity_rank(best):
            best = f.severity
    return best
