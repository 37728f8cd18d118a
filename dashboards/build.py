"""The Grafana dashboards, defined once here and written out as JSON files.

Every panel queries through Grafana's official ClickHouse datasource plugin
(``grafana-clickhouse-datasource``) with raw SQL: the plugin's macros (``$__timeFilter``,
``$__timeInterval``, ``$__interval_s``, ``$__conditionalAll``) make the time picker, the
interval and the ``All`` choice of each template variable work. Panels read the typed
per-call table ``genops_calls`` (one row per model call, filled at insert time), the
anomaly table, the scores and the rollout decisions (``genops_scores``, ``genops_rollouts``),
and ``otel_traces`` only for the trace view, so no panel parses attribute strings per row.
Table names are unqualified: the datasource's ``defaultDatabase`` says where they live.

Regenerate the JSON after an edit (a test checks the files are current)::

    python -m genops.dashboards.build
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PLUGIN_ID = "grafana-clickhouse-datasource"
PLUGIN_VERSION = "4.20.0"
# Panels and variables name the datasource only through this variable.
DS = {"type": PLUGIN_ID, "uid": "${datasource}"}
OUT_DIR = Path(__file__).resolve().parent / "grafana"
TAGS = ["genops", "llm"]

# Plugin query formats (pkg/... and src/types: 0 time series, 1 table, 3 trace).
TIME_SERIES, TABLE, TRACE = 0, 1, 3
_QUERY_TYPES = {TIME_SERIES: "timeseries", TABLE: "table", TRACE: "traces"}

# The filter every per-call panel shares: the time range, model calls only (agent and
# tool spans sent by OTLP land in genops_calls too), and the variables. `source` is the
# instrumentation scope: an agent instrumented with an OpenAI SDK instrumentation that also
# calls through the proxy records each call twice (its span and the proxy's), so pick
# `genops.proxy` there to count each call once.
# $__conditionalAll(cond, $var) becomes 1=1 when the variable is All, so an All
# selection costs nothing and a chosen value narrows the primary-key scan.
CALL_FILTER = """$__timeFilter(Timestamp)
  AND Operation NOT IN ('invoke_agent', 'create_agent', 'execute_tool')
  AND $__conditionalAll(Provider IN (${provider:singlequote}), $provider)
  AND $__conditionalAll(RequestModel IN (${model:singlequote}), $model)
  AND $__conditionalAll(ServiceName IN (${service:singlequote}), $service)
  AND $__conditionalAll(UserId IN (${user:singlequote}), $user)
  AND $__conditionalAll(ScopeName IN (${source:singlequote}), $source)"""

# genops_anomalies (storage/migrations/0031_anomalies.sql) is a ReplacingMergeTree(version):
# an ongoing anomaly is re-inserted as it grows, so read it with FINAL (one row per anomaly).
ANOMALY_TABLE = "genops_anomalies FINAL"
ANOMALY_OVERLAP = "`start` <= $__toTime AND `end` >= $__fromTime"

# genops_rollouts (storage/migrations/0080_routes_and_rollouts.sql): one append-only row per
# decision of a canary rollout; a "check" row (gates evaluated, nothing decided) is not drawn.
ROLLOUT_TABLE = "genops_rollouts"
ROLLOUT_DECISION = "Action != 'check'"


# -- panel builders ------------------------------------------------------------------

def _target(sql: str, fmt: int, ref: str = "A") -> dict[str, Any]:
    return {
        "refId": ref,
        "datasource": DS,
        "editorType": "sql",
        "pluginVersion": PLUGIN_VERSION,
        "queryType": _QUERY_TYPES[fmt],
        "format": fmt,
        "rawSql": sql.strip(),
    }


def _panel(kind: str, title: str, sql: str, fmt: int, pos: tuple[int, int, int, int], *,
           description: str = "", unit: str | None = None, options: dict[str, Any] | None = None,
           custom: dict[str, Any] | None = None, overrides: list[dict[str, Any]] | None = None,
           links: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    x, y, w, h = pos
    defaults: dict[str, Any] = {}
    if unit:
        defaults["unit"] = unit
    if custom:
        defaults["custom"] = custom
    if links:
        defaults["links"] = links
    panel = {
        "type": kind,
        "title": title,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [_target(sql, fmt)],
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options or {},
    }
    if description:
        panel["description"] = description
    return panel


def timeseries(title: str, sql: str, pos: tuple[int, int, int, int], *, unit: str | None = None,
               stack: bool = False, bars: bool = False, description: str = "") -> dict[str, Any]:
    """A time-series panel; the query returns ``time`` first, then values (and labels, long format)."""
    custom: dict[str, Any] = {"drawStyle": "bars" if bars else "line", "fillOpacity": 60 if bars else 10, "showPoints": "never",
              "spanNulls": False}
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    return _panel("timeseries", title, sql, TIME_SERIES, pos, unit=unit, custom=custom, description=description,
                  options={"legend": {"displayMode": "table", "placement": "right", "calcs": ["mean", "max"]},
                           "tooltip": {"mode": "multi", "sort": "desc"}})


def stat(title: str, sql: str, pos: tuple[int, int, int, int], *, unit: str | None = None,
         description: str = "") -> dict[str, Any]:
    """A single-value panel over a one-row table query."""
    return _panel("stat", title, sql, TABLE, pos, unit=unit, description=description,
                  options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                           "colorMode": "value", "graphMode": "none", "textMode": "auto"})


def table(title: str, sql: str, pos: tuple[int, int, int, int], *, description: str = "",
          overrides: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A table panel."""
    return _panel("table", title, sql, TABLE, pos, description=description, overrides=overrides,
                  options={"showHeader": True, "cellHeight": "sm", "footer": {"show": False}})


def barchart(title: str, sql: str, pos: tuple[int, int, int, int], *, unit: str | None = None,
             description: str = "") -> dict[str, Any]:
    """A bar chart over a table query: first column is the category, the rest values."""
    return _panel("barchart", title, sql, TABLE, pos, unit=unit, description=description,
                  options={"orientation": "auto", "showValue": "auto", "stacking": "none",
                           "legend": {"displayMode": "list", "placement": "bottom"}})


def trace(title: str, sql: str, pos: tuple[int, int, int, int], *, description: str = "") -> dict[str, Any]:
    """Grafana's trace view over a query in the plugin's trace format."""
    return _panel("traces", title, sql, TRACE, pos, description=description)


def unit_override(name: str, unit: str) -> dict[str, Any]:
    return {"matcher": {"id": "byName", "options": name}, "properties": [{"id": "unit", "value": unit}]}


def link_override(name: str, title: str, url: str) -> dict[str, Any]:
    return {"matcher": {"id": "byName", "options": name},
            "properties": [{"id": "links", "value": [{"title": title, "url": url}]}]}


# -- template variables --------------------------------------------------------------

def datasource_variable() -> dict[str, Any]:
    return {"name": "datasource", "label": "Data source", "type": "datasource", "query": PLUGIN_ID,
            "refresh": 1, "regex": "", "hide": 0, "current": {}, "options": []}


def query_variable(name: str, label: str, sql: str, *, multi: bool = True, include_all: bool = True) -> dict[str, Any]:
    """A variable whose values come from SQL (``$__timeFilter`` keeps the list to the time range)."""
    variable = {
        "name": name, "label": label, "type": "query", "datasource": DS,
        "query": {"refId": f"var-{name}", "editorType": "sql", "rawSql": sql.strip(), "format": TABLE,
                  "pluginVersion": PLUGIN_VERSION, "queryType": "table"},
        "definition": sql.strip(), "refresh": 2, "sort": 1, "multi": multi, "includeAll": include_all,
        "hide": 0, "options": [], "regex": "",
    }
    if include_all:
        variable["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    else:
        variable["current"] = {}
    return variable


def call_variables() -> list[dict[str, Any]]:
    """datasource, provider, model, service, user, source: model follows provider, user follows service."""
    return [
        datasource_variable(),
        query_variable("provider", "Provider", """
SELECT DISTINCT Provider FROM genops_calls
WHERE $__timeFilter(Timestamp) AND Provider != ''
ORDER BY Provider"""),
        query_variable("model", "Model", """
SELECT DISTINCT RequestModel FROM genops_calls
WHERE $__timeFilter(Timestamp) AND RequestModel != ''
  AND $__conditionalAll(Provider IN (${provider:singlequote}), $provider)
ORDER BY RequestModel"""),
        query_variable("service", "Service", """
SELECT DISTINCT ServiceName FROM genops_calls
WHERE $__timeFilter(Timestamp) AND ServiceName != ''
ORDER BY ServiceName"""),
        query_variable("user", "User", """
SELECT DISTINCT UserId FROM genops_calls
WHERE $__timeFilter(Timestamp) AND UserId != ''
  AND $__conditionalAll(ServiceName IN (${service:singlequote}), $service)
ORDER BY UserId"""),
        query_variable("source", "Recorded by", """
SELECT DISTINCT ScopeName FROM genops_calls
WHERE $__timeFilter(Timestamp) AND Operation NOT IN ('invoke_agent', 'create_agent', 'execute_tool')
ORDER BY ScopeName"""),
    ]


def anomaly_annotation() -> dict[str, Any]:
    """Anomalies found by the jobs, drawn as regions on every time-series panel."""
    sql = f"""
SELECT `start` AS time,
       if(status = 'open', now(), `end`) AS timeEnd,
       concat('[', severity, '] ', detector, ': ', entity) AS title,
       concat('[', severity, '] ', detector, ' ', entity, ': ', metric, ' ', toString(round(observed, 4)),
              ' vs expected ', toString(round(expected, 4)), ' (score ', toString(round(score, 2)), ', ', status, ')') AS text,
       arrayFilter(x -> x != '', [detector, severity, status]) AS tags
FROM {ANOMALY_TABLE}
WHERE {ANOMALY_OVERLAP}
ORDER BY time"""
    return {"name": "Anomalies", "datasource": DS, "enable": True, "hide": False, "iconColor": "red",
            "target": {**_target(sql, TABLE, "Anomalies"), "limit": 100}}


def rollout_annotation(*, one_route: bool = False) -> dict[str, Any]:
    """Canary rollout decisions (genops_rollouts: start, advance, promote, rollback) as points in time.

    ``one_route``: only the decisions of the dashboard's ``$route`` (the Rollouts dashboard).
    """
    route = "\n  AND Route = ${route:singlequote}" if one_route else ""
    sql = f"""
SELECT Timestamp AS time,
       concat('rollout ', Action, ': ', Route) AS title,
       concat(Action, ' ', Route, ' ', toString(Percent), '%: ', Reason) AS text,
       arrayFilter(x -> x != '', ['rollout', toString(Action), toString(Route)]) AS tags
FROM {ROLLOUT_TABLE}
WHERE $__timeFilter(Timestamp) AND {ROLLOUT_DECISION}{route}
ORDER BY time"""
    return {"name": "Rollouts", "datasource": DS, "enable": True, "hide": False, "iconColor": "purple",
            "target": {**_target(sql, TABLE, "Rollouts"), "limit": 100}}


def grafana_annotation() -> dict[str, Any]:
    return {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}


def dashboard(uid: str, title: str, description: str, panels: list[dict[str, Any]],
              variables: list[dict[str, Any]], *, annotations: bool = True,
              extra_annotations: list[dict[str, Any]] | None = None, time_from: str = "now-6h") -> dict[str, Any]:
    """A complete dashboard model (schemaVersion 39; panel ids assigned in order).

    ``annotations``: draw the anomalies; ``extra_annotations`` are drawn after them.
    """
    for number, panel in enumerate(panels, start=1):
        panel["id"] = number
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": TAGS,
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "1m",
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "links": [{"title": "GenOps", "type": "dashboards", "tags": ["genops"], "asDropdown": True,
                   "includeVars": True, "keepTime": True}],
        "annotations": {"list": [grafana_annotation(), *([anomaly_annotation()] if annotations else []),
                                 *(extra_annotations or [])]},
        "templating": {"list": variables},
        "panels": panels,
    }


# -- the dashboards ------------------------------------------------------------------

def overview() -> dict[str, Any]:
    f = CALL_FILTER
    panels = [
        stat("Requests", f"SELECT count() AS requests FROM genops_calls WHERE {f}", (0, 0, 4, 4), unit="short"),
        stat("Error rate", f"SELECT countIf(StatusCode = 'Error') / greatest(count(), 1) AS error_rate "
                           f"FROM genops_calls WHERE {f}",
             (4, 0, 4, 4), unit="percentunit"),
        stat("p95 latency", f"SELECT quantile(0.95)(Duration / 1e6) AS p95_ms FROM genops_calls WHERE {f}",
             (8, 0, 4, 4), unit="ms"),
        stat("p95 time to first token", f"SELECT quantile(0.95)(TtftMs) AS ttft_p95_ms FROM genops_calls WHERE {f}",
             (12, 0, 4, 4), unit="ms", description="Streamed calls only."),
        stat("Output tokens/s (median)", f"SELECT median(OutputTokensPerSecond) AS tokens_per_s FROM genops_calls WHERE {f}",
             (16, 0, 4, 4), unit="short"),
        stat("Cost", f"SELECT sum(ifNull(CostUsd, 0)) AS cost_usd FROM genops_calls WHERE {f}", (20, 0, 4, 4),
             unit="currencyUSD", description="Calls with a known price; see the Cost dashboard for unknown ones."),
        timeseries("Requests/s by provider", f"""
SELECT $__timeInterval(Timestamp) AS time, Provider, count() / $__interval_s AS requests_per_s
FROM genops_calls
WHERE {f}
GROUP BY time, Provider
ORDER BY time""", (0, 4, 12, 8), unit="reqps", stack=True),
        timeseries("Error rate by model", f"""
SELECT $__timeInterval(Timestamp) AS time, RequestModel, countIf(StatusCode = 'Error') / count() AS error_rate
FROM genops_calls
WHERE {f}
GROUP BY time, RequestModel
ORDER BY time""", (12, 4, 12, 8), unit="percentunit"),
        timeseries("Latency p50 / p95 / p99", f"""
SELECT $__timeInterval(Timestamp) AS time,
       quantile(0.5)(Duration / 1e6) AS p50,
       quantile(0.95)(Duration / 1e6) AS p95,
       quantile(0.99)(Duration / 1e6) AS p99
FROM genops_calls
WHERE {f}
GROUP BY time
ORDER BY time""", (0, 12, 12, 8), unit="ms", description="Whole call, first byte of the request to the last of the response."),
        timeseries("p95 latency by model", f"""
SELECT $__timeInterval(Timestamp) AS time, RequestModel, quantile(0.95)(Duration / 1e6) AS p95_ms
FROM genops_calls
WHERE {f}
GROUP BY time, RequestModel
ORDER BY time""", (12, 12, 12, 8), unit="ms"),
        timeseries("Time to first token p50 / p95 by model", f"""
SELECT $__timeInterval(Timestamp) AS time, RequestModel,
       quantile(0.5)(TtftMs) AS ttft_p50, quantile(0.95)(TtftMs) AS ttft_p95
FROM genops_calls
WHERE {f} AND TtftMs IS NOT NULL
GROUP BY time, RequestModel
ORDER BY time""", (0, 20, 12, 8), unit="ms"),
        timeseries("Output tokens/s by model (median)", f"""
SELECT $__timeInterval(Timestamp) AS time, RequestModel, median(OutputTokensPerSecond) AS tokens_per_s
FROM genops_calls
WHERE {f} AND OutputTokensPerSecond IS NOT NULL
GROUP BY time, RequestModel
ORDER BY time""", (12, 20, 12, 8), unit="short"),
        timeseries("Requests/s by service", f"""
SELECT $__timeInterval(Timestamp) AS time, ServiceName, count() / $__interval_s AS requests_per_s
FROM genops_calls
WHERE {f}
GROUP BY time, ServiceName
ORDER BY time""", (0, 28, 12, 8), unit="reqps", stack=True),
        timeseries("Errors by type", f"""
SELECT $__timeInterval(Timestamp) AS time, if(ErrorType = '', toString(HttpStatus), ErrorType) AS error, count() AS errors
FROM genops_calls
WHERE {f} AND StatusCode = 'Error'
GROUP BY time, error
ORDER BY time""", (12, 28, 12, 8), unit="short", bars=True, stack=True),
        table("By provider, model and service", f"""
SELECT Provider, RequestModel AS model, ServiceName AS service,
       count() AS calls,
       countIf(StatusCode = 'Error') AS errors,
       round(countIf(StatusCode = 'Error') / count(), 4) AS error_rate,
       round(quantile(0.5)(Duration / 1e6), 1) AS p50_ms,
       round(quantile(0.95)(Duration / 1e6), 1) AS p95_ms,
       round(quantile(0.99)(Duration / 1e6), 1) AS p99_ms,
       round(quantile(0.5)(TtftMs), 1) AS ttft_p50_ms,
       round(median(OutputTokensPerSecond), 1) AS tokens_per_s,
       round(sum(ifNull(CostUsd, 0)), 4) AS cost_usd
FROM genops_calls
WHERE {f}
GROUP BY Provider, model, service
ORDER BY calls DESC
LIMIT 200""", (0, 36, 24, 9), overrides=[unit_override("error_rate", "percentunit"),
                                       unit_override("cost_usd", "currencyUSD")]),
    ]
    return dashboard("genops-overview", "GenOps / Overview",
                     "Traffic, errors, latency, time to first token and throughput of every model call.",
                     panels, call_variables(), extra_annotations=[rollout_annotation()])


def cost() -> dict[str, Any]:
    f = CALL_FILTER
    variables = call_variables() + [query_variable("property", "Custom property", """
SELECT DISTINCT arrayJoin(mapKeys(Properties)) AS property FROM genops_calls
WHERE $__timeFilter(Timestamp)
ORDER BY property""", multi=False, include_all=False)]
    panels = [
        stat("Cost", f"SELECT sum(ifNull(CostUsd, 0)) AS cost_usd FROM genops_calls WHERE {f}", (0, 0, 6, 4),
             unit="currencyUSD"),
        stat("Cost per 1k calls", f"SELECT 1000 * sum(ifNull(CostUsd, 0)) / greatest(countIf(CostKnown = 1), 1) AS cost_per_1k "
                                  f"FROM genops_calls WHERE {f}",
             (6, 0, 6, 4), unit="currencyUSD"),
        stat("Saved by cached input", f"SELECT sum(SavingsUsd) AS saved_usd FROM genops_cache_savings WHERE {f}",
             (12, 0, 6, 4), unit="currencyUSD",
             description="What the cached input tokens would have cost at the model's uncached input price, "
                         "minus what they cost."),
        stat("Calls with unknown price", f"SELECT countIf(CostKnown = 0) AS unknown_price_calls FROM genops_calls WHERE {f}",
             (18, 0, 6, 4), unit="short",
             description="No price was found for these calls (model not in the price list, or no usage reported). "
                         "They are not counted as $0."),
        timeseries("Cost by model", f"""
SELECT $__timeInterval(Timestamp) AS time, RequestModel, sum(ifNull(CostUsd, 0)) AS cost_usd
FROM genops_calls
WHERE {f}
GROUP BY time, RequestModel
ORDER BY time""", (0, 4, 12, 8), unit="currencyUSD", bars=True, stack=True),
        timeseries("Cost by provider", f"""
SELECT $__timeInterval(Timestamp) AS time, Provider, sum(ifNull(CostUsd, 0)) AS cost_usd
FROM genops_calls
WHERE {f}
GROUP BY time, Provider
ORDER BY time""", (12, 4, 12, 8), unit="currencyUSD", bars=True, stack=True),
        timeseries("Cost by user", f"""
SELECT $__timeInterval(Timestamp) AS time, if(UserId = '', '(no user)', UserId) AS user, sum(ifNull(CostUsd, 0)) AS cost_usd
FROM genops_calls
WHERE {f}
GROUP BY time, user
ORDER BY time""", (0, 12, 12, 8), unit="currencyUSD", bars=True, stack=True),
        timeseries("Cost by custom property ${property}", f"""
SELECT $__timeInterval(Timestamp) AS time,
       if(Properties[${{property:singlequote}}] = '', '(unset)', Properties[${{property:singlequote}}]) AS value,
       sum(ifNull(CostUsd, 0)) AS cost_usd
FROM genops_calls
WHERE {f}
GROUP BY time, value
ORDER BY time""", (12, 12, 12, 8), unit="currencyUSD", bars=True, stack=True,
                   description="Set with a GenOps-Property-<name> request header; pick the property above."),
        table("Top spenders", f"""
SELECT if(UserId = '', '(no user)', UserId) AS user,
       count() AS calls,
       round(sum(ifNull(CostUsd, 0)), 4) AS cost_usd,
       sum(InputTokens) AS input_tokens,
       sum(OutputTokens) AS output_tokens,
       countIf(CostKnown = 0) AS unknown_price_calls,
       uniqExact(SessionId) AS sessions
FROM genops_calls
WHERE {f}
GROUP BY user
ORDER BY cost_usd DESC
LIMIT 20""", (0, 20, 12, 9), overrides=[unit_override("cost_usd", "currencyUSD")]),
        table("Cost per session", f"""
SELECT SessionId AS session, any(UserId) AS user, any(ServiceName) AS service,
       count() AS calls,
       round(sum(ifNull(CostUsd, 0)), 4) AS cost_usd,
       min(Timestamp) AS started,
       round((toUnixTimestamp64Milli(max(Timestamp)) - toUnixTimestamp64Milli(min(Timestamp))) / 1000, 1) AS span_s
FROM genops_calls
WHERE {f} AND SessionId != ''
GROUP BY session
ORDER BY cost_usd DESC
LIMIT 50""", (12, 20, 12, 9), overrides=[unit_override("cost_usd", "currencyUSD"), unit_override("span_s", "s")]),
        table("Calls with unknown price", f"""
SELECT Provider, RequestModel AS model, count() AS calls,
       sum(InputTokens) AS input_tokens, sum(OutputTokens) AS output_tokens,
       max(Timestamp) AS last_seen
FROM genops_calls
WHERE {f} AND CostKnown = 0
GROUP BY Provider, model
ORDER BY calls DESC
LIMIT 50""", (0, 29, 12, 8)),
        timeseries("What cached input saved", f"""
SELECT $__timeInterval(Timestamp) AS time, RequestModel, sum(SavingsUsd) AS saved_usd
FROM genops_cache_savings
WHERE {f}
GROUP BY time, RequestModel
ORDER BY time""", (12, 29, 12, 8), unit="currencyUSD", bars=True, stack=True,
                   description="Per model: cached input tokens priced at the uncached input price, minus their cached price."),
    ]
    return dashboard("genops-cost", "GenOps / Cost",
                     "Spend in USD by model, provider, user, session and custom property; cache savings; unpriced calls.",
                     panels, variables, time_from="now-24h")


def tokens() -> dict[str, Any]:
    f = CALL_FILTER
    panels = [
        stat("Input tokens", f"SELECT sum(InputTokens) AS input_tokens FROM genops_calls WHERE {f}", (0, 0, 6, 4), unit="short"),
        stat("Output tokens", f"SELECT sum(OutputTokens) AS output_tokens FROM genops_calls WHERE {f}", (6, 0, 6, 4),
             unit="short"),
        stat("Cache hit ratio", f"SELECT sum(CacheReadTokens) / greatest(sum(InputTokens), 1) AS cached_share "
                                f"FROM genops_calls WHERE {f}",
             (12, 0, 6, 4), unit="percentunit", description="Share of input tokens read from the provider's prompt cache."),
        stat("Estimated token counts", f"SELECT countIf(TokensEstimated = 1) / greatest(count(), 1) AS estimated_share "
                                       f"FROM genops_calls WHERE {f}",
             (18, 0, 6, 4), unit="percentunit",
             description="Calls whose provider reported no usage; GenOps estimated the tokens."),
        timeseries("Input / output / cached / reasoning tokens", f"""
SELECT $__timeInterval(Timestamp) AS time,
       sum(InputTokens) AS input,
       sum(OutputTokens) AS output,
       sum(CacheReadTokens) AS cached_input,
       sum(ReasoningTokens) AS reasoning
FROM genops_calls
WHERE {f}
GROUP BY time
ORDER BY time""", (0, 4, 24, 8), unit="short",
                   description="Cached input is part of input and reasoning part of output, "
                               "as the GenAI conventions count them."),
        timeseries("Tokens by model", f"""
SELECT $__timeInterval(Timestamp) AS time, RequestModel, sum(InputTokens + OutputTokens) AS tokens
FROM genops_calls
WHERE {f}
GROUP BY time, RequestModel
ORDER BY time""", (0, 12, 12, 8), unit="short", stack=True),
        timeseries("Context size p50 / p95 / max", f"""
SELECT $__timeInterval(Timestamp) AS time,
       quantile(0.5)(InputTokens) AS p50, quantile(0.95)(InputTokens) AS p95, max(InputTokens) AS max
FROM genops_calls
WHERE {f}
GROUP BY time
ORDER BY time""", (12, 12, 12, 8), unit="short"),
        barchart("Context size distribution", f"""
SELECT concat('<= ', toString(upper)) AS input_tokens, calls
FROM (
    SELECT toUInt64(exp2(ceil(log2(greatest(InputTokens, 1))))) AS upper, count() AS calls
    FROM genops_calls
    WHERE {f}
    GROUP BY upper
)
ORDER BY upper""", (0, 20, 12, 8), unit="short", description="Calls by input tokens, in power-of-two buckets."),
        table("Tokens by model", f"""
SELECT Provider, RequestModel AS model, count() AS calls,
       round(avg(InputTokens)) AS avg_input,
       round(avg(OutputTokens)) AS avg_output,
       max(InputTokens) AS max_input,
       round(sum(CacheReadTokens) / greatest(sum(InputTokens), 1), 3) AS cached_share,
       round(sum(ReasoningTokens) / greatest(sum(OutputTokens), 1), 3) AS reasoning_share,
       countIf(TokensEstimated = 1) AS estimated_calls
FROM genops_calls
WHERE {f}
GROUP BY Provider, model
ORDER BY calls DESC
LIMIT 100""", (12, 20, 12, 8), overrides=[unit_override("cached_share", "percentunit"),
                                         unit_override("reasoning_share", "percentunit")]),
    ]
    return dashboard("genops-tokens", "GenOps / Tokens",
                     "Input, output, cached and reasoning tokens; context sizes.", panels, call_variables())


FINDINGS = "(SafetyPii + SafetySecrets + SafetyInjection)"


def safety() -> dict[str, Any]:
    f = CALL_FILTER
    panels = [
        stat("Calls with findings", f"SELECT countIf({FINDINGS} > 0) AS flagged_calls FROM genops_calls WHERE {f}",
             (0, 0, 6, 4), unit="short"),
        stat("Blocked calls", f"SELECT countIf(SafetyAction = 'block') AS blocked FROM genops_calls WHERE {f}",
             (6, 0, 6, 4), unit="short"),
        stat("PII findings", f"SELECT sum(SafetyPii) AS pii FROM genops_calls WHERE {f}", (12, 0, 4, 4), unit="short"),
        stat("Secret findings", f"SELECT sum(SafetySecrets) AS secrets FROM genops_calls WHERE {f}", (16, 0, 4, 4), unit="short"),
        stat("Injection findings", f"SELECT sum(SafetyInjection) AS injection FROM genops_calls WHERE {f}", (20, 0, 4, 4),
             unit="short"),
        timeseries("Findings by category", f"""
SELECT $__timeInterval(Timestamp) AS time,
       sum(SafetyPii) AS pii, sum(SafetySecrets) AS secrets, sum(SafetyInjection) AS injection
FROM genops_calls
WHERE {f}
GROUP BY time
ORDER BY time""", (0, 4, 12, 8), unit="short", bars=True, stack=True),
        timeseries("Flagged calls by action", f"""
SELECT $__timeInterval(Timestamp) AS time, if(SafetyAction = '', '(none)', SafetyAction) AS action, count() AS calls
FROM genops_calls
WHERE {f} AND {FINDINGS} > 0
GROUP BY time, action
ORDER BY time""", (12, 4, 12, 8), unit="short", bars=True, stack=True),
        timeseries("Blocked calls by service", f"""
SELECT $__timeInterval(Timestamp) AS time, ServiceName, count() AS blocked
FROM genops_calls
WHERE {f} AND SafetyAction = 'block'
GROUP BY time, ServiceName
ORDER BY time""", (0, 12, 12, 8), unit="short", bars=True, stack=True),
        table("Top users by findings", f"""
SELECT if(UserId = '', '(no user)', UserId) AS user,
       countIf({FINDINGS} > 0) AS flagged_calls,
       sum(SafetyPii) AS pii, sum(SafetySecrets) AS secrets, sum(SafetyInjection) AS injection,
       countIf(SafetyAction = 'block') AS blocked,
       count() AS calls
FROM genops_calls
WHERE {f}
GROUP BY user
HAVING flagged_calls > 0
ORDER BY flagged_calls DESC, user
LIMIT 20""", (12, 12, 12, 8)),
        table("Recent flagged calls", f"""
SELECT Timestamp AS time, ServiceName AS service, UserId AS user, Provider, RequestModel AS model,
       SafetyPii AS pii, SafetySecrets AS secrets, SafetyInjection AS injection,
       SafetyAction AS action, TraceId
FROM genops_calls
WHERE {f} AND {FINDINGS} > 0
ORDER BY Timestamp DESC
LIMIT 100""", (0, 20, 24, 9), overrides=[link_override("TraceId", "Open trace",
                                                    "/d/genops-agents?var-trace_id=${__value.raw}&${__url_time_range}")]),
    ]
    return dashboard("genops-safety", "GenOps / Safety",
                     "PII, secret and prompt-injection findings, what the proxy did about them, and who triggers them.",
                     panels, call_variables(), time_from="now-24h")


# The trace view: the query the plugin's own trace-id lookup builds (OTel mode), with
# the trace-id/time lookup table narrowing the scan. An empty trace_id shows the most
# recent trace that has a model call in the time range.
TRACE_SQL = """
WITH
  if(${trace_id:singlequote} != '', ${trace_id:singlequote},
     (SELECT TraceId FROM genops_calls WHERE $__timeFilter(Timestamp)
        AND $__conditionalAll(ServiceName IN (${service:singlequote}), $service)
      ORDER BY Timestamp DESC LIMIT 1)) AS trace_id,
  (SELECT min(Start) FROM otel_traces_trace_id_ts WHERE TraceId = trace_id) AS trace_start,
  (SELECT max(End) + 1 FROM otel_traces_trace_id_ts WHERE TraceId = trace_id) AS trace_end
SELECT
  TraceId AS traceID,
  SpanId AS spanID,
  ParentSpanId AS parentSpanID,
  ServiceName AS serviceName,
  SpanName AS operationName,
  toUnixTimestamp64Nano(Timestamp) / 1000000 AS startTime,
  Duration / 1000000 AS duration,
  arrayMap(key -> map('key', key, 'value', SpanAttributes[key]), mapKeys(SpanAttributes)) AS tags,
  arrayMap(key -> map('key', key, 'value', ResourceAttributes[key]), mapKeys(ResourceAttributes)) AS serviceTags,
  if(StatusCode IN ('Error', 'STATUS_CODE_ERROR'), 2, 0) AS statusCode,
  arrayMap((name, timestamp, attributes) -> tuple(name, toString(toUnixTimestamp64Milli(timestamp)),
      arrayMap(key -> map('key', key, 'value', attributes[key]), mapKeys(attributes)))::Tuple(name String,
        timestamp String, fields Array(Map(String, String))),
    `Events.Name`, `Events.Timestamp`, `Events.Attributes`) AS logs,
  arrayMap((traceID, spanID, attributes) -> tuple(traceID, spanID,
      arrayMap(key -> map('key', key, 'value', attributes[key]), mapKeys(attributes)))::Tuple(traceID String,
        spanID String, tags Array(Map(String, String))),
    `Links.TraceId`, `Links.SpanId`, `Links.Attributes`) AS references,
  SpanKind AS kind,
  StatusMessage AS statusMessage,
  ScopeName AS instrumentationLibraryName,
  ScopeVersion AS instrumentationLibraryVersion,
  TraceState AS traceState
FROM otel_traces
WHERE TraceId = trace_id AND Timestamp >= trace_start AND Timestamp <= trace_end
ORDER BY Timestamp
LIMIT 5000"""


def agents() -> dict[str, Any]:
    f = CALL_FILTER
    trace_link = "/d/genops-agents?var-trace_id=${__value.raw}&${__url_time_range}"
    variables = call_variables() + [{
        "name": "trace_id", "label": "Trace id", "type": "textbox", "query": "", "hide": 0,
        "current": {"text": "", "value": ""}, "options": [],
        "description": "A trace id for the trace view; empty shows the latest trace.",
    }]
    panels = [
        stat("Sessions", f"SELECT uniq(SessionId) AS sessions FROM genops_calls WHERE {f} AND SessionId != ''",
             (0, 0, 6, 4), unit="short"),
        stat("Calls per session (avg)", f"SELECT count() / greatest(uniq(SessionId), 1) AS calls_per_session "
                                        f"FROM genops_calls WHERE {f} AND SessionId != ''",
             (6, 0, 6, 4), unit="short"),
        stat("Agents", f"SELECT uniq(AgentName) AS agents FROM genops_calls WHERE {f} AND AgentName != ''",
             (12, 0, 6, 4), unit="short"),
        stat("Traces", f"SELECT uniq(TraceId) AS traces FROM genops_calls WHERE {f}", (18, 0, 6, 4), unit="short"),
        table("Sessions", f"""
SELECT SessionId AS session,
       any(UserId) AS user,
       anyIf(AgentName, AgentName != '') AS agent,
       min(Timestamp) AS started,
       round((toUnixTimestamp64Milli(max(Timestamp)) - toUnixTimestamp64Milli(min(Timestamp))
              + intDiv(argMax(Duration, Timestamp), 1000000)) / 1000, 1) AS duration_s,
       count() AS calls,
       countIf(StatusCode = 'Error') AS errors,
       round(sum(ifNull(CostUsd, 0)), 4) AS cost_usd,
       sum(InputTokens + OutputTokens) AS tokens,
       argMax(TraceId, Timestamp) AS last_trace
FROM genops_calls
WHERE {f} AND SessionId != ''
GROUP BY session
ORDER BY started DESC
LIMIT 200""", (0, 4, 24, 10), overrides=[unit_override("duration_s", "s"), unit_override("cost_usd", "currencyUSD"),
                                        link_override("last_trace", "Open trace", trace_link)],
              description="One row per session (gen_ai.conversation.id / GenOps-Session-Id)."),
        timeseries("Calls by agent", f"""
SELECT $__timeInterval(Timestamp) AS time, if(AgentName = '', '(no agent)', AgentName) AS agent, count() AS calls
FROM genops_calls
WHERE {f}
GROUP BY time, agent
ORDER BY time""", (0, 14, 12, 8), unit="short", stack=True),
        table("Agents", f"""
SELECT if(AgentName = '', '(no agent)', AgentName) AS agent,
       uniq(SessionId) AS sessions,
       uniq(TraceId) AS traces,
       count() AS calls,
       countIf(StatusCode = 'Error') AS errors,
       round(quantile(0.95)(Duration / 1e6), 1) AS p95_ms,
       round(sum(ifNull(CostUsd, 0)), 4) AS cost_usd
FROM genops_calls
WHERE {f}
GROUP BY agent
ORDER BY calls DESC
LIMIT 50""", (12, 14, 12, 8), overrides=[unit_override("cost_usd", "currencyUSD")]),
        table("Recent traces", f"""
SELECT TraceId AS trace,
       min(Timestamp) AS started,
       any(ServiceName) AS service,
       anyIf(AgentName, AgentName != '') AS agent,
       count() AS model_calls,
       countIf(StatusCode = 'Error') AS errors,
       round(sum(ifNull(CostUsd, 0)), 4) AS cost_usd
FROM genops_calls
WHERE {f}
  AND TraceId IN (SELECT TraceId FROM genops_calls WHERE {f} ORDER BY Timestamp DESC LIMIT 100)
GROUP BY trace
ORDER BY started DESC
LIMIT 100""", (0, 22, 24, 8), overrides=[link_override("trace", "Open trace", trace_link),
                                        unit_override("cost_usd", "currencyUSD")]),
        trace("Trace ${trace_id}", TRACE_SQL, (0, 30, 24, 16),
              description="Agent steps and model calls of one trace (set trace_id above or click a trace)."),
    ]
    return dashboard("genops-agents", "GenOps / Agents & sessions",
                     "Sessions, agents and the trace tree from agent step to model call.", panels, variables,
                     time_from="now-24h")


def anomalies() -> dict[str, Any]:
    variables = [
        datasource_variable(),
        query_variable("detector", "Detector", f"""
SELECT DISTINCT detector FROM {ANOMALY_TABLE}
WHERE {ANOMALY_OVERLAP}
ORDER BY detector"""),
        query_variable("severity", "Severity", f"""
SELECT DISTINCT severity FROM {ANOMALY_TABLE}
WHERE {ANOMALY_OVERLAP}
ORDER BY severity"""),
    ]
    where = f"""{ANOMALY_OVERLAP}
  AND $__conditionalAll(detector IN (${{detector:singlequote}}), $detector)
  AND $__conditionalAll(severity IN (${{severity:singlequote}}), $severity)"""
    panels = [
        stat("Open anomalies", f"SELECT countIf(status = 'open') AS open FROM {ANOMALY_TABLE} WHERE {where}",
             (0, 0, 8, 4), unit="short"),
        stat("Anomalies in range", f"SELECT count() AS anomalies FROM {ANOMALY_TABLE} WHERE {where}",
             (8, 0, 8, 4), unit="short"),
        stat("Critical", f"SELECT countIf(severity = 'critical') AS critical FROM {ANOMALY_TABLE} WHERE {where}",
             (16, 0, 8, 4), unit="short"),
        timeseries("Anomalies started, by detector", f"""
SELECT $__timeInterval(`start`) AS time, detector, count() AS anomalies
FROM {ANOMALY_TABLE}
WHERE $__timeFilter(`start`)
  AND $__conditionalAll(detector IN (${{detector:singlequote}}), $detector)
  AND $__conditionalAll(severity IN (${{severity:singlequote}}), $severity)
GROUP BY time, detector
ORDER BY time""", (0, 4, 24, 8), unit="short", bars=True, stack=True),
        table("Anomalies", f"""
SELECT `start`, if(status = 'open', NULL, `end`) AS resolved, detector, entity, severity, status, metric,
       round(observed, 4) AS observed, round(expected, 4) AS expected, round(score, 2) AS score,
       dateDiff('minute', `start`, if(status = 'open', now(), `end`)) + 1 AS minutes, details
FROM {ANOMALY_TABLE}
WHERE {where}
ORDER BY `start` DESC
LIMIT 500""", (0, 12, 24, 12), description="One row per anomaly: an ongoing one is updated, then resolved."),
    ]
    return dashboard("genops-anomalies", "GenOps / Anomalies",
                     "Latency regressions, error bursts, cost surges, runaway agents and drift found by `genops jobs`.",
                     panels, variables, time_from="now-7d")


# The calls of the chosen route ($route, one value); calls outside a rollout are drawn too, as
# "no rollout" (the route before a start and after a rollback), so a rollout's effect shows.
ROUTE_FILTER = """$__timeFilter(Timestamp)
  AND RouteName != '' AND RouteName = ${route:singlequote}"""
VARIANT = "if(RouteVariant = '', 'no rollout', RouteVariant)"
ERROR_RATE = "countIf(StatusCode = 'Error') / greatest(count(), 1)"
P95_MS = "quantile(0.95)(Duration / 1e6)"
# Mean USD per call over the calls with a known price (NULL where none is known), as the cost gate counts.
COST_PER_CALL = "avgIf(CostUsd, CostKnown = 1)"


def rollouts() -> dict[str, Any]:
    f = ROUTE_FILTER
    variables = [
        datasource_variable(),
        query_variable("route", "Route", """
SELECT DISTINCT RouteName FROM genops_calls
WHERE $__timeFilter(Timestamp) AND RouteName != ''
ORDER BY RouteName""", multi=False, include_all=False),
    ]

    def arm_stat(title: str, expression: str, variant: str, x: int, unit: str) -> dict[str, Any]:
        alias = title.lower().replace(" ", "_")
        return stat(title, f"SELECT {expression} AS {alias} FROM genops_calls WHERE {f} AND RouteVariant = '{variant}'",
                    (x, 0, 4, 4), unit=unit)

    def by_variant(title: str, value: str, pos: tuple[int, int, int, int], unit: str, **options: Any) -> dict[str, Any]:
        return timeseries(title, f"""
SELECT $__timeInterval(Timestamp) AS time, {VARIANT} AS variant, {value}
FROM genops_calls
WHERE {f}
GROUP BY time, variant
ORDER BY time""", pos, unit=unit, **options)

    stats = [
        stat("Canary share of calls", f"SELECT countIf(RouteVariant = 'canary') / greatest(count(), 1) AS canary_share "
                                      f"FROM genops_calls WHERE {f}",
             (0, 0, 4, 4), unit="percentunit", description="Share of the route's calls that went to a rollout's canary."),
        arm_stat("Canary error rate", ERROR_RATE, "canary", 4, "percentunit"),
        arm_stat("Baseline error rate", ERROR_RATE, "baseline", 8, "percentunit"),
        arm_stat("Canary p95 latency", P95_MS, "canary", 12, "ms"),
        arm_stat("Baseline p95 latency", P95_MS, "baseline", 16, "ms"),
        stat("Decisions", f"SELECT count() AS decisions FROM {ROLLOUT_TABLE} "
                                  f"WHERE $__timeFilter(Timestamp) AND Route = ${{route:singlequote}} AND {ROLLOUT_DECISION}",
             (20, 0, 4, 4), unit="short", description="Starts, advances, promotions and rollbacks in the time range."),
    ]
    panels = [
        *stats,
        by_variant("Error rate: canary vs baseline", f"{ERROR_RATE} AS error_rate", (0, 4, 12, 8), "percentunit",
                   description="Share of calls with an error status; the error_rate gate compares the arms."),
        by_variant("p95 latency: canary vs baseline", f"{P95_MS} AS p95_ms", (12, 4, 12, 8), "ms",
                   description="Whole call; the p95_latency gate counts canary calls slower than the baseline's p95."),
        by_variant("Cost per call: canary vs baseline", f"{COST_PER_CALL} AS cost_per_call", (0, 12, 12, 8), "currencyUSD",
                   description="Mean USD per call over the calls with a known price."),
        by_variant("Calls per variant", "count() AS calls", (12, 12, 12, 8), "short", bars=True, stack=True),
        timeseries("Mean feedback score: canary vs baseline", f"""
SELECT $__timeInterval(Timestamp) AS time, variant, avg(score) AS mean_score
FROM (
    SELECT Timestamp, RequestId, {VARIANT} AS variant
    FROM genops_calls
    WHERE {f} AND RequestId != ''
) AS calls
INNER JOIN (
    SELECT RequestId, argMax(Value, (Timestamp, ScoreId)) AS score
    FROM genops_scores
    WHERE RequestId != '' AND Value IS NOT NULL
      AND RequestId IN (SELECT RequestId FROM genops_calls WHERE {f} AND RequestId != '')
    GROUP BY RequestId, Name, Source
) AS scores USING (RequestId)
GROUP BY time, variant
ORDER BY time""", (0, 20, 12, 8), unit="short",
                   description="Numeric feedback and evaluation scores of the calls (the latest per call, name and "
                               "source), by the time of the call; the score gate compares the arms."),
        table("Canary vs baseline", f"""
SELECT {VARIANT} AS variant,
       arrayStringConcat(arraySort(groupUniqArray(RouteTarget)), ', ') AS targets,
       count() AS calls,
       countIf(StatusCode = 'Error') AS errors,
       round({ERROR_RATE}, 4) AS error_rate,
       round(quantile(0.5)(Duration / 1e6), 1) AS p50_ms,
       round({P95_MS}, 1) AS p95_ms,
       round({COST_PER_CALL}, 6) AS cost_per_call,
       round(countIf(SafetyPii + SafetySecrets + SafetyInjection > 0) / count(), 4) AS flagged_share
FROM genops_calls
WHERE {f}
GROUP BY variant
ORDER BY variant""", (12, 20, 12, 8), overrides=[unit_override("error_rate", "percentunit"),
                                                unit_override("cost_per_call", "currencyUSD"),
                                                unit_override("flagged_share", "percentunit")]),
        table("Rollout decisions", f"""
SELECT Timestamp AS time, Action AS action, Percent AS percent, Target AS target, Reason AS reason,
       Actor AS actor, RolloutId AS rollout
FROM {ROLLOUT_TABLE}
WHERE $__timeFilter(Timestamp) AND Route = ${{route:singlequote}} AND {ROLLOUT_DECISION}
ORDER BY Timestamp DESC
LIMIT 200""", (0, 28, 24, 9), overrides=[unit_override("percent", "percent")],
              description="Every start, advance, promotion and rollback of the route; the reason names the gate "
                          "that failed or the gates that passed."),
    ]
    return dashboard("genops-rollouts", "GenOps / Rollouts",
                     "A route's canary against its baseline: errors, latency, cost, traffic and feedback scores per "
                     "variant, with every rollout decision.", panels, variables,
                     extra_annotations=[rollout_annotation(one_route=True)])


DASHBOARDS = {
    "overview": overview,
    "cost": cost,
    "tokens": tokens,
    "safety": safety,
    "agents": agents,
    "anomalies": anomalies,
    "rollouts": rollouts,
}


def render(model: dict[str, Any]) -> str:
    """The JSON text of one dashboard as written to disk (stable: a test compares it)."""
    return json.dumps(model, indent=2, ensure_ascii=False) + "\n"


def write_all(out_dir: Path = OUT_DIR) -> list[Path]:
    """Write every dashboard to ``out_dir/<name>.json``; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, make in DASHBOARDS.items():
        path = out_dir / f"{name}.json"
        path.write_text(render(make()))
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_all():
        print(written)
