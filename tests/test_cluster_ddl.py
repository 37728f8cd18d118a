"""``GENOPS_CLICKHOUSE_CLUSTER``: the cluster DDL ``genops migrate`` generates, and the single-node DDL it leaves alone.

- golden files (``tests/golden/``): the single-node script exactly as it was before cluster
  support, the migration files' checksums (existing stores' ledgers), and the cluster script;
- structure: every statement ``ON CLUSTER``, every MergeTree table Replicated with the
  {shard}/{replica} macros, a Distributed table with the right sharding key in front of each,
  materialized views on the local tables;
- real ClickHouse: every statement parses (chDB ``EXPLAIN AST``), and the whole cluster schema
  runs on a one-node cluster (a chDB process with ``remote_servers``): ``migrate()`` itself,
  then spans through GenOps's own insert path and a replay of the same batch, the OTLP ingest
  view, an anomaly-jobs pass, a retention change, and the refusal to mix the two layouts.
  chDB has no Keeper, so that process runs each statement without ``ON CLUSTER`` and with
  the plain engine standing in for ``Replicated*MergeTree`` (see :class:`OneNodeCluster`);
  what it checks is the layout (local tables, Distributed tables, views), not replication.

Regenerate the golden files after adding a migration (existing checksums never change):
``.venv/bin/python tests/test_cluster_ddl.py --regenerate``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

if __name__ == "__main__":  # run as a script (--regenerate, or the one-node cluster process)
    sys.path.insert(0, str(Path(__file__).parent))

from genops.storage.cluster_ddl import SHARDING_KEYS, ClusterDDLError, ClusterRewriter
from genops.storage.migrate import available_migrations, migration_statements, schema_sql, setup_statements

pytestmark = pytest.mark.e2e

GOLDEN = Path(__file__).parent / "golden"
SINGLE_GOLDEN = GOLDEN / "ddl_single_node.sql"
CLUSTER_GOLDEN = GOLDEN / "ddl_cluster.sql"
CHECKSUMS_GOLDEN = GOLDEN / "migration_checksums.json"
DB, DAYS, CLUSTER = "genops", 30, "genops"
MACROS = "('/clickhouse/tables/{shard}/{database}/{table}', '{replica}'"


def cluster_statements() -> list[str]:
    return setup_statements(DB, CLUSTER) + [s for _, ss in migration_statements(DB, retention_days=DAYS, cluster=CLUSTER)
                                            for s in ss]


def single_statements() -> list[str]:
    return [s for _, ss in migration_statements(DB, retention_days=DAYS) for s in ss]


def single_tables() -> dict[str, str]:
    """Single-node table -> its engine clause, for every CREATE TABLE of the migrations."""
    found = {}
    for statement in single_statements():
        match = re.match(r"CREATE TABLE IF NOT EXISTS genops\.(\w+) .*?\bENGINE = (\w+(?:\([^()]*\))?)", statement, re.S)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def mergetree_tables() -> dict[str, str]:
    return {name: engine for name, engine in single_tables().items() if "MergeTree" in engine}


# -- golden files -------------------------------------------------------------------------------

def test_single_node_ddl_is_byte_for_byte_what_it_was():
    """Recorded before cluster support existed: a single server gets the very same statements."""
    assert schema_sql(DB, retention_days=DAYS) == SINGLE_GOLDEN.read_text()


def test_migration_files_keep_their_checksums():
    """Existing stores' ledgers hold these checksums: cluster support changed no migration file."""
    recorded = json.loads(CHECKSUMS_GOLDEN.read_text())
    current = {f"{m.version:04d}_{m.name}": m.checksum for m in available_migrations()}
    assert {name: current.get(name) for name in recorded} == recorded
    assert len(recorded) >= 11


def test_cluster_ddl_matches_its_golden_file():
    assert schema_sql(DB, retention_days=DAYS, cluster=CLUSTER) == CLUSTER_GOLDEN.read_text(), (
        "the cluster DDL changed: review the diff, then run .venv/bin/python tests/test_cluster_ddl.py --regenerate")


# -- structure ----------------------------------------------------------------------------------

def test_every_statement_runs_on_the_cluster_right_after_its_object_name():
    statements = cluster_statements()
    assert len(statements) > len(single_statements())  # + a Distributed table per MergeTree table
    for statement in statements:
        head = re.match(r"(CREATE (?:TABLE|DATABASE|MATERIALIZED VIEW|VIEW) IF NOT EXISTS|ALTER TABLE"
                        r"|DROP (?:VIEW|TABLE) IF EXISTS) [\w.]+ ON CLUSTER 'genops'(\s|$)", statement)
        assert head, statement[:160]
        assert statement.count("ON CLUSTER") == 1, statement[:160]


def test_every_mergetree_table_is_replicated_with_the_documented_macros():
    single = mergetree_tables()
    assert {"otel_traces", "genops_calls", "genops_anomalies", "genops_rollup_model_1m"} <= set(single)
    creates = {m.group(1): m.group(2) for s in cluster_statements()
               if (m := re.match(r"CREATE TABLE IF NOT EXISTS genops\.(\w+) ON CLUSTER 'genops' \(.*?\bENGINE = (.*?)$",
                                 s, re.S | re.M))}
    for name, engine in single.items():
        family, _, args = engine.partition("(")
        local = creates[f"{name}_local"]
        # same engine family, Replicated, Keeper path per shard, replica macro, then the table's own arguments
        expected = f"Replicated{family}{MACROS}" + (f", {args.rstrip(')')})" if args.rstrip(")") else ")")
        assert local == expected, (name, local)
    assert creates["genops_anomalies_local"].endswith("'{replica}', version)")  # ReplacingMergeTree keeps its version
    ledger = next(s for s in cluster_statements() if "genops_schema_migrations" in s)
    assert "ReplicatedMergeTree('/clickhouse/tables/cluster_wide/{database}/{table}', '{shard}-{replica}')" in ledger
    assert not re.search(r"ENGINE = (?!Replicated|Distributed|Null)\w*MergeTree", "\n".join(cluster_statements()))


def test_each_local_table_has_a_distributed_table_in_front_with_its_sharding_key():
    distributed = {m.group(1): m.groups()[1:] for s in cluster_statements()
                   if (m := re.match(r"CREATE TABLE IF NOT EXISTS genops\.(\w+) ON CLUSTER 'genops' AS genops\.(\w+)\n"
                                     r"ENGINE = Distributed\('genops', 'genops', '(\w+)', (.*)\)$", s))}
    assert set(distributed) == set(mergetree_tables())
    for name, (as_table, local, key) in distributed.items():
        assert as_table == local == f"{name}_local"
        assert key == SHARDING_KEYS[name]
    # a trace stays on one shard; every version of an anomaly or job state row on one shard
    for name in ("otel_traces", "otel_traces_trace_id_ts", "genops_calls", "genops_cache_savings"):
        assert distributed[name][2] == "cityHash64(TraceId)"
    assert distributed["genops_anomalies"][2] == "cityHash64(detector, entity)"
    assert distributed["genops_jobs_state"][2] == "cityHash64(name)"


def test_views_read_local_tables_and_the_otlp_view_writes_through_the_distributed_table():
    views = {m.group(1): (m.group(2), set(re.findall(r"FROM genops\.(\w+)", s)))
             for s in cluster_statements()
             if (m := re.match(r"CREATE MATERIALIZED VIEW IF NOT EXISTS genops\.(\w+) ON CLUSTER 'genops'\nTO genops\.(\w+)", s))}
    assert len(views) == 8
    per_node = {"otel_traces_otlp_in_mv": "otel_traces_otlp_in", "otel_traces_genops_in_mv": "otel_traces_genops_in"}
    for name, (target, sources) in views.items():
        if name in per_node:  # per-node Null table -> Distributed: rows get sharded by TraceId
            assert (target, sources) == ("otel_traces", {per_node[name]})
        else:  # each shard derives its own rows from its own spans
            assert target.endswith("_local") and sources and all(s.endswith("_local") for s in sources), (name, target, sources)
    modify = next(s for s in cluster_statements() if "MODIFY QUERY" in s)
    assert modify.startswith("ALTER TABLE genops.genops_cache_savings_mv ON CLUSTER 'genops' MODIFY QUERY")
    assert "FROM genops.otel_traces_local" in modify
    plain = [s for s in cluster_statements() if s.startswith("CREATE VIEW")]
    assert len(plain) == 2 and not any("_local" in s for s in plain)  # they read every shard
    # attribute names that start with the database name are strings, not tables
    assert "SpanAttributes['genops.cost.usd']" in "\n".join(cluster_statements())


def test_alters_reach_the_right_tables():
    alters = [s for s in cluster_statements() if s.startswith("ALTER TABLE") and "MODIFY QUERY" not in s]
    # dedup is on by default for replicated tables (its block window is not lowered); its memory
    # outlasts an outage the spool rides out
    assert [s for s in alters if "deduplication_window" in s] == [
        f"ALTER TABLE genops.{t}_local ON CLUSTER 'genops' MODIFY SETTING replicated_deduplication_window_seconds = 604800"
        for t in ("otel_traces", "genops_calls", "otel_traces_trace_id_ts")]
    add = [s for s in alters if "ADD COLUMN" in s]
    assert [s.split(" ON CLUSTER")[0] for s in add] == [
        "ALTER TABLE genops.genops_cache_savings_local", "ALTER TABLE genops.genops_cache_savings",
        "ALTER TABLE genops.genops_calls_local", "ALTER TABLE genops.genops_calls"]  # 0051; 0080's route columns


@pytest.mark.parametrize("statement, error", [
    ("CREATE TABLE IF NOT EXISTS genops.new_table (x UInt8) ENGINE = MergeTree ORDER BY x", "no sharding key"),
    ("RENAME TABLE genops.otel_traces TO genops.old", "no cluster form"),
    ("ALTER TABLE genops.otel_traces FREEZE", "no cluster form for this ALTER"),
    ("CREATE TABLE IF NOT EXISTS other.t (x UInt8) ENGINE = Null", "expected genops"),
    ("CREATE MATERIALIZED VIEW IF NOT EXISTS genops.v\nTO genops.otel_traces\nAS SELECT 1 AS x", "names no genops.<table>"),
])
def test_a_statement_without_a_known_cluster_form_is_refused(statement, error):
    rewriter = ClusterRewriter(DB, CLUSTER)
    for s in single_statements():
        rewriter.rewrite(s)
    with pytest.raises(ClusterDDLError, match=re.escape(error)):
        rewriter.rewrite(statement)


def test_cluster_setting_is_checked_when_loaded(tmp_path):
    from genops.config import ConfigError, load_settings

    def load(env: dict[str, str]) -> Any:
        return load_settings({}, env={"GENOPS_DATA_DIR": str(tmp_path), **env})

    server = {"GENOPS_CLICKHOUSE_URL": "http://ch:8123/"}
    assert load(server).clickhouse_cluster == ""
    assert load({**server, "GENOPS_CLICKHOUSE_CLUSTER": "{cluster}"}).clickhouse_cluster == "{cluster}"
    with pytest.raises(ConfigError, match="GENOPS_CLICKHOUSE_CLUSTER"):
        load({**server, "GENOPS_CLICKHOUSE_CLUSTER": "x' SETTINGS a=1"})
    with pytest.raises(ConfigError, match="embedded store is a single node"):
        load({"GENOPS_CLICKHOUSE_CLUSTER": "genops"})
    # a proxy that only exports by OTLP has no store: a ConfigMap shared with the collectors is fine
    export_only = {"GENOPS_EXPORTER": "otlp", "GENOPS_OTLP_ENDPOINT": "http://collector:4318"}
    assert load({**export_only, "GENOPS_CLICKHOUSE_CLUSTER": "genops"}).clickhouse_cluster == "genops"


# -- real ClickHouse ----------------------------------------------------------------------------

def test_every_cluster_statement_parses_in_clickhouse(chdb_dir):
    from conftest import open_chdb

    client = open_chdb(chdb_dir)
    with pytest.raises(Exception, match="Syntax error"):  # the check is not vacuous
        client.query("EXPLAIN AST CREATE TABLE t ON CLUSTER 'genops' AS u ENGINE = Distributed('genops', 'genops', )")
    for statement in cluster_statements():
        ast = client.query("EXPLAIN AST " + statement).result_rows
        assert ast, statement[:120]


@pytest.fixture(scope="module")
def one_node_cluster(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The report of :func:`simulate`, run in a process of its own (chDB reads its config once per process)."""
    workdir = tmp_path_factory.mktemp("one-node-cluster")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENOPS_")}
    done = subprocess.run([sys.executable, __file__, "--simulate", str(workdir)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=workdir)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_migrate_runs_the_whole_cluster_schema(one_node_cluster):
    report = one_node_cluster
    assert report["applied"] == [f"{m.version:04d}_{m.name}" for m in available_migrations()]
    assert report["ddl"][:2] == setup_statements(DB, CLUSTER)
    assert report["ddl"][2:] == [s for _, ss in migration_statements(DB, retention_days=DAYS, cluster=CLUSTER) for s in ss]
    engines = report["engines"]
    for name in mergetree_tables():
        assert engines[name] == "Distributed" and engines[f"{name}_local"].endswith("MergeTree"), name
    assert engines["otel_traces_otlp_in"] == "Null"
    assert "cityHash64(TraceId)" in report["engine_full"]["otel_traces"]
    # a store that is current runs no DDL at all: no start waits on ON CLUSTER
    assert report["second"] == {"applied": [], "ddl": []}


def test_a_replayed_batch_is_stored_once_through_the_distributed_tables(one_node_cluster):
    counts = one_node_cluster["counts"]
    # two spans of one trace, inserted twice with the same token, then once with another
    assert counts["replayed"] == {"otel_traces": 2, "otel_traces_local": 2, "genops_calls": 2, "trace_id_ts": 1,
                                  "rollup_calls": 2, "session_calls": 2, "cache_savings": 1}
    assert counts["new_token"]["otel_traces"] == 4  # the replay was deduplicated, not lost


def test_otlp_ingest_view_shards_its_rows_through_the_distributed_table(one_node_cluster):
    otlp = one_node_cluster["otlp"]
    assert otlp == {"rows": 1, "trace_id": "0af7651916cd43dd8448eb211c80319c", "local_rows": 1}


def test_anomaly_jobs_run_on_the_cluster_layout(one_node_cluster):
    jobs = one_node_cluster["jobs"]
    assert jobs["failed_detectors"] == [] and jobs["windows"] > 0
    assert jobs["watermark_set"] is True
    assert jobs["state"] == "2"  # the latest version wins through the Distributed table (FINAL per shard)
    assert jobs["open_anomalies"] == 1 and jobs["latest_rows"] == 1


def test_retention_change_runs_on_cluster_on_the_local_tables(one_node_cluster):
    retention = one_node_cluster["retention"]
    assert retention["ddl"] and all(re.match(r"ALTER TABLE genops\.`\w+_local` ON CLUSTER 'genops' MODIFY TTL .*"
                                             r"toIntervalDay\(7\)$", s) for s in retention["ddl"])
    assert "toIntervalDay(7)" in retention["otel_traces_local"]


def test_the_two_layouts_are_never_mixed(one_node_cluster):
    guard = one_node_cluster["guard"]
    assert "was created on a cluster" in guard["single_over_cluster"]["error"]
    assert "was created for a single node" in guard["cluster_over_single"]["error"]
    assert guard["single_over_cluster"]["ddl"] == guard["cluster_over_single"]["ddl"] == []  # refused before any DDL


# -- the command ---------------------------------------------------------------------------------

def genops(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GENOPS_")}
    return subprocess.run([sys.executable, "-m", "genops", *args], capture_output=True, text=True,
                          env={**full_env, **env}, timeout=120)


def test_print_ddl_prints_the_script_without_touching_a_store(tmp_path):
    env = {"GENOPS_DATA_DIR": str(tmp_path / "data")}
    single = genops("migrate", "--print-ddl", env=env)
    assert single.returncode == 0, single.stderr
    assert single.stdout == SINGLE_GOLDEN.read_text()
    assert not (tmp_path / "data").exists()  # nothing opened, nothing created
    nobody = {**env, "GENOPS_CLICKHOUSE_URL": "http://127.0.0.1:1/"}  # no server there: none is asked
    cluster = genops("migrate", "--print-ddl", "--clickhouse-cluster", CLUSTER, env=nobody)
    assert cluster.returncode == 0, cluster.stderr
    assert cluster.stdout == CLUSTER_GOLDEN.read_text()
    pending = genops("migrate", "--print-ddl", "--pending", "--clickhouse-cluster", CLUSTER, env=nobody)
    assert pending.returncode == 1 and "127.0.0.1:1" in pending.stderr and not pending.stdout
    embedded = genops("migrate", "--clickhouse-cluster", CLUSTER, env=env)
    assert embedded.returncode == 2 and "embedded store is a single node" in embedded.stderr


def test_print_ddl_pending_is_empty_once_migrated(tmp_path):
    env = {"GENOPS_DATA_DIR": str(tmp_path / "data")}
    before = genops("migrate", "--print-ddl", "--pending", env=env)
    assert before.returncode == 0, before.stderr
    assert "-- 0001_otel_traces" in before.stdout and "-- ledger" in before.stdout
    assert genops("migrate", env=env).returncode == 0
    after = genops("migrate", "--print-ddl", "--pending", env=env)
    assert after.returncode == 0, after.stderr
    assert "CREATE" not in after.stdout and "-- 0001" not in after.stdout


# -- the one-node cluster process ----------------------------------------------------------------

ONE_NODE_CONFIG = """<clickhouse>
  <tcp_port>9000</tcp_port>
  <macros><shard>01</shard><replica>node-1</replica><cluster>genops</cluster></macros>
  <remote_servers>
    <genops>
      <shard>
        <internal_replication>true</internal_replication>
        <replica><host>localhost</host><port>9000</port></replica>
      </shard>
    </genops>
  </remote_servers>
</clickhouse>
"""


class OneNodeCluster:
    """A chDB client that plays one node of a one-shard cluster, and records GenOps's DDL as sent.

    chDB has no Keeper: ``ON CLUSTER`` is refused and ``Replicated*MergeTree`` tables stay
    read-only. So each statement runs without ``ON CLUSTER`` (one node: it would run here
    anyway) and with the plain engine of the same family instead of the Replicated one. The
    Distributed tables, the local tables and the views are created as generated.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.ddl: list[str] = []

    def command(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        self.ddl.append(sql)
        sql = re.sub(r"\s*ON CLUSTER '[^']*'", "", sql)
        sql = re.sub(r"Replicated(\w*)MergeTree\('[^']*', '[^']*'(?:, )?", r"\1MergeTree(", sql)
        return self.client.command(sql, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def simulate(workdir: Path) -> dict[str, Any]:
    """Migrate a one-node cluster, use it as GenOps does, and report what is stored."""
    import datetime as dt
    import time

    import clickhouse_connect

    from genops.collectors.anomaly.episodes import Anomaly
    from genops.collectors.anomaly.runner import AnomalyJobs
    from genops.collectors.anomaly.store import get_state, get_watermark, open_anomalies, set_state, write_anomalies
    from genops.storage.migrate import SchemaLayoutError, migrate
    from genops.storage.rows import insert_json_payload, json_rows_payload, ts64

    (workdir / "config.xml").write_text(ONE_NODE_CONFIG)
    client = clickhouse_connect.get_client(dsn=f"chdb://{workdir / 'data'}",
                                           chdb_options={"config-file": str(workdir / "config.xml")})
    assert client.query("SELECT is_local FROM system.clusters WHERE cluster = 'genops'").result_rows == [(1,)]
    node = OneNodeCluster(client)
    report: dict[str, Any] = {}

    def one(sql: str) -> Any:
        return client.query(sql).result_rows[0][0]

    applied = migrate(node, DB, retention_days=DAYS, cluster=CLUSTER)
    report["applied"] = [f"{m.version:04d}_{m.name}" for m in applied]
    report["ddl"] = node.ddl
    tables = client.query("SELECT name, engine, engine_full FROM system.tables WHERE database = 'genops'").result_rows
    report["engines"] = {name: engine for name, engine, _ in tables}
    report["engine_full"] = {name: full for name, _, full in tables}
    for name, engine, _ in tables:  # Replicated tables deduplicate inserts by default; so must their stand-ins
        if name.endswith("_local") and engine.endswith("MergeTree"):
            client.command(f"ALTER TABLE genops.{name} MODIFY SETTING non_replicated_deduplication_window = 1000")
    node.ddl = []
    report["second"] = {"applied": [m.name for m in migrate(node, DB, retention_days=DAYS, cluster=CLUSTER)],
                        "ddl": node.ddl}

    # Spans as the pipeline inserts them: JSONEachRow into otel_traces, with its token and settings.
    now = time.time_ns()
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
             "gen_ai.usage.input_tokens": "10", "gen_ai.usage.output_tokens": "5", "genops.cost.usd": "0.001",
             "gen_ai.conversation.id": "session-1", "genops.request.id": "req-1"}
    rows = [
        {"Timestamp": ts64(now), "TraceId": "ab" * 16, "SpanId": "01" * 8, "SpanName": "chat gpt-4o", "SpanKind": "Client",
         "ServiceName": "genops-proxy", "ScopeName": "genops.proxy", "SpanAttributes": attrs, "Duration": 1_000_000,
         "StatusCode": "Ok"},
        {"Timestamp": ts64(now + 1000), "TraceId": "ab" * 16, "SpanId": "02" * 8, "SpanName": "chat gpt-4o",
         "SpanKind": "Client", "ServiceName": "genops-proxy", "ScopeName": "genops.proxy",
         "SpanAttributes": {**attrs, "genops.request.id": "req-2", "genops.cost.cache_savings_usd": "0.0005",
                            "gen_ai.usage.cache_read.input_tokens": "8"},
         "Duration": 2_000_000, "StatusCode": "Ok"},
    ]
    payload = json_rows_payload(rows)
    dedup = {"deduplicate_blocks_in_dependent_materialized_views": 1}
    for _ in range(2):  # a batch replayed after a timeout that did land
        insert_json_payload(client, DB, payload, insert_deduplication_token="batch-1", **dedup)
    report["counts"] = {"replayed": {
        "otel_traces": one("SELECT count() FROM genops.otel_traces"),
        "otel_traces_local": one("SELECT count() FROM genops.otel_traces_local"),
        "genops_calls": one("SELECT count() FROM genops.genops_calls"),
        "trace_id_ts": one("SELECT count() FROM genops.otel_traces_trace_id_ts"),
        "rollup_calls": one("SELECT sum(Calls) FROM genops.genops_rollup_model_1m"),
        "session_calls": one("SELECT sum(Calls) FROM genops.genops_rollup_session_1m"),
        "cache_savings": one("SELECT count() FROM genops.genops_cache_savings"),
    }}
    insert_json_payload(client, DB, payload, insert_deduplication_token="batch-2", **dedup)
    report["counts"]["new_token"] = {"otel_traces": one("SELECT count() FROM genops.otel_traces")}

    # The OTLP ingest path: a SpanRow into the per-node Null table; its view writes otel_traces.
    otlp_insert = ("INSERT INTO genops.otel_traces_otlp_in (trace_id, span_id, name, kind, start_time_unix_nano, "
                   "end_time_unix_nano, service_name) VALUES (unhex('0af7651916cd43dd8448eb211c80319c'), "
                   f"unhex('b7ad6b7169203331'), 'otlp-span', 1, {now}, {now + 5000}, 'agent')")
    for _ in range(2):
        client.command(otlp_insert, settings={"insert_deduplication_token": "otlp-1", **dedup})
    report["otlp"] = {"rows": one("SELECT count() FROM genops.otel_traces WHERE SpanName = 'otlp-span'"),
                      "trace_id": one("SELECT any(TraceId) FROM genops.otel_traces WHERE SpanName = 'otlp-span'"),
                      "local_rows": one("SELECT count() FROM genops.otel_traces_local WHERE SpanName = 'otlp-span'")}

    # The anomaly jobs: a pass reads the rollups through the Distributed tables and writes its state.
    jobs = AnomalyJobs(client=client, database=DB, notifier=None).run_once(notify=False).as_dict()
    set_state(client, DB, "cluster.test", "1")
    set_state(client, DB, "cluster.test", "2")
    start = dt.datetime.now(dt.UTC).replace(tzinfo=None, second=0, microsecond=0)
    for status in ("open", "open"):  # two versions of one anomaly
        write_anomalies(client, DB, [Anomaly("cost_surge", "service=x", start, start, 2.0, 1.0, 5.0, "warning", status)])
    report["jobs"] = {"failed_detectors": jobs["failed_detectors"], "windows": jobs["windows"],
                      "watermark_set": get_watermark(client, DB) is not None,
                      "state": get_state(client, DB, "cluster.test"),
                      "open_anomalies": len(open_anomalies(client, DB)),
                      "latest_rows": one("SELECT count() FROM genops.genops_anomalies_latest")}

    node.ddl = []
    migrate(node, DB, retention_days=7, cluster=CLUSTER)
    report["retention"] = {"ddl": node.ddl, "otel_traces_local": one(
        "SELECT engine_full FROM system.tables WHERE database = 'genops' AND name = 'otel_traces_local'")}

    guard: dict[str, Any] = {}
    migrate(client, "single_node", retention_days=DAYS)
    for label, database, cluster in (("single_over_cluster", DB, ""), ("cluster_over_single", "single_node", CLUSTER)):
        node.ddl = []
        try:
            migrate(node, database, retention_days=DAYS, cluster=cluster)
            guard[label] = {"error": "", "ddl": node.ddl}
        except SchemaLayoutError as exc:
            guard[label] = {"error": str(exc), "ddl": node.ddl}
    report["guard"] = guard
    return report


def regenerate() -> None:
    """Rewrite the DDL golden files; add checksums of new migrations (existing ones never change)."""
    SINGLE_GOLDEN.write_text(schema_sql(DB, retention_days=DAYS))
    CLUSTER_GOLDEN.write_text(schema_sql(DB, retention_days=DAYS, cluster=CLUSTER))
    recorded = json.loads(CHECKSUMS_GOLDEN.read_text())
    for m in available_migrations():
        recorded.setdefault(f"{m.version:04d}_{m.name}", m.checksum)
    CHECKSUMS_GOLDEN.write_text(json.dumps(recorded, indent=2) + "\n")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--simulate"]:
        print(json.dumps(simulate(Path(sys.argv[2])), default=str))
    elif sys.argv[1:] == ["--regenerate"]:
        regenerate()
    else:
        sys.exit("usage: tests/test_cluster_ddl.py --regenerate")
