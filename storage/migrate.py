"""Versioned, idempotent schema migrations with a ledger table.

Each ``storage/migrations/NNNN_name.sql`` file is applied once, in order, and recorded in
``{database}.genops_schema_migrations``. Every statement is also written to be harmless
when re-run (``IF NOT EXISTS``), so a migration interrupted half-way can simply run again.
Placeholders: ``{database}``, ``{retention_days}``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

from clickhouse_connect.driver.client import Client

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


def migrate(client: Client, database: str, *, retention_days: int = 30) -> list[Migration]:
    """Bring ``database`` up to date; returns the migrations applied now (empty when current)."""
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.command(LEDGER_DDL.format(database=database))
    done = applied_versions(client, database)
    applied = []
    for migration in available_migrations():
        if migration.version in done:
            continue
        for statement in migration.statements(database=database, retention_days=retention_days):
            client.command(statement)
        client.insert(
            f"{database}.genops_schema_migrations",
            [[migration.version, migration.name, migration.checksum]],
            column_names=["version", "name", "checksum"],
        )
        log.info("migration applied", extra={"version": migration.version, "migration": migration.name})
        applied.append(migration)
    apply_retention(client, database, retention_days)
    return applied


_TTL_DAYS = re.compile(r"\bTTL\s+(.+?)\s*\+\s*toIntervalDay\((\d+)\)")


def apply_retention(client: Client, database: str, retention_days: int) -> list[str]:
    """Make every day-based TTL in ``database`` match ``retention_days``; returns the tables changed.

    Tables are created with the retention in force at the time; this keeps a later change of
    ``GENOPS_RETENTION_DAYS`` effective. Existing parts are not rewritten
    (``materialize_ttl_after_modify = 0``): expired partitions are dropped as merges reach them.
    """
    rows = client.query(
        "SELECT name, engine_full FROM system.tables WHERE database = {db:String} AND engine LIKE '%MergeTree'",
        parameters={"db": database},
    ).result_rows
    changed = []
    for name, engine_full in rows:
        match = _TTL_DAYS.search(engine_full)
        if match is None or int(match.group(2)) == retention_days:
            continue
        client.command(
            f"ALTER TABLE {database}.`{name}` MODIFY TTL {match.group(1)} + toIntervalDay({int(retention_days)})",
            settings={"materialize_ttl_after_modify": 0},
        )
        log.info("retention changed", extra={"table": name, "days": retention_days})
        changed.append(name)
    return changed
