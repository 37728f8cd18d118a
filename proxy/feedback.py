"""``POST /genops/v1/feedback`` and ``GET /genops/v1/feedback``: scores on calls and traces.

A score is ``{request_id | trace_id, name, value, comment?, source?, metadata?}``; ``value``
is a number, a boolean or a label. Send one object or a JSON array of them (all or none
are stored). Humans' thumbs and automated evaluators (``"source": "eval"``) use the same
endpoint and the same table (``genops_scores``, immutable rows; the latest wins at query
time). Token-protected like the SQL endpoint.

Unknown ids: a request id this proxy served recently is known at once (its span may still
be waiting in the export batch); any other id is looked up in storage, retrying for up to
:data:`LOOKUP_WAIT_S` so spans ingested or exported moments ago are found; then 404.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from genops.proxy.admin import _error, _json, check_token
from genops.proxy.recent import RecentCalls
from genops.storage.scores import Score, SpanRef, find_requests, find_traces, insert_scores, list_scores

FEEDBACK_PATH = "/genops/v1/feedback"

MAX_BODY_BYTES = 1024 * 1024
MAX_BATCH = 1000
MAX_ID_CHARS = 256
MAX_NAME_CHARS = 64
MAX_LABEL_CHARS = 256
MAX_COMMENT_CHARS = 4096
MAX_METADATA_KEYS = 32
MAX_METADATA_VALUE_CHARS = 1024
SOURCES = ("user", "eval", "annotation", "api")
LOOKUP_WAIT_S = 3.0
#: How long a read of an unknown id waits for the calls served in the last moments: a worker
#: reports its ids every 20 ms, and a call's span ends just after its response (proxy/after_response.py).
RECENT_WAIT_S = 0.2
LOOKUP_STEP_S = 0.25

_FIELDS = frozenset({"request_id", "trace_id", "name", "value", "comment", "source", "metadata"})
_NAME = re.compile(r"^[\w.:/ -]+$")
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


class FeedbackError(ValueError):
    """A score the endpoint refuses; becomes a 4xx with ``code``."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _bad(where: str, message: str, code: str, status: int = 400) -> FeedbackError:
    return FeedbackError(status, f"{where}: {message}", code)


def parse_score(item: Any, where: str, now_us: int) -> Score:
    """Validate one score object; ids are not resolved yet (``trace_id``/``span_id`` may be empty)."""
    if not isinstance(item, dict):
        raise _bad(where, "each score must be a JSON object.", "invalid_score")
    unknown = sorted(set(item) - _FIELDS)
    if unknown:
        raise _bad(where, f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_FIELDS))}.",
                   "unknown_field")
    request_id = item.get("request_id")
    trace_id = item.get("trace_id")
    if request_id is None and trace_id is None:
        raise _bad(where, "give request_id (the GenOps-Request-Id of a call) or trace_id.", "missing_id")
    if request_id is not None and (not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_ID_CHARS):
        raise _bad(where, f"request_id must be a string of 1 to {MAX_ID_CHARS} characters.", "invalid_request_id")
    if trace_id is not None:
        if not isinstance(trace_id, str) or not _TRACE_ID.match(trace_id.lower()):
            raise _bad(where, "trace_id must be 32 hex characters.", "invalid_trace_id")
        trace_id = trace_id.lower()
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _bad(where, "name is required (e.g. \"thumbs_up\", \"helpfulness\").", "missing_name")
    name = name.strip()
    if len(name) > MAX_NAME_CHARS or not _NAME.match(name):
        raise _bad(where, f"name must be at most {MAX_NAME_CHARS} letters, digits, spaces or _ . : / -.",
                   "invalid_name")
    data_type, value, label = _value(item.get("value", None), "value" in item, where)
    comment = item.get("comment")
    if comment is None:
        comment = ""
    elif not isinstance(comment, str):
        raise _bad(where, "comment must be a string.", "invalid_comment")
    elif len(comment) > MAX_COMMENT_CHARS:
        raise _bad(where, f"comment is {len(comment)} characters; at most {MAX_COMMENT_CHARS} are accepted.",
                   "comment_too_long", 413)
    source = item.get("source", "user")
    if source not in SOURCES:
        raise _bad(where, f"source must be one of {', '.join(SOURCES)}.", "invalid_source")
    return Score(
        timestamp_us=now_us, score_id=uuid.uuid4().hex, request_id=request_id or "", trace_id=trace_id or "",
        span_id="", name=name, data_type=data_type, value=value, label=label, comment=comment, source=source,
        metadata=_metadata(item.get("metadata"), where),
    )


def _value(value: Any, present: bool, where: str) -> tuple[str, float | None, str]:
    if not present or value is None:
        raise _bad(where, "value is required: a number, true/false, or a label string.", "missing_value")
    if isinstance(value, bool):
        return "boolean", 1.0 if value else 0.0, "true" if value else "false"
    if isinstance(value, (int, float)):
        number = float(value)
        if not math.isfinite(number):
            raise _bad(where, "value must be a finite number.", "invalid_value")
        return "numeric", number, ""
    if isinstance(value, str):
        label = value.strip()
        if not label or len(label) > MAX_LABEL_CHARS:
            raise _bad(where, f"a label value must be 1 to {MAX_LABEL_CHARS} characters.", "invalid_value")
        return "categorical", None, label
    raise _bad(where, "value must be a number, true/false, or a label string.", "invalid_value")


def _metadata(raw: Any, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) > MAX_METADATA_KEYS:
        raise _bad(where, f"metadata must be an object of at most {MAX_METADATA_KEYS} keys.", "invalid_metadata")
    out = {}
    for key, value in raw.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        if not isinstance(value, (str, int, float)) or len(str(key)) > MAX_NAME_CHARS \
                or len(str(value)) > MAX_METADATA_VALUE_CHARS:
            raise _bad(where, f"metadata values must be strings, numbers or booleans (keys up to {MAX_NAME_CHARS}, "
                              f"values up to {MAX_METADATA_VALUE_CHARS} characters).", "invalid_metadata")
        out[str(key)] = str(value)
    return out


def parse_payload(payload: Any, now_us: int) -> list[Score]:
    """One score object or an array of them, validated."""
    if isinstance(payload, list):
        if not payload:
            raise FeedbackError(400, "The batch is empty.", "empty_batch")
        if len(payload) > MAX_BATCH:
            raise FeedbackError(413, f"At most {MAX_BATCH} scores per request.", "batch_too_large")
        # one microsecond apart: the batch keeps its order, and a later item wins over an earlier one
        return [parse_score(item, f"scores[{i}]", now_us + i) for i, item in enumerate(payload)]
    return [parse_score(payload, "score", now_us)]


class FeedbackRoutes:
    """The feedback endpoint; ``client`` is the app's storage client."""

    def __init__(self, client: Any, database: str, token: str, recent: RecentCalls) -> None:
        self.client = client
        self.database = database
        self.token = token
        self.recent = recent

    def register(self, app: web.Application) -> None:
        app.router.add_post(FEEDBACK_PATH, self.post)
        app.router.add_get(FEEDBACK_PATH, self.get)

    async def _storage(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a storage call off the event loop; any failure becomes a 503 FeedbackError."""
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, lambda: fn(self.client, self.database, *args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - storage down or refusing: the client should retry
            message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise FeedbackError(503, f"Storage is unavailable: {message}", "storage_unavailable") from None

    async def post(self, request: web.Request) -> web.Response:
        denied = check_token(request, self.token)
        if denied is not None:
            return denied
        body = await request.read()
        if len(body) > MAX_BODY_BYTES:
            return _error(413, f"The feedback body exceeds {MAX_BODY_BYTES} bytes; send smaller batches.",
                          "payload_too_large")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _error(400, 'Send JSON: {"request_id": "...", "name": "thumbs_up", "value": true} or an array of '
                               "such objects.", "invalid_json")
        try:
            scores = parse_payload(payload, time.time_ns() // 1000)
            await self._resolve(scores)
            await self._storage(insert_scores, scores)
        except FeedbackError as exc:
            return _error(exc.status, str(exc), exc.code)
        return _json({"scores": [_out(s) for s in scores]}, 201)

    async def _resolve(self, scores: list[Score]) -> None:
        """Link each score to its span (request) or check its trace exists; 404 for unknown ids."""
        refs: dict[str, SpanRef] = {}
        traces: set[str] = set()
        want_requests = {s.request_id for s in scores if s.request_id}
        want_traces = {s.trace_id for s in scores if s.trace_id and not s.request_id}
        deadline = time.monotonic() + LOOKUP_WAIT_S
        while True:
            # Recent calls first, on every round: with the proxy in worker processes, a worker
            # reports the ids it served a few milliseconds after the call (proxy/recent.py).
            for rid in want_requests - refs.keys():
                ref = self.recent.request(rid)
                if ref is not None:
                    refs[rid] = ref
            traces.update(t for t in want_traces - traces if self.recent.has_trace(t))
            missing_requests = sorted(want_requests - refs.keys())
            missing_traces = sorted(want_traces - traces)
            if not missing_requests and not missing_traces:
                break
            refs.update(await self._storage(find_requests, missing_requests))
            traces.update(await self._storage(find_traces, missing_traces))
            if want_requests <= refs.keys() and want_traces <= traces or time.monotonic() >= deadline:
                break
            await asyncio.sleep(LOOKUP_STEP_S)
        for i, score in enumerate(scores):
            where = f"scores[{i}]" if len(scores) > 1 else "score"
            if score.request_id:
                ref = refs.get(score.request_id)
                if ref is None:
                    raise _bad(where, f"unknown request_id {score.request_id!r}: no call with this GenOps-Request-Id "
                                      "was served or stored.", "unknown_request_id", 404)
                if score.trace_id and score.trace_id != ref.trace_id:
                    raise _bad(where, f"request_id {score.request_id!r} belongs to trace {ref.trace_id}, "
                                      f"not {score.trace_id}.", "trace_mismatch")
                score.trace_id, score.span_id = ref.trace_id, ref.span_id
            elif score.trace_id not in traces:
                raise _bad(where, f"unknown trace_id {score.trace_id!r}: no span of this trace is stored.",
                           "unknown_trace_id", 404)

    async def get(self, request: web.Request) -> web.Response:
        denied = check_token(request, self.token)
        if denied is not None:
            return denied
        request_id = request.query.get("request_id")
        trace_id = request.query.get("trace_id")
        if bool(request_id) == bool(trace_id):
            return _error(400, "Give one of ?request_id=... or ?trace_id=...", "missing_id")
        if trace_id:
            trace_id = trace_id.lower()
        try:
            scores = await self._storage(list_scores, request_id=request_id or None, trace_id=trace_id or None)
            known = bool(scores) or await self._known(request_id, trace_id)
        except FeedbackError as exc:
            return _error(exc.status, str(exc), exc.code)
        deadline = time.monotonic() + RECENT_WAIT_S
        while not known and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
            known = self._recent(request_id, trace_id)
        if not known:
            name = "request_id" if request_id else "trace_id"
            return _error(404, f"unknown {name} {request_id or trace_id!r}: nothing was served or stored with it.",
                          f"unknown_{name}")
        key = {"request_id": request_id} if request_id else {"trace_id": trace_id}
        return _json({**key, "scores": scores, "latest": latest(scores)})

    async def _known(self, request_id: str | None, trace_id: str | None) -> bool:
        if self._recent(request_id, trace_id):
            return True
        if request_id:
            return bool(await self._storage(find_requests, [request_id]))
        return bool(await self._storage(find_traces, [trace_id]))

    def _recent(self, request_id: str | None, trace_id: str | None) -> bool:
        if request_id:
            return self.recent.request(request_id) is not None
        return self.recent.has_trace(trace_id or "")


def latest(scores: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest row per (request or trace, name, source): what queries count (genops_scores_latest)."""
    out: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for row in scores:  # oldest first, so later rows overwrite
        out[(row["request_id"], row["trace_id"] if not row["request_id"] else "", row["name"], row["source"])] = row
    return list(out.values())


def _out(score: Score) -> dict[str, Any]:
    return {
        "id": score.score_id, "request_id": score.request_id or None, "trace_id": score.trace_id,
        "span_id": score.span_id or None, "name": score.name, "data_type": score.data_type,
        "value": score.label if score.data_type == "categorical" else (
            score.value == 1.0 if score.data_type == "boolean" else score.value),
        "comment": score.comment, "source": score.source, "metadata": score.metadata,
        "created_at_us": score.timestamp_us,
    }
