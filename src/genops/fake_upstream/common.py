"""Shared pieces of the fake providers: request log, controls, deterministic text and tokens."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import orjson
from aiohttp import web

REQUEST_LOG_KEY = web.AppKey("fake_request_log", list)
# Requests seen per model under X-Fake-Error-Rate (cleared with the request log).
ERROR_COUNTS_KEY = web.AppKey("fake_error_counts", dict)


@dataclass
class Controls:
    """Per-request behaviour from ``X-Fake-*`` headers."""

    status: int = 200
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    drop_usage: bool = False
    error_rate: Fraction = Fraction(0)
    error_model: str = ""
    error_status: int = 500
    delay_model: str = ""

    @classmethod
    def from_request(cls, request: web.Request) -> Controls:
        h = request.headers
        return cls(
            status=int(h.get("X-Fake-Status", "200")),
            delay_s=int(h.get("X-Fake-Delay-Ms", "0")) / 1000,
            chunk_delay_s=int(h.get("X-Fake-Chunk-Delay-Ms", "0")) / 1000,
            cached_tokens=int(h.get("X-Fake-Cached-Tokens", "0")),
            cache_write_tokens=int(h.get("X-Fake-Cache-Write-Tokens", "0")),
            reasoning_tokens=int(h.get("X-Fake-Reasoning-Tokens", "0")),
            drop_usage=h.get("X-Fake-Drop-Usage", "") == "1",
            error_rate=_share(h.get("X-Fake-Error-Rate")),
            error_model=h.get("X-Fake-Error-Model", ""),
            error_status=int(h.get("X-Fake-Error-Status", "500")),
            delay_model=h.get("X-Fake-Delay-Model", ""),
        )

    def status_for(self, request: web.Request, model: str) -> int:
        """The status this request answers with: ``X-Fake-Status``, else 500 on its turn under ``X-Fake-Error-Rate``.

        Deterministic: the server counts the requests per model that carry an error rate for it
        (``X-Fake-Error-Model`` empty or equal to ``model``), and request ``n`` fails when
        ``floor(n * rate)`` steps up, so exactly ``floor(n * rate)`` of the first ``n`` fail
        (rate 0.2: requests 5, 10, 15, ...). The rate is read as an exact fraction. Such a failure
        answers ``X-Fake-Error-Status`` (default 500; a 429 comes with OpenAI's ``retry-after``).

        ``X-Fake-Delay-Model`` keeps ``X-Fake-Delay-Ms`` to the requests for that model (the others
        answer at once), so a route's slow target can be told from its fast one.
        """
        if self.delay_model and self.delay_model != model:
            self.delay_s = 0.0
        if self.status >= 400 or not self.error_rate or (self.error_model and self.error_model != model):
            return self.status
        counts = request.app[ERROR_COUNTS_KEY]
        n = counts[model] = counts.get(model, 0) + 1
        failed = math.floor(n * self.error_rate) > math.floor((n - 1) * self.error_rate)
        return self.error_status if failed else self.status

    async def wait(self) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)

    async def between_chunks(self) -> None:
        if self.chunk_delay_s:
            await asyncio.sleep(self.chunk_delay_s)


def _share(value: str | None) -> Fraction:
    """A header's share in [0, 1] as an exact fraction ("0.2" is 1/5); absent is 0."""
    return min(Fraction(1), max(Fraction(0), Fraction(value))) if value else Fraction(0)


async def record(request: web.Request) -> bytes:
    """Read the body and remember the request for ``GET /_fake/requests``."""
    body = await request.read()
    log = request.app[REQUEST_LOG_KEY]
    log.append(
        {
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "headers": {str(k): _json_text(v) for k, v in request.headers.items()},
            "body": body.decode("utf-8", "replace"),
        }
    )
    del log[:-200]
    return body


def _json_text(value: str) -> str:
    """A header value JSON can carry: bytes that were not UTF-8 (lone surrogates here) as ``\\xNN``."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def count_tokens(text: str) -> int:
    """A deterministic stand-in tokenizer: one token per word, at least one."""
    return max(1, len(text.split()))


def reply_pieces(prompt: str) -> list[str]:
    """The deterministic reply, split into the pieces a stream sends."""
    words = prompt.split()[:6]
    text = "Hello! This is a fake reply about: " + " ".join(words) if words else "Hello! This is a fake reply."
    parts = text.split(" ")
    return [parts[0]] + [" " + p for p in parts[1:]]


def dumps(data: Any) -> bytes:
    """Compact JSON, keys in insertion order, as the real APIs send it."""
    return orjson.dumps(data)


def sse(data: bytes, event: str | None = None) -> bytes:
    """One Server-Sent Event."""
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + data + b"\n\n"


# --- Tools and structured output: shared by every provider module -------------------------

_SAMPLE_STRINGS = {
    "city": "Paris", "location": "Paris, France", "country": "France", "query": "fake search query",
    "q": "fake search query", "email": "ada@example.com", "url": "https://example.com", "name": "Ada",
    "unit": "celsius", "date": "2024-01-01", "language": "en", "id": "id_123", "path": "/tmp/example.txt",
}
_FORMATS = {"date": "2024-01-01", "date-time": "2024-01-01T12:00:00Z", "time": "12:00:00", "email": "ada@example.com",
            "uri": "https://example.com", "url": "https://example.com", "uuid": "00000000-0000-4000-8000-000000000000",
            "ipv4": "127.0.0.1", "hostname": "example.com"}


def sample_from_schema(schema: Any, name: str = "", root: Any = None, depth: int = 0) -> Any:
    """A value matching a JSON schema (also Gemini's OpenAPI subset with upper-case types).

    Objects get their required properties (all properties when none are listed as required
    but ``additionalProperties`` is false, as strict schemas have); deterministic sample values.
    """
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 12:
        return f"sample {name}".strip() if depth <= 12 else None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return sample_from_schema(target, name, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            # Prefer a non-null option (Optional[...] is anyOf [X, null]).
            option = next((o for o in options if not (isinstance(o, dict) and str(o.get("type", "")).lower() == "null")),
                          options[0])
            return sample_from_schema(option, name, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "null")
    kind = str(kind).lower() if kind else ("object" if "properties" in schema else "string")
    if kind == "object":
        properties = schema.get("properties") or {}
        required = schema.get("required")
        if not isinstance(required, list):
            required = list(properties) if schema.get("additionalProperties") is False else []
        return {key: sample_from_schema(properties.get(key, {}), key, root, depth + 1) for key in required}
    if kind == "array":
        count = max(1, int(schema.get("minItems") or 1))
        return [sample_from_schema(schema.get("items") or {}, name, root, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        low, high = schema.get("minimum"), schema.get("maximum")
        value: float = 3 if kind == "integer" else 1.5
        if isinstance(low, (int, float)) and value < low:
            value = low
        if isinstance(high, (int, float)) and value > high:
            value = high
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _FORMATS:
        return _FORMATS[fmt]
    lowered = name.lower()
    for key, sample in _SAMPLE_STRINGS.items():
        if lowered == key or lowered.endswith("_" + key):
            return sample
    return f"sample {name}".strip()


def json_tokens(text: str) -> int:
    """Tokens of generated JSON (tool arguments, structured output): about four characters each."""
    return max(1, (len(text) + 3) // 4)


def json_pieces(text: str, size: int = 6) -> list[str]:
    """A JSON string cut into the small fragments a stream sends (never empty)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def tool_result_pieces(name: str, result: str) -> list[str]:
    """The deterministic reply to a tool result, mentioning the result, as stream pieces."""
    words = " ".join(str(result).split()).split(" ")
    shown = " ".join(words[:12]) + (" ..." if len(words) > 12 else "")
    text = f"The {name or 'tool'} tool returned: {shown}" if shown else f"The {name or 'tool'} tool returned nothing."
    parts = text.split(" ")
    return [parts[0]] + [" " + p for p in parts[1:]]


def text_of(content: Any) -> str:
    """The text of a tool result's content (a string, content blocks, or any JSON)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [b.get("text", "") if isinstance(b, dict) else str(b) for b in content]
        if any(texts):
            return " ".join(t for t in texts if t)
    if content is None:
        return ""
    return orjson.dumps(content).decode()


def fake_id(seed: str, length: int = 24) -> str:
    """An id-like string derived from ``seed`` (letters and digits, as providers' ids are)."""
    import base64
    import hashlib

    raw = base64.b32encode(hashlib.sha256(seed.encode()).digest()).decode().rstrip("=")
    return "".join(c if i % 3 else c.lower() for i, c in enumerate(raw))[:length]
