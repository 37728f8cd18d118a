"""``POST /genops/v1/feedback`` and ``GET /genops/v1/feedback``: scores on calls and traces.

A score is ``{request_id | trace_id, name, value, comment?, source?, metadata?, user_id?}``;
``value`` is a number, a boolean or a label. Send one object or a JSON array of them (all or
none are stored). Humans' thumbs and automated evaluators (``"source": "eval"``) use the same
endpoint and the same table (``genops_scores``, immutable rows; the latest wins at query time).

Tokens: the feedback token (``GENOPS_FEEDBACK_TOKEN``, else ``<data dir>/feedback_token``)
may only write and read scores here; the admin token works too. The SQL and jobs endpoints
take the admin token only, so a feedback client never holds SQL rights.

Rate limit: each token has a bucket of ``GENOPS_FEEDBACK_RATE`` scores per second, with a
burst of 10 seconds' worth (:mod:`genops.proxy.rate_limit`). A score costs
``max(1, ceil(bytes / 4096))``, its bytes being its comment, label and metadata in UTF-8, so
long comments cost what they store; a batch costs the sum; a read costs 1. Over the limit:
429 ``rate_limited`` with ``Retry-After`` (whole seconds) and nothing stored; a request that
costs more than the whole burst: 413 ``over_rate_burst`` (split it). Requests refused before
the scores are valid (401, 400, 413 for size) cost nothing; a valid batch costs its price
even when an id is then unknown (storage was asked).

Which call a score lands on: only a call GenOps recorded itself, the proxy's spans
(``ScopeName = 'genops.proxy'``); a span that arrived over OTLP is never scored, whatever
request id or trace it carries. Request ids are client-chosen (``GenOps-Request-Id``), so one
id may name several calls, e.g. two users who sent the same id. The endpoint collects every
recorded call with the id, from the proxy's memory of recent calls *and* from storage (so an
older call with the same id counts too), narrows them by the score's ``trace_id`` and
``user_id`` when given, and stores the score only when exactly one call is left:

- none at all: 404 ``unknown_request_id``; none in the given trace: 400 ``trace_mismatch``;
- none made for the given ``user_id`` (the call's ``genops.user.id`` / ``genops_calls.UserId``):
  403 ``user_mismatch``, so a multi-tenant app that sends its user ids on both sides never
  scores another tenant's call;
- more than one: 409 ``ambiguous_request_id``: send the call's ``trace_id`` too (from its
  ``traceparent`` response header), or the ``user_id``.

A trace score (``trace_id`` without ``request_id``) needs a trace that holds at least one call
GenOps recorded (404 ``unknown_trace_id`` otherwise), and with ``user_id`` one such call made
for that user (403 ``user_mismatch``). The proxy does not refuse or re-mint a reused request
id when the call is made: the check would need every worker's memory on the hot path, and a
client may reuse its id on purpose (retries); ambiguity is resolved here instead, where all of
it is known. ``user_id`` scopes scores within one app; it is not authentication (callers of
the proxy say who their users are).

Unknown ids: a request id this proxy served recently is known at once (its span may still
be waiting in the export batch); any other id is looked up in storage, retrying for up to
:data:`LOOKUP_WAIT_S` so spans ingested or exported moments ago are found; then 404.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import re
import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from genops.api.admin import _error, _json
from genops.proxy.rate_limit import RateLimiter, retry_after
from genops.proxy.recent import RecentCalls
from genops.storage.scores import CallRef, Score, find_requests, find_traces, insert_scores, list_scores

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
#: reports its ids every 50 ms (runtime/worker_report.REPORT_INTERVAL_S), and a call's span ends
#: just after its response (proxy/after_response.py).
RECENT_WAIT_S = 0.2
LOOKUP_STEP_S = 0.25
#: A request-id score is decided this long after it arrived at the earliest, so that calls served
#: moments before (their span ending, their worker's report on its way) count in the ambiguity check.
SETTLE_S = RECENT_WAIT_S
#: Scores per second per token when no rate is given (GENOPS_FEEDBACK_RATE's default).
DEFAULT_RATE = 100.0
#: A score costs one unit per this many bytes of comment, label and metadata (at least one).
COST_BYTES = 4096
#: Rate-limit keys: who sent the request, by the token it carried.
ADMIN, FEEDBACK = "admin", "feedback"

_FIELDS = frozenset({"request_id", "trace_id", "name", "value", "comment", "source", "metadata", "user_id"})
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
        metadata=_metadata(item.get("metadata"), where), user_id=_user_id(item.get("user_id"), where),
    )


def _user_id(raw: Any, where: str) -> str:
    """The optional ``user_id`` scope, as the proxy records users: stripped, 1 to 256 characters."""
    if raw is None:
        return ""
    if not isinstance(raw, str) or not raw.strip() or len(raw.strip()) > MAX_ID_CHARS:
        raise _bad(where, f"user_id must be a string of 1 to {MAX_ID_CHARS} characters (the call's "
                          "GenOps-User-Id).", "invalid_user_id")
    return raw.strip()


def score_cost(score: Score) -> int:
    """What a score costs in the rate limit: one per started :data:`COST_BYTES` of its text (at least 1)."""
    size = len(score.comment.encode()) + len(score.label.encode())
    size += sum(len(k.encode()) + len(v.encode()) for k, v in score.metadata.items())
    return max(1, math.ceil(size / COST_BYTES))


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


def _unauthorized() -> web.Response:
    return _error(401, "This endpoint needs the feedback token (or the admin token): "
                       "Authorization: Bearer <GENOPS_FEEDBACK_TOKEN>.", "unauthorized")


def _token_is(given: str, token: str) -> bool:
    """Constant-time comparison; an empty configured token never matches."""
    return bool(token) and hmac.compare_digest(given.encode(), token.encode())


class FeedbackRoutes:
    """The feedback endpoint; ``client`` is the app's storage client.

    ``token`` is the admin token, ``feedback_token`` the one that opens this endpoint only;
    ``rate`` is scores per second per token (:mod:`genops.proxy.rate_limit`).
    """

    def __init__(self, client: Any, database: str, token: str, recent: RecentCalls, *,
                 feedback_token: str = "", rate: float = DEFAULT_RATE) -> None:
        self.client = client
        self.database = database
        self.tokens = {ADMIN: token, FEEDBACK: feedback_token}
        self.recent = recent
        self.limiter = RateLimiter(rate)

    def register(self, app: web.Application) -> None:
        app.router.add_post(FEEDBACK_PATH, self.post)
        app.router.add_get(FEEDBACK_PATH, self.get)

    def principal(self, request: web.Request) -> str | None:
        """Which token the request carries (:data:`ADMIN` or :data:`FEEDBACK`), or None."""
        header = request.headers.get("Authorization", "")
        given = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if not given:
            return None
        matches = [name for name, token in self.tokens.items() if _token_is(given, token)]  # compare all: no early exit
        return matches[0] if matches else None

    def _charge(self, principal: str, cost: int) -> web.Response | None:
        """Spend ``cost`` from the token's bucket; a 429 (or 413 for more than the burst) when it cannot."""
        wait = self.limiter.take(principal, cost)
        if wait == 0.0:
            return None
        rate = f"{self.limiter.rate:g}"
        if math.isinf(wait):
            return _error(413, f"This request costs {cost} scores; a token may send at most "
                               f"{self.limiter.capacity:g} at once (GENOPS_FEEDBACK_RATE={rate} per second, "
                               "10 seconds' worth). Send smaller batches.", "over_rate_burst")
        response = _error(429, f"Too many scores for this token (GENOPS_FEEDBACK_RATE={rate} per second); "
                               "nothing was stored. Retry after the Retry-After seconds.", "rate_limited")
        response.headers["Retry-After"] = retry_after(wait)
        return response

    async def _storage(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a storage call off the event loop; any failure becomes a 503 FeedbackError."""
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, lambda: fn(self.client, self.database, *args, **kwargs))
        except Exception as exc:  # storage down or refusing: the client should retry
            message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise FeedbackError(503, f"Storage is unavailable: {message}", "storage_unavailable") from None

    async def post(self, request: web.Request) -> web.Response:
        principal = self.principal(request)
        if principal is None:
            return _unauthorized()
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
            # Charged once the batch is valid and before any storage work: a refused batch costs nothing.
            refused = self._charge(principal, sum(score_cost(s) for s in scores))
            if refused is not None:
                return refused
            await self._resolve(scores)
            await self._storage(insert_scores, scores)
        except FeedbackError as exc:
            return _error(exc.status, str(exc), exc.code)
        return _json({"scores": [_out(s) for s in scores]}, 201)

    async def _resolve(self, scores: list[Score]) -> None:
        """Link each score to the one recorded call it names (or check its trace); 4xx otherwise."""
        want_requests = {s.request_id for s in scores if s.request_id}
        want_traces = {s.trace_id for s in scores if s.trace_id and not s.request_id}
        calls: dict[str, dict[str, CallRef]] = {}  # request id -> span id -> call
        trace_users: dict[str, set[str]] = {}  # trace id -> users of its recorded calls
        # The first round asks storage for every id, even one just served: an older call with
        # the same client-chosen id makes it ambiguous. Later rounds only ask for ids not found.
        ask_requests, ask_traces = sorted(want_requests), sorted(want_traces)
        arrived = time.monotonic()
        deadline = arrived + LOOKUP_WAIT_S
        while True:
            # Recent calls on every round: with the proxy in worker processes, a worker
            # reports the ids it served a few milliseconds after the call (proxy/recent.py).
            self._recall(want_requests, want_traces, calls, trace_users)
            if ask_requests:
                for rid, found in (await self._storage(find_requests, ask_requests)).items():
                    for call in found:
                        calls.setdefault(rid, {}).setdefault(call.span_id, call)
            if ask_traces:
                for tid, users in (await self._storage(find_traces, ask_traces)).items():
                    trace_users.setdefault(tid, set()).update(users)
            ask_requests = sorted(want_requests - calls.keys())
            ask_traces = sorted(want_traces - trace_users.keys())
            if not ask_requests and not ask_traces or time.monotonic() >= deadline:
                break
            await asyncio.sleep(LOOKUP_STEP_S)
        settle = arrived + SETTLE_S - time.monotonic()
        if want_requests and settle > 0:
            # A call with the same id that ended just before this request may not be known yet
            # (a worker reports its ids every 50 ms): look once more before picking "the" call.
            await asyncio.sleep(settle)
            self._recall(want_requests, want_traces, calls, trace_users)
        for i, score in enumerate(scores):
            where = f"scores[{i}]" if len(scores) > 1 else "score"
            if score.request_id:
                call = pick_call(where, score, list(calls.get(score.request_id, {}).values()))
                score.trace_id, score.span_id = call.trace_id, call.span_id
            else:
                check_trace(where, score, trace_users.get(score.trace_id))

    def _recall(self, want_requests: set[str], want_traces: set[str], calls: dict[str, dict[str, CallRef]],
                trace_users: dict[str, set[str]]) -> None:
        """Add the proxy's memory of recent calls to what the lookup found so far."""
        for rid in want_requests:
            for call in self.recent.calls(rid):
                calls.setdefault(rid, {}).setdefault(call.span_id, call)
        for tid in want_traces:
            users = self.recent.trace_users(tid)
            if users is not None:
                trace_users.setdefault(tid, set()).update(users)

    async def get(self, request: web.Request) -> web.Response:
        principal = self.principal(request)
        if principal is None:
            return _unauthorized()
        refused = self._charge(principal, 1)  # a read asks storage too: it counts as one score
        if refused is not None:
            return refused
        request_id = request.query.get("request_id")
        trace_id = request.query.get("trace_id")
        if not request_id and not trace_id:
            return _error(400, "Give ?request_id=... or ?trace_id=... (both: the request's calls in that trace).",
                          "missing_id")
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
        key = {"request_id": request_id} if request_id else {}
        if trace_id:
            key["trace_id"] = trace_id
        return _json({**key, "scores": scores, "latest": latest(scores)})

    async def _known(self, request_id: str | None, trace_id: str | None) -> bool:
        if self._recent(request_id, trace_id):
            return True
        if request_id:
            found = (await self._storage(find_requests, [request_id])).get(request_id, [])
            return any(not trace_id or c.trace_id == trace_id for c in found)
        return bool(await self._storage(find_traces, [trace_id]))

    def _recent(self, request_id: str | None, trace_id: str | None) -> bool:
        if request_id:
            return any(not trace_id or c.trace_id == trace_id for c in self.recent.calls(request_id))
        return self.recent.has_trace(trace_id or "")


def pick_call(where: str, score: Score, candidates: list[CallRef]) -> CallRef:
    """The one recorded call a request-id score names, narrowed by its trace and user; else a FeedbackError.

    Messages never name another call's trace or user: the id may be someone else's.
    """
    rid = score.request_id
    if not candidates:
        raise _bad(where, f"unknown request_id {rid!r}: no call with this GenOps-Request-Id was served or stored.",
                   "unknown_request_id", 404)
    if score.trace_id:
        candidates = [c for c in candidates if c.trace_id == score.trace_id]
        if not candidates:
            raise _bad(where, f"request_id {rid!r} has no call in trace {score.trace_id}.", "trace_mismatch")
    if score.user_id:
        candidates = [c for c in candidates if c.user_id == score.user_id]
        if not candidates:
            raise _bad(where, f"request_id {rid!r} has no call made for user_id {score.user_id!r}.",
                       "user_mismatch", 403)
    if len(candidates) > 1:
        hint = "user_id" if score.trace_id else "trace_id (the traceparent response header) or user_id"
        raise _bad(where, f"request_id {rid!r} names {len(candidates)} recorded calls (a client-chosen "
                          f"GenOps-Request-Id was reused); send the call's {hint} too.",
                   "ambiguous_request_id", 409)
    return candidates[0]


def check_trace(where: str, score: Score, users: set[str] | None) -> None:
    """A trace score needs a recorded call in the trace (made for ``user_id`` when given)."""
    if users is None:
        raise _bad(where, f"unknown trace_id {score.trace_id!r}: no call GenOps recorded belongs to this trace.",
                   "unknown_trace_id", 404)
    if score.user_id and score.user_id not in users:
        raise _bad(where, f"trace {score.trace_id} has no call made for user_id {score.user_id!r}.",
                   "user_mismatch", 403)


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
