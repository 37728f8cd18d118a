"""The ``genops`` command line. Each subcommand lives in ``genops.commands.<name>``.

A command module exposes ``register(subparsers)``, which adds its parser and sets
``func(args) -> int``. Configuration errors print one clear line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from genops import __version__
from genops.config import ConfigError

# One line per command module; a new command is a new module plus a line here.
COMMAND_MODULES = (
    "genops.commands.serve",
    "genops.commands.sql",
    "genops.commands.migrate",
    "genops.commands.version",
    "genops.commands.fake_upstream",
    "genops.commands.jobs",
    "genops.commands.demo_traffic",
    "genops.commands.trace",
    "genops.commands.redteam",
    "genops.commands.collector",
    "genops.commands.dashboards",
    "genops.commands.config",
    "genops.commands.rollout",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genops", description="GenOps: LLM observability and tracing proxy.")
    parser.add_argument("--version", action="version", version=f"genops {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"genops: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
