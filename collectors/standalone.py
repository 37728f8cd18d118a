"""``genops collector``: the OTLP/HTTP receiver alone, owning the store (production mode)."""

from __future__ import annotations

import asyncio
import logging
import sys

from aiohttp import web

from genops.collectors.receiver import create_receiver_app, token_notice
from genops.config import Settings
from genops.storage.pipeline import SpanPipeline
from genops.storage.store_boot import StoreBoot, needs_storage, readiness

log = logging.getLogger("genops.collector")


def readyz_route(app: web.Application, store: StoreBoot, pipeline: SpanPipeline) -> None:
    """``GET /readyz``, the contract of ``genops serve``'s (docs/operations.md, "Storage outages"):
    200 while the receiver takes spans, store or not (they wait in the spool); ``?storage=1``
    also needs the store (503 until it answers)."""

    async def readyz(request: web.Request) -> web.Response:
        need_storage = needs_storage(request.query)
        if need_storage:  # a live check, bounded: a hung store answers 503, never hangs the probe
            status = await asyncio.get_running_loop().run_in_executor(None, store.check, pipeline)
        else:  # no I/O
            status = store.status(pipeline)
        code, body = readiness(status, pipeline.spool.pending_spans, need_storage)
        return web.json_response(body, status=code)

    app.router.add_get("/readyz", readyz)


def run_collector(settings: Settings) -> None:
    """Receive OTLP until SIGINT/SIGTERM; every accepted span is stored (or left in the spool) before exit.

    A ClickHouse server that does not answer at start does not stop it: spans are spooled and
    the store is migrated once it answers (see :func:`genops.proxy.server.open_store`).
    """
    from genops.proxy.server import install_uvloop, open_store

    store, pipeline = open_store(settings)
    app = create_receiver_app(settings, pipeline)
    readyz_route(app, store, pipeline)
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
