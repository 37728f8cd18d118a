"""``genops migrate``: create or upgrade the schema (also run by ``serve``)."""

from __future__ import annotations

import argparse
import sys

from genops.commands.common import STORAGE_FLAGS, add_setting_flags, settings_from_args
from genops.config import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("migrate", help="create or upgrade the ClickHouse schema")
    add_setting_flags(parser, (*STORAGE_FLAGS, "clickhouse_cluster", "retention_days", "sql_user", "sql_password"))
    parser.add_argument("--create-reader", action="store_true",
                        help="ClickHouse server: also create the read-only user genops sql logs in as "
                             "(GENOPS_SQL_USER; password GENOPS_SQL_PASSWORD, else generated into the data dir)")
    parser.add_argument("--print-ddl", action="store_true",
                        help="print the DDL for the current settings (a new store: every migration; on a cluster "
                             "its ON CLUSTER form) and exit without connecting or changing anything")
    parser.add_argument("--pending", action="store_true",
                        help="with --print-ddl: connect and print only what this store has not applied yet")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    from genops.storage.client import StorageError, open_client
    from genops.storage.migrate import migrate
    from genops.storage.reader import create_reader

    if args.pending and not args.print_ddl:
        print("genops: --pending goes with --print-ddl", file=sys.stderr)
        return 2
    if args.print_ddl:
        return print_ddl(settings, pending=args.pending)
    if args.create_reader and settings.embedded:
        print("genops: --create-reader needs a ClickHouse server (GENOPS_CLICKHOUSE_URL); the embedded store has "
              "no users, and the SQL sandbox guards it", file=sys.stderr)
        return 2
    try:
        client = open_client(settings)
        applied = migrate(client, settings.database, retention_days=settings.retention_days,
                          cluster=settings.clickhouse_cluster)
        reader = create_reader(client, settings) if args.create_reader else None
    except StorageError as exc:
        print(f"genops: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a driver error becomes one line
        print(f"genops: migration failed on {settings.storage_description()}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    where = f" ON CLUSTER '{settings.clickhouse_cluster}'" if settings.clickhouse_cluster else ""
    if applied:
        for migration in applied:
            print(f"applied {migration.version:04d}_{migration.name}{where}")
    else:
        print(f"schema is up to date ({settings.storage_description()})")
    if reader:
        print(f"read-only user {reader} ready: SELECT on {settings.database} only; genops sql logs in as it")
    return 0


def print_ddl(settings: Settings, *, pending: bool) -> int:
    """Print the DDL ``genops migrate`` runs: all of it (no connection), or ``pending`` on this store."""
    from genops.storage.client import StorageError, open_client
    from genops.storage.migrate import applied_versions, available_migrations, check_layout, ledger_exists, schema_sql

    versions = None
    with_setup = True
    if pending:
        try:
            client = open_client(settings)
            check_layout(client, settings.database, settings.clickhouse_cluster)
            with_setup = not ledger_exists(client, settings.database)
            done = set() if with_setup else applied_versions(client, settings.database)
        except StorageError as exc:
            print(f"genops: {exc}", file=sys.stderr)
            return 1
        except Exception as exc:  # a driver error becomes one line
            print(f"genops: cannot read the schema of {settings.storage_description()}: {str(exc).splitlines()[0]}",
                  file=sys.stderr)
            return 1
        versions = {m.version for m in available_migrations()} - done
    sys.stdout.write(schema_sql(settings.database, retention_days=settings.retention_days,
                                cluster=settings.clickhouse_cluster, pending=versions, with_setup=with_setup))
    return 0
