"""A routed call's attempts: each target of its plan in turn, each tried up to the route's
``retry.attempts`` times on a failure the route names (a status, a timeout, a refused
connection), waiting the answer's ``Retry-After`` or a doubling backoff in between.

Nothing is retried once the client may have seen a byte: an attempt's answer is judged by its
status line and headers alone, before the relay stage sends anything. The answer kept is the
first one that is not a named failure, or the last one when every attempt failed (the client
gets the provider's own error, not a proxy-made one). Each failed attempt becomes a child span
``route.attempt``; the call's span carries the route facts of the attempt that answered.

Keys: a target reached through another adapter than the client's (another provider, or a named
upstream) never gets the client's credentials; GenOps sends the key it holds for that target
(:func:`genops.routes.target_key_env`), or the attempt fails without being sent.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple

import orjson
from multidict import CIMultiDict
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from genops import semconv as sc
from genops.proxy.providers.base import ProviderAdapter, RequestError, RequestFacts, Upstream
from genops.proxy.routing.latency import LatencyStats
from genops.proxy.routing.select import Plan, Step
from genops.proxy.targets import route_upstream
from genops.proxy.translate import Translation, translation_for
from genops.proxy.upstream import UpstreamResponseLike
from genops.routes import RetryPolicy, target_key_env

#: Request headers that carry a client's credentials or account: never sent to another adapter's upstream.
CREDENTIAL_HEADERS = ("Authorization", "x-api-key", "api-key", "x-goog-api-key", "OpenAI-Organization",
                      "OpenAI-Project", "anthropic-version", "anthropic-beta")
#: How each target provider takes GenOps's key.
_KEY_HEADER = {"anthropic": ("x-api-key", ""), "gemini": ("x-goog-api-key", "")}
_BEARER = ("Authorization", "Bearer ")
#: Longest backoff between two tries of one target.
MAX_BACKOFF_S = 5.0


def wire_format(adapter: ProviderAdapter, operation: str | None) -> str | None:
    """The wire format an adapter speaks for an operation (``openai.chat``, ``anthropic.messages``,
    ``gemini.generate``, ``openai.embeddings``...); None where routes are not served (Azure, Vertex)."""
    name = adapter.name
    if name == "openai" or name.startswith("upstream:"):
        return f"openai.{operation}"
    if name == "anthropic" and operation == "chat":
        return "anthropic.messages"
    if name == "gemini" and operation == "chat":
        return "gemini.generate"
    return None


class Prepared(NamedTuple):
    """One target made ready to send: its adapter, what that adapter reads of the request it gets,
    the URL, body and headers, and the translation of its answer (None: same format)."""

    target: str
    adapter: ProviderAdapter
    facts: RequestFacts
    upstream: Upstream
    body: bytes
    headers: CIMultiDict[str]
    usage_injected: bool
    translation: Translation | None


Send = Callable[[Any, Upstream, bytes, CIMultiDict[str], float | None], Awaitable[UpstreamResponseLike]]


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """The wait an answer asks for: ``retry-after-ms`` (OpenAI), else ``Retry-After`` in seconds or as an HTTP date."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff_s(policy: RetryPolicy, tries_done: int) -> float:
    """The wait before try ``tries_done + 1`` of one target: ``backoff_ms`` doubled per try, capped."""
    return min(MAX_BACKOFF_S, policy.backoff_ms / 1000.0 * (2 ** (tries_done - 1)))


class Attempts:
    """Runs a routed call's plan (proxy/stages/forward.py hands a routed exchange here)."""

    def __init__(self, client_adapter: ProviderAdapter, adapters: Mapping[str, ProviderAdapter], send: Send,
                 tracer: Any, latency: LatencyStats, env: Mapping[str, str] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.client_adapter = client_adapter
        self.adapters = adapters
        self.send = send
        self.tracer = tracer
        self.latency = latency
        self.env = os.environ if env is None else env
        self.sleep = sleep

    async def run(self, exchange: Any) -> None:
        """Send the exchange's plan until a target answers; leaves that answer in ``exchange.upstream_response``
        and what reads it in ``exchange.adapter``, ``request_facts``, ``upstream`` and ``translation``."""
        plan: Plan = exchange.plan
        policy = plan.route.retry
        attempt = 0
        last_error: RequestError | None = None
        steps = plan.steps
        for index, step in enumerate(steps):
            more_targets = index + 1 < len(steps)
            try:
                prepared = self.prepare(exchange, step)
            except RequestError as exc:  # this target cannot be asked (no key, no translation): the next one
                attempt += 1
                self._attempt_span(exchange, step, attempt, time.time_ns(), exc.status, exc.code or exc.error_type, 0.0)
                last_error = exc
                continue
            wait = 0.0
            for tries in range(1, policy.attempts + 1):
                attempt += 1
                if wait > 0:
                    await self.sleep(wait)
                started_ns, started_perf = time.time_ns(), time.perf_counter()
                may_retry = tries < policy.attempts or more_targets
                try:
                    response = await self.send(exchange, prepared.upstream, prepared.body, prepared.headers,
                                               plan.route.timeout_s)
                except RequestError as exc:
                    elapsed_ms = (time.perf_counter() - started_perf) * 1000.0
                    self.latency.observe(prepared.target, elapsed_ms, failed=True)
                    self._attempt_span(exchange, step, attempt, started_ns, exc.status, exc.code or exc.error_type,
                                       wait * 1000.0, tries)
                    retryable = (policy.on_timeout if exc.code == "upstream_timeout"
                                 else policy.on_connection if exc.error_type == "upstream_unreachable" else False)
                    if not retryable:
                        raise
                    last_error, wait = exc, backoff_s(policy, tries)
                    continue
                status = response.status
                elapsed_ms = (time.perf_counter() - started_perf) * 1000.0
                failed = status in policy.on_status
                self.latency.observe(prepared.target, elapsed_ms, failed=failed)
                after = retry_after_s(response.headers) if failed and may_retry else None
                too_long = after is not None and after > policy.max_wait_s
                # a wait longer than worth making with no target left: this answer (and its Retry-After) is the client's
                if failed and may_retry and (more_targets or not too_long):
                    response.release()
                    self._attempt_span(exchange, step, attempt, started_ns, status, str(status), wait * 1000.0, tries)
                    last_error = None
                    if too_long:
                        break  # not worth the wait here: the next target now
                    wait = max(after or 0.0, backoff_s(policy, tries))
                    continue
                self._commit(exchange, prepared, step.reason if tries == 1 else "retry", attempt, wait)
                exchange.upstream_response = response
                return
        if last_error is not None:
            raise last_error
        raise RequestError(502, f"Every target of the route {plan.route.name!r} failed.", "upstream_unreachable",
                           "route_exhausted")

    # -- one target -------------------------------------------------------------------
    def prepare(self, exchange: Any, step: Step) -> Prepared:
        """Make ``step``'s target ready to send: its body (the client's, masked by safety, with the target's
        model; or translated), its URL and its headers (credentials only where they belong)."""
        entry = step.entry
        target = entry.target
        adapter = self.adapters.get(target.adapter_name)
        if adapter is None:
            raise RequestError(502, f"The route target {str(target)!r} is not served by this proxy.",
                               "upstream_unreachable", "route_target_unavailable")
        client_facts: RequestFacts = exchange.client_facts
        client_format = wire_format(self.client_adapter, client_facts.operation)
        target_format = wire_format(adapter, client_facts.operation)
        request = exchange.request
        translation: Translation | None = None
        if target_format == client_format:
            body_json = dict(client_facts.request_json)
            body_json["model"] = target.model
            body = orjson.dumps(body_json)
            tail = exchange.tail
            same = adapter is self.client_adapter
            query = request.query_string if same else ""
            facts = RequestFacts(client_facts.operation, target.model, client_facts.stream, body_json,
                                 client_facts.request_attributes, client_facts.variant)  # (_replace: 4x slower)
            extra: Mapping[str, str] = {}
        else:
            translation = translation_for(client_format or "", target_format or "")
            if translation is None:
                raise RequestError(400, f"The route target {str(target)!r} speaks {target_format or 'another format'}, "
                                   f"which GenOps cannot translate this request ({client_format}) to.",
                                   "invalid_request_error", "route_format_unsupported")
            translated = translation.request(client_facts.request_json, target.model, client_facts.stream)
            body, tail, query, extra = translated.body, translated.tail, translated.query, translated.headers
            facts = adapter.parse_request("POST", tail, body, request.headers)
            same = False
        # the configured base URL (a client's GenOps-Target-Url does not apply), with the checks every upstream gets
        upstream = route_upstream(adapter, None, tail, query, request.headers)
        headers: CIMultiDict[str] = exchange.base_headers.copy()
        if not same or entry.key_env:
            for name in CREDENTIAL_HEADERS:
                headers.popall(name, None)
            variable = target_key_env(entry)
            key = self.env.get(variable)
            if not key:
                raise RequestError(502, f"GenOps holds no key for the route target {str(target)!r} "
                                   f"(set {variable}).", "upstream_unreachable", "route_target_no_key")
            header, prefix = _KEY_HEADER.get(target.provider, _BEARER)
            headers[header] = prefix + key
        for name in upstream.drop_headers:
            headers.popall(name, None)
        headers.update(upstream.set_headers)
        headers.update(extra)
        send_body, injected = adapter.prepare_body(facts, body)
        return Prepared(str(target), adapter, facts, upstream, send_body, headers, injected, translation)

    def _commit(self, exchange: Any, prepared: Prepared, reason: str, attempt: int, wait: float) -> None:
        exchange.adapter = prepared.adapter
        exchange.request_facts = prepared.facts
        exchange.upstream = prepared.upstream
        exchange.usage_injected = prepared.usage_injected
        exchange.translation = prepared.translation
        plan: Plan = exchange.plan
        attributes: dict[str, Any] = {
            sc.GENOPS_ROUTE_NAME: plan.route.name,
            sc.GENOPS_ROUTE_TARGET: prepared.target,
            sc.GENOPS_ROUTE_ATTEMPT: attempt,
            sc.GENOPS_ROUTE_REASON: reason,
        }
        if wait > 0:
            attributes[sc.GENOPS_ROUTE_WAIT_MS] = round(wait * 1000.0, 3)
        if plan.variant is not None:
            attributes[sc.GENOPS_ROUTE_VARIANT] = plan.variant
        if plan.rollout_id is not None:
            attributes[sc.GENOPS_ROLLOUT_ID] = plan.rollout_id
        span = exchange.span
        span.set_attributes(attributes)
        if prepared.facts.operation:  # the span is named after the model that answered, as gen_ai.request.model
            span.update_name(f"{prepared.facts.operation} {prepared.facts.model}")

    def _attempt_span(self, exchange: Any, step: Step, attempt: int, started_ns: int, status: int, error: str,
                      wait_ms: float, tries: int = 1) -> None:
        """A failed attempt, as a child span of the call's."""
        span = self.tracer.start_span("route.attempt", context=trace.set_span_in_context(exchange.span),
                                      kind=SpanKind.CLIENT, start_time=started_ns)
        attributes: dict[str, Any] = {
            sc.GENOPS_ROUTE_NAME: exchange.plan.route.name,
            sc.GENOPS_ROUTE_TARGET: str(step.entry.target),
            sc.GENOPS_ROUTE_ATTEMPT: attempt,
            sc.GENOPS_ROUTE_REASON: step.reason if tries == 1 else "retry",
            sc.ERROR_TYPE: error,
        }
        if status:
            attributes[sc.HTTP_RESPONSE_STATUS_CODE] = status
        if wait_ms > 0:
            attributes[sc.GENOPS_ROUTE_WAIT_MS] = round(wait_ms, 3)
        span.set_attributes(attributes)
        span.set_status(Status(StatusCode.ERROR, error))
        span.end()
