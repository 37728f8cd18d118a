"""The proxy's safety step for one call: the only part of ``genops.proxy.safety`` the request path's
stages call (proxy/stages/: safety before forwarding, relay, record).

``SafetyConfig.begin`` resolves the call's policy (config, route, header: strictest wins).
``CallGuard.before_forward`` scans the request only when the policy can change it
(``mask-upstream``) or stop it (``block``); otherwise all scanning waits until the client has
its response (``finish``), so ``annotate`` and ``redact`` never delay a byte, streamed or not.
``finish`` (or ``finish_inline``, when every text is small) then scans what is left, writes the
``genops.safety.*`` attributes, one ``gen_ai.evaluation.result`` event per finding type, and
the (redacted) captured content. The guard reads the adapter's frozen request and response
facts and writes none of them; ``redacted`` gives the record stage an error message as it may
be stored.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from genops import semconv as sc
from genops.proxy.providers.base import ProviderAdapter, RequestError, RequestFacts, ResponseFacts, TextPart
from genops.proxy.safety.capture import Capture, capped_json, messages
from genops.proxy.safety.findings import CATEGORIES, Finding
from genops.proxy.safety.scanner import (
    INDIRECT_ROLES,
    INLINE_LIMIT,
    chars_to_scan,
    highest_severity,
    mask_parts,
    mask_text,
    scan_groups,
    scan_parts,
    scan_parts_async,
    scan_text,
)
from genops.safety_policy import Policy, parse_policy, parse_route_policies, rank

log = logging.getLogger("genops.safety")

POLICY_HEADER = "GenOps-Safety-Policy"
BLOCKED_CODE = "safety_policy_blocked"
#: At most this many findings are listed in ``genops.safety.findings`` (counts stay exact).
MAX_LISTED_FINDINGS = 50
#: gen_ai.evaluation.score.label of a finding type, by the action applied to it.
_LABELS = {"block": "blocked", "mask-upstream": "masked", "redact": "redacted", "annotate": "detected"}


class SafetyConfig:
    """Safety settings of one route (adapter), built once when the proxy starts."""

    def __init__(self, settings: Any, route: str) -> None:
        base = parse_policy(settings.safety_policy, Policy())
        routes = parse_route_policies(settings.safety_route_policy)
        route = route.lower()
        # Named upstreams are routes "upstream:NAME"; their policy is configured under NAME.
        self.policy = base.strictest(routes.get(route) or routes.get(route.split(":", 1)[-1]))
        self.capture_level: str = settings.capture
        self.max_chars: int = settings.capture_max_chars

    def begin(self, adapter: ProviderAdapter, request: RequestFacts, headers: Mapping[str, str]) -> CallGuard:
        """The guard of one call; a malformed ``GenOps-Safety-Policy`` header is a 400."""
        policy = self.policy
        header = headers.get(POLICY_HEADER)
        if header:
            try:
                policy = policy.strictest(parse_policy(header))
            except ValueError as exc:
                raise RequestError(400, f"{POLICY_HEADER}: {exc}", "invalid_request_error", "invalid_safety_policy") from None
        return CallGuard(adapter, request, policy, Capture.for_request(self.capture_level, headers), self.max_chars)


class CallGuard:
    """Scans, masks, blocks and annotates one call."""

    def __init__(self, adapter: ProviderAdapter, request: RequestFacts, policy: Policy, capture: Capture,
                 max_chars: int) -> None:
        self.adapter = adapter
        self.request = request
        self.policy = policy
        self.capture = capture
        self.max_chars = max_chars
        self.request_parts: list[TextPart] | None = None
        self.request_findings: list[Finding] | None = None
        self.response_body_size = 0  # a complete response's decoded body (streams: their text is counted)
        self.masked_upstream = 0
        self.blocked = False
        self.scan_ns = 0

    @property
    def active(self) -> bool:
        """Model calls only: generic pass-through requests carry no known text."""
        return self.request.operation is not None

    # -- before the upstream call ---------------------------------------------------------
    async def before_forward(self, body: bytes) -> bytes:
        """The body to send: unchanged, masked (mask-upstream), or a :class:`RequestError` (block)."""
        if not self.active or not self.policy.acts_before_forward:
            return body
        parts = self._request_parts()
        findings = self._scan_small(parts, "request")
        if findings is None:
            findings = await self._scan(parts, "request")
        self.request_findings = findings
        blocking = sorted({f.category for f in findings if self.policy.action(f.category) == "block"})
        if blocking:
            self.blocked = True
            raise RequestError(400, self._block_message(findings, blocking), "invalid_request_error", BLOCKED_CODE)
        to_mask = [f for f in findings if self.policy.action(f.category) == "mask-upstream"]
        if not to_mask:
            return body
        replacements = mask_parts(parts, to_mask)
        self.masked_upstream = len(to_mask)
        return self.adapter.replace_request_texts(self.request, replacements)

    def _block_message(self, findings: Sequence[Finding], categories: Sequence[str]) -> str:
        where = sorted({f"{f.detector} in message {f.message_index}" for f in findings if f.category in categories})
        shown = ", ".join(where[:5]) + (", ..." if len(where) > 5 else "")
        return (f"GenOps blocked this request: its safety policy blocks {' and '.join(categories)} "
                f"({shown}). The request was not sent to the model.")

    # -- after the response --------------------------------------------------------------------
    def needs_thread(self, response: ResponseFacts | None) -> bool:
        """True when what is left to scan (``response``: what the adapter read of the response,
        None if nothing) is big enough to go to a worker thread (and the caller should not wait for it)."""
        if not self.active or not self.policy.scanned:
            return False
        size = self.response_body_size
        if response is not None:
            size += sum(len(t) for t in response.output_text)
        if self.request_findings is None:  # an agent's history is mostly remembered: only new texts count
            size += chars_to_scan(self._request_parts(), self.policy.scanned)
        return size > INLINE_LIMIT

    def observe_response(self, body: bytes) -> None:
        """Note a complete (non-streamed) response body's size: its texts are scanned after it was
        sent, from the adapter's parse of it (``ResponseFacts.body_json``)."""
        self.response_body_size = len(body)

    async def finish(self, span: Any, response: ResponseFacts | None = None) -> None:
        """Scan whatever is not scanned yet (``response``: what the adapter read of the response,
        None if nothing) and write attributes, events and content. Never raises."""
        if not self.active:
            return
        try:
            await self._finish(span, response)
        except Exception as exc:  # noqa: BLE001 - safety must never fail a call that already succeeded
            log.exception("safety scan failed")
            span.set_attribute(sc.GENOPS_SAFETY_ERROR, type(exc).__name__)

    def finish_inline(self, span: Any, response: ResponseFacts | None = None) -> None:
        """:meth:`finish` for a call whose texts are all small (``needs_thread()`` is False):
        scanned right here, nothing awaited. Never raises."""
        if not self.active:
            return
        try:
            request_parts = self._request_parts()
            response_parts = [] if self.blocked else self.adapter.response_texts(self.request, response)
            # Both at once, one pass over the call's texts (the request's only if not scanned yet).
            unscanned = request_parts if self.request_findings is None else []
            request_findings, response_findings = self._scan_call(unscanned, response_parts)
            if self.request_findings is None:
                self.request_findings = request_findings
            self._annotate(span, request_parts, response_parts, self.request_findings + response_findings, response)
        except Exception as exc:  # noqa: BLE001 - safety must never fail a call that already succeeded
            log.exception("safety scan failed")
            span.set_attribute(sc.GENOPS_SAFETY_ERROR, type(exc).__name__)

    async def _finish(self, span: Any, response: ResponseFacts | None) -> None:
        request_parts = self._request_parts()
        if self.request_findings is None:
            found = self._scan_small(request_parts, "request")
            self.request_findings = found if found is not None else await self._scan(request_parts, "request")
        response_parts: list[TextPart] = []
        response_findings: list[Finding] = []
        if not self.blocked:
            response_parts = self.adapter.response_texts(self.request, response)
            found = self._scan_small(response_parts, "response")
            response_findings = found if found is not None else await self._scan(response_parts, "response")
        self._annotate(span, request_parts, response_parts, self.request_findings + response_findings, response)

    def _annotate(self, span: Any, request_parts: list[TextPart], response_parts: list[TextPart],
                  findings: list[Finding], response: ResponseFacts | None) -> None:
        """Write the scan's attributes, events and the (redacted) content onto the span."""
        span.set_attributes(self._attributes(findings))
        if findings:
            for event in self._events(findings):
                span.add_event(sc.GEN_AI_EVALUATION_RESULT_EVENT, event)
        span.set_attributes(self._content(request_parts, response_parts, findings,
                                          response.finish_reasons if response is not None else ()))

    def redacted(self, message: str) -> str:
        """``message`` as it may be stored: what the policy redacts (or acts on more strictly) masked.
        The record stage passes every error message of a call through it (an upstream's error may
        quote the request). A model call's only; others are returned unchanged."""
        if not self.active:
            return message
        categories = self.policy.categories_at_least("redact")
        if categories:
            hits = scan_text(message, categories)
            if hits:
                return mask_text(message, hits)
        return message

    # -- pieces -------------------------------------------------------------------------------
    def _request_parts(self) -> list[TextPart]:
        if self.request_parts is None:
            self.request_parts = self.adapter.request_texts(self.request)
        return self.request_parts

    def _scan_small(self, parts: list[TextPart], location: str) -> list[Finding] | None:
        """The findings of texts small enough to scan on the event loop (no coroutine layers:
        this is every ordinary call); None for texts that go to a worker thread (:meth:`_scan`)."""
        categories = self.policy.scanned
        if not parts or not categories:
            return []
        if chars_to_scan(parts, categories) > INLINE_LIMIT:
            return None
        started = time.perf_counter_ns()
        try:
            return scan_parts(parts, location, categories)
        finally:
            self.scan_ns += time.perf_counter_ns() - started

    def _scan_call(self, request_parts: list[TextPart],
                   response_parts: list[TextPart]) -> tuple[list[Finding], list[Finding]]:
        """The findings of a call's request and response texts, scanned together on this thread."""
        categories = self.policy.scanned
        if not categories or not (request_parts or response_parts):
            return [], []
        started = time.perf_counter_ns()
        try:
            request, response = scan_groups([(request_parts, "request"), (response_parts, "response")], categories)
            return request, response
        finally:
            self.scan_ns += time.perf_counter_ns() - started

    async def _scan(self, parts: list[TextPart], location: str) -> list[Finding]:
        categories = self.policy.scanned
        if not parts or not categories:
            return []
        started = time.perf_counter_ns()
        try:
            return await scan_parts_async(parts, location, categories)
        finally:
            self.scan_ns += time.perf_counter_ns() - started

    def _applied(self, finding: Finding) -> str:
        """What the proxy did about one finding."""
        action = self.policy.action(finding.category)
        if finding.location == "response" and rank(action) > rank("redact"):
            return "redact"  # a response can no longer be masked upstream or blocked: it is redacted in storage
        if action == "block" and not self.blocked:
            return "annotate"
        if action == "mask-upstream" and not self.masked_upstream:
            return "redact"
        return action

    def _attributes(self, findings: list[Finding]) -> dict[str, Any]:
        if not findings and not self.blocked and not self.masked_upstream:  # the common case, without the loops
            return {
                sc.GENOPS_SAFETY_PII_COUNT: 0,
                sc.GENOPS_SAFETY_SECRETS_COUNT: 0,
                sc.GENOPS_SAFETY_INJECTION_COUNT: 0,
                sc.GENOPS_SAFETY_ACTION: "none",
                sc.GENOPS_SAFETY_POLICY: str(self.policy),
                sc.GENOPS_SAFETY_SCAN_MS: round(self.scan_ns / 1e6, 3),
            }
        counts = {c: 0 for c in CATEGORIES}
        for f in findings:
            counts[f.category] += 1
        action = "none"
        for f in findings:
            applied = self._applied(f)
            if action == "none" or rank(applied) > rank(action):
                action = applied
        attrs: dict[str, Any] = {
            sc.GENOPS_SAFETY_PII_COUNT: counts["pii"],
            sc.GENOPS_SAFETY_SECRETS_COUNT: counts["secrets"],
            sc.GENOPS_SAFETY_INJECTION_COUNT: counts["injection"],
            sc.GENOPS_SAFETY_ACTION: action,
            sc.GENOPS_SAFETY_POLICY: str(self.policy),
            sc.GENOPS_SAFETY_SCAN_MS: round(self.scan_ns / 1e6, 3),
        }
        if self.blocked:
            attrs[sc.GENOPS_SAFETY_BLOCKED] = True
        if self.masked_upstream:
            attrs[sc.GENOPS_SAFETY_MASKED_UPSTREAM_COUNT] = self.masked_upstream
        if findings:
            attrs[sc.GENOPS_SAFETY_SEVERITY] = highest_severity(findings)
            attrs[sc.GENOPS_SAFETY_DETECTORS] = sorted({f.detector for f in findings})
            listed = [f.as_dict() for f in findings[:MAX_LISTED_FINDINGS]]
            attrs[sc.GENOPS_SAFETY_FINDINGS] = orjson.dumps(listed).decode()
            if len(findings) > MAX_LISTED_FINDINGS:
                attrs[sc.GENOPS_SAFETY_FINDINGS_DROPPED] = len(findings) - MAX_LISTED_FINDINGS
            indirect = sum(1 for f in findings if f.category == "injection" and f.role in INDIRECT_ROLES)
            if indirect:
                attrs[sc.GENOPS_SAFETY_INJECTION_INDIRECT_COUNT] = indirect
        return attrs

    def _events(self, findings: list[Finding]) -> list[dict[str, Any]]:
        groups: dict[tuple[str, str], list[Finding]] = defaultdict(list)
        for f in findings:
            groups[(f.category, f.detector)].append(f)
        events = []
        for (category, detector), group in sorted(groups.items()):
            action = max((self._applied(f) for f in group), key=rank)
            places = sorted({f"{f.location} message {f.message_index}" for f in group})
            events.append({
                sc.GEN_AI_EVALUATION_NAME: f"genops.safety.{category}.{detector}",
                sc.GEN_AI_EVALUATION_SCORE_VALUE: max(f.confidence for f in group),
                sc.GEN_AI_EVALUATION_SCORE_LABEL: _LABELS.get(action, "detected"),
                sc.GEN_AI_EVALUATION_EXPLANATION: (
                    f"{len(group)} {detector} finding(s) in {', '.join(places[:5])}{', ...' if len(places) > 5 else ''}; "
                    f"action {action}"
                ),
                sc.GENOPS_SAFETY_CATEGORY: category,
                sc.GENOPS_SAFETY_DETECTOR: detector,
                sc.GENOPS_SAFETY_COUNT: len(group),
                sc.GENOPS_SAFETY_SEVERITY: highest_severity(group) or "",
                sc.GENOPS_SAFETY_ACTION: action,
            })
        return events

    def _content(self, request_parts: list[TextPart], response_parts: list[TextPart],
                 findings: list[Finding], reasons: Sequence[str]) -> dict[str, Any]:
        capture = self.capture
        attrs: dict[str, Any] = {}
        if capture.sizes:
            attrs[sc.GENOPS_CONTENT_INPUT_CHARS] = sum(len(p.text) for p in request_parts)
            attrs[sc.GENOPS_CONTENT_INPUT_MESSAGES] = len({p.message_index for p in request_parts})
            if not self.blocked:
                attrs[sc.GENOPS_CONTENT_OUTPUT_CHARS] = sum(len(p.text) for p in response_parts)
        omitted = [name for name, flag in (("request", capture.omit_request), ("response", capture.omit_response)) if flag]
        if omitted:
            attrs[sc.GENOPS_CONTENT_OMITTED] = omitted
        truncated = False
        # Redaction happens here, before anything is stored: every finding whose category is at
        # redact or stricter is replaced by a placeholder in the captured copy.
        redact = [f for f in findings if rank(self.policy.action(f.category)) >= rank("redact")]
        if capture.input_content and request_parts:
            parts = _redacted(request_parts, [f for f in redact if f.location == "request"])
            attrs[sc.GEN_AI_INPUT_MESSAGES], cut = capped_json(messages(parts, "user"), self.max_chars)
            truncated |= cut
        if capture.output_content and response_parts:
            parts = _redacted(response_parts, [f for f in redact if f.location == "response"])
            attrs[sc.GEN_AI_OUTPUT_MESSAGES], cut = capped_json(messages(parts, "assistant", reasons), self.max_chars)
            truncated |= cut
        if truncated:
            attrs[sc.GENOPS_CONTENT_TRUNCATED] = True
        return attrs


def _redacted(parts: list[TextPart], findings: list[Finding]) -> list[TextPart]:
    if not findings:
        return parts
    replaced = mask_parts(parts, findings)
    return [part._replace(text=replaced[i]) if i in replaced else part for i, part in enumerate(parts)]
