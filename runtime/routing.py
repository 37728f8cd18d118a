"""The gateway router's place in a proxy process: the routes are read at start (a bad file stops
the start with one line), the file is watched for changes, and the rollouts in force are polled
from the process that holds the store (a worker asks its supervisor over loopback; the store's
own process reads ClickHouse), so every worker and every proxy on one ClickHouse follows one
rollout state."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from genops.api.background import lifetime_task
from genops.api.rollouts import ROUTING_PATH
from genops.config import ConfigError
from genops.proxy.routing.live import LiveRoutes
from genops.proxy.routing.rollout_view import RolloutView
from genops.routes import load_routes

log = logging.getLogger("genops.proxy.routing")

#: How often the config file's modification time is checked.
WATCH_S = 2.0

Fetch = Callable[[], Awaitable[Mapping[str, Any]]]


def fetch_from_supervisor(admin_url: str, token: str) -> Fetch:
    """A worker's poll: the supervisor's rollout routing over loopback, with the admin token. A session per
    poll (one every 2 s): nothing to close when the worker stops."""
    url = admin_url.rstrip("/") + ROUTING_PATH

    async def fetch() -> Mapping[str, Any]:
        async with aiohttp.ClientSession() as session, session.get(
                url, headers={"Authorization": f"Bearer {token}"}, timeout=aiohttp.ClientTimeout(total=5)) as response:
            response.raise_for_status()
            return orjson.loads(await response.read())

    return fetch


def fetch_in_process(executor: Executor, routing: Callable[[], Mapping[str, Any]]) -> Fetch:
    """The store's own process: the rollout routing read from ClickHouse, in ``executor``'s threads."""

    async def fetch() -> Mapping[str, Any]:
        return await asyncio.get_running_loop().run_in_executor(executor, routing)

    return fetch


def attach_routes_watch(app: web.Application, live: LiveRoutes) -> None:
    """Read the config file's routes again whenever it changes, for as long as ``app`` runs."""

    async def watch() -> None:
        while True:
            await asyncio.sleep(WATCH_S)
            try:
                live.reload()
            except Exception:  # noqa: BLE001 - a watch that dies would leave routes stale for good
                log.exception("routes watch failed")

    app.cleanup_ctx.append(lifetime_task(watch))


def attach_rollout_poll(app: web.Application, rollouts: RolloutView, fetch: Fetch, poll_s: float) -> None:
    """Keep ``rollouts`` up to date with what ``fetch`` answers, every ``poll_s``, for as long as ``app`` runs."""

    async def poll() -> None:
        failing = False
        while True:
            try:
                rollouts.update(await fetch())
                failing = False
            except Exception as exc:  # noqa: BLE001 - the rollouts in force stay until the store answers again
                if not failing:
                    log.warning("rollout routing unavailable; the last known stays",
                                extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
                failing = True
            await asyncio.sleep(poll_s)

    app.cleanup_ctx.append(lifetime_task(poll))


def hangup_handler(live: LiveRoutes, roll: Callable[[], None] | None) -> Callable[[], None]:
    """SIGHUP: a single process reads its routes again; a supervisor replaces its workers (which read
    the file anew) only when the file is good: a bad one is refused with one line, nothing restarts."""

    def hangup() -> None:
        if roll is None:
            live.reload(force=True)
            return
        try:
            load_routes(live.env)
        except ConfigError as exc:
            log.error("SIGHUP refused: the config file has a problem; the workers keep the routes in force",
                      extra={"problem": str(exc)})
            return
        roll()

    return hangup


def load_or_keep_empty(env: Mapping[str, str] | None = None) -> LiveRoutes:
    """A worker's routes at start. The supervisor checked the file before it started the worker, but the
    file may have changed since: a bad one is logged and the worker serves without routes until the
    watch reads a good one, rather than failing to start again and again."""
    try:
        return LiveRoutes.load(env)
    except ConfigError as exc:
        log.error("routes not loaded: the config file has a problem; serving without routes until it is fixed",
                  extra={"problem": str(exc)})
        live = LiveRoutes(env=env)
        live.last_error = str(exc)
        return live
