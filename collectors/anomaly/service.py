"""Building the jobs from Settings, and running them in the background of ``genops serve``.

Inside ``serve`` the loop is an asyncio task that hands every pass to its own single
worker thread (ClickHouse work and numpy never run on the event loop), catches and logs
every exception, and is cancelled on shutdown. The proxy never waits for it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator

import orjson
from aiohttp import web

from genops.collectors.anomaly.alerts import Notifier
from genops.collectors.anomaly.detectors import build_detectors
from genops.collectors.anomaly.runner import AnomalyJobs
from genops.config import Settings

log = logging.getLogger("genops.collectors.anomaly")

JOBS_KEY = web.AppKey("genops.anomaly_jobs", AnomalyJobs)
EXECUTOR_KEY = web.AppKey("genops.anomaly_jobs_executor", ThreadPoolExecutor)
JOBS_PATH = "/genops/v1/jobs/once"  # POST (admin token): a pass or a backfill inside serve


def jobs_from_settings(client: Any, settings: Settings) -> AnomalyJobs:
    """The anomaly jobs over ``settings.database``, alerting to ``settings.alert_webhook_url`` if set."""
    notifier = None
    if settings.alert_webhook_url:
        notifier = Notifier(settings.alert_webhook_url, cooldown=dt.timedelta(seconds=settings.alert_cooldown_s),
                            min_severity=settings.alert_min_severity)
    return AnomalyJobs(client, settings.database, lag=dt.timedelta(seconds=settings.jobs_lag_s), notifier=notifier)


def jobs_enabled_in_serve(settings: Settings) -> bool:
    """``jobs_in_serve``: on, off, or auto (on with the embedded store, whose data only serve can reach)."""
    return settings.jobs_in_serve == "on" or (settings.jobs_in_serve == "auto" and settings.embedded)


def attach(app: web.Application, settings: Settings, client: Any) -> None:
    """Run the anomaly jobs in the background of ``app`` when the settings ask for it.

    Also serves ``POST /genops/v1/jobs/once`` (admin token) so ``genops jobs once
    [--backfill FROM TO]`` works while serve holds the embedded store; it shares the loop's
    single worker thread, so by-hand passes and scheduled ones never overlap.
    """
    if not jobs_enabled_in_serve(settings):
        return
    app[JOBS_KEY] = jobs_from_settings(client, settings)
    app[EXECUTOR_KEY] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genops-jobs")
    app.router.add_post(JOBS_PATH, _once_route(settings.resolved_admin_token()))
    app.cleanup_ctx.append(_background(settings.jobs_interval_s))


def _once_route(token: str):
    from genops.proxy.admin import check_token

    async def handler(request: web.Request) -> web.Response:
        denied = check_token(request, token)
        if denied is not None:
            return denied
        try:
            body = orjson.loads(await request.read() or b"{}")
            jobs = dataclasses.replace(request.app[JOBS_KEY], detectors=build_detectors(body.get("detectors") or None))
            backfill = body.get("backfill")
            if backfill:
                start, end = (dt.datetime.fromisoformat(v) for v in backfill)
                if end <= start:
                    raise ValueError("backfill: TO must be after FROM")
                work = lambda: jobs.backfill(start, end)  # noqa: E731
            else:
                notify = not body.get("no_alerts", False)
                work = lambda: jobs.run_once(notify=notify)  # noqa: E731
        except (ValueError, TypeError, AttributeError, orjson.JSONDecodeError) as exc:
            return web.json_response({"error": {"message": str(exc), "code": "invalid_request"}}, status=400)
        report = await asyncio.get_running_loop().run_in_executor(request.app[EXECUTOR_KEY], work)
        return web.Response(body=orjson.dumps(report.as_dict()), content_type="application/json")

    return handler


def _background(interval_s: float):
    async def context(app: web.Application) -> AsyncIterator[None]:
        executor = app[EXECUTOR_KEY]
        task = asyncio.get_running_loop().create_task(_loop(app[JOBS_KEY], executor, interval_s))
        log.info("anomaly jobs running in serve", extra={"interval_s": interval_s})
        try:
            yield
        finally:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            executor.shutdown(wait=True, cancel_futures=True)  # let a pass in flight finish its insert

    return context


async def _loop(jobs: AnomalyJobs, executor: ThreadPoolExecutor, interval_s: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            report = await loop.run_in_executor(executor, jobs.run_once)
            if report.windows or report.alerts.sent or report.alerts.resolved_sent or report.failed_detectors:
                log.info("anomaly pass", extra=report.as_dict())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failing pass is retried next cycle, never fatal
            lines = str(exc).strip().splitlines()
            log.warning("anomaly pass failed; retrying next cycle",
                        extra={"error": (lines[0] if lines else type(exc).__name__)[:300]})
        await asyncio.sleep(interval_s)
