"""The canary rollouts' admin API (admin token) and their evaluator in the background of ``genops serve``.

- ``GET  /genops/v1/rollouts``                 every route's latest rollout, with live gate results for running ones
- ``GET  /genops/v1/rollouts/routing``         what the proxy workers follow: ``{"routes": {route: {rollout_id,
  target, percent, state}}}`` for running rollouts and promoted ones the config does not name yet
- ``GET  /genops/v1/rollouts/{route}``         one route's rollout, live gates and decision history (404: none)
- ``POST /genops/v1/rollouts``                 start: ``{route, target, steps, interval_s, min_calls,
  max_cost_increase?}`` -> 201; 409 while one runs on the route; 400 unknown route, bad target or steps
- ``POST /genops/v1/rollouts/{route}/promote`` everything to the canary now; ``/rollback`` back to the config
- ``POST /genops/v1/rollouts/evaluate``        one evaluator pass now (the decisions it wrote)

All of it reads and writes ``genops_rollouts`` through the store's client (storage/rollouts.py),
in threads of a small pool of its own, never on the event loop. Evaluator passes, the background
one every ``GENOPS_ROLLOUT_CHECK_INTERVAL_S`` and the ones asked for, never overlap.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from aiohttp import web

from genops.api.admin import check_token
from genops.api.background import lifetime_task
from genops.collectors.anomaly.alerts import post_json
from genops.collectors.rollouts import control
from genops.collectors.rollouts.evaluator import Notify, assess, evaluate_once
from genops.config import ConfigError, Settings
from genops.routes import load_routes
from genops.storage.client import StorageError
from genops.storage.rollouts import Decision, Rollout, current_rollouts, history

log = logging.getLogger("genops.collectors.rollouts")

ROLLOUTS_PATH = "/genops/v1/rollouts"
ROUTING_PATH = ROLLOUTS_PATH + "/routing"
EVALUATE_PATH = ROLLOUTS_PATH + "/evaluate"
#: How old the rollout routing served to the proxies may be: decisions of other proxies on the same
#: store (and of the evaluator elsewhere) reach this one's workers within this and their 2 s poll.
ROUTING_MAX_AGE_S = 5.0
#: Who may be named as the actor of a decision made through the API.
API_ACTORS = ("api", "cli")


class RolloutService:
    """The rollouts of one ``genops serve`` (or of ``genops rollout`` on the store directly): the
    store's client, the settings, and the threads the endpoints run in."""

    def __init__(self, client: Any, settings: Settings, token: str = "") -> None:
        self.client = client
        self.settings = settings
        self.database = settings.database
        self.token = token
        self.host = socket.gethostname()
        # an evaluator pass, a status and the proxies' routing poll at once, none waiting behind another
        self.executor = ThreadPoolExecutor(max_workers=3, thread_name_prefix="genops-rollouts")
        self._evaluating = threading.Lock()
        self._routing: tuple[float, dict[str, Any]] | None = None  # (monotonic time read, payload)

    def notify(self) -> Notify | None:
        """Posts a rollback's alert to ``GENOPS_ALERT_WEBHOOK_URL`` (None when it is not set)."""
        url = self.settings.alert_webhook_url
        return (lambda body: post_json(url, body)) if url else None

    def evaluate(self) -> list[Decision]:
        """One evaluator pass now (waits for a pass in progress rather than running beside it)."""
        with self._evaluating:
            decisions = evaluate_once(self.client, now(), self.notify(), database=self.database,
                                      check_interval_s=self.settings.rollout_check_interval_s, host=self.host)
        self._routing = None  # after the pass: a read during it may predate its decisions
        return decisions

    def describe(self, rollout: Rollout) -> dict[str, Any]:
        """``rollout`` as JSON, with its live gate results when it runs."""
        data = rollout.as_dict()
        data["live"] = None
        if rollout.state == "running":
            data["live"] = assess(self.client, rollout, now(), check_interval_s=self.settings.rollout_check_interval_s,
                                  database=self.database).as_dict()
        return data

    def all(self) -> dict[str, Any]:
        rollouts = current_rollouts(self.client, self.database)
        return {"rollouts": [self.describe(rollouts[name]) for name in sorted(rollouts)]}

    def one(self, route: str) -> dict[str, Any]:
        rollout = current_rollouts(self.client, self.database, route).get(route)
        if rollout is None:
            raise control.NoRollout(f"no rollout on route {route!r}")
        return {"rollout": self.describe(rollout),
                "history": [d.as_dict() for d in history(self.client, route, self.database)]}

    def routing(self) -> dict[str, Any]:
        """What the proxies follow, read from the store at most every :data:`ROUTING_MAX_AGE_S`: every worker
        asks every 2 s, and a query on the embedded store costs tens of ms of its CPU (measured: 7% of the
        store process at 50 clients when each ask was a query). A decision made here clears it at once."""
        cached = self._routing
        if cached is not None and time.monotonic() - cached[0] < ROUTING_MAX_AGE_S:
            return cached[1]
        payload = self._read_routing()
        self._routing = (time.monotonic(), payload)
        return payload

    def _read_routing(self) -> dict[str, Any]:
        try:
            routes: Any = load_routes().routes
        except ConfigError:  # the proxies keep their running routes; so do promoted rollouts
            routes = None
        return {"routes": control.routing_table(current_rollouts(self.client, self.database), routes)}

    def start(self, body: dict[str, Any], actor: str) -> dict[str, Any]:
        request = control.parse_start(body)
        try:
            routes = load_routes().routes
        except ConfigError as exc:
            raise control.RolloutError(f"the config file cannot be read: {exc}") from None
        rollout = control.start(self.client, request, routes, now=now(), actor=actor, host=self.host,
                                database=self.database)
        self._routing = None
        return {"rollout": rollout.as_dict()}

    def promote(self, route: str, actor: str) -> dict[str, Any]:
        rollout = control.promote(self.client, route, now=now(), actor=actor, host=self.host, database=self.database)
        self._routing = None
        return {"rollout": rollout.as_dict()}

    def rollback(self, route: str, actor: str, reason: str) -> dict[str, Any]:
        rollout = control.rollback(self.client, route, now=now(), actor=actor, host=self.host, reason=reason,
                                   database=self.database)
        self._routing = None
        return {"rollout": rollout.as_dict()}


SERVICE_KEY = web.AppKey("genops.rollouts", RolloutService)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


def _error(status: int, message: str, code: str) -> web.Response:
    return _json({"error": {"message": message, "type": "genops_error", "code": code}}, status)


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        raise control.RolloutError("the body is not JSON") from None
    if not isinstance(body, dict):
        raise control.RolloutError("expected a JSON object")
    return body


def _actor(body: dict[str, Any]) -> str:
    actor = body.pop("actor", "api")
    if actor not in API_ACTORS:
        raise control.RolloutError(f"actor: one of {', '.join(API_ACTORS)}")
    return actor


Handler = Callable[[web.Request], Awaitable[web.Response]]


def _endpoint(service: RolloutService, work: Callable[[web.Request, dict[str, Any]], Callable[[], Any]],
              status: int = 200) -> Handler:
    """A handler: admin token, the JSON body, ``work(request, body)`` run in the pool, errors as JSON."""

    async def handler(request: web.Request) -> web.Response:
        denied = check_token(request, service.token)
        if denied is not None:
            return denied
        try:
            body = await _body(request) if request.method == "POST" else {}
            job = work(request, body)
            result = await asyncio.get_running_loop().run_in_executor(service.executor, job)
        except control.RolloutError as exc:
            return _error(exc.status, str(exc), exc.code)
        except StorageError as exc:
            return _error(503, f"the store is not available: {exc}", "storage_unavailable")
        except Exception as exc:  # noqa: BLE001 - a driver error: say so, keep serving
            log.warning("rollout request failed", extra={"path": request.path,
                                                         "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            return _error(500, f"the rollout request failed: {type(exc).__name__}: {str(exc)[:300]}", "rollout_failed")
        return _json(result, status)

    return handler


def _service(app: web.Application, client: Any, settings: Settings) -> RolloutService:
    if SERVICE_KEY not in app:
        app[SERVICE_KEY] = service = RolloutService(client, settings, settings.resolved_admin_token())

        async def close(_: web.Application) -> AsyncIterator[None]:
            yield
            service.executor.shutdown(wait=True, cancel_futures=True)  # a decision in flight finishes its insert

        app.cleanup_ctx.append(close)
    return app[SERVICE_KEY]


def register(app: web.Application, client: Any, settings: Settings) -> None:
    """Add the rollouts' admin endpoints (module doc) to ``app``."""
    service = _service(app, client, settings)
    route = lambda r: r.match_info["route"]  # noqa: E731
    app.router.add_get(ROUTING_PATH, _endpoint(service, lambda r, b: service.routing))
    app.router.add_get(ROLLOUTS_PATH, _endpoint(service, lambda r, b: service.all))
    app.router.add_post(ROLLOUTS_PATH, _endpoint(service, lambda r, b: _start_job(service, b), status=201))
    app.router.add_post(EVALUATE_PATH, _endpoint(
        service, lambda r, b: lambda: {"decisions": [d.as_dict() for d in service.evaluate()]}))
    app.router.add_get(ROLLOUTS_PATH + "/{route}", _endpoint(service, lambda r, b: lambda: service.one(route(r))))
    app.router.add_post(ROLLOUTS_PATH + "/{route}/promote", _endpoint(
        service, lambda r, b: _bound(service.promote, route(r), _actor(b))))
    app.router.add_post(ROLLOUTS_PATH + "/{route}/rollback", _endpoint(
        service, lambda r, b: _bound(service.rollback, route(r), _actor(b), _reason(b))))


def _start_job(service: RolloutService, body: dict[str, Any]) -> Callable[[], Any]:
    actor = _actor(body)
    return lambda: service.start(body, actor)


def _bound(method: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    return lambda: method(*args)


def _reason(body: dict[str, Any]) -> str:
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        raise control.RolloutError("reason: expected a line of text")
    return reason


def attach_evaluator(app: web.Application, client: Any, settings: Settings) -> None:
    """Run an evaluator pass every ``GENOPS_ROLLOUT_CHECK_INTERVAL_S`` in the background of ``app``.

    Several proxies on one store may each run it: their decisions agree (collectors/rollouts/evaluator.py).
    """
    service = _service(app, client, settings)
    interval = settings.rollout_check_interval_s

    async def run() -> None:
        log.info("rollout evaluator running in serve", extra={"interval_s": interval})
        await _evaluate_forever(service, interval)

    app.cleanup_ctx.append(lifetime_task(run))


async def _evaluate_forever(service: RolloutService, interval_s: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval_s)
        try:
            await loop.run_in_executor(service.executor, service.evaluate)
        except StorageError as exc:  # not migrated or not reachable yet: the next pass tries again
            log.debug("rollout evaluator waits for the store", extra={"error": str(exc)[:200]})
        except Exception as exc:  # noqa: BLE001 - the loop must outlive any one pass
            log.warning("rollout evaluator pass failed", extra={"error": f"{type(exc).__name__}: {str(exc)[:300]}"})
