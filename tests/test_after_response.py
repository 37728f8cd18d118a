"""A call's bookkeeping (safety scan, cost, span end) waits until the loop has nothing more urgent."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from genops import semconv as sc
from genops.config import load_settings
from genops.proxy import after_response
from genops.runtime.app import create_app
from genops.runtime.telemetry import build_telemetry

pytestmark = pytest.mark.integration

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Mail me at jane.doe@example.com"}]}


class Collect(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


async def test_deferred_work_runs_at_the_next_upstream_wait_or_when_idle() -> None:
    ran: list[str] = []
    after_response.defer(ran.append, "a")
    after_response.defer(lambda: 1 / 0)  # a failing item does not stop the others
    after_response.defer(ran.append, "b")
    await asyncio.sleep(0)
    assert ran == []  # not inline, not on the very next loop turn
    after_response.kick()
    assert ran == []  # the kicking call sends its request first (the upstream client writes it before awaiting)
    await asyncio.sleep(0)
    assert ran == ["a", "b"]  # a call waiting for its upstream lets it run

    after_response.defer(ran.append, "idle")
    await asyncio.sleep(after_response.IDLE_DELAY_S * 5)
    assert ran[-1] == "idle"  # with no later call, it runs shortly after anyway


async def test_drain_runs_what_is_still_waiting() -> None:
    ran: list[str] = []
    after_response.defer(ran.append, "deferred")

    async def big_scan() -> None:
        await asyncio.sleep(0.01)
        ran.append("background")

    after_response.run_in_background(big_scan())
    await after_response.drain_pending()
    assert sorted(ran) == ["background", "deferred"]


async def test_the_span_ends_after_the_response_then_on_the_next_call_or_shutdown(fake_upstream) -> None:
    settings = load_settings(env={"GENOPS_OPENAI_BASE_URL": fake_upstream.url, "GENOPS_DATA_DIR": "/nonexistent"})
    telemetry = build_telemetry(settings, None)
    spans = Collect()
    telemetry.add_span_processor(spans)
    app = create_app(settings, telemetry, None)
    async with TestServer(app) as server, aiohttp.ClientSession() as client:
        url = str(server.make_url("/v1/chat/completions"))
        async with client.post(url, data=json.dumps(BODY), headers={"Authorization": "Bearer sk-test"}) as response:
            assert response.status == 200
            first_id = response.headers["GenOps-Request-Id"]
            await response.read()
        assert spans.spans == []  # the response is out; its span waits for a pause in the loop
        async with client.post(url, data=json.dumps(BODY), headers={"Authorization": "Bearer sk-test"}) as response:
            await response.read()
        # The second call's upstream wait was that pause: the first span ended, scanned and priced.
        first = next(s for s in spans.spans if s.attributes[sc.GENOPS_REQUEST_ID] == first_id)
        assert first.attributes[sc.GENOPS_SAFETY_PII_COUNT] >= 1
        assert first.attributes[sc.GENOPS_COST_USD] > 0
        assert first.end_time - first.start_time < 10_000_000_000
    # The second span is ended by the app's cleanup at the latest.
    assert len(spans.spans) == 2
