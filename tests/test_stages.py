"""The request path is a chain of stages (proxy/stages/): a stage inserted in the chain acts
without any change to the handler, a stage can answer by itself, and the span is built from
a frozen ``CallResult``."""

from __future__ import annotations

import aiohttp
import orjson
import pytest
from aiohttp import web
from multidict import CIMultiDict
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from genops import semconv as sc
from genops.config import load_settings
from genops.proxy import after_response
from genops.proxy.call_result import CallResult, call_cost, call_result
from genops.proxy.client_aiohttp import aiohttp_handler
from genops.proxy.handler import ProxyHandler
from genops.proxy.providers.base import RequestError, RequestFacts, ResponseFacts, Upstream, Usage
from genops.proxy.providers.openai import OpenAIAdapter
from genops.proxy.recorder import SpanRecorder
from genops.proxy.spans import call_attributes
from genops.proxy.stages import Exchange, build_chain
from genops.proxy.stages.forward import ForwardStage
from genops.proxy.upstream_client import UpstreamClient

pytestmark = pytest.mark.integration

COMPLETION = {"id": "c1", "model": "gpt-4o-mini", "choices": [{"finish_reason": "stop", "message": {"content": "hi"}}],
              "usage": {"prompt_tokens": 3, "completion_tokens": 1}}


class _Spans:
    def __init__(self) -> None:
        self.ended: list = []

    def on_end(self, span) -> None:  # noqa: ANN001 - SpanProcessor protocol
        self.ended.append(span)


class BudgetStage:
    """What a budget check of issue #21 looks like: refuse before anything is forwarded."""

    async def run(self, exchange: Exchange) -> None:
        assert exchange.request_facts is not None and exchange.upstream is not None  # parse and route ran before it
        if exchange.request.headers.get("X-Team") == "over-budget":
            raise RequestError(429, "The team's budget is spent.", "rate_limit_error", "budget_exceeded")


class CacheStage:
    """A stage that answers by itself: the stages after it are skipped."""

    async def run(self, exchange: Exchange) -> None:
        if exchange.request.headers.get("X-Cached") == "yes":
            exchange.status = 200
            exchange.answered = True
            await exchange.reply.send(200, CIMultiDict({"Content-Type": "application/json"}), orjson.dumps(COMPLETION))


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


@pytest.fixture
async def proxy():
    """A proxy for OpenAI with a budget and a cache stage inserted before forward, its upstream's
    request count and the spans it ended."""
    upstream_calls: list[bytes] = []

    async def upstream_handler(request: web.Request) -> web.Response:
        upstream_calls.append(await request.read())
        if request.headers.get("X-Upstream-Error") == "quote":  # an upstream error that quotes the request
            return web.json_response({"error": {"message": "Invalid content: 'card 4111 1111 1111 1111'",
                                                "type": "invalid_request_error", "code": "content_refused"}},
                                     status=400)
        return web.json_response(COMPLETION)

    upstream_app = web.Application()
    upstream_app.router.add_route("*", "/{tail:.*}", upstream_handler)
    upstream_runner, upstream_url = await _serve(upstream_app)
    client = UpstreamClient()
    spans = _Spans()
    handler = ProxyHandler(OpenAIAdapter(upstream_url), load_settings(env={}), client,
                           SpanRecorder(Resource.create({}), InstrumentationScope("test"), [spans]))
    forward = next(i for i, stage in enumerate(handler.stages) if isinstance(stage, ForwardStage))
    handler.stages = handler.stages[:forward] + (BudgetStage(), CacheStage()) + handler.stages[forward:]

    async def serve(client, reply) -> None:
        await handler(client, reply, "/" + client.request.match_info["tail"])

    route = aiohttp_handler(serve)

    proxy_app = web.Application()
    proxy_app.router.add_route("*", "/v1/{tail:.*}", route)
    proxy_runner, proxy_url = await _serve(proxy_app)
    try:
        yield proxy_url, upstream_calls, spans
    finally:
        await after_response.drain_pending()
        await proxy_runner.cleanup()
        await upstream_runner.cleanup()
        await client.close()


async def _post(url: str, headers: dict[str, str]) -> tuple[int, dict, bytes]:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as response:
            return response.status, dict(response.headers), await response.read()


async def test_an_inserted_stage_refuses_in_the_providers_shape_and_nothing_is_forwarded(proxy):
    url, upstream_calls, spans = proxy
    status, headers, body = await _post(url, {"X-Team": "over-budget", "GenOps-Request-Id": "budget-1"})
    assert status == 429
    assert orjson.loads(body)["error"] == {"message": "The team's budget is spent.", "type": "rate_limit_error",
                                           "param": None, "code": "budget_exceeded"}
    assert headers["GenOps-Request-Id"] == "budget-1"
    assert upstream_calls == []
    await after_response.drain_pending()
    (span,) = spans.ended
    assert span.attributes[sc.GENOPS_REQUEST_ID] == "budget-1"
    assert span.attributes[sc.HTTP_RESPONSE_STATUS_CODE] == 429
    assert span.attributes[sc.ERROR_TYPE] == "budget_exceeded"
    assert span.attributes[sc.GEN_AI_REQUEST_MODEL] == "gpt-4o-mini"  # parse ran before the new stage
    assert span.status.description == "The team's budget is spent."

    status, _, body = await _post(url, {"X-Team": "fine"})  # the same chain forwards the next call
    assert status == 200 and orjson.loads(body) == COMPLETION and len(upstream_calls) == 1


async def test_the_span_gets_the_adapters_response_facts_and_the_guards_redaction(proxy):
    url, _, spans = proxy
    status, _, _ = await _post(url, {"GenOps-Request-Id": "ok-1"})
    assert status == 200
    await after_response.drain_pending()
    (span,) = spans.ended
    assert span.attributes[sc.GEN_AI_RESPONSE_ID] == "c1" and span.attributes[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ["stop"]
    assert (span.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS], span.attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS]) == (3, 1)
    assert sc.GENOPS_USAGE_ESTIMATED not in span.attributes and span.attributes[sc.GENOPS_COST_USD] > 0

    status, _, _ = await _post(url, {"X-Upstream-Error": "quote", "GenOps-Safety-Policy": "pii=redact"})
    assert status == 400
    await after_response.drain_pending()
    span = spans.ended[-1]
    assert span.attributes[sc.ERROR_TYPE] == "content_refused"  # read by the adapter from the upstream's body
    assert span.status.description == "Invalid content: 'card [REDACTED:payment_card]'"  # stored redacted


async def test_a_stage_that_answers_skips_the_rest_and_the_call_is_still_recorded(proxy):
    url, upstream_calls, spans = proxy
    status, _, body = await _post(url, {"X-Cached": "yes", "GenOps-Request-Id": "cached-1"})
    assert status == 200 and orjson.loads(body) == COMPLETION
    assert upstream_calls == []  # forward and relay were skipped
    await after_response.drain_pending()
    (span,) = spans.ended
    assert span.attributes[sc.GENOPS_REQUEST_ID] == "cached-1"
    assert span.attributes[sc.HTTP_RESPONSE_STATUS_CODE] == 200
    assert sc.GENOPS_UPSTREAM_URL in span.attributes  # route ran
    assert sc.GENOPS_REQUEST_BODY_BYTES not in span.attributes  # forward did not


async def test_the_handler_runs_the_chain_build_chain_makes():
    adapter, client = OpenAIAdapter("http://upstream"), UpstreamClient()
    try:
        handler = ProxyHandler(adapter, load_settings(env={}), client, SpanRecorder(
            Resource.create({}), InstrumentationScope("test"), []))
        names = [type(stage).__name__ for stage in handler.stages]
        assert names == ["ParseStage", "RouteStage", "SafetyStage", "ForwardStage", "RelayStage"]
        assert [type(stage).__name__ for stage in build_chain(adapter, load_settings(env={}), client).stages] == names
    finally:
        await client.close()


def test_call_result_is_frozen_and_is_what_the_span_attributes_come_from():
    request = RequestFacts(operation="chat", model="gpt-4o-mini")
    response = ResponseFacts(response_model="gpt-4o-mini", usage=Usage(input_tokens=3, output_tokens=1))
    adapter = OpenAIAdapter("http://u")
    result = call_result(adapter, request, response, Upstream(url="http://u/v1/chat/completions?k=1",
                         stored_url="http://u/v1/chat/completions"), 200, "rid", 0, 2_000_000,
                         request_body_bytes=10, response_body_bytes=20, context={"session.id": "s"},
                         cost=call_cost(adapter, request, response))
    assert isinstance(result, CallResult)
    with pytest.raises(AttributeError):
        result.status = 500  # type: ignore[misc]
    attrs = call_attributes(result)
    assert list(attrs)[:4] == [sc.GENOPS_REQUEST_ID, sc.GENOPS_ROUTE, sc.HTTP_RESPONSE_STATUS_CODE, sc.GENOPS_UPSTREAM_URL]
    assert attrs[sc.GENOPS_UPSTREAM_URL] == "http://u/v1/chat/completions"  # never the query string
    assert attrs[sc.GENOPS_REQUEST_BODY_BYTES] == 10 and attrs[sc.GENOPS_RESPONSE_BODY_BYTES] == 20
    assert attrs["session.id"] == "s" and attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == 3
    assert attrs[sc.GENOPS_COST_USD] > 0 and list(attrs)[-3:] == [sc.GENOPS_COST_USD, sc.GENOPS_COST_INPUT_USD,
                                                                 sc.GENOPS_COST_OUTPUT_USD]
