"""``genops migrate``: create or upgrade the schema (also run by ``serve``)."""

from __future__ import annotations

import argparse
import sys

from genops.commands.common import STORAGE_FLAGS, add_setting_flags, settings_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("migrate", help="create or upgrade the ClickHouse schema")
    add_setting_flags(parser, (*STORAGE_FLAGS, "retention_days", "sql_user", "sql_password"))
    parser.add_argument("--create-reader", action="store_true",
                        help="ClickHouse server: also create the read-only user genops sql logs in as "
                             "(GENOPS_SQL_USER; password GENOPS_SQL_PASSWORD, else generated into the data dir)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    from genops.storage.client import StorageError, open_client
    from genops.storage.migrate import migrate
    from genops.storage.reader import create_reader

    if args.create_reader and settings.embedded:
        print("genops: --create-reader needs a ClickHouse server (GENOPS_CLICKHOUSE_URL); the embedded store has "
              "no users, and the SQL sandbox guards it", file=sys.stderr)
        return 2
    try:
        client = open_client(settings)
        applied = migrate(client, settings.database, retention_days=settings.retention_days)
        reader = create_reader(client, settings) if args.create_reader else None
    except StorageError as exc:
        print(f"genops: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a driver error becomes one line
        print(f"genops: migration failed on {settings.storage_description()}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    if applied:
        for migration in applied:
            print(f"applied {migration.version:04d}_{migration.name}")
    else:
        print(f"schema is up to date ({settings.storage_description()})")
    if reader:
        print(f"read-only user {reader} ready: SELECT on {settings.database} only; genops sql logs in as it")
    return 0
