"""Flags shared by several commands; each maps to a Settings field (``--data-dir`` -> data_dir)."""

from __future__ import annotations

import argparse
from typing import Any

from genops.config import FIELDS, Settings, env_name, load_settings

STORAGE_FLAGS = ("data_dir", "clickhouse_url", "database")


def add_setting_flags(parser: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    """Add ``--flag`` options for Settings fields; unset flags leave env/file values alone."""
    for name in names:
        meta = FIELDS[name].metadata
        parser.add_argument(
            "--" + name.replace("_", "-"), dest=name, default=None, metavar="VALUE",
            help=f"{meta['help']} (env {env_name(name)})",
        )


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings with the CLI flags that were given applied on top."""
    overrides: dict[str, Any] = {name: getattr(args, name) for name in FIELDS if hasattr(args, name)}
    return load_settings(overrides)
