"""``genops collector``: the OTLP/HTTP receiver alone, owning the store (production mode)."""

from __future__ import annotations

import asyncio
import logging
import sys

from aiohttp import web

from genops.collectors.receiver import create_receiver_app, token_notice
from genops.config import Settings

log = logging.getLogger("genops.collector")


def run_collector(settings: Settings) -> None:
    """Receive OTLP until SIGINT/SIGTERM; every accepted span is stored (or left in the spool) before exit."""
    from genops.proxy.server import install_uvloop, open_store

    client, applied, pipeline = open_store(settings)
    app = create_receiver_app(settings, pipeline)
    loop_name = install_uvloop()
    url = f"http://{settings.otlp_bind_host}:{settings.otlp_port}"

    async def on_startup(_: web.Application) -> None:
        log.info("genops collector listening", extra={
            "url": url, "storage": settings.storage_description(), "migrations_applied": len(applied),
            "loop": loop_name, "spool_replay_spans": pipeline.spool.pending_spans})
        print(f"GenOps OTLP/HTTP receiver on {url}/v1/traces (metrics: {url}/metrics); "
              f"traces go to {settings.storage_description()}", file=sys.stderr, flush=True)
        notice = token_notice(settings)  # where the token is, never the token
        if notice:
            print(f"GenOps: {notice}", file=sys.stderr, flush=True)

    async def on_cleanup(_: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, pipeline.shutdown)
        log.info("genops collector stopped", extra={
            "exported": pipeline.counters.exported, "left_in_spool": pipeline.spool.pending_spans})

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    web.run_app(app, host=settings.otlp_bind_host, port=settings.otlp_port, print=None, access_log=None,
                handle_signals=True, shutdown_timeout=10)
