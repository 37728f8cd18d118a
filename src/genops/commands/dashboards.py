"""``genops dashboards``: push the Grafana dashboards (and their datasource) to a Grafana, or export them.

``push`` is idempotent: it reads each object first and writes only what is missing or
different, so running it twice changes nothing. Failures print one line and exit 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from genops.commands.common import settings_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("dashboards", help="push the Grafana dashboards to a Grafana, or export them")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")

    push = actions.add_parser("push", help="create or update the folder, the ClickHouse datasource and every dashboard")
    push.add_argument("--grafana-url", dest="grafana_url", default=None, metavar="URL",
                      help="Grafana's base URL, e.g. http://localhost:3000 (env GENOPS_GRAFANA_URL)")
    push.add_argument("--token", dest="grafana_token", default=None, metavar="TOKEN",
                      help="a Grafana service-account token: Admin role, or Editor with --no-datasource "
                           "(env GENOPS_GRAFANA_TOKEN)")
    push.add_argument("--folder", default="GenOps", help="Grafana folder of the dashboards (default: GenOps)")
    push.add_argument("--clickhouse-url", dest="clickhouse_url", default=None, metavar="URL",
                      help="the ClickHouse server as Grafana reaches it, http(s)://user:password@host:8123/ "
                           "(default: GENOPS_CLICKHOUSE_URL); the datasource is skipped when there is none")
    push.add_argument("--database", default=None, metavar="NAME", help="database of the GenOps tables (env GENOPS_DATABASE)")
    push.add_argument("--no-datasource", action="store_true", help="push the dashboards only")
    push.add_argument("--force", action="store_true", help="write every object even when it looks unchanged")
    push.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for each Grafana request")
    push.set_defaults(func=run_push)

    export = actions.add_parser("export", help="write the dashboard JSON files to a directory")
    export.add_argument("directory", type=Path)
    export.set_defaults(func=run_export)

    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def run_push(args: argparse.Namespace) -> int:
    from genops.dashboards.push import Pusher, PushError, datasource_model, load_dashboards

    settings = settings_from_args(args)
    if not settings.grafana_url:
        print("genops: --grafana-url is required (or set GENOPS_GRAFANA_URL)", file=sys.stderr)
        return 2
    if not settings.grafana_token:
        print("genops: --token is required (or set GENOPS_GRAFANA_TOKEN): a Grafana service-account token",
              file=sys.stderr)
        return 2
    try:
        datasource = None
        if not args.no_datasource:
            if settings.clickhouse_url and not settings.embedded:
                datasource = datasource_model(settings.clickhouse_url, settings.database)
            else:
                print("genops: no ClickHouse server URL (--clickhouse-url or GENOPS_CLICKHOUSE_URL): "
                      "pushing the dashboards without a datasource", file=sys.stderr)
        pusher = Pusher(settings.grafana_url, settings.grafana_token, timeout=args.timeout)
        report = pusher.push(load_dashboards(), folder=args.folder, datasource=datasource, force=args.force)
    except PushError as exc:
        print(f"genops: {exc}", file=sys.stderr)
        return 1
    for warning in report.warnings:
        print(f"genops: warning: {warning}", file=sys.stderr)
    for verb, names in (("created", report.created), ("updated", report.updated), ("unchanged", report.unchanged)):
        for name in names:
            print(f"{verb:9} {name}")
    print(f"{len(report.created)} created, {len(report.updated)} updated, {len(report.unchanged)} unchanged "
          f"in {pusher.url}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from genops.dashboards.build import write_all

    for path in write_all(args.directory):
        print(path)
    return 0
