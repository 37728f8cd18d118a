"""Building the jobs from Settings, and the loop that runs them in the background of ``genops serve``
(mounted by :mod:`genops.api.jobs`).

Inside ``serve`` the loop is an asyncio task that hands every pass to its own single
worker thread (ClickHouse work and numpy never run on the event loop), catches and logs
every exception, and is cancelled on shutdown. The proxy never waits for it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from genops.collectors.anomaly.alerts import Notifier
from genops.collectors.anomaly.runner import AnomalyJobs
from genops.config import Settings

log = logging.getLogger("genops.collectors.anomaly")

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


async def run_forever(jobs: AnomalyJobs, executor: ThreadPoolExecutor, interval_s: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            report = await loop.run_in_executor(executor, jobs.run_once)
            if report.windows or report.alerts.sent or report.alerts.resolved_sent or report.failed_detectors:
                log.info("anomaly pass", extra=report.as_dict())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failing pass is retried next cycle, never fatal
            lines = str(exc).strip().splitlines()
            log.warning("anomaly pass failed; retrying next cycle",
                        extra={"error": (lines[0] if lines else type(exc).__name__)[:300]})
        await asyncio.sleep(interval_s)
