"""The proxy's own per-call Python work, piece by piece, with no network.

Runs the steps the handler takes for the benchmark's chat request and response
(bench/proxy_bench.py BODY, bench/upstream.py COMPLETION) in a loop and prints the mean
wall time of each step in microseconds. aiohttp's own request/response work, the event loop
and export are not included: this is the part of the per-call cost the proxy's code controls.

    .venv/bin/python bench/hotpath_micro.py            # 5 rounds of 3,000 calls after 300 warm-up calls
    .venv/bin/python bench/hotpath_micro.py --calls 20000 --rounds 3
    .venv/bin/python bench/hotpath_micro.py --stream   # also a stream=true call's rewrite (first event, rest)
    .venv/bin/python bench/hotpath_micro.py --agent    # an agent's call: long system prompt and history

Each figure is the lowest per-call mean over the rounds: other processes on a shared machine
only ever add time, so the minimum is the least disturbed estimate. Compare runs made back to back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("GENOPS_DATA_DIR", tempfile.mkdtemp(prefix="genops-micro-"))

from multidict import CIMultiDict, CIMultiDictProxy  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402
from upstream import COMPLETION, _stream_events  # noqa: E402

from genops.config import load_settings  # noqa: E402
from genops.proxy.call_result import call_result  # noqa: E402
from genops.proxy.context import call_context, request_id_for  # noqa: E402
from genops.proxy.headers import downstream_headers, upstream_headers  # noqa: E402
from genops.proxy.pricing import price_call  # noqa: E402
from genops.proxy.providers import build_adapters  # noqa: E402
from genops.proxy.safety.guard import SafetyConfig  # noqa: E402
from genops.proxy.spans import call_attributes  # noqa: E402
from genops.proxy.targets import TargetPolicy, route_upstream  # noqa: E402
from genops.runtime.telemetry import build_telemetry  # noqa: E402
from genops.storage.span_batch import SpanEncoder, batch_payload, compact_rows  # noqa: E402

BODY = json.dumps({"model": "gpt-4o-mini", "messages": [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France? Answer in one short sentence."}]}).encode()
STREAM_BODY = json.dumps({**json.loads(BODY), "stream": True}).encode()


def agent_body(turn: int) -> bytes:
    """A coding agent's call: a 6,000-character system prompt and ten earlier turns (about 13,000
    characters of text), which an agent sends again on every call, then this call's own new
    message (different on every call, as the agent's next question is)."""
    system = ("You are a coding agent. Follow the repository conventions, run the tests, and explain "
              "your changes. " * 60)[:6000]
    messages = [{"role": "system", "content": system}]
    for i in range(10):
        messages.append({"role": "user", "content": f"Step {i}: look at src/module_{i}.py, say what handle_request "
                                                    f"does, then propose a fix for the failing test test_{i}. " * 2})
        messages.append({"role": "assistant", "content": f"handle_request in module_{i} parses the body, validates "
                                                         "the headers and forwards the call. The failing test expects "
                                                         "a 404 for unknown routes: return early when no route "
                                                         "matches. " * 2})
    messages.append({"role": "user", "content": f"Call {turn}: the fix for test_{turn} did not work, the "
                                                "route table is built after the handler runs. What now? " * 2})
    return json.dumps({"model": "gpt-4o-mini", "messages": messages}).encode()
STREAM = b"".join(_stream_events(True))  # what the canned upstream sends, all in one read


class _Sink:
    """Collects finished spans instead of exporting them."""

    def __init__(self) -> None:
        self.spans: list = []

    def on_end(self, span) -> None:  # SpanProcessor protocol
        self.spans.append(span)

    def shutdown(self) -> None:
        pass

    def force_flush(self, *_: object) -> bool:
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stream", action="store_true", help="also time the stream rewrite of a stream=true call")
    parser.add_argument("--agent", action="store_true",
                        help="an agent's call instead: a long system prompt and history, the same on every call")
    args = parser.parse_args()
    turns = iter(range(1 << 62))

    settings = load_settings()
    adapter = next(a for a in build_adapters(settings) if a.name == "openai")
    headers = CIMultiDictProxy(CIMultiDict({"Host": "127.0.0.1:1", "Content-Type": "application/json",
                                            "Authorization": "Bearer sk-bench", "Content-Length": str(len(BODY))}))
    upstream_response = CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json", "x-request-id": "req_bench",
                                                      "Content-Length": str(len(COMPLETION))}))
    safety = SafetyConfig(settings, "openai")
    targets = TargetPolicy.from_settings(settings)
    telemetry = build_telemetry(settings, None)
    sink = _Sink()
    telemetry.tracer.processors.append(sink)
    totals: dict[str, int] = {}

    def tick(name: str, started: int) -> int:
        now = time.perf_counter_ns()
        totals[name] = totals.get(name, 0) + now - started
        return now

    async def one() -> None:
        body = agent_body(next(turns)) if args.agent else BODY  # built before the clock starts
        t = time.perf_counter_ns()
        request_id = request_id_for(headers)
        t = tick("request_id", t)
        span = telemetry.tracer.start_span("POST /v1/chat/completions", kind=SpanKind.CLIENT)
        t = tick("start_span", t)
        call = adapter.parse_request("POST", "/chat/completions", body, headers)
        t = tick("parse_request", t)
        upstream = route_upstream(adapter, targets, "/chat/completions", "", headers)
        t = tick("route", t)
        guard = safety.begin(adapter, call, headers)
        forwarded = await guard.before_forward(body)
        t = tick("safety_before", t)
        adapter.prepare_body(call, forwarded)  # (body to send, usage injected)
        upstream_headers(headers, streaming=call.stream)
        t = tick("prep+headers", t)
        downstream_headers(upstream_response)
        t = tick("downstream_headers", t)
        response = adapter.parse_response(call, 200, COMPLETION)
        guard.observe_response(COMPLETION)
        t = tick("parse_response", t)
        context = call_context(headers, adapter, call)
        t = tick("call_context", t)
        if guard.needs_thread(response):  # as the record stage decides (proxy/stages/record.py)
            await guard.finish(span, response)
        else:
            guard.finish_inline(span, response)
        t = tick("safety_finish", t)
        attributes = call_attributes(call_result(adapter, call, response, upstream, 200, request_id, 0, 1_000_000,
                                                 context=context))
        t = tick("call_attributes", t)
        price_call(adapter.price_provider(call), response.response_model or call.model, response.usage)
        t = tick("price", t)
        span.set_attributes(attributes)
        span.end()
        tick("span_end", t)
        if args.stream:
            t = time.perf_counter_ns()
            streamed = adapter.parse_request("POST", "/chat/completions", STREAM_BODY, headers)
            _, injected = adapter.prepare_body(streamed, STREAM_BODY)
            state = adapter.new_stream(streamed, 0, injected)
            events = state.rewrite_events(STREAM)
            next(events, None)
            t = tick("stream: 1st event", t)
            for _ in events:
                pass
            state.finish()
            tick("stream: rest", t)

    best: dict[str, float] = {}
    best_total = float("inf")

    async def run() -> None:
        nonlocal best_total
        for _ in range(300):
            await one()
        for _ in range(args.rounds):
            totals.clear()
            sink.spans.clear()
            for _ in range(args.calls):
                await one()
            for name, total in totals.items():
                best[name] = min(best.get(name, float("inf")), total / args.calls / 1000)
            best_total = min(best_total, sum(v for k, v in totals.items() if not k.startswith("stream")) / args.calls / 1000)

    asyncio.run(run())
    stream_keys = [k for k in best if k.startswith("stream")]
    for name, value in best.items():
        if name not in stream_keys:
            print(f"{name:20s} {value:7.1f} us")
    print(f"{'TOTAL':20s} {best_total:7.1f} us (best round; the steps' minima need not come from one round)")
    for name in stream_keys:
        print(f"{name:20s} {best[name]:7.1f} us")
    encoder = SpanEncoder()
    lines = [encoder.encode(span) for span in sink.spans]
    started = time.perf_counter_ns()
    for span in sink.spans:  # each line dropped at once, as the proxy does once it is in its chunk
        encoder.encode(span)
    print(f"{'span encode':20s} {(time.perf_counter_ns() - started) / len(lines) / 1000:7.1f} us (request path, at span end)")
    payload = batch_payload(encoder.header(), lines)
    started = time.perf_counter_ns()
    compact_rows(payload)
    print(f"{'rows from batch':20s} {(time.perf_counter_ns() - started) / len(lines) / 1000:7.1f} us (store process)")


if __name__ == "__main__":
    main()
