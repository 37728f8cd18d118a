"""The Grafana dashboards: static checks, then every panel's SQL run on chDB.

No Grafana runs here. ``grafana_sim`` turns a panel's SQL into what ClickHouse would
receive (the plugin's ``$__conditionalAll``, Grafana's variable replacement, the plugin's
backend macros) and the result is checked for the shape the panel needs, with every
variable on All and again on one value.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import open_chdb
from dashboard_traffic import (
    MODELS,
    ROUTE,
    ROUTE_BASELINE,
    ROUTE_CANARY,
    SERVICES,
    USERS,
    Seeded,
    seed_anomalies,
    seed_rollouts,
    seed_scores,
    seed_traffic,
)
from grafana_sim import ALL, QueryContext, apply_conditional_all, expand_macros, interpolate, replace_variables

from genops.dashboards import build
from genops.storage.migrate import migrate

pytestmark = pytest.mark.integration

DASHBOARD_DIR = Path(build.__file__).resolve().parent / "grafana"
CALL_VARIABLES = ("provider", "model", "service", "user", "source")
TRACE_COLUMNS = ("traceID", "spanID", "parentSpanID", "serviceName", "operationName", "startTime", "duration",
                 "tags", "serviceTags", "statusCode", "logs", "references", "kind")


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(DASHBOARD_DIR.glob("*.json"))}


DASHBOARDS = load_dashboards()
PANELS = [(name, panel) for name, model in DASHBOARDS.items() for panel in model["panels"]]


def _walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


# -- static ----------------------------------------------------------------------------

def test_seven_dashboards_with_unique_uids_and_titles() -> None:
    assert set(DASHBOARDS) == {"overview", "cost", "tokens", "safety", "agents", "anomalies", "rollouts"}
    uids = [d["uid"] for d in DASHBOARDS.values()]
    titles = [d["title"] for d in DASHBOARDS.values()]
    assert all(uids) and all(titles)
    assert len(set(uids)) == len(uids) and len(set(titles)) == len(titles)
    assert all(len(uid) <= 40 and re.fullmatch(r"[a-zA-Z0-9_-]+", uid) for uid in uids)


def test_json_files_are_what_build_generates() -> None:
    for name, make in build.DASHBOARDS.items():
        assert (DASHBOARD_DIR / f"{name}.json").read_text() == build.render(make()), (
            f"{name}.json is stale: run python -m genops.dashboards.build"
        )


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_datasource_variable_and_no_hard_coded_datasource(name: str) -> None:
    model = DASHBOARDS[name]
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == build.PLUGIN_ID
    assert not variables["datasource"].get("current"), "the default datasource must not be pinned to a uid"
    refs = [node["datasource"] for node in _walk(model) if isinstance(node, dict) and isinstance(node.get("datasource"), dict)]
    assert refs
    for ref in refs:
        if ref.get("type") == "grafana":  # Grafana's built-in annotation source
            continue
        assert ref == {"type": build.PLUGIN_ID, "uid": "${datasource}"}, ref


# The Rollouts dashboard filters by route instead: its arms are different providers and models.
@pytest.mark.parametrize("name", sorted(set(DASHBOARDS) - {"anomalies", "rollouts"}))
def test_call_dashboards_filter_by_provider_model_service_user_with_all(name: str) -> None:
    variables = {v["name"]: v for v in DASHBOARDS[name]["templating"]["list"]}
    for var in CALL_VARIABLES:
        assert variables[var]["type"] == "query"
        assert variables[var]["includeAll"] and variables[var]["multi"]
        assert variables[var]["current"]["value"] == ["$__all"]
    for panel in DASHBOARDS[name]["panels"]:
        sql = panel["targets"][0]["rawSql"]
        if panel["type"] == "traces":
            continue
        for var in CALL_VARIABLES:
            assert f"${var})" in sql, f"{panel['title']} ignores ${var}"
        assert "$__timeFilter(Timestamp)" in sql


@pytest.mark.parametrize("name,panel", PANELS, ids=[f"{n}:{p['title']}" for n, p in PANELS])
def test_every_panel_has_a_query_of_its_shape(name: str, panel: dict[str, Any]) -> None:
    assert panel["targets"], panel["title"]
    target = panel["targets"][0]
    assert target["editorType"] == "sql" and target["rawSql"].strip()
    expected = {"timeseries": 0, "stat": 1, "table": 1, "barchart": 1, "traces": 3}[panel["type"]]
    assert target["format"] == expected
    sql = target["rawSql"]
    if panel["type"] == "timeseries":
        assert "$__timeInterval(" in sql and "AS time" in sql
    # Typed columns only: attribute maps are read by the trace view alone.
    if panel["type"] != "traces":
        assert "SpanAttributes" not in sql and "otel_traces" not in sql
    # Macro arguments without brackets expand the same in old (regex) and new (parser) sqlds.
    for match in re.finditer(r"\$__(timeFilter|timeInterval|timeFilter_ms|dateFilter)\(([^)]*)\)", sql):
        assert "(" not in match.group(2)


def test_anomalies_show_as_annotations_on_the_call_dashboards() -> None:
    for name in ("overview", "cost", "tokens", "safety", "agents"):
        names = [a["name"] for a in DASHBOARDS[name]["annotations"]["list"]]
        assert "Anomalies" in names


def test_rollouts_dashboard_picks_one_route_and_draws_its_decisions() -> None:
    model = DASHBOARDS["rollouts"]
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert set(variables) == {"datasource", "route"}
    assert not variables["route"]["multi"] and not variables["route"]["includeAll"]
    assert "RouteName" in variables["route"]["query"]["rawSql"]
    for panel in model["panels"]:
        sql = panel["targets"][0]["rawSql"]
        assert "${route:singlequote}" in sql and "$__timeFilter(Timestamp)" in sql, panel["title"]
    # Every decision but the gates' routine checks, on this dashboard (its route) and on the overview (every route).
    rollouts = {name: next(a for a in DASHBOARDS[name]["annotations"]["list"] if a["name"] == "Rollouts")
                for name in ("rollouts", "overview")}
    assert "${route:singlequote}" in rollouts["rollouts"]["target"]["rawSql"]
    assert "$route" not in rollouts["overview"]["target"]["rawSql"] and "{route" not in rollouts["overview"]["target"]["rawSql"]
    for annotation in rollouts.values():
        assert "FROM genops_rollouts" in annotation["target"]["rawSql"]
        assert "Action != 'check'" in annotation["target"]["rawSql"]


# -- the simulator itself ----------------------------------------------------------------

def _ctx(**values: Any) -> QueryContext:
    t0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    return QueryContext(t0, t0 + timedelta(hours=1), 30_000, values, {"p": ["a", "b'c"]})


def test_simulator_matches_the_plugin_rules() -> None:
    sql = "WHERE $__conditionalAll(P IN (${p:singlequote}), $p) AND $__timeFilter(Timestamp)"
    assert apply_conditional_all(sql, {"p": ["$__all"]}) == "WHERE 1=1 AND $__timeFilter(Timestamp)"
    assert apply_conditional_all(sql, {"p": ""}) == "WHERE 1=1 AND $__timeFilter(Timestamp)"
    assert apply_conditional_all(sql, {"p": ["a"]}).startswith("WHERE P IN (${p:singlequote}) AND")
    assert replace_variables("${p:singlequote}", _ctx(p=["$__all"])) == "'a','b\\'c'"
    assert replace_variables("$p / ${p} / $__interval_s", _ctx(p=["a", "b"])) == "'a','b' / 'a','b' / $__interval_s"
    assert expand_macros("$__timeFilter(Timestamp)", _ctx()) == (
        "Timestamp >= toDateTime(1795672800) AND Timestamp <= toDateTime(1795676400)")
    assert expand_macros("$__timeInterval(Timestamp) / $__interval_s", _ctx()) == (
        "toStartOfInterval(toDateTime(Timestamp), INTERVAL 30 second) / 30")
    assert expand_macros("$__timeFilter_ms(t) $__fromTime $__toTime_ms", _ctx()) == (
        "t >= fromUnixTimestamp64Milli(1795672800000) AND t <= fromUnixTimestamp64Milli(1795676400000) "
        "toDateTime(1795672800) fromUnixTimestamp64Milli(1795676400000)")
    with pytest.raises(ValueError):
        expand_macros("$__nope(x)", _ctx())


# -- executed on chDB ------------------------------------------------------------------

@pytest.fixture(scope="module")
def store(chdb_dir: Path) -> Iterator[tuple[Any, Seeded]]:
    database = "dash_" + uuid.uuid4().hex[:8]
    migrate(open_chdb(chdb_dir), database, retention_days=3650)  # a fixed day of 2026-11 must outlive the TTL
    client = open_chdb(chdb_dir, database)
    tables = {r[0] for r in client.query(f"SHOW TABLES FROM {database}").result_rows}
    assert {"genops_calls", "genops_cache_savings", "genops_anomalies", "otel_traces_trace_id_ts", "genops_scores",
            "genops_rollouts"} <= tables
    now = datetime.now(UTC)
    seeded = seed_traffic(client, database, now)
    seed_anomalies(client, database, now)
    seed_scores(client, database, now, seeded)
    seed_rollouts(client, database, now)
    yield client, seeded
    client.command(f"DROP DATABASE IF EXISTS {database}")


def run(client: Any, sql: str) -> tuple[list[str], list[str], list[tuple]]:
    result = client.query(sql)
    return list(result.column_names), [t.name for t in result.column_types], list(result.result_rows)


def _variable_options(client: Any, model: dict[str, Any], ctx: QueryContext) -> None:
    """Resolve each query variable in order, as Grafana does, into ``ctx.options``."""
    for variable in model["templating"]["list"]:
        if variable["type"] == "query":
            _, _, rows = run(client, interpolate(variable["query"]["rawSql"], ctx))
            ctx.options[variable["name"]] = [r[0] for r in rows]


def context(mode: str, seeded: Seeded, interval_ms: int) -> QueryContext:
    now = datetime.now(UTC)
    if mode == "all":
        values: dict[str, Any] = {name: [ALL] for name in (*CALL_VARIABLES, "detector", "severity")}
        values.update(property="team", trace_id="", route=ROUTE)
    else:
        values = {"provider": ["openai"], "model": ["gpt-4o"], "service": ["research-agent"], "user": ["alice"],
                  "source": ["genops.proxy"],
                  "detector": ["error_rate"], "severity": ["warning"], "property": "team",
                  "trace_id": seeded.agent_trace_ids[0], "route": ROUTE}
    return QueryContext(now - timedelta(hours=3), now + timedelta(minutes=1), interval_ms, values)


CHOSEN = {"Provider": "openai", "model": "gpt-4o", "RequestModel": "gpt-4o", "service": "research-agent",
          "ServiceName": "research-agent", "user": "alice", "detector": "error_rate", "severity": "warning"}


def check_shape(panel: dict[str, Any], columns: list[str], types: list[str], rows: list[tuple], mode: str,
                seeded: Seeded) -> None:
    kind = panel["type"]
    title = panel["title"]
    assert rows, f"{title}: no rows"
    numeric = [i for i, t in enumerate(types) if re.match(r"(Nullable\()?(U?Int|Float|Decimal)", t)]
    if kind == "timeseries":
        assert columns[0] == "time" and types[0].startswith("DateTime"), (columns, types)
        assert [i for i in numeric if i > 0], f"{title}: no value column"
        assert all(i in numeric or types[i].startswith(("String", "LowCardinality(String)")) for i in range(1, len(columns)))
        times = [r[0] for r in rows]
        assert times == sorted(times), f"{title}: long format must be sorted by time"
    elif kind == "stat":
        assert len(rows) == 1 and len(columns) == 1 and numeric == [0], (title, columns, types)
        assert rows[0][0] is not None, f"{title}: empty value"
    elif kind == "barchart":
        assert types[0].startswith(("String", "LowCardinality")) and 1 in numeric
    elif kind == "table":
        assert len(columns) >= 2
    elif kind == "traces":
        assert set(TRACE_COLUMNS) <= set(columns), columns
        data = [dict(zip(columns, r, strict=True)) for r in rows]
        assert len({d["traceID"] for d in data}) == 1
        span_ids = {d["spanID"] for d in data}
        roots = [d for d in data if d["parentSpanID"] == ""]
        assert len(roots) == 1 and all(d["parentSpanID"] in span_ids for d in data if d["parentSpanID"])
        assert all(isinstance(d["tags"], list) and {"key", "value"} <= set(d["tags"][0]) for d in data if d["tags"])
        if mode == "one":
            assert data[0]["traceID"] == seeded.agent_trace_ids[0]
            names = {d["operationName"] for d in data}
            assert {"invoke_agent researcher", "execute_tool web_search", "chat gpt-4o"} <= names
            assert any(d["logs"] for d in data) and any(d["references"] for d in data)
    if mode == "one":  # a chosen value narrows every labelled result to it
        for i, column in enumerate(columns):
            if column in CHOSEN:
                assert {r[i] for r in rows} == {CHOSEN[column]}, f"{title}: {column} not filtered"


MODES = [("all", 60_000), ("one", 300_000)]


@pytest.mark.parametrize("mode,interval_ms", MODES, ids=[m for m, _ in MODES])
@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_panel_runs_on_chdb(store: tuple[Any, Seeded], name: str, mode: str, interval_ms: int) -> None:
    client, seeded = store
    model = DASHBOARDS[name]
    ctx = context(mode, seeded, interval_ms)
    _variable_options(client, model, ctx)
    for panel in model["panels"]:
        sql = interpolate(panel["targets"][0]["rawSql"], ctx)
        assert "$" not in sql.replace("$__", "") and "$__" not in sql, sql
        try:
            columns, types, rows = run(client, sql)
        except Exception as exc:  # name the panel that failed
            raise AssertionError(f"{name} / {panel['title']} failed: {exc}\n{sql}") from None
        check_shape(panel, columns, types, rows, mode, seeded)
    for annotation in model["annotations"]["list"]:
        if "target" in annotation:
            columns, _, rows = run(client, interpolate(annotation["target"]["rawSql"], ctx))
            if annotation["name"] == "Anomalies":
                assert columns == ["time", "timeEnd", "title", "text", "tags"] and len(rows) == 3
            else:  # rollout decisions are points in time; the Rollouts dashboard's, of its route only
                assert annotation["name"] == "Rollouts" and columns == ["time", "title", "text", "tags"]
                assert len(rows) == (3 if name == "rollouts" else 4), rows


def test_variables_list_what_was_seeded_and_follow_each_other(store: tuple[Any, Seeded]) -> None:
    client, seeded = store
    ctx = context("all", seeded, 60_000)
    _variable_options(client, DASHBOARDS["overview"], ctx)
    assert set(ctx.options["provider"]) == {p for p, _ in MODELS}
    assert set(ctx.options["model"]) == {m for _, m in MODELS}
    assert set(ctx.options["service"]) == set(SERVICES)
    assert set(ctx.options["user"]) == set(USERS)
    assert set(ctx.options["source"]) == {"genops.proxy", "opentelemetry.instrumentation.openai_v2"}
    ctx.values["provider"] = ["openai"]
    _variable_options(client, DASHBOARDS["overview"], ctx)
    assert set(ctx.options["model"]) == {"gpt-4o", "gpt-4o-mini"}
    cost_ctx = context("all", seeded, 60_000)
    _variable_options(client, DASHBOARDS["cost"], cost_ctx)
    assert cost_ctx.options["property"] == ["team"]


def _stat(client: Any, name: str, title: str, ctx: QueryContext) -> Any:
    panel = next(p for p in DASHBOARDS[name]["panels"] if p["title"] == title)
    return run(client, interpolate(panel["targets"][0]["rawSql"], ctx))[2][0][0]


def test_figures_agree_with_the_seeded_traffic(store: tuple[Any, Seeded]) -> None:
    client, seeded = store
    ctx = context("all", seeded, 60_000)
    assert _stat(client, "overview", "Requests", ctx) == seeded.calls + seeded.sdk_calls
    calls = client.query("SELECT count(), countIf(StatusCode = 'Error'), sum(ifNull(CostUsd, 0)), countIf(CostKnown = 0), "
                         "countIf(SafetyAction = 'block') FROM genops_calls WHERE Operation = 'chat'").result_rows[0]
    assert calls[0] == seeded.calls + seeded.sdk_calls
    # Counting each call once when an SDK instrumentation records it too: the proxy's spans only.
    proxy_only = context("all", seeded, 60_000)
    proxy_only.values["source"] = ["genops.proxy"]
    assert _stat(client, "overview", "Requests", proxy_only) == seeded.calls
    assert _stat(client, "cost", "Calls with unknown price", proxy_only) == calls[3] - seeded.sdk_calls
    assert _stat(client, "overview", "Error rate", ctx) == pytest.approx(calls[1] / calls[0])
    assert _stat(client, "cost", "Cost", ctx) == pytest.approx(calls[2])
    assert _stat(client, "cost", "Calls with unknown price", ctx) == calls[3] > 0
    assert _stat(client, "safety", "Blocked calls", ctx) == calls[4] > 0
    assert _stat(client, "cost", "Saved by cached input", ctx) > 0
    one = context("one", seeded, 60_000)
    narrowed = _stat(client, "overview", "Requests", one)
    assert 0 < narrowed < seeded.calls
    # The trace view's default (no trace id) is the latest trace with a model call.
    assert _stat(client, "agents", "Traces", ctx) >= len(seeded.agent_trace_ids)


def test_anomaly_annotations_show_each_anomaly_once_latest_version(store: tuple[Any, Seeded]) -> None:
    client, seeded = store
    ctx = context("all", seeded, 60_000)
    annotation = next(a for a in DASHBOARDS["overview"]["annotations"]["list"] if a["name"] == "Anomalies")
    columns, _, rows = run(client, interpolate(annotation["target"]["rawSql"], ctx))
    found = [dict(zip(columns, r, strict=True)) for r in rows]
    assert sorted(a["tags"][0] for a in found) == ["cost_surge", "error_rate", "latency_p95"]
    ongoing = next(a for a in found if a["tags"][0] == "error_rate")
    assert "0.35 vs expected 0.02" in ongoing["text"] and "open" in ongoing["tags"]
    assert ongoing["timeEnd"] >= datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=1)
    one = context("one", seeded, 60_000)
    _variable_options(client, DASHBOARDS["anomalies"], one)
    table = next(p for p in DASHBOARDS["anomalies"]["panels"] if p["title"] == "Anomalies")
    columns, _, rows = run(client, interpolate(table["targets"][0]["rawSql"], one))
    assert [dict(zip(columns, r, strict=True))["observed"] for r in rows] == [0.35]


def _panel_rows(client: Any, name: str, title: str, ctx: QueryContext) -> list[dict[str, Any]]:
    panel = next(p for p in DASHBOARDS[name]["panels"] if p["title"] == title)
    columns, _, rows = run(client, interpolate(panel["targets"][0]["rawSql"], ctx))
    return [dict(zip(columns, r, strict=True)) for r in rows]


def test_rollouts_dashboard_figures_agree_with_the_seeded_route(store: tuple[Any, Seeded]) -> None:
    client, seeded = store
    ctx = context("all", seeded, 60_000)
    _variable_options(client, DASHBOARDS["rollouts"], ctx)
    assert ctx.options["route"] == [ROUTE]
    calls = {variant: len(ids) for variant, ids in seeded.route_calls.items()}
    assert _stat(client, "rollouts", "Canary share of calls", ctx) == pytest.approx(calls["canary"] / sum(calls.values()))
    for variant in ("canary", "baseline"):
        assert _stat(client, "rollouts", f"{variant.title()} error rate", ctx) == pytest.approx(
            seeded.route_errors[variant] / calls[variant])
        assert _stat(client, "rollouts", f"{variant.title()} p95 latency", ctx) > 0
    assert seeded.route_errors["canary"] / calls["canary"] > seeded.route_errors["baseline"] / calls["baseline"]
    assert _stat(client, "rollouts", "Decisions", ctx) == 3  # start, advance, rollback; not the check
    per_variant: dict[str, int] = {}
    for row in _panel_rows(client, "rollouts", "Calls per variant", ctx):
        per_variant[row["variant"]] = per_variant.get(row["variant"], 0) + row["calls"]
    assert per_variant == {"no rollout": calls[""], "baseline": calls["baseline"], "canary": calls["canary"]}
    summary = {r["variant"]: r for r in _panel_rows(client, "rollouts", "Canary vs baseline", ctx)}
    assert summary["canary"]["targets"] == ":".join(ROUTE_CANARY)
    assert summary["baseline"]["targets"] == summary["no rollout"]["targets"] == ":".join(ROUTE_BASELINE)
    assert summary["canary"]["errors"] == seeded.route_errors["canary"]
    # The latest numeric score per call counts: canary 0.4 / 0.5 (its superseded 1.0 does not), baseline 0.8 / 0.9.
    scores = _panel_rows(client, "rollouts", "Mean feedback score: canary vs baseline", ctx)
    assert {r["variant"] for r in scores} == {"baseline", "canary"}
    assert all(0.4 <= r["mean_score"] <= 0.5 for r in scores if r["variant"] == "canary")
    assert all(0.8 <= r["mean_score"] <= 0.9 for r in scores if r["variant"] == "baseline")
    decisions = _panel_rows(client, "rollouts", "Rollout decisions", ctx)
    assert [d["action"] for d in decisions] == ["rollback", "advance", "start"]
    # Another route's panels are empty, and its decision is not on this route's dashboard.
    other = context("all", seeded, 60_000)
    other.values["route"] = "other-route"
    assert _stat(client, "rollouts", "Decisions", other) == 1
    assert _panel_rows(client, "rollouts", "Calls per variant", other) == []


def test_rollout_annotations_say_what_was_decided(store: tuple[Any, Seeded]) -> None:
    client, seeded = store
    ctx = context("all", seeded, 60_000)
    annotation = next(a for a in DASHBOARDS["rollouts"]["annotations"]["list"] if a["name"] == "Rollouts")
    columns, _, rows = run(client, interpolate(annotation["target"]["rawSql"], ctx))
    found = [dict(zip(columns, r, strict=True)) for r in rows]
    assert [a["text"] for a in found] == [
        f"start {ROUTE} 5%: started by cli",
        f"advance {ROUTE} 25%: all gates passed at 5%",
        f"rollback {ROUTE} 0%: error_rate: error rate 50.0% vs 25.0% (+1 pt tolerated; p=3e-09 < 0.01)",
    ]
    assert found[-1]["title"] == f"rollout rollback: {ROUTE}" and found[-1]["tags"] == ["rollout", "rollback", ROUTE]
    overview = next(a for a in DASHBOARDS["overview"]["annotations"]["list"] if a["name"] == "Rollouts")
    columns, _, rows = run(client, interpolate(overview["target"]["rawSql"], ctx))
    assert [dict(zip(columns, r, strict=True))["text"] for r in rows][-1] == "start other-route 1%: started by api"
