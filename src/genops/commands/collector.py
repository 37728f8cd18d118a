"""``genops collector``: run the OTLP/HTTP trace receiver alone (it owns the store)."""

from __future__ import annotations

import argparse
import sys

from genops.commands.common import STORAGE_FLAGS, add_setting_flags, settings_from_args
from genops.logs import setup_logging


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("collector", help="run the OTLP/HTTP trace receiver alone")
    add_setting_flags(parser, ("otlp_host", "otlp_port", *STORAGE_FLAGS, "log_level", "log_format"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    setup_logging(settings.log_level, settings.log_format)
    from genops.runtime.collector import run_collector
    from genops.storage.client import StorageError
    from genops.storage.spool import SpoolLocked

    try:
        run_collector(settings)
    except (StorageError, SpoolLocked) as exc:
        print(f"genops: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"genops: cannot listen on {settings.otlp_bind_host}:{settings.otlp_port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    return 0
