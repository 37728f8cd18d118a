"""``genops rollout``: canary rollouts of a route's new target (docs/rollouts.md).

- ``genops rollout start ROUTE --target T [--steps 1,5,25,50,100] [--interval 10m] [--min-calls 200]
  [--max-cost-increase 0.25|none]``
- ``genops rollout status [ROUTE]`` — step, calls per arm, each gate's verdict and numbers, last decision
- ``genops rollout promote ROUTE`` / ``genops rollout rollback ROUTE``
- ``genops rollout evaluate`` — one evaluator pass now

Like ``genops sql``, it talks to the running ``genops serve`` through its admin API (the URL in
the data directory's state file, or ``--url``, with the admin token); with no server running it
reads and writes the store itself (a ClickHouse server, or the embedded store nobody holds).
"""

from __future__ import annotations

import argparse
import re
import sys
import urllib.parse
from collections.abc import Callable
from typing import Any

import orjson

from genops.commands.admin_http import AdminCallError, admin_call
from genops.commands.common import STORAGE_FLAGS, add_setting_flags, settings_from_args
from genops.config import ConfigError, Settings

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class RolloutCommandError(Exception):
    """The server or the store refused or failed the request; the message says why."""


def parse_duration(text: str) -> int:
    """``30s``, ``10m``, ``1h``, ``1d`` or plain seconds, as whole seconds."""
    match = _DURATION.match(str(text))
    if not match:
        raise ConfigError(f"--interval: expected a duration such as 30s, 10m or 1h, got {text!r}")
    seconds = round(float(match.group(1)) * _UNITS[match.group(2) or "s"])
    if seconds < 1:
        raise ConfigError(f"--interval: at least 1s, got {text!r}")
    return seconds


def parse_steps(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--steps: expected percentages such as 1,5,25,50,100, got {text!r}") from None


def parse_cost(text: str) -> float | None:
    if text.strip().lower() in ("none", "off", "no"):
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--max-cost-increase: expected a fraction such as 0.25 (+25%) or none, got {text!r}") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("rollout", help="canary rollouts of a route's new target: start, status, promote, "
                                                   "rollback")
    sub = parser.add_subparsers(dest="rollout_command", metavar="ACTION")

    def action(name: str, help_text: str, func: Callable[[argparse.Namespace], int], route: str = "") -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        if route == "required":
            p.add_argument("route", help="the route's name (its [[routes]] name in genops.toml)")
        elif route == "optional":
            p.add_argument("route", nargs="?", default=None, help="one route (default: all)")
        p.add_argument("--url", default=None, help="a running proxy's URL (default: the one in the data directory)")
        add_setting_flags(p, (*STORAGE_FLAGS, "admin_token"))
        p.set_defaults(func=func)
        return p

    p = action("start", "start a canary rollout on a route", run_start, "required")
    p.add_argument("--target", required=True, help="the canary, provider:model (e.g. anthropic:claude-haiku-4-5)")
    p.add_argument("--steps", default="1,5,25,50,100", help="the canary's share at each step, in %% (default 1,5,25,50,100)")
    p.add_argument("--interval", default="10m", help="how long each step lasts at least: 30s, 10m, 1h (default 10m)")
    p.add_argument("--min-calls", type=int, default=200, help="canary and baseline calls needed per step (default 200)")
    p.add_argument("--max-cost-increase", default="0.25",
                   help="tolerated increase of the cost per call, as a fraction (default 0.25 = +25%%), or none")
    p = action("status", "the rollouts: step, calls, each gate, last decision", run_status, "optional")
    p.add_argument("--json", action="store_true", help="print the admin API's JSON")
    action("promote", "send all of the route's traffic to the canary now", run_promote, "required")
    p = action("rollback", "end the rollout: the route's config applies again", run_rollback, "required")
    p.add_argument("--reason", default="", help="one line kept with the decision")
    p = action("evaluate", "one evaluator pass now (roll back, advance or promote what is due)", run_evaluate)
    p.add_argument("--json", action="store_true", help="print the decisions as JSON")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


# -- where the rollouts are ------------------------------------------------------------------

def _server_url(settings: Settings, url: str | None) -> str | None:
    if url:
        return url
    from genops.runtime.server import read_state

    state = read_state(settings)
    return state["url"] if state else None


def _http(url: str, token: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    try:
        return admin_call(url, token, method, path, body, timeout=120)
    except AdminCallError as exc:
        raise RolloutCommandError(str(exc)) from None


def _direct(settings: Settings, work: Callable[[Any], Any]) -> Any:
    """``work(service)`` on the store itself (no server running), migrated first."""
    from genops.api.rollouts import RolloutService
    from genops.collectors.rollouts.control import RolloutError
    from genops.storage.client import StorageError, open_client
    from genops.storage.migrate import migrate

    try:
        client = open_client(settings)  # names are qualified: the database may not exist before migrate
    except StorageError as exc:
        raise RolloutCommandError(str(exc)) from None
    try:
        migrate(client, settings.database, retention_days=settings.retention_days, cluster=settings.clickhouse_cluster)
        service = RolloutService(client, settings)
        return orjson.loads(orjson.dumps(work(service)))  # the same JSON the server answers
    except RolloutError as exc:
        raise RolloutCommandError(str(exc)) from None
    except StorageError as exc:
        raise RolloutCommandError(str(exc)) from None
    finally:
        client.close()


def _call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None,
          direct: Callable[[Any], Any]) -> Any:
    settings = settings_from_args(args)
    url = _server_url(settings, args.url)
    if url:
        return _http(url, settings.resolved_admin_token(), method, path, body)
    return _direct(settings, direct)


def _route_path(route: str, tail: str = "") -> str:
    from genops.api.rollouts import ROLLOUTS_PATH

    return f"{ROLLOUTS_PATH}/{urllib.parse.quote(route, safe='')}{tail}"


def _run(work: Callable[[], int]) -> int:
    try:
        return work()
    except RolloutCommandError as exc:
        print(f"genops: {exc}", file=sys.stderr)
        return 1


# -- actions ---------------------------------------------------------------------------------

def run_start(args: argparse.Namespace) -> int:
    from genops.api.rollouts import ROLLOUTS_PATH

    body = {"route": args.route, "target": args.target, "steps": parse_steps(args.steps),
            "interval_s": parse_duration(args.interval), "min_calls": args.min_calls,
            "max_cost_increase": parse_cost(args.max_cost_increase)}

    def work() -> int:
        answer = _call(args, "POST", ROLLOUTS_PATH, {**body, "actor": "cli"},
                       lambda service: service.start(dict(body), "cli"))
        rollout = answer["rollout"]
        print(f"rollout {rollout['rollout_id']} started on {rollout['route']}: {rollout['target']} gets "
              f"{rollout['percent']}% (steps {','.join(map(str, rollout['steps']))}, at least "
              f"{_duration(rollout['interval_s'])} and {rollout['min_calls']} canary calls per step)")
        print(f"follow it with: genops rollout status {rollout['route']}")
        return 0

    return _run(work)


def run_status(args: argparse.Namespace) -> int:
    from genops.api.rollouts import ROLLOUTS_PATH

    def work() -> int:
        if args.route:
            answer = _call(args, "GET", _route_path(args.route), None, lambda service: service.one(args.route))
            rollouts = [answer["rollout"]]
        else:
            answer = _call(args, "GET", ROLLOUTS_PATH, None, lambda service: service.all())
            rollouts = answer["rollouts"]
        if args.json:
            print(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())
        elif not rollouts:
            print("no rollouts (start one with: genops rollout start ROUTE --target provider:model)")
        else:
            print("\n\n".join(render_status(r) for r in rollouts))
        return 0

    return _run(work)


def run_promote(args: argparse.Namespace) -> int:
    def work() -> int:
        answer = _call(args, "POST", _route_path(args.route, "/promote"), {"actor": "cli"},
                       lambda service: service.promote(args.route, "cli"))
        rollout = answer["rollout"]
        print(f"promoted: route {rollout['route']} sends all its calls to {rollout['target']}; make it permanent by "
              f"naming {rollout['target']} in the route's targets in genops.toml")
        return 0

    return _run(work)


def run_rollback(args: argparse.Namespace) -> int:
    def work() -> int:
        answer = _call(args, "POST", _route_path(args.route, "/rollback"), {"actor": "cli", "reason": args.reason},
                       lambda service: service.rollback(args.route, "cli", args.reason))
        rollout = answer["rollout"]
        print(f"rolled back: route {rollout['route']} follows its config again ({rollout['target']} gets no calls)")
        return 0

    return _run(work)


def run_evaluate(args: argparse.Namespace) -> int:
    from genops.api.rollouts import EVALUATE_PATH

    def work() -> int:
        answer = _call(args, "POST", EVALUATE_PATH, {}, lambda service: {
            "decisions": [d.as_dict() for d in service.evaluate()]})
        if args.json:
            print(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())
            return 0
        if not answer["decisions"]:
            print("no decision: every running rollout waits (see genops rollout status)")
        for decision in answer["decisions"]:
            print(f"{decision['route']}: {decision['action']} to {decision['percent']}% ({decision['reason']})")
        return 0

    return _run(work)


# -- the status table ------------------------------------------------------------------------

def _duration(seconds: float) -> str:
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _when(iso: str | None) -> str:
    return (iso or "").replace("T", " ").replace(".000Z", "Z")


def _value(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    if name in ("error_rate", "safety_findings"):
        return f"{value:.2%}"
    if name == "p95_latency":
        return f"{value:,.0f} ms"
    if name == "cost_per_call":
        return f"${value:.6f}"
    return f"{value:.3f}"


def render_status(rollout: dict[str, Any]) -> str:
    """One rollout as a readable block: where it is, its arms, each gate, the last decision."""
    steps = rollout["steps"]
    where = {"running": f"{rollout['percent']}% to the canary",
             "promoted": "promoted: all calls to the canary until the config names it",
             "rolled_back": "rolled back: the route's config applies, the canary gets nothing"}[rollout["state"]]
    lines = [f"{rollout['route']}: {rollout['state']}, canary {rollout['target']} (rollout {rollout['rollout_id']})",
             f"  step {rollout['step'] + 1} of {len(steps)}: {where} "
             f"(steps {','.join(map(str, steps))}; at least {_duration(rollout['interval_s'])} and "
             f"{rollout['min_calls']} calls per step)",
             f"  started {_when(rollout['started_at'])}, this step since {_when(rollout['step_started_at'])}",
             f"  baseline: {rollout.get('baseline') or '-'}"]
    live = rollout.get("live")
    if live:
        canary, baseline = live["canary"], live["baseline"]
        lines.append(f"  calls: canary {canary['calls']}, baseline {baseline['calls']}")
        rows = [("gate", "verdict", "canary", "baseline", "p", "detail")]
        for gate in live["gates"]:
            p = gate.get("p_value")
            rows.append((gate["name"], gate["verdict"], _value(gate["name"], gate.get("canary")),
                         _value(gate["name"], gate.get("baseline")), "-" if p is None else f"{p:.2g}", gate["detail"]))
        widths = [max(len(str(row[i])) for row in rows) for i in range(5)]
        for row in rows:
            lines.append("  " + "  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row[:5])) + "  " + row[5])
        due = "" if live["due"] else f"; the step's interval ends {_when(live['step_ends_at'])}"
        lines.append(f"  verdict: {live['verdict']}, next: {live['next']}{due}")
    last = rollout.get("last_decision")
    if last:
        lines.append(f"  last decision: {last['action']} by {last['actor']} at {_when(last['timestamp'])}: {last['reason']}")
    return "\n".join(lines)
