"""The ``genops`` CLI as a user runs it: sql (while serving and not), migrate, config errors, SIGTERM."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import openai
import orjson
import pytest
from conftest import start_proxy

pytestmark = pytest.mark.e2e


def genops(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GENOPS_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "genops", *args], capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=120)


def test_sql_against_running_server_in_all_formats(proxy, fake_upstream, request_id):
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-x", default_headers={"GenOps-Request-Id": request_id})
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
    proxy.span(request_id)
    query = ("SELECT SpanName, SpanAttributes['gen_ai.usage.input_tokens'] AS input_tokens, Duration FROM otel_traces "
             f"WHERE SpanAttributes['genops.request.id'] = '{request_id}' ORDER BY Timestamp DESC LIMIT 5")
    env = {"GENOPS_DATA_DIR": str(proxy.data_dir)}

    table = genops("sql", query, env=env)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["SpanName", "input_tokens", "Duration"]
    assert lines[2].startswith("chat gpt-4o-mini")
    assert lines[-1] == "(1 row)"

    as_json = genops("sql", "--format", "json", query, env=env)
    rows = orjson.loads(as_json.stdout)
    assert rows[0]["SpanName"] == "chat gpt-4o-mini" and int(rows[0]["input_tokens"]) > 0

    as_csv = list(csv.reader(io.StringIO(genops("sql", "-f", "csv", query, env=env).stdout)))
    assert as_csv[0] == ["SpanName", "input_tokens", "Duration"] and as_csv[1][0] == "chat gpt-4o-mini"


@pytest.mark.parametrize("statement", [
    "INSERT INTO otel_traces (TraceId) VALUES ('x')",
    "DROP TABLE otel_traces",
    "ALTER TABLE otel_traces DELETE WHERE 1",
    "CREATE TABLE evil (x UInt8) ENGINE = Memory",
])
def test_sql_refuses_writes(proxy, statement):
    result = genops("sql", statement, env={"GENOPS_DATA_DIR": str(proxy.data_dir)})
    assert result.returncode == 1
    assert "refused: " in result.stderr and "only SELECT, WITH, SHOW" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert proxy.sql("SELECT count() AS n FROM system.tables WHERE database = 'genops' AND name = 'otel_traces'")[0]["n"] == 1


def test_sql_endpoint_needs_the_token(proxy):
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        request = urllib.request.Request(proxy.url + "/genops/v1/sql", data=b'{"query": "SELECT 1"}',
                                         headers=headers, method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request)
        assert info.value.code == 401


def test_bad_sql_gives_one_clear_line(proxy):
    result = genops("sql", "SELECT nope FROM otel_traces", env={"GENOPS_DATA_DIR": str(proxy.data_dir)})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "nope" in result.stderr


def test_migrate_twice_then_sql_without_a_server(tmp_path):
    env = {"GENOPS_DATA_DIR": str(tmp_path / "data")}
    first = genops("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert "applied 0001_otel_traces" in first.stdout
    second = genops("migrate", env=env)
    assert second.returncode == 0 and "up to date" in second.stdout
    result = genops("sql", "-f", "json", "SELECT version, name FROM genops_schema_migrations ORDER BY version", env=env)
    assert result.returncode == 0, result.stderr
    versions = [r["version"] for r in orjson.loads(result.stdout)]
    assert versions == sorted(set(versions)) and versions[:3] == [1, 2, 3]  # each applied exactly once
    tables = orjson.loads(genops("sql", "-f", "json", "SHOW TABLES", env=env).stdout)
    names = {t["name"] for t in tables}
    assert {"otel_traces", "otel_traces_trace_id_ts", "otel_traces_trace_id_ts_mv", "genops_calls"} <= names


def test_otel_traces_columns_match_the_collector_exporter(tmp_path):
    env = {"GENOPS_DATA_DIR": str(tmp_path / "data")}
    genops("migrate", env=env)
    described = orjson.loads(genops("sql", "-f", "json", "DESCRIBE TABLE otel_traces", env=env).stdout)
    columns = [(c["name"], c["type"]) for c in described if c["default_type"] != "ALIAS"]
    assert columns == [
        ("Timestamp", "DateTime64(9)"), ("TraceId", "String"), ("SpanId", "String"), ("ParentSpanId", "String"),
        ("TraceState", "String"), ("SpanName", "LowCardinality(String)"), ("SpanKind", "LowCardinality(String)"),
        ("ServiceName", "LowCardinality(String)"), ("ResourceAttributes", "Map(LowCardinality(String), String)"),
        ("ScopeName", "String"), ("ScopeVersion", "String"), ("SpanAttributes", "Map(LowCardinality(String), String)"),
        ("Duration", "UInt64"), ("StatusCode", "LowCardinality(String)"), ("StatusMessage", "String"),
        ("Events.Timestamp", "Array(DateTime64(9))"), ("Events.Name", "Array(LowCardinality(String))"),
        ("Events.Attributes", "Array(Map(LowCardinality(String), String))"),
        ("Links.TraceId", "Array(String)"), ("Links.SpanId", "Array(String)"), ("Links.TraceState", "Array(String)"),
        ("Links.Attributes", "Array(Map(LowCardinality(String), String))"),
    ]


@pytest.mark.parametrize("env,needle", [
    ({"GENOPS_PORT": "eighty"}, "GENOPS_PORT"),
    ({"GENOPS_PORT": "70000"}, "GENOPS_PORT"),
    ({"GENOPS_CLICKHOUSE_URL": "ftp://db:9000"}, "GENOPS_CLICKHOUSE_URL"),
    ({"GENOPS_OPENAI_BASE_URL": "not a url"}, "GENOPS_OPENAI_BASE_URL"),
    ({"GENOPS_DATABASE": "drop table;"}, "GENOPS_DATABASE"),
    ({"GENOPS_ADMIN_TOKEN": "same-secret", "GENOPS_FEEDBACK_TOKEN": "same-secret"}, "GENOPS_FEEDBACK_TOKEN"),
    ({"GENOPS_SQL_TIMEOUT_S": "0"}, "GENOPS_SQL_TIMEOUT_S"),
])
def test_malformed_setting_is_one_clear_line(tmp_path, env, needle):
    result = genops("serve", env={"GENOPS_DATA_DIR": str(tmp_path), **env})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr


def test_config_file_and_flags(tmp_path):
    (tmp_path / "genops.toml").write_text('port = "notaport"\n')
    result = genops("serve", env={"GENOPS_DATA_DIR": str(tmp_path)}, cwd=tmp_path)
    assert result.returncode == 2 and "genops.toml: port" in result.stderr
    from genops.config import load_settings

    (tmp_path / "genops.toml").write_text('port = 9999\nretention_days = 7\n')
    settings = load_settings({"port": "7777"}, env={"GENOPS_CONFIG": str(tmp_path / "genops.toml"),
                                                    "GENOPS_RETENTION_DAYS": "3"})
    assert (settings.port, settings.retention_days) == (7777, 3)


def test_serve_takes_the_exporter_as_a_flag():
    """``genops serve --exporter otlp`` is GENOPS_EXPORTER=otlp (a proxy without a store, docs/scale-out.md)."""
    from genops.cli import build_parser
    from genops.commands.common import settings_from_args

    args = build_parser().parse_args(["serve", "--exporter", "otlp", "--otlp-endpoint", "http://127.0.0.1:4318"])
    settings = settings_from_args(args)
    assert (settings.exporter, settings.otlp_endpoint) == ("otlp", "http://127.0.0.1:4318")


def test_version():
    from genops import __version__

    assert genops("version").stdout.strip() == f"genops {__version__}"


def test_sigterm_flushes_every_pending_span(tmp_path, fake_upstream):
    # A long export interval: nothing is exported before SIGTERM unless the shutdown flushes.
    proc = start_proxy(tmp_path / "data", {"GENOPS_OPENAI_BASE_URL": fake_upstream.url,
                                           "GENOPS_EXPORT_INTERVAL_MS": "600000"})
    client = openai.OpenAI(base_url=proc.url + "/v1", api_key="sk-x")
    for i in range(25):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"m{i}"}])
    assert proc.sql("SELECT count() AS n FROM otel_traces")[0]["n"] == 0
    assert proc.stop(signal.SIGTERM) == 0
    result = genops("sql", "-f", "json", "SELECT count() AS n FROM otel_traces WHERE SpanName = 'chat gpt-4o-mini'",
                    env={"GENOPS_DATA_DIR": str(tmp_path / "data")})
    assert orjson.loads(result.stdout) == [{"n": 25}]
    assert "sk-x" not in proc.logs()


def test_changing_retention_days_updates_every_ttl(tmp_path):
    env = {"GENOPS_DATA_DIR": str(tmp_path / "data")}
    assert genops("migrate", env=env).returncode == 0
    ttl_query = ("SELECT name, extract(engine_full, 'toIntervalDay\\\\((\\\\d+)\\\\)') AS days FROM system.tables "
                 "WHERE database = 'genops' AND engine_full LIKE '%TTL%' ORDER BY name")
    before = orjson.loads(genops("sql", "-f", "json", ttl_query, env=env).stdout)
    assert before and {r["days"] for r in before} == {"30"}
    assert genops("migrate", env={**env, "GENOPS_RETENTION_DAYS": "7"}).returncode == 0
    after = orjson.loads(genops("sql", "-f", "json", ttl_query, env=env).stdout)
    assert [r["name"] for r in after] == [r["name"] for r in before]
    assert {r["days"] for r in after} == {"7"}
