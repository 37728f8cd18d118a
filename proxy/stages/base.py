"""The contract between the request path's stages: the :class:`Stage` protocol and the
per-request :class:`Exchange` every stage reads from and writes to.

A stage is built once per route (proxy/stages/__init__.py ``build_chain``) and serves every
request of it, so it keeps no per-request state on itself: what one request needs travels in
its ``Exchange``. Each field of the exchange has one owner (the stage named next to it); the
other stages only read it.
"""

from __future__ import annotations

from typing import Any, Protocol

from opentelemetry import trace

from genops.proxy.client_side import ClientReply, ClientRequest
from genops.proxy.providers.base import ProviderAdapter, RequestFacts, ResponseFacts, Upstream, Usage
from genops.proxy.routing.select import Plan
from genops.proxy.safety.guard import CallGuard
from genops.proxy.translate.base import Translation
from genops.proxy.upstream import UpstreamResponseLike


class Exchange:
    """One request's way through the stages: what each stage found out, for the next ones.

    Plain slots, no methods: one is made per request, so it costs only its attribute writes.
    """

    __slots__ = (
        # set by the driver (proxy/handler.py) before the first stage
        "request", "reply", "tail", "request_id", "started_ns", "started_perf", "span", "traceparent",
        "body",  # parse: the request body; safety: replaced by the masked body when it masks
        "request_facts",  # parse: the adapter's reading of the request (frozen)
        "upstream",  # route (a routed call: forward, once a target answers): where the call goes
        "plan",  # route: a routed call's targets in order (proxy/routing/); None for a plain call
        "client_facts",  # route: a routed call's own request facts (request_facts becomes the target's)
        "base_headers",  # forward: a routed call's client headers as they go upstream, before a target's own
        # forward (a routed call, once a target answered): the adapter that reads the answer (None: the
        # route's own), the answer's translation into the client's format (None: the same format)
        "adapter", "translation",
        "guard",  # safety: the call's CallGuard (scans, masks, blocks; annotates in record)
        "forwarding",  # forward: from here on a response may have started
        "usage_injected",  # forward: the adapter asked the upstream for stream usage the client did not
        "upstream_response",  # forward: the upstream's response, until relay releases it
        "response_facts",  # relay: the adapter's reading of the response (frozen); None if none was read
        "estimated_usage",  # relay: a finished stream's usage with its missing counts estimated (proxy/tokenizer)
        "status",  # relay (or the driver, for a proxy-made error): the status the client got
        "answered",  # relay (or the driver, or a stage that answers itself): an answer has started
        # relay (mid-stream failure, client gone) or the driver (a proxy-made error answer); they
        # win over an error the adapter read from the upstream's response
        "error_type", "error_message",
        # relay: whether the answer counts as a stream (an error answered whole to a stream request
        # does not); None while no answer was relayed (the request's stream flag stands)
        "stream",
        "first_token_perf_ns",  # relay: perf_counter_ns of a stream's first content event
        "request_body_bytes",  # forward: bytes of the client's request body
        "upstream_sent_perf",  # forward: perf_counter_ns when the (answering) request left for the upstream
        "upstream_done_perf",  # relay: perf_counter_ns when the upstream's answer was read to its end
        "response_body_bytes",  # relay: bytes sent to the client
        "stream_chunks",  # relay: stream events read (streamed responses)
        "client_disconnected",  # relay: the client left before the response ended
    )

    def __init__(self, request: ClientRequest, reply: ClientReply, tail: str, request_id: str, started_ns: int,
                 started_perf: int, span: trace.Span, traceparent: str) -> None:
        self.request = request
        self.reply = reply
        self.tail = tail
        self.request_id = request_id
        self.started_ns = started_ns
        self.started_perf = started_perf
        self.span = span
        self.traceparent = traceparent
        self.body = b""
        self.request_facts: RequestFacts | None = None
        self.upstream: Upstream | None = None
        self.plan: Plan | None = None
        self.client_facts: RequestFacts | None = None
        self.base_headers: Any = None
        self.adapter: ProviderAdapter | None = None
        self.translation: Translation | None = None
        self.guard: CallGuard | None = None
        self.forwarding = False
        self.usage_injected = False
        self.upstream_response: UpstreamResponseLike | None = None
        self.response_facts: ResponseFacts | None = None
        self.estimated_usage: Usage | None = None
        self.status = 0
        self.answered = False
        self.error_type: str | None = None
        self.error_message: str | None = None
        self.stream: bool | None = None
        self.first_token_perf_ns: int | None = None
        self.request_body_bytes: int | None = None
        self.upstream_sent_perf: int | None = None
        self.upstream_done_perf: int | None = None
        self.response_body_bytes: int | None = None
        self.stream_chunks: int | None = None
        self.client_disconnected = False


class Stage(Protocol):
    """One step of the request path. ``run`` reads what earlier stages put in the exchange and
    adds what this one owns; it raises :class:`~genops.proxy.providers.base.RequestError` to
    answer the client with a proxy-made error in the provider's shape instead of going on. A
    stage that answers the request itself (a cache hit) answers through ``exchange.reply`` and
    sets ``exchange.status`` and ``exchange.answered``: the stages after it are skipped, record
    still runs."""

    async def run(self, exchange: Exchange) -> None: ...
