"""The feedback endpoint's security: its own scoped token, scores only on calls GenOps recorded
(and on exactly one of them when a client reused a request id), and a rate limit per token.

Real ``genops serve`` processes on chDB with the fake model API; the storage-side checks run
the endpoint in-process on the session's real chDB with rows inserted as the proxy stores them.
"""

from __future__ import annotations

import stat
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import FakeUpstream, Proxy, start_proxy, upstream_env
from test_feedback import call, feedback

pytestmark = pytest.mark.e2e


def feedback_token(proxy: Proxy) -> str:
    """The generated feedback token (``<data dir>/feedback_token``), which must be private."""
    path = proxy.data_dir / "feedback_token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return path.read_text().strip()


def post(proxy: Proxy, path: str, payload: Any, token: str) -> tuple[int, Any, dict[str, str]]:
    request = urllib.request.Request(proxy.url + path, data=orjson.dumps(payload), method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, orjson.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read()), dict(exc.headers)


def traceparent(raw: Any) -> tuple[str, str]:
    """(trace id, span id) of a proxied call, from its ``traceparent`` response header."""
    _, trace_id, span_id, _ = raw.headers["traceparent"].split("-")
    return trace_id, span_id


def stored(proxy: Proxy, request_id: str) -> int:
    return proxy.sql(f"SELECT count() AS n FROM genops_scores WHERE RequestId = '{request_id}'")[0]["n"]


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory, fake_upstream: FakeUpstream) -> Iterator[Proxy]:
    """``genops serve --workers 2``: calls in two worker processes, feedback in the supervisor."""
    proc = start_proxy(tmp_path_factory.mktemp("fb-workers"), upstream_env(fake_upstream.url), args=("--workers", "2"))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, fake_upstream: FakeUpstream) -> Iterator[Proxy]:
    """One process (store inline), 0.5 scores per second per token: a burst of 5."""
    proc = start_proxy(tmp_path_factory.mktemp("fb-limited"), {
        **upstream_env(fake_upstream.url), "GENOPS_STORE_PROCESS": "inline", "GENOPS_FEEDBACK_RATE": "0.5"})
    yield proc
    proc.stop()


# 1. The scoped token ------------------------------------------------------------------------


def test_the_feedback_token_scores_through_workers_but_opens_no_sql_or_jobs(workers: Proxy, fake_upstream,
                                                                           request_id):
    token = feedback_token(workers)
    assert token and token != workers.token
    raw = call(workers, request_id)
    status, body = feedback(workers, {"request_id": request_id, "name": "thumbs_up", "value": True}, token=token)
    assert status == 201, body
    assert (body["scores"][0]["trace_id"], body["scores"][0]["span_id"]) == traceparent(raw)
    status, listing = feedback(workers, method="GET", query=f"?request_id={request_id}", token=token)
    assert status == 200 and [s["name"] for s in listing["scores"]] == ["thumbs_up"]

    status, body, _ = post(workers, "/genops/v1/sql", {"query": "SELECT 1"}, token)
    assert (status, body["error"]["code"]) == (401, "unauthorized"), body
    status, _, _ = post(workers, "/genops/v1/jobs/once", {}, token)
    assert status == 401
    status, body, _ = post(workers, "/genops/v1/feedback", {"request_id": request_id, "name": "x", "value": 1},
                           token + "x")
    assert (status, body["error"]["code"]) == (401, "unauthorized")


# 2. Integrity ----------------------------------------------------------------------------


def test_a_reused_request_id_is_scored_only_once_the_trace_or_user_picks_the_call(workers: Proxy, fake_upstream,
                                                                                 request_id):
    """Two users sent the same GenOps-Request-Id (possibly to two workers): neither score may land on
    the other's call."""
    alice = traceparent(call(workers, request_id, **{"GenOps-User-Id": "alice"}))
    bob = traceparent(call(workers, request_id, **{"GenOps-User-Id": "bob"}))
    assert alice[0] != bob[0]
    # Both calls known for sure (stored), however slowly a worker reports under load.
    workers.wait_rows(f"SELECT SpanId FROM otel_traces WHERE SpanAttributes['genops.request.id'] = '{request_id}'", 2)
    token = feedback_token(workers)
    score = {"request_id": request_id, "name": "thumbs_up", "value": False}

    status, body = feedback(workers, score, token=token)
    assert (status, body["error"]["code"]) == (409, "ambiguous_request_id"), body
    assert alice[0] not in body["error"]["message"] and bob[0] not in body["error"]["message"]
    status, body = feedback(workers, {**score, "user_id": "mallory"}, token=token)
    assert (status, body["error"]["code"]) == (403, "user_mismatch"), body
    status, body = feedback(workers, {**score, "trace_id": alice[0], "user_id": "bob"}, token=token)
    assert (status, body["error"]["code"]) == (403, "user_mismatch"), body
    assert stored(workers, request_id) == 0

    status, body = feedback(workers, {**score, "trace_id": bob[0]}, token=token)
    assert status == 201, body
    assert (body["scores"][0]["trace_id"], body["scores"][0]["span_id"]) == bob
    status, body = feedback(workers, {**score, "user_id": "alice", "value": True}, token=token)
    assert status == 201, body
    assert (body["scores"][0]["trace_id"], body["scores"][0]["span_id"]) == alice
    rows = workers.sql(f"SELECT SpanId, Label FROM genops_scores WHERE RequestId = '{request_id}' ORDER BY Label")
    assert rows == [{"SpanId": bob[1], "Label": "false"}, {"SpanId": alice[1], "Label": "true"}]


def test_a_trace_score_scoped_to_a_user_needs_that_users_call(workers: Proxy, fake_upstream, request_id):
    trace_id, _ = traceparent(call(workers, request_id, **{"GenOps-User-Id": "carol"}))
    token = feedback_token(workers)
    status, body = feedback(workers, {"trace_id": trace_id, "name": "task_success", "value": 1, "user_id": "dave"},
                            token=token)
    assert (status, body["error"]["code"]) == (403, "user_mismatch"), body
    status, body = feedback(workers, {"trace_id": trace_id, "name": "task_success", "value": 1, "user_id": "carol"},
                            token=token)
    assert status == 201, body


PROXY_SCOPE = "genops.proxy"


def span_row(trace_id: str, span_id: str, scope: str, attributes: dict[str, str]) -> list[Any]:
    from datetime import datetime

    return [datetime.now(UTC), trace_id, span_id, "chat gpt-4o-mini", "genops", scope, attributes]


async def test_storage_lookups_see_only_calls_genops_recorded_and_every_call_of_an_id(chdb_dir: Path):
    """Spans that arrived over OTLP can carry any request id or trace id; an id the proxy served an
    hour ago (no longer in its memory) still counts when the same id is served again."""
    import aiohttp
    from aiohttp import web
    from aiohttp.test_utils import TestServer
    from conftest import open_chdb

    from genops.api.feedback import FEEDBACK_PATH, FeedbackRoutes
    from genops.proxy.recent import RecentCalls
    from genops.storage.migrate import migrate
    from genops.storage.scores import SpanRef

    database = f"feedback_sec_{uuid.uuid4().hex[:8]}"
    client = open_chdb(chdb_dir)
    migrate(client, database, retention_days=1)
    model = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini"}
    traces = {name: uuid.uuid4().hex for name in ("old", "agent", "agent2", "otlp_trace")}
    rows = [
        # the proxy served "reused" an hour ago; only storage remembers it
        span_row(traces["old"], "1" * 16, PROXY_SCOPE, {**model, "genops.request.id": "reused",
                                                         "genops.user.id": "erin"}),
        # an agent's OTLP spans claiming request ids: a model call (lands in genops_calls) and a plain span
        span_row(traces["agent"], "2" * 16, "otlp:genops.proxy", {**model, "genops.request.id": "otlp-model"}),
        span_row(traces["agent2"], "3" * 16, "my.agent", {"genops.request.id": "otlp-plain"}),
        span_row(traces["otlp_trace"], "4" * 16, "my.agent", {"http.route": "/x"}),
    ]
    client.insert(f"{database}.otel_traces", rows, column_names=[
        "Timestamp", "TraceId", "SpanId", "SpanName", "ServiceName", "ScopeName", "SpanAttributes"])
    recent = RecentCalls()
    new_trace = uuid.uuid4().hex
    recent.add("reused", SpanRef(new_trace, "5" * 16), "frank")  # served again just now, by someone else
    app = web.Application()
    FeedbackRoutes(client, database, "admin-tok", recent, feedback_token="fb-tok").register(app)
    headers = {"Authorization": "Bearer fb-tok"}

    async def score(session: aiohttp.ClientSession, url: str, **fields: Any) -> tuple[int, Any]:
        async with session.post(url, json={"name": "thumbs_up", "value": True, **fields}, headers=headers) as response:
            return response.status, await response.json()

    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        url = str(server.make_url(FEEDBACK_PATH))
        status, body = await score(session, url, request_id="reused")
        assert (status, body["error"]["code"]) == (409, "ambiguous_request_id"), body
        status, body = await score(session, url, request_id="reused", trace_id=traces["old"])
        assert status == 201 and body["scores"][0]["span_id"] == "1" * 16, body
        status, body = await score(session, url, request_id="reused", user_id="frank")
        assert status == 201 and body["scores"][0]["span_id"] == "5" * 16, body
        for rid in ("otlp-model", "otlp-plain"):
            status, body = await score(session, url, request_id=rid)
            assert (status, body["error"]["code"]) == (404, "unknown_request_id"), (rid, body)
        for name in ("agent", "otlp_trace"):
            status, body = await score(session, url, trace_id=traces[name])
            assert (status, body["error"]["code"]) == (404, "unknown_trace_id"), (name, body)
        status, body = await score(session, url, trace_id=traces["old"], user_id="erin")
        assert status == 201, body
    client.command(f"DROP DATABASE {database}")


def test_the_proxys_memory_keeps_every_call_of_a_reused_id_and_only_its_own_spans():
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from genops.proxy.recent import RecentCalls
    from genops.proxy.recorder import SpanRecorder

    recent = RecentCalls()
    for scope, user in ((PROXY_SCOPE, "alice"), (PROXY_SCOPE, "bob"), ("some.library", "eve")):
        recorder = SpanRecorder(Resource.create({}), InstrumentationScope(scope, "1"), [recent])
        span = recorder.start_span("chat")
        span.set_attributes({"genops.request.id": "same", "genops.user.id": user})
        span.end()
    assert [c.user_id for c in recent.calls("same")] == ["alice", "bob"]


# 3. Rate limit per token -----------------------------------------------------------------


def test_each_token_is_rate_limited_in_scores_and_bytes(limited: Proxy, fake_upstream, request_id):
    """0.5 scores per second: a burst of 5 per token. Costs are chosen so that no plausible pause
    between two requests changes an outcome (the refused batch needs 10 s of refill)."""
    call(limited, request_id)
    token = feedback_token(limited)
    one = {"request_id": request_id, "name": "n", "value": 1}

    status, body = feedback(limited, [one] * 6, token=token)
    assert (status, body["error"]["code"]) == (413, "over_rate_burst"), body
    status, body = feedback(limited, [one] * 5, token=token)
    assert status == 201, body
    status, body, headers = post(limited, "/genops/v1/feedback", [one] * 5, token)
    assert (status, body["error"]["code"]) == (429, "rate_limited"), body
    assert set(body["error"]) == {"message", "type", "code"}
    assert int(headers["Retry-After"]) >= 1
    assert stored(limited, request_id) == 5

    # The admin token has a bucket of its own, and long comments cost by their bytes:
    # two scores of 4,096 four-byte characters cost 8 (16 KB each), more than the burst.
    emoji = {**one, "comment": "\U0001f600" * 4096}
    status, body = feedback(limited, [emoji, emoji])
    assert (status, body["error"]["code"]) == (413, "over_rate_burst"), body
    status, body = feedback(limited, [one, one])
    assert status == 201, body
    assert stored(limited, request_id) == 7


def test_token_bucket_refills_and_never_overfills():
    from genops.proxy.rate_limit import RateLimiter, retry_after

    now = [0.0]
    limiter = RateLimiter(2.0, clock=lambda: now[0])  # 2 per second, burst 20
    assert limiter.take("a", 20) == 0.0
    assert limiter.take("a", 1) == pytest.approx(0.5) and retry_after(0.5) == "1"
    assert limiter.take("b", 20) == 0.0, "each key has its own bucket"
    now[0] = 3.0
    assert limiter.take("a", 6) == 0.0 and limiter.take("a", 1) > 0
    now[0] = 1000.0
    assert limiter.take("a", 21) == float("inf") and limiter.take("a", 20) == 0.0
