"""``genops version``."""

from __future__ import annotations

import argparse

from genops import __version__


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("version", help="print the GenOps version")
    parser.set_defaults(func=lambda args: print(f"genops {__version__}") or 0)
