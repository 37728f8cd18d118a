"""``genops serve``: run the proxy (and, embedded, its store)."""

from __future__ import annotations

import argparse
import sys

from genops.commands.common import STORAGE_FLAGS, add_setting_flags, settings_from_args
from genops.logs import setup_logging


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="run the tracing proxy")
    add_setting_flags(parser, ("host", "port", *STORAGE_FLAGS, "upstream_base_url", "openai_base_url", "otlp_endpoint",
                               "otlp_port", "exporter", "workers", "log_level", "log_format"))
    # Set by the supervisor for its proxy worker processes; not for users.
    parser.add_argument("--worker-admin-url", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    setup_logging(settings.log_level, settings.log_format)
    from genops.runtime.server import serve
    from genops.runtime.workers import WorkersFailed
    from genops.storage.client import StorageError
    from genops.storage.spool import SpoolLocked

    try:
        if args.worker_admin_url:
            from genops.runtime.workers import serve_worker

            serve_worker(settings, args.worker_admin_url, args.worker_index)
        else:
            serve(settings)
    except (StorageError, SpoolLocked, WorkersFailed) as exc:
        print(f"genops: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"genops: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
