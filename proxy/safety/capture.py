"""What content a span may carry: capture level, per-call omit headers, size-capped message JSON.

Levels (``GENOPS_CAPTURE``): ``none`` (no content and no content sizes), ``metadata`` (default:
sizes and counts), ``full`` (also ``gen_ai.input.messages`` / ``gen_ai.output.messages`` as
the GenAI conventions' JSON, capped at ``GENOPS_CAPTURE_MAX_CHARS`` each). The caller passes
texts that are already redacted: nothing here ever sees a finding's raw text on its way to storage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from genops.proxy.providers.base import TextPart

LEVELS = ("none", "metadata", "full")
OMIT_REQUEST_HEADERS = ("GenOps-Omit-Request", "Helicone-Omit-Request")
OMIT_RESPONSE_HEADERS = ("GenOps-Omit-Response", "Helicone-Omit-Response")
TRUNCATED_MARK = "…[truncated]"


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Capture:
    """What to record for one call."""

    level: str
    omit_request: bool = False
    omit_response: bool = False

    @classmethod
    def for_request(cls, level: str, headers: Mapping[str, str]) -> Capture:
        """The configured level, with ``GenOps-Omit-*`` (or Helicone's) headers applied."""
        omit_request = any(_truthy(headers.get(h)) for h in OMIT_REQUEST_HEADERS)
        omit_response = any(_truthy(headers.get(h)) for h in OMIT_RESPONSE_HEADERS)
        if not omit_request and not omit_response and cls is Capture:
            return _plain(level)  # the usual case: one shared (immutable) instance per level
        return cls(level, omit_request=omit_request, omit_response=omit_response)

    @property
    def sizes(self) -> bool:
        return self.level != "none"

    @property
    def input_content(self) -> bool:
        return self.level == "full" and not self.omit_request

    @property
    def output_content(self) -> bool:
        return self.level == "full" and not self.omit_response


@lru_cache(maxsize=8)
def _plain(level: str) -> Capture:
    return Capture(level)


def messages(parts: Sequence[TextPart], default_role: str,
             finish_reasons: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Parts grouped into GenAI-convention messages: ``[{"role", "parts": [{"type": "text", "content"}]}]``."""
    out: list[dict[str, Any]] = []
    by_index: dict[int, dict[str, Any]] = {}
    for part in parts:
        message = by_index.get(part.message_index)
        if message is None:
            message = {"role": part.role or default_role, "parts": []}
            if default_role == "assistant" and 0 <= part.message_index < len(finish_reasons):
                message["finish_reason"] = finish_reasons[part.message_index]
            by_index[part.message_index] = message
            out.append(message)
        message["parts"].append({"type": "text", "content": part.text})
    return out


def capped_json(value: list[dict[str, Any]], max_chars: int) -> tuple[str, bool]:
    """JSON of ``value`` no longer than ``max_chars``: the longest texts are cut first. Returns (json, truncated)."""
    contents = [p for m in value for p in m["parts"]]
    for p in contents:  # no single text can be kept longer than the cap: cut before serializing (1 MB prompts)
        if len(p["content"]) > max_chars:
            p["content"] = p["content"][:max_chars]
    text = orjson.dumps(value).decode()
    if len(text) <= max_chars:
        return text, False
    # Cut every part to a common length limit found by halving, so short parts survive whole.
    lo, hi = 0, max(len(p["content"]) for p in contents)
    originals = [p["content"] for p in contents]
    best = ""
    while lo <= hi:
        mid = (lo + hi) // 2
        for p, original in zip(contents, originals, strict=True):
            p["content"] = original if len(original) <= mid else original[:mid] + TRUNCATED_MARK
        candidate = orjson.dumps(value).decode()
        if len(candidate) <= max_chars:
            best, lo = candidate, mid + 1
        else:
            hi = mid - 1
    if not best:  # even empty contents are too long: keep whole messages that fit
        kept: list[dict[str, Any]] = []
        for message in value:
            message["parts"] = [{"type": "text", "content": TRUNCATED_MARK}]
            if len(orjson.dumps(kept + [message])) > max_chars:
                break
            kept.append(message)
        best = orjson.dumps(kept).decode()
    return best, True
