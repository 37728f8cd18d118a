"""What gateway routing adds to a call's CPU, with no network (issue #21: at most 20 µs).

Times, per call, the work the route and forward stages do for the benchmark's chat request
(bench/hotpath_micro.py BODY), in a loop:

- ``unrouted``: a model that names no route: the route stage (its set lookup, the usual upstream),
  the headers and body the forward stage prepares, and the relay's reading of the answer;
- ``routed``: a weighted, sticky route to another OpenAI model: the plan, the target's body (model
  rewritten), URL and headers, and the route attributes on the span;
- ``routed, translated``: the same to an Anthropic target: the request translated, and the target's
  whole answer translated back and read by the target's adapter.

    .venv/bin/python bench/routing_micro.py                 # 5 rounds of 5,000 calls
    .venv/bin/python bench/routing_micro.py --calls 20000 --json

Each figure is the lowest per-call mean over the rounds (other processes only ever add time).
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
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("GENOPS_DATA_DIR", tempfile.mkdtemp(prefix="genops-routing-micro-"))

from aiohttp.test_utils import make_mocked_request  # noqa: E402
from multidict import CIMultiDict  # noqa: E402

from genops.config import load_settings  # noqa: E402
from genops.proxy.headers import upstream_headers  # noqa: E402
from genops.proxy.providers import build_adapters  # noqa: E402
from genops.proxy.routing.live import LiveRoutes  # noqa: E402
from genops.proxy.routing.router import Router  # noqa: E402
from genops.proxy.stages.base import Exchange  # noqa: E402
from genops.proxy.stages.route import RouteStage  # noqa: E402
from genops.routes import RouteTable, parse_routes  # noqa: E402

BODY = json.dumps({"model": "gpt-4o-mini", "user": "alice", "messages": [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France? Answer in one short sentence."}]}).encode()
OPENAI_ANSWER = json.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "The capital of France is Paris."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 25, "completion_tokens": 8, "total_tokens": 33}}).encode()
ANTHROPIC_ANSWER = json.dumps({
    "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
    "content": [{"type": "text", "text": "The capital of France is Paris."}], "stop_reason": "end_turn",
    "stop_sequence": None, "usage": {"input_tokens": 25, "output_tokens": 8}}).encode()
ROUTES = [
    {"name": "support-bot", "strategy": "weighted", "sticky": "user",
     "retry": {"attempts": 2}, "targets": [{"target": "openai:gpt-4o", "weight": 90},
                                           {"target": "openai:gpt-4.1-mini", "weight": 10}],
     "fallback": ["openai:gpt-4o-mini"]},
    {"name": "claude-bot", "targets": ["anthropic:claude-haiku-4-5"]},
]


class _Span:
    def set_attributes(self, attributes: dict[str, Any]) -> None:
        self.attributes = attributes

    def update_name(self, name: str) -> None:
        self.name = name

    def get_span_context(self) -> Any:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    env = {**os.environ, "ANTHROPIC_API_KEY": "sk-ant-bench", "OPENAI_API_KEY": "sk-bench"}
    settings = load_settings(env={k: v for k, v in env.items() if k == "GENOPS_DATA_DIR"})
    adapters = build_adapters(settings, env={})
    openai = next(a for a in adapters if a.name == "openai")
    live = LiveRoutes(RouteTable(parse_routes(ROUTES, "bench", env={})), env=env)
    router = Router(live, adapters, env=env)
    stage = RouteStage(openai, settings, router)

    async def no_send(*_: Any) -> Any:
        raise AssertionError("never sent")

    attempts = router.attempts_for(openai, no_send, None)
    headers = CIMultiDict({"Authorization": "Bearer sk-client", "Content-Type": "application/json",
                           "User-Agent": "OpenAI/Python 1.99"})
    request = make_mocked_request("POST", "/v1/chat/completions", headers=headers)

    def exchange_for(model: str) -> Exchange:
        body = BODY.replace(b'"gpt-4o-mini"', json.dumps(model).encode())
        exchange = Exchange(request, None, "/chat/completions", "rid", 0, 0, _Span(), "00-x")  # type: ignore[arg-type]
        exchange.body = body
        exchange.request_facts = openai.parse_request("POST", "/chat/completions", body, request.headers)
        return exchange

    async def unrouted(exchange: Exchange) -> None:
        # the route stage, then what the forward stage prepares before it sends (as routed() below)
        await stage.run(exchange)
        upstream = exchange.upstream
        assert upstream is not None and exchange.request_facts is not None
        sent = upstream_headers(request.headers, streaming=False, raw_bytes_ok=True)
        for name in upstream.drop_headers:
            sent.popall(name, None)
        sent.update(upstream.set_headers)
        openai.prepare_body(exchange.request_facts, exchange.body)
        openai.parse_response(exchange.request_facts, 200, OPENAI_ANSWER)  # the relay reads every answer

    async def routed(exchange: Exchange) -> None:
        await stage.run(exchange)
        exchange.base_headers = upstream_headers(request.headers, streaming=False, raw_bytes_ok=True)
        assert exchange.plan is not None
        prepared = attempts.prepare(exchange, exchange.plan.steps[0])
        attempts._commit(exchange, prepared, exchange.plan.steps[0].reason, 1, 0.0)
        if exchange.translation is None:
            prepared.adapter.parse_response(prepared.facts, 200, OPENAI_ANSWER)

    async def translated(exchange: Exchange) -> None:
        await routed(exchange)
        assert exchange.translation is not None and exchange.adapter is not None
        exchange.translation.response(200, ANTHROPIC_ANSWER)
        exchange.adapter.parse_response(exchange.request_facts, 200, ANTHROPIC_ANSWER)  # type: ignore[arg-type]

    async def measure(work: Any, model: str) -> float:
        best = float("inf")
        exchanges = [exchange_for(model) for _ in range(args.calls)]
        for _ in range(args.rounds):
            exchanges = [exchange_for(model) for _ in range(args.calls)]
            started = time.process_time_ns()
            for exchange in exchanges:
                await work(exchange)
            best = min(best, (time.process_time_ns() - started) / args.calls / 1000.0)
        return best

    async def run() -> dict[str, float]:
        return {
            "unrouted (us)": await measure(unrouted, "gpt-4o-mini"),
            "routed, same format (us)": await measure(routed, "support-bot"),
            "routed, translated to Anthropic (us)": await measure(translated, "claude-bot"),
        }

    figures = asyncio.run(run())
    base = figures["unrouted (us)"]
    figures["added by routing, same format (us)"] = figures["routed, same format (us)"] - base
    figures["added by routing, translated (us)"] = figures["routed, translated to Anthropic (us)"] - base
    if args.json:
        print(json.dumps({k: round(v, 2) for k, v in figures.items()}))
    else:
        for name, value in figures.items():
            print(f"{name:40s} {value:8.2f}")


if __name__ == "__main__":
    main()
