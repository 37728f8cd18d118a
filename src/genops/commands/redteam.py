"""``genops redteam``: send the bundled adversarial corpus through a running proxy and report what it did.

Each case (personal data, credentials, injection attempts - the positives of the labelled
corpus in ``genops.proxy.safety.corpus``) goes out as an OpenAI chat call; injection cases
marked indirect arrive as a tool result. Blocked calls are seen in the response; for the
rest the command reads the call's span through the proxy's SQL endpoint and reports, per
category, how many cases were blocked, masked upstream, redacted, annotated or missed.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson

from genops.commands.common import add_setting_flags, settings_from_args

OUTCOMES = ("blocked", "masked", "redacted", "annotated", "missed", "error")
_POLICY_OUTCOME = {"block": "blocked", "mask-upstream": "masked", "redact": "redacted", "annotate": "annotated"}


@dataclass
class Case:
    """One adversarial input and what became of it."""

    number: int
    category: str
    text: str
    indirect: bool
    request_id: str
    status: int = 0
    error_code: str = ""
    outcome: str = ""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("redteam", help="send an adversarial corpus through a running proxy; report per category")
    parser.add_argument("--url", required=True, help="the running proxy, e.g. http://127.0.0.1:8080")
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--api-key", default=None, help="provider key to send (default: $OPENAI_API_KEY, else a dummy)")
    parser.add_argument("--policy", default=None,
                        help="also send GenOps-Safety-Policy with this value (it can only tighten the proxy's policy)")
    parser.add_argument("--category", choices=("pii", "secrets", "injection"), action="append",
                        help="only these categories (repeatable)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the spans")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--verbose", "-v", action="store_true", help="list every missed case")
    add_setting_flags(parser, ("data_dir", "admin_token"))
    parser.set_defaults(func=run)


def load_cases(categories: list[str] | None, run_id: str) -> list[Case]:
    """The corpus positives as cases."""
    from genops.proxy.safety.evaluate import load_corpus

    cases = []
    for number, row in enumerate(load_corpus(), 1):
        if not row["labels"] or (categories and row["category"] not in categories):
            continue
        indirect = "indirect" in (row.get("note") or "")
        cases.append(Case(number, row["category"], row["text"], indirect, f"redteam-{run_id}-{number}"))
    return cases


def _messages(case: Case) -> list[dict[str, Any]]:
    if not case.indirect:
        return [{"role": "user", "content": case.text}]
    return [
        {"role": "user", "content": "Summarise the page."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "fetch_page", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": case.text},
    ]


def send(url: str, case: Case, model: str, api_key: str, policy: str | None) -> None:
    """POST one case; record the HTTP status and, for errors, the error code."""
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json",
               "GenOps-Request-Id": case.request_id}
    if policy:
        headers["GenOps-Safety-Policy"] = policy
    body = orjson.dumps({"model": model, "messages": _messages(case), "max_tokens": 16})
    request = urllib.request.Request(url.rstrip("/") + "/v1/chat/completions", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            case.status = response.status
            response.read()
    except urllib.error.HTTPError as exc:
        case.status = exc.code
        try:
            case.error_code = str(orjson.loads(exc.read())["error"].get("code") or "")
        except Exception:  # a non-JSON error body
            case.error_code = ""
    except (urllib.error.URLError, OSError) as exc:
        case.status = -1
        case.error_code = str(getattr(exc, "reason", exc))


def _spans(settings: Any, url: str, run_id: str, expected: int, timeout: float) -> dict[str, dict[str, str]]:
    from genops.commands.sql import query

    sql = ("SELECT SpanAttributes['genops.request.id'] AS id, SpanAttributes['genops.safety.policy'] AS policy, "
           "SpanAttributes['genops.safety.findings'] AS findings, SpanAttributes['genops.safety.action'] AS action "
           f"FROM otel_traces WHERE startsWith(SpanAttributes['genops.request.id'], 'redteam-{run_id}-')")
    deadline = time.monotonic() + timeout
    rows: dict[str, dict[str, str]] = {}
    while time.monotonic() < deadline:
        result = query(settings, sql, url=url)
        rows = {row[0]: dict(zip(result.columns, row, strict=True)) for row in result.rows}
        if len(rows) >= expected:
            break
        time.sleep(0.5)
    return rows


def classify(case: Case, span: dict[str, str] | None) -> str:
    """What the proxy did about the case's own category."""
    if case.status == -1 or (case.status >= 400 and case.error_code != "safety_policy_blocked"):
        return "error"
    if span is None:
        return "blocked" if case.error_code == "safety_policy_blocked" else "error"
    findings = orjson.loads(span["findings"]) if span.get("findings") else []
    if not any(f["category"] == case.category and f["location"] == "request" for f in findings):
        return "missed"
    if case.error_code == "safety_policy_blocked":
        return "blocked"
    policy = dict(item.split("=", 1) for item in (span.get("policy") or "").split(",") if "=" in item)
    return _POLICY_OUTCOME.get(policy.get(case.category, "annotate"), "annotated")


def summarise(cases: list[Case]) -> dict[str, dict[str, int]]:
    """``{category: {outcome: count, "cases": n}}``."""
    out: dict[str, dict[str, int]] = {}
    for case in cases:
        row = out.setdefault(case.category, {"cases": 0, **{o: 0 for o in OUTCOMES}})
        row["cases"] += 1
        row[case.outcome] += 1
    return out


def run(args: argparse.Namespace) -> int:
    import os

    settings = settings_from_args(args)
    run_id = uuid.uuid4().hex[:12]
    cases = load_cases(args.category, run_id)
    api_key = args.api_key or os.environ.get("OPENAI_API_KEY") or "sk-genops-redteam"
    with ThreadPoolExecutor(max_workers=max(1, args.concurrency)) as pool:
        list(pool.map(lambda c: send(args.url, c, args.model, api_key, args.policy), cases))
    if all(c.status == -1 for c in cases):
        print(f"genops: cannot reach the proxy at {args.url}: {cases[0].error_code if cases else ''}", file=sys.stderr)
        return 1
    try:
        spans = _spans(settings, args.url, run_id, len(cases), args.timeout)
    except Exception as exc:  # QueryError and friends: say why, once
        print(f"genops: cannot read the spans back through {args.url}: {exc}", file=sys.stderr)
        return 1
    for case in cases:
        case.outcome = classify(case, spans.get(case.request_id))
    summary = summarise(cases)
    if args.format == "json":
        payload = {"run_id": run_id, "summary": summary,
                   "cases": [{"line": c.number, "category": c.category, "indirect": c.indirect, "status": c.status,
                              "outcome": c.outcome} for c in cases]}
        sys.stdout.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    print(f"red-team run {run_id}: {len(cases)} adversarial cases through {args.url}")
    header = f"{'category':<10} {'cases':>5} " + " ".join(f"{o:>9}" for o in OUTCOMES) + f" {'caught':>7}"
    print(header)
    print("-" * len(header))
    for category, row in summary.items():
        caught = (row["cases"] - row["missed"] - row["error"]) / row["cases"] if row["cases"] else 0.0
        print(f"{category:<10} {row['cases']:>5} " + " ".join(f"{row[o]:>9}" for o in OUTCOMES) + f" {caught:>7.0%}")
    if args.verbose:
        for case in cases:
            if case.outcome in ("missed", "error"):
                print(f"  {case.outcome}: corpus line {case.number} ({case.category}) {case.text[:70]!r}")
    return 0
