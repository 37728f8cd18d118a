"""Gateway routes end to end: the official openai SDK names a route as its model, a real
``genops serve`` picks, retries and falls back across the fake providers, translates to
Anthropic, and records every attempt in ClickHouse (chDB)."""

from __future__ import annotations

import asyncio
import collections
import signal
import textwrap
import time
import uuid

import aiohttp
import openai
import pytest

from tests.conftest import free_port, start_proxy, upstream_env

pytestmark = pytest.mark.e2e

ROUTES = """
[[routes]]
name = "support-bot"
strategy = "weighted"
sticky = "user"
retry = { attempts = 2, on = [429, 500, 502, 503, 504, "timeout"], backoff_ms = 50 }

[[routes.targets]]
target = "openai:gpt-4o-mini"
weight = 90

[[routes.targets]]
target = "anthropic:claude-haiku-4-5"
weight = 10

[routes.fallback]
targets = ["openai:gpt-4o"]

[[routes]]
name = "flaky-first"
strategy = "fallback"
retry = { attempts = 2, backoff_ms = 10 }
targets = ["openai:flaky-model", "u/dead:llama", "openai:steady-model"]

[[routes]]
name = "claude-bot"
targets = ["anthropic:claude-haiku-4-5"]

[[routes]]
name = "keyless"
strategy = "fallback"
targets = ["u/nokey:llama", "openai:gpt-4o-mini"]

[[routes]]
name = "gemini-bot"
targets = ["gemini:gemini-2.0-flash"]

[[routes]]
name = "rate-limited"
retry = { attempts = 2, backoff_ms = 10 }
targets = ["openai:limited-model"]

[[routes]]
name = "impatient"
retry = { attempts = 2, backoff_ms = 10, max_wait_s = 0.5 }
targets = ["openai:patience-model"]

[[routes]]
name = "slow-first"
strategy = "fallback"
timeout_s = 0.5
targets = ["openai:slow-model", "openai:quick-model"]

[[routes]]
name = "only-failing"
retry = { attempts = 2, backoff_ms = 10 }
targets = ["openai:broken-model"]
"""

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def routed(tmp_path_factory, fake_upstream):
    data_dir = tmp_path_factory.mktemp("routes")
    (data_dir / "genops.toml").write_text(textwrap.dedent(ROUTES))
    env = upstream_env(fake_upstream.url)
    env.update({
        "GENOPS_UPSTREAM_DEAD": f"http://127.0.0.1:{free_port()}/v1",  # nothing listens there
        "GENOPS_KEY_DEAD": "sk-dead-held",
        "ANTHROPIC_API_KEY": "sk-ant-held-by-genops",
        "OPENAI_API_KEY": "sk-openai-held-by-genops",
        "GEMINI_API_KEY": "gm-held-by-genops",
        "GENOPS_UPSTREAM_NOKEY": fake_upstream.url + "/v1",  # GENOPS_KEY_NOKEY is not set
    })
    proxy = start_proxy(data_dir, env)
    yield proxy
    proxy.stop()


def client(proxy, **headers):
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-client-own-key", max_retries=0,
                         default_headers=headers or None)


def call_rows(proxy, request_id, count=1):
    """The spans of one call's trace (the call and its failed attempts), oldest first."""
    return proxy.wait_rows(
        "SELECT SpanName, ParentSpanId, StatusCode, SpanAttributes AS a FROM otel_traces WHERE TraceId IN "
        f"(SELECT TraceId FROM otel_traces WHERE SpanAttributes['genops.request.id'] = '{request_id}') "
        "ORDER BY Timestamp", count)


def test_weights_hold_over_2000_calls(routed):
    async def run():
        tag = uuid.uuid4().hex
        limit = asyncio.Semaphore(16)
        # Plain HTTP in the OpenAI format (the SDK's own CPU would make 2,000 calls slow on 2 cores).
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk-client-own-key",
                                                  "GenOps-Session-Id": tag}) as session:
            async def one(i):
                async with limit:  # a user per call: stickiness then spreads users by weight
                    body = {"model": "support-bot", "user": f"{tag}-{i}", "messages": [{"role": "user", "content": "hi"}]}
                    async with session.post(routed.url + "/v1/chat/completions", json=body) as response:
                        assert response.status == 200, await response.text()
                        await response.read()
            await asyncio.gather(*(one(i) for i in range(2000)))
        return tag

    tag = asyncio.run(run())
    rows = routed.wait_rows(
        "SELECT SpanAttributes['genops.route.target'] AS target, count() AS n FROM otel_traces "
        f"WHERE SpanAttributes['gen_ai.conversation.id'] = '{tag}' GROUP BY target", 2, timeout=60)
    counts = {row["target"]: int(row["n"]) for row in rows}
    deadline = time.monotonic() + 30
    while sum(counts.values()) < 2000 and time.monotonic() < deadline:
        time.sleep(0.5)
        counts = {row["target"]: int(row["n"]) for row in routed.sql(
            "SELECT SpanAttributes['genops.route.target'] AS target, count() AS n FROM otel_traces "
            f"WHERE SpanAttributes['gen_ai.conversation.id'] = '{tag}' GROUP BY target")}
    assert sum(counts.values()) == 2000, counts
    # 10% expected: within 4 binomial standard deviations (sqrt(2000 * 0.1 * 0.9) = 13.4 calls)
    assert abs(counts["anthropic:claude-haiku-4-5"] - 200) <= 54, counts
    assert set(counts) == {"openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"}


def test_a_user_keeps_its_target(routed):
    via = client(routed)
    for user in ("alice", "bob", "carol", "dave", "erin"):
        models = {via.chat.completions.create(model="support-bot", user=user,
                                              messages=[{"role": "user", "content": "hi"}]).model for _ in range(8)}
        assert len(models) == 1, (user, models)


def test_a_failing_target_is_retried_then_falls_back(routed, request_id):
    via = client(routed, **{"GenOps-Request-Id": request_id, "X-Fake-Error-Rate": "1",
                            "X-Fake-Error-Model": "gpt-4o-mini", "GenOps-User-Id": "user-on-mini"})
    # the sticky user must land on gpt-4o-mini for this test to mean anything: find one that does
    answer = via.chat.completions.create(model="support-bot", messages=[{"role": "user", "content": "hi"}])
    rows = call_rows(routed, request_id)
    call = next(r for r in rows if r["ParentSpanId"] == "")
    if call["a"]["genops.route.target"] == "anthropic:claude-haiku-4-5" and call["a"]["genops.route.attempt"] == "1":
        pytest.skip("this sticky user is on the 10% target")  # crc32 of a fixed id: does not happen (checked)
    assert answer.model.startswith("gpt-4o-2024")  # the fallback answered, the client got a 200
    attempts = [r for r in rows if r["SpanName"] == "route.attempt"]
    assert [(a["a"]["genops.route.target"], a["a"]["genops.route.attempt"], a["a"]["genops.route.reason"],
             a["a"]["http.response.status_code"], a["StatusCode"]) for a in attempts] == [
        ("openai:gpt-4o-mini", "1", "sticky", "500", "Error"),
        ("openai:gpt-4o-mini", "2", "retry", "500", "Error"),
    ]
    assert all(a["ParentSpanId"] != "" for a in attempts)
    assert float(attempts[1]["a"]["genops.route.wait_ms"]) >= 50  # the backoff before the retry
    assert call["a"]["genops.route.target"] == "openai:gpt-4o"
    assert call["a"]["genops.route.attempt"] == "3"
    assert call["a"]["genops.route.reason"] == "fallback"
    assert call["a"]["genops.route.name"] == "support-bot"
    assert call["a"]["gen_ai.request.model"] == "gpt-4o"
    assert call["SpanName"] == "chat gpt-4o"
    assert call["StatusCode"] == "Unset"


def test_a_stream_falls_back_before_its_first_byte(routed, request_id):
    via = client(routed, **{"GenOps-Request-Id": request_id, "X-Fake-Error-Rate": "1",
                            "X-Fake-Error-Model": "flaky-model"})
    chunks = list(via.chat.completions.create(model="flaky-first", stream=True, stream_options={"include_usage": True},
                                              messages=[{"role": "user", "content": "Tell me a story."}]))
    assert {c.model for c in chunks} == {"steady-model"}  # one answer, from the target that answered
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None
    call = next(r for r in call_rows(routed, request_id) if r["ParentSpanId"] == "")
    assert call["a"]["genops.route.target"] == "openai:steady-model" and call["a"]["gen_ai.request.stream"] == "true"


def test_a_refused_connection_falls_back_in_order(routed, request_id):
    via = client(routed, **{"GenOps-Request-Id": request_id, "X-Fake-Error-Rate": "1",
                            "X-Fake-Error-Model": "flaky-model"})
    answer = via.chat.completions.create(model="flaky-first", messages=[{"role": "user", "content": "hi"}])
    assert answer.model == "steady-model"
    rows = call_rows(routed, request_id)
    attempts = [(r["a"]["genops.route.target"], r["a"]["error.type"]) for r in rows if r["SpanName"] == "route.attempt"]
    assert attempts == [("openai:flaky-model", "500"), ("openai:flaky-model", "500"),
                        ("u/dead:llama", "upstream_unreachable"), ("u/dead:llama", "upstream_unreachable")]
    call = next(r for r in rows if r["ParentSpanId"] == "")
    assert call["a"]["genops.route.attempt"] == "5" and call["a"]["genops.route.target"] == "openai:steady-model"


def test_retry_after_is_honoured(routed, request_id):
    headers = {"X-Fake-Error-Rate": "0.5", "X-Fake-Error-Model": "limited-model", "X-Fake-Error-Status": "429"}
    via = client(routed, **headers)
    via.chat.completions.create(model="rate-limited", messages=[{"role": "user", "content": "hi"}])  # the 1st: 200
    via = client(routed, **headers, **{"GenOps-Request-Id": request_id})
    answer = via.chat.completions.create(model="rate-limited", messages=[{"role": "user", "content": "hi"}])
    assert answer.model == "limited-model"  # the 2nd request got a 429 with retry-after: 1, the 3rd a 200
    rows = call_rows(routed, request_id)
    failed = [r for r in rows if r["SpanName"] == "route.attempt"]
    assert [(r["a"]["http.response.status_code"], r["a"]["genops.route.attempt"]) for r in failed] == [("429", "1")]
    call = next(r for r in rows if r["ParentSpanId"] == "")
    assert call["a"]["genops.route.attempt"] == "2" and call["a"]["genops.route.reason"] == "retry"
    # it waited what the provider asked (1 s), not its own 10 ms backoff
    assert float(call["a"]["genops.route.wait_ms"]) == 1000.0


def test_a_retry_after_too_long_to_wait_with_no_target_left_is_the_clients_answer(routed, request_id):
    """Retry-After 1 s beyond the route's max_wait_s 0.5 s and no other target: the provider's 429 (and its
    Retry-After) goes to the client rather than a proxy-made error."""
    via = client(routed, **{"GenOps-Request-Id": request_id, "X-Fake-Error-Rate": "1",
                            "X-Fake-Error-Model": "patience-model", "X-Fake-Error-Status": "429"})
    with pytest.raises(openai.RateLimitError) as caught:
        via.chat.completions.create(model="impatient", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.response.headers.get("retry-after") == "1"
    call = next(r for r in call_rows(routed, request_id) if r["ParentSpanId"] == "")
    assert call["a"]["genops.route.attempt"] == "1" and call["a"]["http.response.status_code"] == "429"


def test_a_target_that_does_not_answer_in_time_falls_back(routed, request_id):
    via = client(routed, **{"GenOps-Request-Id": request_id, "X-Fake-Delay-Ms": "5000",
                            "X-Fake-Delay-Model": "slow-model"})
    answer = via.chat.completions.create(model="slow-first", messages=[{"role": "user", "content": "hi"}])
    assert answer.model == "quick-model"
    rows = call_rows(routed, request_id)
    failed = [r for r in rows if r["SpanName"] == "route.attempt"]
    assert [(r["a"]["genops.route.target"], r["a"]["error.type"]) for r in failed] == [
        ("openai:slow-model", "upstream_timeout")]
    call = next(r for r in rows if r["ParentSpanId"] == "")
    assert call["a"]["genops.route.target"] == "openai:quick-model" and call["a"]["genops.route.attempt"] == "2"


def test_when_every_attempt_fails_the_client_gets_the_providers_own_error(routed, request_id):
    via = client(routed, **{"GenOps-Request-Id": request_id, "X-Fake-Error-Rate": "1",
                            "X-Fake-Error-Model": "broken-model"})
    with pytest.raises(openai.InternalServerError) as caught:
        via.chat.completions.create(model="only-failing", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 500
    rows = call_rows(routed, request_id, 2)
    call = next(r for r in rows if r["ParentSpanId"] == "")
    assert call["StatusCode"] == "Error" and call["a"]["genops.route.attempt"] == "2"
    assert [r["a"]["genops.route.attempt"] for r in rows if r["SpanName"] == "route.attempt"] == ["1"]


def test_an_openai_client_routed_to_anthropic_gets_openai_answers(routed, fake_upstream, request_id):
    via = client(routed, **{"GenOps-Request-Id": request_id})
    plain = via.chat.completions.create(model="claude-bot", max_tokens=64, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}])
    assert plain.object == "chat.completion" and plain.model == "claude-haiku-4-5"
    assert plain.choices[0].message.content and plain.choices[0].finish_reason == "stop"
    assert plain.usage.prompt_tokens > 0 and plain.usage.completion_tokens > 0
    sent = fake_upstream.requests()[-1]
    assert sent["path"] == "/v1/messages"
    # GenOps's key for Anthropic went there; the client's OpenAI key did not
    assert sent["headers"].get("x-api-key") == "sk-ant-held-by-genops"
    assert "sk-client-own-key" not in str(sent["headers"])
    span = routed.span(request_id)
    attrs = span["SpanAttributes"]
    assert attrs["gen_ai.provider.name"] == "anthropic" and attrs["gen_ai.request.model"] == "claude-haiku-4-5"
    assert attrs["gen_ai.usage.input_tokens"] == str(plain.usage.prompt_tokens)
    assert attrs["gen_ai.usage.output_tokens"] == str(plain.usage.completion_tokens)
    assert float(attrs["genops.cost.usd"]) > 0  # priced as Anthropic's model
    assert "sk-client-own-key" not in str(span) and "sk-ant-held-by-genops" not in str(span)

    chunks = list(via.chat.completions.create(model="claude-bot", stream=True, stream_options={"include_usage": True},
                                              messages=[{"role": "user", "content": "Tell me a story."}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]

    tools = via.chat.completions.create(model="claude-bot", tools=[WEATHER_TOOL],
                                        messages=[{"role": "user", "content": "Weather in Paris?"}])
    call = tools.choices[0].message.tool_calls[0]
    assert tools.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert "city" in call.function.arguments
    follow_up = via.chat.completions.create(model="claude-bot", tools=[WEATHER_TOOL], messages=[
        {"role": "user", "content": "Weather in Paris?"}, tools.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}])
    assert follow_up.choices[0].finish_reason == "stop" and follow_up.choices[0].message.content


def test_an_openai_client_routed_to_gemini_gets_openai_answers(routed, fake_upstream, request_id):
    via = client(routed, **{"GenOps-Request-Id": request_id})
    plain = via.chat.completions.create(model="gemini-bot", messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}])
    assert plain.object == "chat.completion" and plain.choices[0].message.content
    assert plain.usage.prompt_tokens > 0
    sent = fake_upstream.requests()[-1]
    assert sent["path"] == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert sent["headers"].get("x-goog-api-key") == "gm-held-by-genops"
    assert "sk-client-own-key" not in str(sent["headers"])
    attrs = routed.span(request_id)["SpanAttributes"]
    assert attrs["gen_ai.provider.name"] == "gcp.gemini" and attrs["gen_ai.request.model"] == "gemini-2.0-flash"
    assert attrs["gen_ai.usage.input_tokens"] == str(plain.usage.prompt_tokens)

    chunks = list(via.chat.completions.create(model="gemini-bot", stream=True, stream_options={"include_usage": True},
                                              messages=[{"role": "user", "content": "Tell me a story."}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert fake_upstream.requests()[-1]["path"] == "/v1beta/models/gemini-2.0-flash:streamGenerateContent"

    tools = via.chat.completions.create(model="gemini-bot", tools=[WEATHER_TOOL],
                                        messages=[{"role": "user", "content": "Weather in Paris?"}])
    call = tools.choices[0].message.tool_calls[0]
    assert tools.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    streamed = list(via.chat.completions.create(model="gemini-bot", tools=[WEATHER_TOOL], stream=True,
                                                messages=[{"role": "user", "content": "Weather in Paris?"}]))
    names = [t.function.name for c in streamed if c.choices for t in (c.choices[0].delta.tool_calls or [])]
    assert "get_weather" in names


def test_a_target_genops_holds_no_key_for_is_skipped_and_the_client_key_stays_home(routed, fake_upstream, request_id):
    fake_upstream.clear()
    via = client(routed, **{"GenOps-Request-Id": request_id})
    answer = via.chat.completions.create(model="keyless", messages=[{"role": "user", "content": "hi"}])
    assert answer.model.startswith("gpt-4o-mini")
    assert [r["path"] for r in fake_upstream.requests()] == ["/v1/chat/completions"]  # once: nothing went to u/nokey
    rows = call_rows(routed, request_id)
    skipped = [r for r in rows if r["SpanName"] == "route.attempt"]
    assert skipped[0]["a"]["error.type"] == "route_target_no_key"
    assert skipped[0]["a"]["genops.route.target"] == "u/nokey:llama"
    # same provider as the client (openai): the client's own key is the one sent
    assert fake_upstream.requests()[-1]["headers"]["Authorization"] == "Bearer sk-client-own-key"


def test_a_route_name_on_an_endpoint_routes_do_not_serve_is_a_clear_400(routed):
    via = client(routed)
    with pytest.raises(openai.BadRequestError) as caught:
        via.completions.create(model="claude-bot", prompt="hi")
    assert "cannot translate" in str(caught.value) or "route" in str(caught.value)


def test_routes_reload_when_the_file_changes_and_a_bad_file_is_refused(routed):
    path = routed.data_dir / "genops.toml"
    original = path.read_text()
    via = client(routed)
    try:
        path.write_text(original + '\n[[routes]]\nname = "added-later"\ntargets = ["openai:gpt-4o"]\n')
        deadline = time.monotonic() + 30
        while True:
            try:
                assert via.chat.completions.create(model="added-later", messages=[{"role": "user", "content": "hi"}]
                                                   ).model.startswith("gpt-4o-2024")
                break
            except (openai.APIStatusError, AssertionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        path.write_text(original + '\n[[routes]]\nname = "broken"\nstrategy = "fastest"\ntargets = ["openai:gpt-4o"]\n')
        deadline = time.monotonic() + 30
        while "config reload refused" not in routed.logs():
            assert time.monotonic() < deadline, routed.logs()[-2000:]
            time.sleep(0.3)
        refusal = next(line for line in routed.logs().splitlines() if "config reload refused" in line)
        assert "strategy: 'fastest' is not one of" in refusal
        # SIGHUP with the bad file: refused with one line, no worker restarted
        routed.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while "SIGHUP refused" not in routed.logs():
            assert time.monotonic() < deadline, routed.logs()[-2000:]
            time.sleep(0.2)
        assert "rolling restart" not in routed.logs().split("SIGHUP refused", 1)[1]
        # the routes in force stay: the route added before still answers
        assert via.chat.completions.create(model="added-later", messages=[{"role": "user", "content": "hi"}]).model
    finally:
        path.write_text(original)


def test_unrouted_calls_are_untouched(routed, fake_upstream, request_id):
    via = client(routed, **{"GenOps-Request-Id": request_id})
    via.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert fake_upstream.requests()[-1]["headers"]["Authorization"] == "Bearer sk-client-own-key"
    attrs = routed.span(request_id)["SpanAttributes"]
    assert not any(key.startswith("genops.route.") for key in attrs)
    counts = collections.Counter(key.split(".")[0] for key in attrs)
    assert counts["gen_ai"] > 0
