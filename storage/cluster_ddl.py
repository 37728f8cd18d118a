"""The cluster variant of GenOps's schema, rewritten from the single-node migrations.

With ``GENOPS_CLICKHOUSE_CLUSTER`` set, ``genops migrate`` runs every migration file through
:class:`ClusterRewriter`, so the ``.sql`` files stay the one source of truth (and their checksums
and single-node output do not change). The layout follows the OpenTelemetry Collector's
``clickhouseexporter`` (``cluster_name`` puts ``ON CLUSTER`` after the object's name,
``table_engine`` makes the tables ``Replicated*MergeTree``) and ClickHouse's own docs for the
rest (Keeper path ``/clickhouse/tables/{shard}/{database}/{table}``, replica ``{replica}``):

- every ``*MergeTree`` table ``T`` becomes ``T_local`` (``Replicated*MergeTree``, one copy per
  shard, replicated inside it) plus ``T``, a ``Distributed`` table over all shards. Readers, the
  collector exporter and GenOps's own inserts keep using ``T``;
- a materialized view fed by a MergeTree table reads ``T_local`` and writes the target's
  ``_local`` table: each shard derives its own rows, and since MVs only fire on the replica that
  took the insert, the replicated target carries them to the other replicas;
- a materialized view fed by a per-node ``Null`` table (OTLP ingest) writes the ``Distributed``
  table, so its rows are sharded like any insert: a retried batch reaches the same shard and
  is deduplicated there, whichever node took the retry;
- plain views read the ``Distributed`` tables (they see every shard);
- ``ALTER`` column changes go to both tables, setting changes to the local one; the
  single-node deduplication window becomes a longer memory for the replicated one
  (:data:`DEDUP_WINDOW_SECONDS`).

The sharding key of each table is :data:`SHARDING_KEYS`; a statement the rewriter does not
know raises :class:`ClusterDDLError`, so a new migration cannot silently miss the cluster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from genops.config import check_cluster_name

#: Keeper path and replica name of a sharded table, the form ClickHouse's docs use: the macros
#: {shard} and {replica} come from each server's <macros>, {database} and {table} are filled in
#: when the table is created.
REPLICA_PATH = "/clickhouse/tables/{shard}/{database}/{table}"
REPLICA_NAME = "{replica}"

#: The migrations ledger is tiny and every node must read it locally (``genops migrate`` and
#: every ``serve``/``collector`` start read it on whichever node they reach): one shard spanning
#: the whole cluster, every node a replica. {shard}-{replica} keeps replica names unique even
#: where the {replica} macro repeats across shards.
LEDGER_PATH = "/clickhouse/tables/cluster_wide/{database}/{table}"
LEDGER_REPLICA = "{shard}-{replica}"

#: Replicated tables deduplicate inserts by default, over a window of recent blocks as large as
#: or larger than the single-node one (1,000 to 10,000 depending on the version: not lowered
#: here), but recent versions forget a block after an hour. A batch replayed from a spool after
#: a longer outage must still be recognised: keep the hashes for a week, as older versions did.
DEDUP_WINDOW_SECONDS = 7 * 24 * 3600

#: Suffix of the per-shard table behind each Distributed table.
LOCAL_SUFFIX = "_local"

#: Sharding key of every MergeTree table's Distributed table. Rows of one trace stay on one shard
#: (the trace-id lookup and trace queries), and a key computed from the rows alone sends a retried
#: batch to the same shards, which recognise it (deduplication is per shard); tables the views
#: fill per shard say where those rows are; the jobs' ReplacingMergeTree tables keep every
#: version of a row on one shard (FINAL only collapses within a shard).
SHARDING_KEYS: dict[str, str] = {
    "otel_traces": "cityHash64(TraceId)",
    "otel_traces_trace_id_ts": "cityHash64(TraceId)",
    "genops_calls": "cityHash64(TraceId)",
    "genops_cache_savings": "cityHash64(TraceId)",
    "genops_scores": "cityHash64(TraceId)",
    # Partial aggregates of every shard, merged by the readers' GROUP BY: no key places them.
    "genops_rollup_model_1m": "rand()",
    "genops_rollup_dim_1m": "rand()",
    "genops_rollup_session_1m": "rand()",
    "genops_anomalies": "cityHash64(detector, entity)",
    "genops_jobs_state": "cityHash64(name)",
    # Every decision of a route on one shard: a route's state is read from its rows alone.
    "genops_rollouts": "cityHash64(Route)",
}



class ClusterDDLError(ValueError):
    """A statement the cluster rewriter does not know how to lay out on a cluster."""


def on_cluster(cluster: str) -> str:
    """The ``ON CLUSTER`` clause; a string literal, so a ``{cluster}`` macro works too."""
    return f"ON CLUSTER '{check_cluster_name(cluster)}'"


def database_ddl(database: str, cluster: str) -> str:
    """``CREATE DATABASE`` on every node of ``cluster``."""
    return f"CREATE DATABASE IF NOT EXISTS {database} {on_cluster(cluster)}"


def ledger_ddl(single_node_ddl: str, database: str, cluster: str) -> str:
    """The migrations ledger on every node of ``cluster`` (see :data:`LEDGER_PATH`)."""
    table = f"{database}.genops_schema_migrations"
    text = single_node_ddl.strip()
    if text.count(table + " (") != 1 or text.count("ENGINE = MergeTree ") != 1:
        raise ClusterDDLError("the ledger DDL changed; teach storage/cluster_ddl.py its cluster form")
    text = text.replace(table + " (", f"{table} {on_cluster(cluster)} (")
    return text.replace("ENGINE = MergeTree ", f"ENGINE = ReplicatedMergeTree('{LEDGER_PATH}', '{LEDGER_REPLICA}') ")


# A single-quoted string, a back-quoted identifier, or <database>.<name>: names inside strings
# ('genops.cost.usd' when the database is genops) are never tables.
_TOKENS = r"'(?:[^'\\]|\\.)*'|`[^`]*`|(?<![\w.]){db}\.(\w+)(?![\w.])"
_ENGINE = re.compile(r"\bENGINE = (\w+)(?:\(([^()]*)\))?")
_CREATE_TABLE = re.compile(r"^CREATE TABLE IF NOT EXISTS (\w+)\.(\w+)(\s*\(.*)$", re.S)
_CREATE_MV = re.compile(r"^CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+)\.(\w+)(\s+)TO (\w+)\.(\w+)(\s+AS\s+)(SELECT\b.*)$", re.S)
_CREATE_VIEW = re.compile(r"^CREATE VIEW IF NOT EXISTS (\w+)\.(\w+)(\s+AS\s.*)$", re.S)
_ALTER = re.compile(r"^ALTER TABLE (\w+)\.(\w+)(\s+)(.*)$", re.S)
_DROP = re.compile(r"^DROP (VIEW|TABLE) IF EXISTS (\w+)\.(\w+)$")
_COLUMN_OPS = re.compile(r"^(ADD|DROP|MODIFY|RENAME|COMMENT) COLUMN\b")
_LOCAL_ONLY_OPS = re.compile(r"^(MODIFY TTL|REMOVE TTL|(ADD|DROP|MATERIALIZE|CLEAR) INDEX|(ADD|DROP) PROJECTION)\b")
_DEDUP_WINDOW = re.compile(r"^MODIFY SETTING non_replicated_deduplication_window = (\d+)$")


@dataclass
class ClusterRewriter:
    """Rewrites single-node migration statements, in migration order, for ``cluster``.

    Feed it every statement of every migration in order (also the ones already applied): what
    it learns from earlier ones (which tables are sharded, which views read them) decides how
    later ones are written.
    """

    database: str
    cluster: str
    #: Tables that have a ``_local`` table behind a Distributed one.
    sharded: set[str] = field(default_factory=set)
    #: Materialized view -> True when it reads ``_local`` tables (it fires on each shard).
    views_local: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._on = on_cluster(self.cluster)
        self._tokens = re.compile(_TOKENS.format(db=re.escape(self.database)))

    def rewrite(self, statement: str) -> list[str]:
        """The cluster statements for one single-node ``statement`` (one or two)."""
        text = statement.strip()
        for pattern, handler in ((_CREATE_TABLE, self._create_table), (_CREATE_MV, self._create_mv),
                                 (_CREATE_VIEW, self._create_view), (_ALTER, self._alter), (_DROP, self._drop)):
            match = pattern.match(text)
            if match:
                self._own(match.group(1) if pattern is not _DROP else match.group(2), text)
                return handler(match)
        raise ClusterDDLError(f"no cluster form for this statement; teach storage/cluster_ddl.py: {_head(text)}")

    # -- statements ---------------------------------------------------------------------------

    def _create_table(self, m: re.Match[str]) -> list[str]:
        db, name, rest = m.groups()
        engines = list(_ENGINE.finditer(rest))
        if len(engines) != 1:
            raise ClusterDDLError(f"{db}.{name}: expected one ENGINE clause, found {len(engines)}")
        engine = engines[0]
        family, args = engine.group(1), engine.group(2)
        if not family.endswith("MergeTree"):  # Null, Memory...: one per node, nothing to replicate
            return [f"CREATE TABLE IF NOT EXISTS {db}.{name} {self._on}{rest}"]
        if family.startswith("Replicated"):
            raise ClusterDDLError(f"{db}.{name}: already {family}; migrations are written for a single node")
        key = SHARDING_KEYS.get(name)
        if key is None:
            raise ClusterDDLError(f"{db}.{name}: no sharding key; add it to SHARDING_KEYS in storage/cluster_ddl.py")
        params = [f"'{REPLICA_PATH}'", f"'{REPLICA_NAME}'"] + ([args.strip()] if args and args.strip() else [])
        replicated = f"ENGINE = Replicated{family}({', '.join(params)})"
        local = f"{name}{LOCAL_SUFFIX}"
        self.sharded.add(name)
        return [
            f"CREATE TABLE IF NOT EXISTS {db}.{local} {self._on}{rest[:engine.start()]}{replicated}{rest[engine.end():]}",
            self._distributed(name),
        ]

    def _distributed(self, name: str) -> str:
        db, local = self.database, f"{name}{LOCAL_SUFFIX}"
        return (f"CREATE TABLE IF NOT EXISTS {db}.{name} {self._on} AS {db}.{local}\n"
                f"ENGINE = Distributed('{self.cluster}', '{db}', '{local}', {SHARDING_KEYS[name]})")

    def _create_mv(self, m: re.Match[str]) -> list[str]:
        db, view, gap, target_db, target, as_, select = m.groups()
        self._own(target_db, m.group(0))
        body, reads_local = self._sources(select, f"{db}.{view}")
        if reads_local and target not in self.sharded:
            raise ClusterDDLError(f"{db}.{view}: reads sharded tables but writes {target}, which is not sharded")
        self.views_local[view] = reads_local
        # Reading local tables: write the target's local table (the rows stay on their shard).
        # Reading a per-node table: write the Distributed one (the rows get sharded).
        to = f"{target}{LOCAL_SUFFIX}" if reads_local else target
        return [f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{view} {self._on}{gap}TO {db}.{to}{as_}{body}"]

    def _create_view(self, m: re.Match[str]) -> list[str]:
        db, view, rest = m.groups()
        return [f"CREATE VIEW IF NOT EXISTS {db}.{view} {self._on}{rest}"]  # reads the Distributed tables

    def _alter(self, m: re.Match[str]) -> list[str]:
        db, name, gap, op = m.groups()
        if op.startswith("MODIFY QUERY"):
            if name not in self.views_local:
                raise ClusterDDLError(f"{db}.{name}: MODIFY QUERY of a view this schema did not create")
            head, select = op[: len("MODIFY QUERY")], op[len("MODIFY QUERY"):]
            body, reads_local = self._sources(select, f"{db}.{name}")
            if reads_local != self.views_local[name]:
                raise ClusterDDLError(f"{db}.{name}: the new query reads {'local' if reads_local else 'per-node'} "
                                      "tables, the view was created for the other kind")
            return [f"ALTER TABLE {db}.{name} {self._on}{gap}{head}{body}"]
        if name not in self.sharded:
            return [f"ALTER TABLE {db}.{name} {self._on}{gap}{op}"]
        local = f"ALTER TABLE {db}.{name}{LOCAL_SUFFIX} {self._on}{gap}"
        if _DEDUP_WINDOW.match(op):  # replicated tables keep their own window of blocks, in Keeper
            return [f"{local}MODIFY SETTING replicated_deduplication_window_seconds = {DEDUP_WINDOW_SECONDS}"]
        if op.startswith("MODIFY SETTING") or _LOCAL_ONLY_OPS.match(op):
            return [local + op]
        if _COLUMN_OPS.match(op):  # the Distributed table's columns must match its local table's
            return [local + op, f"ALTER TABLE {db}.{name} {self._on}{gap}{op}"]
        raise ClusterDDLError(f"{db}.{name}: no cluster form for this ALTER; teach storage/cluster_ddl.py: {_head(op)}")

    def _drop(self, m: re.Match[str]) -> list[str]:
        kind, db, name = m.groups()
        if kind == "TABLE" and name in self.sharded:
            self.sharded.discard(name)
            # SYNC: the local table's Keeper path is freed at once, so it can be created again
            return [f"DROP TABLE IF EXISTS {db}.{name} {self._on}",
                    f"DROP TABLE IF EXISTS {db}.{name}{LOCAL_SUFFIX} {self._on} SYNC"]
        self.views_local.pop(name, None)
        return [f"DROP {kind} IF EXISTS {db}.{name} {self._on}"]

    # -- helpers ------------------------------------------------------------------------------

    def _sources(self, select: str, view: str) -> tuple[str, bool]:
        """``select`` reading the local table of every sharded table it names; and whether it does."""
        named: list[bool] = []

        def local(token: re.Match[str]) -> str:
            name = token.group(1)
            if name is None:  # a string or a quoted identifier
                return token.group(0)
            named.append(name in self.sharded)
            return f"{self.database}.{name}{LOCAL_SUFFIX}" if name in self.sharded else token.group(0)

        body = self._tokens.sub(local, select)
        if not named:
            raise ClusterDDLError(f"{view}: its query names no {self.database}.<table>")
        if any(named) and not all(named):
            raise ClusterDDLError(f"{view}: its query mixes sharded and per-node tables")
        return body, all(named)

    def _own(self, database: str, text: str) -> None:
        if database != self.database:
            raise ClusterDDLError(f"statement on database {database}, expected {self.database}: {_head(text)}")


def _head(text: str) -> str:
    return " ".join(text.split())[:120]
