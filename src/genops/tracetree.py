"""An agent run as a terminal tree: sessions -> agents -> tools -> model calls.

Spans nest by their parent span ids (an agent instrumented with OpenTelemetry passes
``traceparent`` to the proxy, so its model calls sit under its agent and tool spans).
Top-level spans are grouped by session path (``GenOps-Session-Path: /planner/researcher``),
so nested sessions show as nested branches even when the agent sends no trace context.
Each line shows duration, tokens, cost and the latest scores.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from genops import semconv as sc

# GenAI operations that are steps of an agent, not model calls.
_NOT_CALLS = frozenset({"invoke_agent", "create_agent", "execute_tool"})


@dataclass
class SpanNode:
    """One stored span."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    start_ns: int
    duration_ns: int
    status: str
    attrs: dict[str, str]
    children: list[SpanNode] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    path: str = ""  # own session path, else the common one of its descendants

    @property
    def end_ns(self) -> int:
        return self.start_ns + self.duration_ns

    @property
    def has_usage(self) -> bool:
        return any(k in self.attrs for k in (sc.GEN_AI_USAGE_INPUT_TOKENS, sc.GEN_AI_USAGE_OUTPUT_TOKENS,
                                             sc.GENOPS_COST_USD, sc.GENOPS_COST_UNKNOWN))

    @property
    def is_call(self) -> bool:
        """A model call: has usage or cost, or a GenAI operation that is not an agent or tool step."""
        operation = self.attrs.get(sc.GEN_AI_OPERATION_NAME)
        return self.has_usage or bool(operation and operation not in _NOT_CALLS)

    @property
    def is_error(self) -> bool:
        return self.status == "Error"


@dataclass
class PathNode:
    """A session path segment grouping top-level spans (``/planner`` -> ``/planner/researcher``)."""

    path: str
    children: list[PathNode | SpanNode] = field(default_factory=list)

    @property
    def start_ns(self) -> int:
        return min((c.start_ns for c in self.children), default=0)


@dataclass
class Totals:
    """What a subtree cost: model calls (innermost spans with usage), errors, tokens, dollars, wall time."""

    calls: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    unpriced: int = 0
    start_ns: int | None = None
    end_ns: int | None = None


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _common_path(paths: Iterable[str]) -> str:
    split = [p.strip("/").split("/") for p in paths if p]
    if not split:
        return ""
    common: list[str] = []
    for parts in zip(*split, strict=False):  # paths differ in depth: the common prefix is at most the shortest
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return "/" + "/".join(common) if common and common != [""] else ""


def build_tree(span_rows: list[dict[str, Any]], score_rows: list[dict[str, Any]]) -> list[PathNode | SpanNode]:
    """The forest of ``span_rows`` (``trace_sql.spans_sql`` columns), scores attached, grouped by session path."""
    nodes: dict[tuple[str, str], SpanNode] = {}
    for row in span_rows:
        node = SpanNode(row["TraceId"], row["SpanId"], row["ParentSpanId"], row["SpanName"], int(row["StartNs"]),
                        int(row["Duration"]), row["StatusCode"], dict(row["Attributes"] or {}))
        nodes[(node.trace_id, node.span_id)] = node
    roots: list[SpanNode] = []
    for node in nodes.values():
        parent = nodes.get((node.trace_id, node.parent_id)) if node.parent_id else None
        (parent.children if parent is not None else roots).append(node)
    for node in nodes.values():
        node.children.sort(key=lambda n: (n.start_ns, n.span_id))
    roots.sort(key=lambda n: (n.start_ns, n.span_id))

    first_root: dict[str, SpanNode] = {}
    for root in roots:
        first_root.setdefault(root.trace_id, root)
    for score in score_rows:
        target = nodes.get((score["TraceId"], score["SpanId"])) if score["SpanId"] else None
        if target is None and not score["RequestId"]:
            target = first_root.get(score["TraceId"])  # a trace-level score scores the run
        if target is not None:
            target.scores.append(score)

    def assign_paths(node: SpanNode) -> str:
        below = [assign_paths(child) for child in node.children]
        node.path = node.attrs.get(sc.GENOPS_SESSION_PATH) or _common_path(below)
        return node.path

    for root in roots:
        assign_paths(root)
    return _group_by_path(roots)


def _group_by_path(roots: list[SpanNode]) -> list[PathNode | SpanNode]:
    top: list[PathNode | SpanNode] = []
    groups: dict[str, PathNode] = {}

    def group(path: str) -> PathNode:
        if path in groups:
            return groups[path]
        node = PathNode(path)
        groups[path] = node
        parent_path = path.rsplit("/", 1)[0]
        (group(parent_path).children if parent_path else top).append(node)
        return node

    for root in roots:
        (group(root.path).children if root.path else top).append(root)
    for node in groups.values():
        node.children.sort(key=lambda n: n.start_ns)
    top.sort(key=lambda n: n.start_ns)
    return top


def totals(nodes: Iterable[PathNode | SpanNode]) -> Totals:
    """Totals of a forest. A call counts once: the proxy's span, not a client instrumentation's span
    around it (a call span from elsewhere counts only when no call span is inside it)."""
    out = Totals()

    def visit(node: PathNode | SpanNode) -> bool:
        below = [visit(child) for child in node.children]
        if isinstance(node, PathNode):
            return any(below)
        out.start_ns = node.start_ns if out.start_ns is None else min(out.start_ns, node.start_ns)
        out.end_ns = node.end_ns if out.end_ns is None else max(out.end_ns, node.end_ns)
        # the proxy's own span always counts; another call span only when no call is inside it
        if node.is_call and (sc.GENOPS_REQUEST_ID in node.attrs or not any(below)):
            out.calls += 1
            out.errors += node.is_error
            out.input_tokens += _int(node.attrs.get(sc.GEN_AI_USAGE_INPUT_TOKENS))
            out.output_tokens += _int(node.attrs.get(sc.GEN_AI_USAGE_OUTPUT_TOKENS))
            if sc.GENOPS_COST_USD in node.attrs:
                out.cost_usd += float(node.attrs[sc.GENOPS_COST_USD])
            elif node.attrs.get(sc.GENOPS_COST_UNKNOWN) == "true":
                out.unpriced += 1
        return node.is_call or any(below)

    for node in nodes:
        visit(node)
    return out


# -- rendering ----------------------------------------------------------------------------

def duration(ns: int) -> str:
    """312 ms, 1.52 s, 2m 05s."""
    ms = ns / 1e6
    if ms < 1:
        return f"{ms:.2f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.2f} s"
    minutes, seconds = divmod(int(ms // 1000), 60)
    return f"{minutes}m {seconds:02d}s"


def money(usd: float) -> str:
    return f"${usd:.6f}" if usd < 0.01 else f"${usd:.4f}"


def summary(t: Totals) -> str:
    """``4 calls · 1 error · 620 in / 270 out tokens · $0.001100 · 5.10 s``"""
    parts = [f"{t.calls} call{'s' if t.calls != 1 else ''}"]
    if t.errors:
        parts.append(f"{t.errors} error{'s' if t.errors != 1 else ''}")
    if t.input_tokens or t.output_tokens:
        parts.append(f"{t.input_tokens} in / {t.output_tokens} out tokens")
    if t.calls:
        parts.append(money(t.cost_usd) + (f" ({t.unpriced} unpriced)" if t.unpriced else ""))
    if t.start_ns is not None and t.end_ns is not None:
        parts.append(duration(t.end_ns - t.start_ns))
    return " · ".join(parts)


def _score_text(score: dict[str, Any]) -> str:
    if score["DataType"] == "numeric":
        value = f"{float(score['Value']):g}"
    else:
        value = score["Label"]
    source = f" ({score['Source']})" if score["Source"] != "user" else ""
    return f"{score['Name']}={value}{source}"


def _tool_names(raw: str | None) -> list[str]:
    """The tools a model call asked for (a JSON array as stored)."""
    if not raw:
        return []
    try:
        names = json.loads(raw)
    except ValueError:
        return [raw]
    return [str(n) for n in names] if isinstance(names, list) else [str(names)]


def span_line(node: SpanNode, parent_path: str, mark_request: str | None = None) -> str:
    """One span: name, duration, tokens, cost, tools asked for, error, prompt, request id, path change, scores."""
    a = node.attrs
    parts = [node.name or "(unnamed)", duration(node.duration_ns)]
    if node.has_usage:
        approx = "~" if a.get(sc.GENOPS_USAGE_ESTIMATED) == "true" else ""
        if sc.GEN_AI_USAGE_INPUT_TOKENS in a or sc.GEN_AI_USAGE_OUTPUT_TOKENS in a:
            parts.append(f"{approx}{_int(a.get(sc.GEN_AI_USAGE_INPUT_TOKENS))} in / "
                         f"{approx}{_int(a.get(sc.GEN_AI_USAGE_OUTPUT_TOKENS))} out")
        if sc.GENOPS_COST_USD in a:
            parts.append(money(float(a[sc.GENOPS_COST_USD])))
        elif a.get(sc.GENOPS_COST_UNKNOWN) == "true":
            parts.append("cost unknown")
    tools = _tool_names(a.get(sc.GENOPS_RESPONSE_TOOL_NAMES))
    if tools:
        parts.append("→ " + ", ".join(tools))
    if node.is_error:
        reason = a.get(sc.ERROR_TYPE) or "error"
        http = a.get(sc.HTTP_RESPONSE_STATUS_CODE)
        parts.append(f"ERROR {reason}" + (f" (HTTP {http})" if http and http != reason else ""))
    if a.get(sc.GENOPS_PROMPT_ID):
        version = a.get(sc.GENOPS_PROMPT_VERSION)
        parts.append(f"prompt {a[sc.GENOPS_PROMPT_ID]}" + (f"@{version}" if version else ""))
    if a.get(sc.GENOPS_REQUEST_ID):
        parts.append(f"req {a[sc.GENOPS_REQUEST_ID]}")
    if node.path and node.path != parent_path:
        parts.append(f"[{node.path}]")
    line = "  ".join(parts)
    if node.scores:
        line += "  ★ " + ", ".join(_score_text(s) for s in node.scores)
    if mark_request and a.get(sc.GENOPS_REQUEST_ID) == mark_request:
        line += "  ◀"
    return line


def render(forest: list[PathNode | SpanNode], header: str, *, mark_request: str | None = None,
           ascii_only: bool = False) -> str:
    """The header line, then the tree with box-drawing branches (``ascii_only``: ``|-`` and ``` `- ```)."""
    tee, last, bar, gap = ("|- ", "`- ", "|  ", "   ") if ascii_only else ("├─ ", "└─ ", "│  ", "   ")
    lines = [header]

    def walk(node: PathNode | SpanNode, prefix: str, is_last: bool, parent_path: str) -> None:
        branch = last if is_last else tee
        if isinstance(node, PathNode):
            text = f"{node.path}  ({summary(totals([node]))})"
            here = node.path
        else:
            text = span_line(node, parent_path, mark_request)
            here = node.path or parent_path
        lines.append(prefix + branch + text)
        child_prefix = prefix + (gap if is_last else bar)
        for i, child in enumerate(node.children):
            walk(child, child_prefix, i == len(node.children) - 1, here)

    for i, node in enumerate(forest):
        walk(node, "", i == len(forest) - 1, "")
    text = "\n".join(lines) + "\n"
    if ascii_only:
        text = text.replace("·", "-").replace("★", "*").replace("◀", "<").replace("→", "->")
    return text


def first_attr(forest: Iterable[PathNode | SpanNode], key: str, *, where: tuple[str, str] | None = None) -> str:
    """The first value of span attribute ``key`` in the forest (e.g. the user of a session), optionally
    only from spans whose attribute ``where[0]`` equals ``where[1]``."""
    for node in forest:
        if isinstance(node, SpanNode) and node.attrs.get(key) and (
                where is None or node.attrs.get(where[0]) == where[1]):
            return node.attrs[key]
        found = first_attr(node.children, key, where=where)
        if found:
            return found
    return ""
