"""``POST/GET /genops/v1/feedback``: scores on real calls through a real ``genops serve`` on chDB."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import openai
import orjson
import pytest

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "Is the answer helpful?"}]


def call(proxy, request_id: str, **headers: str) -> Any:
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-test", max_retries=0,
                           default_headers={"GenOps-Request-Id": request_id, **headers})
    return client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)


def feedback(proxy, payload: Any = None, *, method: str = "POST", query: str = "", token: str | None = None,
             raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (orjson.dumps(payload) if payload is not None else None)
    request = urllib.request.Request(
        proxy.url + "/genops/v1/feedback" + query, data=data, method=method,
        headers={"Authorization": f"Bearer {proxy.token if token is None else token}",
                 "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def test_feedback_for_a_real_call_is_stored_and_joins_its_span(proxy, fake_upstream, request_id):
    raw = call(proxy, request_id, **{"GenOps-User-Id": "fb-user"})
    # Straight away: the span may still be in the export batch; the proxy knows its own ids.
    status, body = feedback(proxy, {"request_id": request_id, "name": "thumbs_up", "value": True,
                                    "comment": "spot on"})
    assert status == 201, body
    (score,) = body["scores"]
    trace_id = raw.headers["traceparent"].split("-")[1]
    span_id = raw.headers["traceparent"].split("-")[2]
    assert (score["trace_id"], score["span_id"], score["value"], score["source"]) == (trace_id, span_id, True, "user")

    rows = proxy.wait_rows(
        "SELECT c.RequestModel AS model, c.UserId AS user, s.Name AS name, s.Value AS value, s.Label AS label, "
        "s.Comment AS comment, s.DataType AS type, t.SpanName AS span "
        "FROM genops_scores AS s "
        "JOIN genops_calls AS c ON c.RequestId = s.RequestId "
        "JOIN otel_traces AS t ON t.SpanId = s.SpanId AND t.TraceId = s.TraceId "
        f"WHERE s.RequestId = '{request_id}'"
    )
    assert rows == [{"model": "gpt-4o-mini", "user": "fb-user", "name": "thumbs_up", "value": 1.0, "label": "true",
                     "comment": "spot on", "type": "boolean", "span": "chat gpt-4o-mini"}]


def test_batch_eval_scores_and_latest_wins(proxy, fake_upstream, request_id):
    call(proxy, request_id)
    batch = [
        {"request_id": request_id, "name": "helpfulness", "value": 0.4, "source": "eval",
         "metadata": {"evaluator": "judge-v1"}},
        {"request_id": request_id, "name": "tone", "value": "friendly", "source": "eval"},
        {"request_id": request_id, "name": "thumbs_up", "value": False},
    ]
    status, body = feedback(proxy, batch)
    assert status == 201, body
    assert [s["value"] for s in body["scores"]] == [0.4, "friendly", False]
    # A later score for the same call, name and source wins at query time; nothing is updated.
    status, _ = feedback(proxy, {"request_id": request_id, "name": "helpfulness", "value": 0.9, "source": "eval"})
    assert status == 201

    status, listing = feedback(proxy, method="GET", query=f"?request_id={request_id}")
    assert status == 200
    assert [(s["name"], s["value"], s["label"]) for s in listing["scores"]] == [
        ("helpfulness", 0.4, ""), ("tone", None, "friendly"), ("thumbs_up", 0.0, "false"), ("helpfulness", 0.9, ""),
    ]
    assert listing["scores"][0]["metadata"] == {"evaluator": "judge-v1"}
    assert sorted((s["name"], s["value"]) for s in listing["latest"]) == [
        ("helpfulness", 0.9), ("thumbs_up", 0.0), ("tone", None)]

    latest = proxy.sql(f"SELECT Name, Source, Value, Label, Versions FROM genops_scores_latest "
                       f"WHERE RequestId = '{request_id}' ORDER BY Name")
    assert latest == [
        {"Name": "helpfulness", "Source": "eval", "Value": 0.9, "Label": "", "Versions": 2},
        {"Name": "thumbs_up", "Source": "user", "Value": 0.0, "Label": "false", "Versions": 1},
        {"Name": "tone", "Source": "eval", "Value": None, "Label": "friendly", "Versions": 1},
    ]
    assert proxy.sql(f"SELECT count() AS n FROM genops_scores WHERE RequestId = '{request_id}'") == [{"n": 4}]


def test_trace_level_score(proxy, fake_upstream, request_id):
    raw = call(proxy, request_id)
    trace_id = raw.headers["traceparent"].split("-")[1]
    status, body = feedback(proxy, {"trace_id": trace_id.upper(), "name": "task_success", "value": 1})
    assert status == 201, body
    assert body["scores"][0]["trace_id"] == trace_id and body["scores"][0]["request_id"] is None
    status, listing = feedback(proxy, method="GET", query=f"?trace_id={trace_id}")
    assert status == 200 and [s["name"] for s in listing["scores"]] == ["task_success"]


def test_clear_errors_and_nothing_stored_from_a_bad_batch(proxy, fake_upstream, request_id):
    call(proxy, request_id)
    good = {"request_id": request_id, "name": "thumbs_up", "value": True}
    cases = [
        (good, "wrong-token", 401, "unauthorized"),
        ([good, {"request_id": request_id, "name": "x", "value": {"a": 1}}], None, 400, "invalid_value"),
        ({**good, "value": None}, None, 400, "missing_value"),
        ({**good, "comment": "x" * 5000}, None, 413, "comment_too_long"),
        ({**good, "source": "robot"}, None, 400, "invalid_source"),
        ({**good, "requestid": "typo"}, None, 400, "unknown_field"),
        ({"name": "thumbs_up", "value": True}, None, 400, "missing_id"),
        ({**good, "name": ""}, None, 400, "missing_name"),
        ({"trace_id": "nothex", "name": "n", "value": 1}, None, 400, "invalid_trace_id"),
        ([], None, 400, "empty_batch"),
    ]
    for payload, token, status, code in cases:
        got_status, body = feedback(proxy, payload, token=token)
        assert (got_status, body["error"]["code"]) == (status, code), (payload, body)
    assert feedback(proxy, raw=b"{nope")[1]["error"]["code"] == "invalid_json"
    assert proxy.sql(f"SELECT count() AS n FROM genops_scores WHERE RequestId = '{request_id}'") == [{"n": 0}]

    status, body = feedback(proxy, {"request_id": "never-served", "name": "thumbs_up", "value": True})
    assert status == 404 and body["error"]["code"] == "unknown_request_id"
    assert "never-served" in body["error"]["message"]
    status, body = feedback(proxy, method="GET", query="?request_id=never-served")
    assert status == 404
    status, body = feedback(proxy, method="GET", query="")
    assert status == 400


def test_feedback_for_a_call_whose_span_is_not_exported_yet(tmp_path, fake_upstream, request_id):
    """The span waits in the export batch (10 min interval): the proxy's memory of the ids it served
    must accept the score anyway; storage cannot know the id yet."""
    from conftest import start_proxy, upstream_env

    slow = start_proxy(tmp_path / "slow-export", {**upstream_env(fake_upstream.url),
                                                 "GENOPS_EXPORT_INTERVAL_MS": "600000"})
    try:
        raw = call(slow, request_id)
        assert slow.sql("SELECT count() AS n FROM otel_traces") == [{"n": 0}]
        status, body = feedback(slow, {"request_id": request_id, "name": "thumbs_up", "value": True})
        assert status == 201, body
        assert body["scores"][0]["span_id"] == raw.headers["traceparent"].split("-")[2]
    finally:
        slow.stop()


@pytest.mark.parametrize("store_process", ["inline", "separate"])
def test_reading_the_feedback_of_a_call_served_a_moment_ago(tmp_path, fake_upstream, request_id, store_process):
    """Straight after the response the call's span may not have ended yet (it ends once the loop is
    free, proxy/after_response.py) or its worker not have reported it: a read waits briefly, not 404."""
    from conftest import start_proxy, upstream_env

    proxy = start_proxy(tmp_path / store_process, {**upstream_env(fake_upstream.url),
                                                   "GENOPS_EXPORT_INTERVAL_MS": "600000",
                                                   "GENOPS_STORE_PROCESS": store_process})
    try:
        call(proxy, request_id)
        status, body = feedback(proxy, method="GET", query=f"?request_id={request_id}")
        assert (status, body) == (200, {"request_id": request_id, "scores": [], "latest": []})
        status, body = feedback(proxy, method="GET", query="?request_id=never-served")
        assert status == 404 and body["error"]["code"] == "unknown_request_id"
    finally:
        proxy.stop()


async def test_a_read_waits_briefly_for_an_id_being_reported(chdb_dir):
    """The id becomes known 50 ms into the read (a worker's report, a span ending): 200, not 404."""
    import asyncio
    import uuid

    import aiohttp
    from aiohttp import web
    from aiohttp.test_utils import TestServer
    from conftest import open_chdb

    from genops.api.feedback import FEEDBACK_PATH, FeedbackRoutes
    from genops.proxy.recent import RecentCalls
    from genops.storage.migrate import migrate
    from genops.storage.scores import SpanRef

    database = f"feedback_wait_{uuid.uuid4().hex[:8]}"
    client = open_chdb(chdb_dir)
    migrate(client, database, retention_days=1)
    recent = RecentCalls()
    app = web.Application()
    FeedbackRoutes(client, database, "tok", recent).register(app)
    headers = {"Authorization": "Bearer tok"}
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        url = str(server.make_url(FEEDBACK_PATH))
        asyncio.get_running_loop().call_later(0.05, recent.add, "req-late", SpanRef("ab" * 16, "cd" * 8))
        async with session.get(url, params={"request_id": "req-late"}, headers=headers) as response:
            assert response.status == 200, await response.text()
        async with session.get(url, params={"request_id": "req-never"}, headers=headers) as response:
            assert response.status == 404
