"""What Grafana and its ClickHouse plugin do to a panel's SQL before ClickHouse sees it.

No Grafana can run here, so the executed dashboard tests rebuild the three steps the
query goes through, in the same order and with the same rules:

1. the plugin's frontend ``applyConditionalAll`` (src/data/CHDatasource.ts): from the last
   ``$__conditionalAll(`` backwards, arguments split at depth-1 commas; exactly two
   arguments or the query is left alone; the second names the variable (``$name``), and the
   condition becomes ``1=1`` when the variable's current value is ``$__all`` or empty;
2. Grafana's template service: ``$name``, ``${name}``, ``${name:format}``, ``[[name]]`` are
   replaced when ``name`` is a dashboard variable (unknown names such as ``$__timeFilter``
   stay); an All selection becomes every option's value; the plugin's default format
   quotes arrays as ``'a','b'`` and leaves a single value raw; ``singlequote`` quotes
   each value and escapes ``'`` as ``\\'``;
3. the plugin backend's macros (pkg/macros/macros.go through sqlds): ``$__name`` at a
   word boundary, an optional bracketed argument list matched by depth and split at
   top-level commas, each macro expanded to the SQL the Go code prints.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

ALL = "$__all"


@dataclass
class QueryContext:
    """One panel refresh: the time range, Grafana's interval and the variables' values."""

    time_from: datetime
    time_to: datetime
    interval_ms: int
    # name -> current value (a list for multi-value variables, ["$__all"] for All)
    values: dict[str, list[str] | str] = field(default_factory=dict)
    # name -> every option (what All expands to)
    options: dict[str, list[str]] = field(default_factory=dict)


# -- 1. frontend: $__conditionalAll --------------------------------------------------

_MACRO = "$__conditionalAll("


def _macro_args(query: str, args_index: int) -> list[str]:
    """The plugin's getMacroArgs: ``args_index`` points at the opening bracket."""
    args: list[str] = []
    depth = 0
    last_end = 1
    sub = query[args_index:]
    for match in re.finditer(r"\(|\)|,", sub):
        token = match.group(0)
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
        if token == "," and depth == 1:
            args.append(sub[last_end:match.end() - 1])
            last_end = match.end()
        if depth == 0:
            args.append(sub[last_end:match.end() - 1])
            return args
    return []


def apply_conditional_all(query: str, values: dict[str, list[str] | str]) -> str:
    """The plugin's ``applyConditionalAll``."""
    index = query.rfind(_MACRO)
    while index != -1:
        params = _macro_args(query, index + len(_MACRO) - 1)
        if len(params) != 2:
            return query
        name = params[1].strip()[1:]
        phrase = params[0]
        if name in values:  # an unknown variable leaves the condition in place, as in the plugin
            value = values[name]
            text = ",".join(value) if isinstance(value, list) else str(value)  # JS Array.toString
            if text in ("", ALL):
                phrase = "1=1"
        query = query.replace(f"{_MACRO}{params[0]},{params[1]})", phrase, 1)
        index = query.rfind(_MACRO)
    return query


# -- 2. Grafana's template service ---------------------------------------------------

_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}")


def _singlequote(values: list[str]) -> str:
    return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)


def _plugin_format(value: list[str] | str) -> str:
    """The ClickHouse datasource's format(): arrays as 'a','b', a single value raw."""
    if isinstance(value, list):
        return "'" + "','".join(value) + "'"
    return value


def replace_variables(query: str, ctx: QueryContext) -> str:
    """``getTemplateSrv().replace(query, scopedVars, datasource.format)``."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(6)
        if name not in ctx.values:
            return match.group(0)
        value = ctx.values[name]
        if value == [ALL] or value == ALL:
            value = list(ctx.options.get(name, []))
        if fmt == "singlequote":
            return _singlequote(value if isinstance(value, list) else [value])
        if fmt == "raw":
            return ",".join(value) if isinstance(value, list) else value
        if fmt is not None:
            raise AssertionError(f"format {fmt!r} is not simulated; use singlequote or raw")
        return _plugin_format(value)

    return _VARIABLE.sub(substitute, query)


# -- 3. backend macros ---------------------------------------------------------------

def _to_datetime(t: datetime) -> str:
    return f"toDateTime({int(math.floor(t.timestamp()))})"


def _to_datetime64(t: datetime) -> str:
    return f"fromUnixTimestamp64Milli({int(math.floor(t.timestamp() * 1000))})"


def _to_date(t: datetime) -> str:
    return f"toDate('{t.astimezone(UTC).strftime('%Y-%m-%d')}')"


def _one(args: list[str], name: str) -> str:
    if len(args) != 1:
        raise ValueError(f"$__{name}: expected 1 argument, received {len(args)}")
    return args[0]


def _macros(ctx: QueryContext) -> dict[str, object]:
    seconds = max(ctx.interval_ms / 1000, 1)
    millis = max(ctx.interval_ms, 1)
    f, t = ctx.time_from, ctx.time_to
    return {
        "fromTime": lambda a: _to_datetime(f),
        "toTime": lambda a: _to_datetime(t),
        "fromTime_ms": lambda a: _to_datetime64(f),
        "toTime_ms": lambda a: _to_datetime64(t),
        "timeFilter": lambda a: (c := _one(a, "timeFilter")) and f"{c} >= {_to_datetime(f)} AND {c} <= {_to_datetime(t)}",
        "timeFilter_ms": lambda a: (
            (c := _one(a, "timeFilter_ms")) and f"{c} >= {_to_datetime64(f)} AND {c} <= {_to_datetime64(t)}"),
        "dateFilter": lambda a: (c := _one(a, "dateFilter")) and f"{c} >= {_to_date(f)} AND {c} <= {_to_date(t)}",
        "timeInterval": lambda a: f"toStartOfInterval(toDateTime({_one(a, 'timeInterval')}), INTERVAL {int(seconds)} second)",
        "timeInterval_ms": lambda a: (
            f"toStartOfInterval(toDateTime64({_one(a, 'timeInterval_ms')}, 3), INTERVAL {int(millis)} millisecond)"),
        "interval_s": lambda a: f"{int(seconds)}",
    }


def _parse_args(text: str) -> tuple[list[str] | None, int]:
    """sqlds' parseArgs: a bracketed list at the start of ``text`` -> (args, consumed length)."""
    if not text.startswith("("):
        return None, 0
    args: list[str] = []
    depth = 0
    current: list[str] = []
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
            if depth == 1:
                continue
        elif ch == ")":
            depth -= 1
            if depth == 0:
                args.append("".join(current).strip())
                return args, i + 1
        elif ch == "," and depth == 1:
            args.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    return None, -1


def expand_macros(query: str, ctx: QueryContext) -> str:
    """Every plugin macro replaced; an unknown ``$__name`` is an error (the plugin would fail too)."""
    macros = _macros(ctx)
    pattern = re.compile(r"\$__(\w+)\b")
    out: list[str] = []
    pos = 0
    while True:
        match = pattern.search(query, pos)
        if match is None:
            out.append(query[pos:])
            return "".join(out)
        name = match.group(1)
        if name not in macros:
            raise ValueError(f"unknown macro $__{name}")
        args, length = _parse_args(query[match.end():])
        if length < 0:
            raise ValueError(f"$__{name}: missing close bracket")
        out.append(query[pos:match.start()])
        out.append(macros[name](args or []))  # type: ignore[operator]
        pos = match.end() + length


def interpolate(query: str, ctx: QueryContext) -> str:
    """The SQL ClickHouse receives for ``query`` in this context."""
    return expand_macros(replace_variables(apply_conditional_all(query, ctx.values), ctx), ctx)
