"""The read-only SQL endpoint is read-only: every probe of the security review, refused by ClickHouse's own parser.

In-process tests check the sandbox (:mod:`genops.storage.sql_guard`) on the session's chDB;
the rest drive a real ``genops serve`` through ``POST /genops/v1/sql`` and ``genops sql``,
as an admin would, and check what did NOT happen: no file written, no connection made,
no setting left behind, readiness and feedback untouched by a long query.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import FakeUpstream, Proxy, open_chdb, start_proxy, upstream_env

from genops.storage.sql import QueryError, QueryLimits, QueryRefused, run_readonly
from genops.storage.sql_guard import parse_ast, refusal

pytestmark = pytest.mark.e2e

DB = "sandbox"
# A query that runs for minutes unless stopped (no data needed).
LONG_QUERY = "SELECT count() FROM numbers(100000000000) WHERE sipHash64(number) = 1"


@pytest.fixture(scope="module")
def client(chdb_dir: Path) -> Any:
    admin = open_chdb(chdb_dir)
    admin.command(f"CREATE DATABASE IF NOT EXISTS {DB}")
    admin.command(f"CREATE TABLE IF NOT EXISTS {DB}.calls (n UInt64) ENGINE = MergeTree ORDER BY n")
    admin.command(f"INSERT INTO {DB}.calls SELECT number FROM numbers(100)")
    admin.command("CREATE DATABASE IF NOT EXISTS other_db")
    admin.command("CREATE TABLE IF NOT EXISTS other_db.secrets (s String) ENGINE = MergeTree ORDER BY s")
    return open_chdb(chdb_dir, DB)


def run(client: Any, sql: str, **kwargs: Any) -> Any:
    return run_readonly(client, sql, database=DB, **kwargs)


@pytest.fixture()
def listener() -> Iterator[tuple[int, list[Any]]]:
    """A TCP listener that records every connection made to it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    accepted: list[Any] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(conn)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


# (probe, a fragment of the refusal). {path} is a file the probe must not create or read; {port} a
# listener that must see no connection.
PROBES = [
    ("SELECT 'echo pwned' AS x INTO OUTFILE '{path}' TRUNCATE", "INTO OUTFILE"),
    ("SELECT 'echo pwned' AS x INTO OUTFILE '{path}' APPEND", "INTO OUTFILE"),
    ("select 1 into outfile '{path}'", "INTO OUTFILE"),
    ("SELECT * FROM file('{path}', 'LineAsString')", "table function file()"),
    ("SELECT * FROM FILE('{path}', 'LineAsString')", "table function FILE()"),
    ("SELECT file('{path}')", "function file()"),
    ("SELECT /* hidden */ * FROM (SELECT * FROM file('{path}', 'LineAsString'))", "table function file()"),
    ("WITH (SELECT line FROM file('{path}', 'LineAsString') LIMIT 1) AS x SELECT x", "table function file()"),
    ("SELECT n FROM calls WHERE n IN (SELECT 1 FROM file('{path}', 'LineAsString'))", "table function file()"),
    ("DESCRIBE TABLE file('{path}', 'LineAsString')", "table function file()"),
    ("SELECT * FROM url('http://127.0.0.1:{port}/x', 'LineAsString')", "table function url()"),
    ("SELECT * FROM remote('127.0.0.1:{port}', system.one)", "table function remote()"),
    ("SELECT * FROM remoteSecure('127.0.0.1:{port}', system.one)", "table function remoteSecure()"),
    ("SELECT * FROM s3('http://127.0.0.1:{port}/b/k.csv', 'CSV')", "table function s3()"),
    ("SELECT * FROM mysql('127.0.0.1:{port}', 'd', 't', 'u', 'p')", "table function mysql()"),
    ("SELECT * FROM postgresql('127.0.0.1:{port}', 'd', 't', 'u', 'p')", "table function postgresql()"),
    ("SELECT * FROM calls UNION ALL SELECT * FROM cluster('default', system.one)", "table function cluster()"),
    ("SELECT * FROM executable('sh', 'TSV', 'x String')", "table function executable()"),
    ("SELECT * FROM hdfs('hdfs://127.0.0.1:{port}/x', 'TSV')", "table function hdfs()"),
    ("SELECT * FROM merge('other_db', '.*')", "table function merge()"),
    ("SELECT * FROM python('x')", "table function python()"),
    ("SELECT dictGet('d', 'a', toUInt64(1))", "function dictGet()"),
    ("SELECT * FROM other_db.secrets", "database 'other_db'"),
    ("SELECT * FROM system.users", "system.users is not readable"),
    ("SELECT * FROM system.named_collections", "system.named_collections"),
    ("SHOW CREATE TABLE system.users", "system.users"),
    ("CREATE TEMPORARY TABLE t (x UInt8)", "CREATE"),
    ("KILL QUERY WHERE 1", "KILL"),
    ("SET max_threads = 1", "SET"),
    ("SET max_query_size = 1", "SET"),
    ("SELECT 1 SETTINGS readonly = 0", "SETTINGS"),
    ("SELECT n FROM (SELECT n FROM calls SETTINGS max_threads = 1)", "SETTINGS"),
    ("SELECT 1 FORMAT JSON", "FORMAT"),
    ("INSERT INTO calls VALUES (1)", "INSERT"),
    ("ALTER TABLE calls DELETE WHERE 1", "ALTER"),
    ("DROP TABLE calls", "DROP"),
    ("TRUNCATE TABLE calls", "TRUNCATE"),
    ("OPTIMIZE TABLE calls FINAL", "OPTIMIZE"),
    ("SYSTEM FLUSH LOGS", "SYSTEM"),
    ("USE other_db", "USE"),
    ("SELECT 1; INSERT INTO calls VALUES (1)", "one statement"),
    ("SELECT 1; SELECT 2", "one statement"),
    ("EXPLAIN SELECT * FROM file('{path}', 'LineAsString')", "table function file()"),
    ("EXPLAIN AST INSERT INTO calls VALUES (1)", "EXPLAIN INSERT"),
]


@pytest.mark.parametrize(("probe", "refused"), PROBES, ids=[p for p, _ in PROBES])
def test_probe_is_refused_and_touches_nothing(client: Any, tmp_path: Path, listener: tuple[int, list[Any]],
                                              probe: str, refused: str) -> None:
    port, accepted = listener
    secret = tmp_path / "secret.txt"
    secret.write_text("root:$6$hash:19000:0:99999:7:::\n")
    target = tmp_path / "written.sh"
    path = target if "OUTFILE" in probe else secret
    before = client.query(f"SELECT count() FROM {DB}.calls").result_rows[0][0]
    with pytest.raises(QueryRefused) as info:
        run(client, probe.format(path=path, port=port))
    assert refused in str(info.value)
    assert "\n" not in str(info.value)
    assert not target.exists()
    assert accepted == []
    assert client.query(f"SELECT count() FROM {DB}.calls").result_rows[0][0] == before
    # nothing one refused statement did outlives it on the client
    assert client.query("SELECT getSetting('max_threads') = getSetting('max_threads')").result_rows == [(1,)]


@pytest.mark.parametrize("sql", [
    "SELECT count() AS n FROM calls",
    "select count() from sandbox.calls -- a comment; DROP TABLE calls",
    "WITH t AS (SELECT n FROM calls) SELECT max(n) FROM t",
    "SELECT n FROM calls WHERE n IN (SELECT number FROM numbers(3)) ORDER BY n",
    "SELECT arrayMap(x -> x * 2, [1, 2])",
    "SELECT name FROM system.tables WHERE database = 'sandbox'",
    "SELECT count() FROM information_schema.tables",
    "SHOW TABLES",
    "SHOW DATABASES",
    "DESCRIBE TABLE calls",
    "EXISTS TABLE sandbox.calls",
    "EXPLAIN SELECT count() FROM calls",
    "SELECT * FROM values('x UInt8', 1, 2)",
    "SELECT sum(n) OVER (ORDER BY n) FROM calls LIMIT 1",
])
def test_reads_still_work(client: Any, sql: str) -> None:
    result = run(client, sql)
    assert result.columns


def test_the_checked_statement_is_the_one_that_runs(client: Any) -> None:
    # A comment hiding a second statement is dropped by ClickHouse's parser, not run.
    result = run(client, "SELECT count() AS n FROM calls /* ; DROP TABLE calls */")
    assert result.rows == [[100]]
    assert run(client, "SELECT count() FROM calls").rows == [[100]]


def test_syntax_error_is_a_query_error_not_a_refusal(client: Any) -> None:
    with pytest.raises(QueryError) as info:
        run(client, "SELEC 1")
    assert not isinstance(info.value, QueryRefused)
    assert "Syntax error" in str(info.value)


def test_limits_cut_results_and_stop_queries(client: Any) -> None:
    big = run(client, "SELECT repeat('x', 1000) FROM numbers(100000)",
              limits=QueryLimits(max_result_bytes=1 << 20), max_rows=1_000_000)
    assert big.truncated
    assert len(big.rows) < 100_000
    with pytest.raises(QueryError) as info:
        run(client, LONG_QUERY, limits=QueryLimits(timeout_s=1))
    assert "TIMEOUT_EXCEEDED" in str(info.value) or "Timeout exceeded" in str(info.value)
    with pytest.raises(QueryError) as info:
        run(client, "SELECT groupArray(repeat('x', 1000)) FROM numbers(1000000)",
            limits=QueryLimits(max_memory_bytes=16 << 20))
    assert "MEMORY_LIMIT_EXCEEDED" in str(info.value) or "memory limit" in str(info.value).lower()


def test_ast_reader_refuses_what_it_cannot_place() -> None:
    # A second root line (two statements) or an unchecked table name never passes.
    with pytest.raises(QueryRefused):
        parse_ast(["SelectWithUnionQuery (children 1)", "InsertQuery"])
    tree = parse_ast(["SelectWithUnionQuery (children 1)", " ExpressionList (children 1)",
                      "  SelectQuery (children 1)", "   TablesInSelectQuery (children 1)",
                      "    TablesInSelectQueryElement (children 1)", "     TableExpression (children 1)",
                      "      TableIdentifier sys tem.a.b"])
    assert "only plain names" in (refusal(tree, DB) or "")


# -- through a running genops serve ------------------------------------------------------------


def post_sql(proxy: Proxy, query: str, token: str | None = None, timeout: float = 60) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        proxy.url + "/genops/v1/sql", data=orjson.dumps({"query": query}),
        headers={"Authorization": f"Bearer {token or proxy.token}"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def feedback_ok(proxy: Proxy, fake_upstream: FakeUpstream) -> bool:
    """A chat call, then a score on it: True when the score is stored (201)."""
    import uuid

    rid = "sandbox-" + uuid.uuid4().hex
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    request = urllib.request.Request(proxy.url + "/v1/chat/completions", data=body, method="POST", headers={
        "Authorization": "Bearer sk-test", "Content-Type": "application/json", "GenOps-Request-Id": rid})
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200
    score = urllib.request.Request(proxy.url + "/genops/v1/feedback", method="POST",
                                   data=orjson.dumps({"request_id": rid, "name": "thumbs_up", "value": True}),
                                   headers={"Authorization": f"Bearer {proxy.token}"})
    try:
        with urllib.request.urlopen(score, timeout=60) as response:
            return response.status == 201
    except urllib.error.HTTPError:
        return False


@pytest.fixture(scope="module")
def sandboxed(tmp_path_factory: pytest.TempPathFactory, fake_upstream: FakeUpstream) -> Iterator[Proxy]:
    proxy = start_proxy(tmp_path_factory.mktemp("sandboxed"),
                        {**upstream_env(fake_upstream.url), "GENOPS_SQL_MAX_CONCURRENT": "2"})
    yield proxy
    proxy.stop()


def test_endpoint_refuses_with_403_and_one_line(sandboxed: Proxy, tmp_path: Path,
                                                listener: tuple[int, list[Any]]) -> None:
    port, accepted = listener
    target = tmp_path / "pwn.sh"
    token_file = sandboxed.data_dir / "admin_token"
    for probe in (f"SELECT 'x' INTO OUTFILE '{target}' TRUNCATE",
                  f"SELECT * FROM file('{token_file}', 'LineAsString')",
                  "SELECT * FROM file('/proc/self/environ', 'LineAsString')",
                  f"SELECT * FROM url('http://127.0.0.1:{port}/', 'LineAsString')",
                  "CREATE TEMPORARY TABLE t (x UInt8)", "KILL QUERY WHERE 1", "SET max_threads = 1"):
        status, body = post_sql(sandboxed, probe)
        assert status == 403, (probe, body)
        assert body["error"]["code"] == "query_refused"
        assert body["error"]["message"].startswith("refused: ") or "statement" in body["error"]["message"]
        assert sandboxed.token not in orjson.dumps(body).decode()
    assert not target.exists()
    assert accepted == []
    status, body = post_sql(sandboxed, "SELEC 1")
    assert status == 400 and body["error"]["code"] == "query_failed"


def test_a_set_no_longer_poisons_anything(sandboxed: Proxy, fake_upstream: FakeUpstream) -> None:
    for statement in ("SET max_threads = 1", "SET max_query_size = 1", "SELECT 1 SETTINGS max_query_size = 1"):
        assert post_sql(sandboxed, statement)[0] == 403
    assert get_status(sandboxed.url + "/readyz") == 200
    assert feedback_ok(sandboxed, fake_upstream)
    status, body = post_sql(sandboxed, "SELECT getSetting('max_query_size') > 1 AS ok")
    assert status == 200 and body["rows"] == [[True]] or body["rows"] == [[1]]


def running_marked_queries(proxy: Proxy) -> int:
    status, body = post_sql(proxy, "SELECT count() FROM system.processes WHERE query LIKE '%sipHash64(number) = 1%' "
                                   "AND query NOT LIKE '%system.processes%'")
    assert status == 200, body
    return int(body["rows"][0][0])


def test_a_long_query_blocks_nothing_and_dies_with_its_client(sandboxed: Proxy, fake_upstream: FakeUpstream) -> None:
    # The client gives up after 2 s; its query would run for minutes (GENOPS_SQL_TIMEOUT_S is 30).
    def abandon() -> None:
        try:
            post_sql(sandboxed, LONG_QUERY, timeout=2)
        except (TimeoutError, OSError):
            pass

    thread = threading.Thread(target=abandon)
    thread.start()
    deadline = time.monotonic() + 30
    while running_marked_queries(sandboxed) == 0:  # wait until it runs
        assert time.monotonic() < deadline, "the long query never started"
        time.sleep(0.05)
    # While it runs: readiness, feedback and SQL answer (checked while it is still running).
    assert get_status(sandboxed.url + "/readyz") == 200
    assert feedback_ok(sandboxed, fake_upstream)
    assert running_marked_queries(sandboxed) == 1
    thread.join()
    deadline = time.monotonic() + 20
    while running_marked_queries(sandboxed):  # the abandoned query is cancelled, well before its timeout
        assert time.monotonic() < deadline, "the abandoned query kept running"
        time.sleep(0.1)


def test_too_many_concurrent_queries_get_429(sandboxed: Proxy) -> None:
    # Two long queries fill GENOPS_SQL_MAX_CONCURRENT=2; a third query is turned away, not queued.
    def occupy() -> None:
        try:
            post_sql(sandboxed, LONG_QUERY, timeout=10)
        except (TimeoutError, OSError):
            pass  # it gave up waiting: the point was to hold a slot meanwhile

    threads = [threading.Thread(target=occupy) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # let both start before anything else asks for a slot
    try:
        deadline = time.monotonic() + 8
        statuses = []
        while time.monotonic() < deadline:
            status, body = post_sql(sandboxed, "SELECT 1")
            statuses.append(status)
            if status == 429:
                assert body["error"]["code"] == "too_many_queries"
                break
            time.sleep(0.05)
        assert 429 in statuses, statuses
    finally:
        for thread in threads:
            thread.join()


def test_genops_sql_cli_refuses_too(sandboxed: Proxy, tmp_path: Path) -> None:
    target = tmp_path / "cli.sh"
    env = {**sandboxed.env}
    result = subprocess.run([sys.executable, "-m", "genops", "sql", f"SELECT 1 INTO OUTFILE '{target}'"],
                            env=env, capture_output=True, text=True, timeout=120, cwd=str(sandboxed.data_dir))
    assert result.returncode == 1
    assert "INTO OUTFILE" in result.stderr
    assert not target.exists()


def test_genops_sql_direct_refuses_without_a_server(tmp_path: Path) -> None:
    """No server running: ``genops sql`` opens the store itself, through the same sandbox."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("GENOPS_")}
    env["GENOPS_DATA_DIR"] = str(tmp_path / "data")
    subprocess.run([sys.executable, "-m", "genops", "migrate"], env=env, check=True, capture_output=True, timeout=120)
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t\n")
    refused = subprocess.run([sys.executable, "-m", "genops", "sql", f"SELECT * FROM file('{secret}', 'LineAsString')"],
                             env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "table function file()" in refused.stderr
    assert "s3cr3t" not in refused.stdout + refused.stderr
    ok = subprocess.run([sys.executable, "-m", "genops", "sql", "--format", "json", "SELECT count() AS n FROM otel_traces"],
                        env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert orjson.loads(ok.stdout) == [{"n": 0}]


# -- the read-only user on a ClickHouse server ---------------------------------------------------


def test_reader_ddl_grants_select_on_the_database_only(client: Any) -> None:
    from genops.storage.reader import reader_statements

    statements = reader_statements("genops", "genops_reader", "it's a p\\ssword")
    grants = [s for s in statements if s.startswith("GRANT ")]
    assert grants == ["GRANT SELECT ON genops.* TO genops_reader_role", "GRANT genops_reader_role TO genops_reader"]
    assert any("max_execution_time = 30 MAX 3600" in s for s in statements)
    for statement in statements:  # every statement is valid ClickHouse, as its own parser reads it
        formatted = client.query("SELECT formatQuerySingleLine(%(q)s)", parameters={"q": statement}).result_rows[0][0]
        assert formatted
    # the password stays one literal, whatever it holds
    assert client.query("SELECT formatQuerySingleLine(%(q)s)", parameters={"q": statements[2]}).result_rows[0][0] \
        .startswith("CREATE USER IF NOT EXISTS genops_reader IDENTIFIED WITH sha256_password BY")


def test_genops_sql_logs_in_as_the_reader_once_created(tmp_path: Path) -> None:
    from genops.config import load_settings
    from genops.storage.client import reader_credentials
    from genops.storage.reader import reader_password

    env = {"GENOPS_DATA_DIR": str(tmp_path), "GENOPS_CLICKHOUSE_URL": "http://admin:adminpw@127.0.0.1:8123/"}
    settings = load_settings(env=env)
    assert reader_credentials(settings) is None  # no reader yet: the URL's own user
    password = reader_password(settings)  # what migrate --create-reader keeps
    assert oct((tmp_path / "sql_password").stat().st_mode & 0o777) == "0o600"
    assert reader_credentials(settings) == ("genops_reader", password)
    explicit = load_settings(env={**env, "GENOPS_SQL_PASSWORD": "given", "GENOPS_SQL_USER": "ro"})
    assert reader_credentials(explicit) == ("ro", "given")


def test_create_reader_on_the_embedded_store_says_why_not(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("GENOPS_")}
    env["GENOPS_DATA_DIR"] = str(tmp_path)
    result = subprocess.run([sys.executable, "-m", "genops", "migrate", "--create-reader"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "needs a ClickHouse server" in result.stderr
