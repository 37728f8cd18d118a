"""``genops collector``: the OTLP/HTTP receiver alone, owning the store (production mode)."""

from __future__ import annotations

import asyncio
import logging
import sys

from aiohttp import web

from genops.api.admin import collector_readyz_route
from genops.api.metrics import metrics_handler
from genops.collectors.receiver import RECEIVER_KEY, create_receiver_app, token_notice
from genops.config import Settings
from genops.runtime.process import install_uvloop
from genops.storage.pipeline import SpanPipeline
from genops.storage.store_boot import open_store

log = logging.getLogger("genops.collector")


def receiver_app(settings: Settings, pipeline: SpanPipeline) -> web.Application:
    """The OTLP receiver's app (its own port) with ``/metrics`` behind the receiver's token."""
    app = create_receiver_app(settings, pipeline)
    receiver = app[RECEIVER_KEY]
    app.router.add_get("/metrics", receiver.guarded(
        metrics_handler(pipeline, receiver.stats, extra=receiver.extra_metrics)))
    return app


def run_collector(settings: Settings) -> None:
    """Receive OTLP until SIGINT/SIGTERM; every accepted span is stored (or left in the spool) before exit.

    A ClickHouse server that does not answer at start does not stop it: spans are spooled and
    the store is migrated once it answers (see :func:`genops.runtime.server.open_store`).
    """
    store, pipeline = open_store(settings)
    app = receiver_app(settings, pipeline)
    collector_readyz_route(app, store, pipeline)
    loop_name = install_uvloop()
    url = f"http://{settings.otlp_bind_host}:{settings.otlp_port}"

    async def on_startup(_: web.Application) -> None:
        log.info("genops collector listening", extra={
            "url": url, "storage": settings.storage_description(), "migrations_applied": len(store.applied),
            "loop": loop_name, "spool_replay_spans": pipeline.spool.pending_spans, "storage_ready": store.migrated})
        print(f"GenOps OTLP/HTTP receiver on {url}/v1/traces (metrics: {url}/metrics); "
              f"traces go to {settings.storage_description()}", file=sys.stderr, flush=True)
        if not store.migrated:
            print(f"GenOps: the store is unavailable ({store.reason}); receiving anyway, spans are spooled to "
                  f"{settings.spool_path} until it answers (see /readyz and /metrics)", file=sys.stderr, flush=True)
        notice = token_notice(settings)  # where the token is, never the token
        if notice:
            print(f"GenOps: {notice}", file=sys.stderr, flush=True)

    async def on_cleanup(_: web.Application) -> None:
        store.stop()
        await asyncio.get_running_loop().run_in_executor(None, pipeline.shutdown)
        log.info("genops collector stopped", extra={
            "exported": pipeline.counters.exported, "left_in_spool": pipeline.spool.pending_spans})

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    web.run_app(app, host=settings.otlp_bind_host, port=settings.otlp_port, print=None, access_log=None,
                handle_signals=True, shutdown_timeout=10)
