"""``genops fake-upstream``: fake model APIs for demos and benchmarks (no internet needed)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("fake-upstream", help="serve fake OpenAI/Anthropic/Gemini APIs for demos and tests")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from genops.fake_upstream.server import run as serve

    serve(args.host, args.port)
    return 0
