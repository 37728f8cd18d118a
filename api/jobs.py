"""The anomaly jobs inside ``genops serve``: their background loop, and ``POST /genops/v1/jobs/once``
(admin token) for a pass or a backfill by hand while serve holds the embedded store."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from aiohttp import web

from genops.api.admin import check_token
from genops.collectors.anomaly.detectors import build_detectors
from genops.collectors.anomaly.runner import AnomalyJobs
from genops.collectors.anomaly.service import jobs_enabled_in_serve, jobs_from_settings, run_forever
from genops.config import Settings

log = logging.getLogger("genops.collectors.anomaly")

JOBS_KEY = web.AppKey("genops.anomaly_jobs", AnomalyJobs)
EXECUTOR_KEY = web.AppKey("genops.anomaly_jobs_executor", ThreadPoolExecutor)
JOBS_PATH = "/genops/v1/jobs/once"  # POST (admin token): a pass or a backfill inside serve


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


def _once_route(token: str) -> Callable[[web.Request], Awaitable[web.Response]]:
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
        task = asyncio.get_running_loop().create_task(run_forever(app[JOBS_KEY], executor, interval_s))
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
