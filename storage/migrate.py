"""Versioned, idempotent schema migrations with a ledger table.

Each ``storage/migrations/NNNN_name.sql`` file is applied once, in order, and recorded in
``{database}.genops_schema_migrations``. Every statement is also written to be harmless
when re-run (``IF NOT EXISTS``), so a migration interrupted half-way can simply run again.
Placeholders: ``{database}``, ``{retention_days}``.

On a ClickHouse cluster (``GENOPS_CLICKHOUSE_CLUSTER``) the same files are rewritten statement by
statement by :mod:`genops.storage.cluster_ddl` (``ON CLUSTER``, ``Replicated*MergeTree`` local
tables, ``Distributed`` tables in front); the files, their checksums and the single-node DDL
stay as they are. ``genops migrate --print-ddl`` shows either form.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

from clickhouse_connect.driver.client import Client

from genops.storage.cluster_ddl import ClusterRewriter, database_ddl, ledger_ddl, on_cluster

log = logging.getLogger("genops.storage.migrate")

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS {database}.genops_schema_migrations (
    version UInt32,
    name String,
    checksum String,
    applied_at DateTime64(3) DEFAULT now64(3)
) ENGINE = MergeTree ORDER BY version
"""

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    def statements(self, **params: object) -> list[str]:
        """The file's statements with placeholders filled, comments dropped."""
        text = "\n".join(line for line in self.sql.splitlines() if not line.lstrip().startswith("--"))
        text = text.format(**params)
        return [stmt.strip() for stmt in re.split(r";\s*(?:\n|$)", text) if stmt.strip()]


def available_migrations() -> list[Migration]:
    """All migration files shipped with the package, in version order."""
    found = []
    for entry in resources.files("genops.storage").joinpath("migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return found


def applied_versions(client: Client, database: str) -> set[int]:
    """Versions recorded in the ledger."""
    rows = client.query(f"SELECT version FROM {database}.genops_schema_migrations").result_rows
    return {int(r[0]) for r in rows}


class SchemaLayoutError(RuntimeError):
    """The store was laid out for a single node and asked to be a cluster, or the other way round."""


def setup_statements(database: str, cluster: str = "") -> list[str]:
    """The database and the ledger, created before any migration."""
    ledger = LEDGER_DDL.format(database=database)
    if not cluster:
        return [f"CREATE DATABASE IF NOT EXISTS {database}", ledger]
    return [database_ddl(database, cluster), ledger_ddl(ledger, database, cluster)]


def migration_statements(database: str, *, retention_days: int = 30,
                         cluster: str = "") -> list[tuple[Migration, list[str]]]:
    """Every migration with the statements it runs: the file's own, or their cluster form.

    Cluster statements depend on the migrations before them (which tables are sharded), so all
    of them are rewritten, in order, even when only the last one is pending.
    """
    rewriter = ClusterRewriter(database, cluster) if cluster else None
    planned = []
    for migration in available_migrations():
        statements = migration.statements(database=database, retention_days=retention_days)
        if rewriter is not None:
            statements = [out for statement in statements for out in rewriter.rewrite(statement)]
        planned.append((migration, statements))
    return planned


def schema_sql(database: str, *, retention_days: int = 30, cluster: str = "",
               pending: set[int] | None = None, with_setup: bool = True) -> str:
    """The DDL ``migrate`` runs, as one reviewable SQL script (``genops migrate --print-ddl``).

    ``pending``: only these versions (default: all, i.e. a new store); ``with_setup``: include
    the database and ledger statements.
    """
    where = f"ON CLUSTER '{cluster}'" if cluster else "single node"
    parts = ["-- GenOps schema: every statement `genops migrate` runs on a new store, in order"
             if pending is None else "-- GenOps schema: the statements `genops migrate` would run now, in order",
             f"-- (database {database}, retention {retention_days} days, {where}).", ""]
    if with_setup:
        parts += ["-- ledger", *(statement.strip() + ";" for statement in setup_statements(database, cluster)), ""]
    for migration, statements in migration_statements(database, retention_days=retention_days, cluster=cluster):
        if pending is not None and migration.version not in pending:
            continue
        parts += [f"-- {migration.version:04d}_{migration.name}", *(statement + ";" for statement in statements), ""]
    return "\n".join(parts)


def existing_layout(client: Client, database: str) -> str | None:
    """How ``database`` is laid out today: ``"cluster"`` (otel_traces is Distributed), ``"single"``
    (it is a table of its own), or None (no schema yet)."""
    rows = client.query(
        "SELECT engine FROM system.tables WHERE database = {db:String} AND name = 'otel_traces'",
        parameters={"db": database},
    ).result_rows
    if not rows:
        return None
    return "cluster" if rows[0][0] == "Distributed" else "single"


def check_layout(client: Client, database: str, cluster: str) -> None:
    """Refuse to run cluster DDL over a single-node schema, or single-node DDL over a cluster one:
    either would leave a half-converted store (tables on one node, or views on the wrong tables)."""
    layout = existing_layout(client, database)
    if layout == "single" and cluster:
        raise SchemaLayoutError(
            f"database {database} was created for a single node (otel_traces is not Distributed); "
            f"GENOPS_CLICKHOUSE_CLUSTER={cluster} cannot convert it in place: migrate into a new database "
            "(GENOPS_DATABASE) and copy the data (docs/deploy.md, \"Moving to a cluster\")")
    if layout == "cluster" and not cluster:
        raise SchemaLayoutError(
            f"database {database} was created on a cluster (otel_traces is Distributed); set "
            "GENOPS_CLICKHOUSE_CLUSTER to the cluster's name so migrations run ON CLUSTER")


def ledger_exists(client: Client, database: str) -> bool:
    """Whether the ledger table exists on the node ``client`` talks to."""
    return bool(client.query(
        "SELECT count() FROM system.tables WHERE database = {db:String} AND name = 'genops_schema_migrations'",
        parameters={"db": database},
    ).result_rows[0][0])


def migrate(client: Client, database: str, *, retention_days: int = 30, cluster: str = "") -> list[Migration]:
    """Bring ``database`` up to date; returns the migrations applied now (empty when current).

    ``cluster`` (``GENOPS_CLICKHOUSE_CLUSTER``): run every statement ``ON CLUSTER`` in its
    cluster form (:mod:`genops.storage.cluster_ddl`). A store that is current runs no DDL at all,
    so a start never waits on ``ON CLUSTER`` (which waits for every node) unless there is work.
    """
    check_layout(client, database, cluster)
    if not ledger_exists(client, database):
        for statement in setup_statements(database, cluster):
            client.command(statement)
    done = applied_versions(client, database)
    applied = []
    for migration, statements in migration_statements(database, retention_days=retention_days, cluster=cluster):
        if migration.version in done:
            continue
        for statement in statements:
            client.command(statement)
        client.insert(
            f"{database}.genops_schema_migrations",
            [[migration.version, migration.name, migration.checksum]],
            column_names=["version", "name", "checksum"],
        )
        log.info("migration applied", extra={"version": migration.version, "migration": migration.name,
                                             "cluster": cluster or None})
        applied.append(migration)
    apply_retention(client, database, retention_days, cluster=cluster)
    return applied


_TTL_DAYS = re.compile(r"\bTTL\s+(.+?)\s*\+\s*toIntervalDay\((\d+)\)")


def apply_retention(client: Client, database: str, retention_days: int, *, cluster: str = "") -> list[str]:
    """Make every day-based TTL in ``database`` match ``retention_days``; returns the tables changed.

    Tables are created with the retention in force at the time; this keeps a later change of
    ``GENOPS_RETENTION_DAYS`` effective. Existing parts are not rewritten
    (``materialize_ttl_after_modify = 0``): expired partitions are dropped as merges reach them.
    On a cluster the tables found are the ``_local`` ones (Distributed tables have no TTL), and
    the change runs ``ON CLUSTER``.
    """
    rows = client.query(
        "SELECT name, engine_full FROM system.tables WHERE database = {db:String} AND engine LIKE '%MergeTree'",
        parameters={"db": database},
    ).result_rows
    where = on_cluster(cluster) + " " if cluster else ""
    changed = []
    for name, engine_full in rows:
        match = _TTL_DAYS.search(engine_full)
        if match is None or int(match.group(2)) == retention_days:
            continue
        client.command(
            f"ALTER TABLE {database}.`{name}` {where}MODIFY TTL {match.group(1)} + toIntervalDay({int(retention_days)})",
            settings={"materialize_ttl_after_modify": 0},
        )
        log.info("retention changed", extra={"table": name, "days": retention_days})
        changed.append(name)
    return changed
