"""``genops serve``: migrate, open storage, start the pipeline and the proxy, flush on exit."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from genops.collectors.anomaly.service import attach as attach_anomaly_jobs
from genops.collectors.metrics import metrics_handler
from genops.collectors.receiver import RECEIVER_STATS_KEY, create_receiver_app, token_notice
from genops.config import Settings
from genops.proxy.app import ADMIN_KEY, RECENT_KEY, create_app
from genops.proxy.worker_report import WorkerReports
from genops.proxy.telemetry import build_telemetry
from genops.proxy.workers import (
    Spawner,
    WorkersFailed,
    attach_workers,
    lower_store_priority,
    new_secret,
    replay_orphaned_spools,
    supervisor_settings,
)
from genops.storage.client import open_client
from genops.storage.forward import ingest_route
from genops.storage.migrate import migrate
from genops.storage.pipeline import SpanPipeline, build_pipeline

log = logging.getLogger("genops.serve")

STATE_FILE = "serve.json"


def state_path(settings: Settings) -> Path:
    """Where a running ``genops serve`` says how to reach it (for ``genops sql``)."""
    return settings.data_path / STATE_FILE


def read_state(settings: Settings) -> dict[str, Any] | None:
    """The running server's state, or None when none is running."""
    try:
        state = orjson.loads(state_path(settings).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    pid = state.get("pid")
    try:
        os.kill(int(pid), 0)
    except (OSError, TypeError, ValueError):
        return None
    return state


def tune_gc() -> None:
    """Collect garbage less often, and never re-scan what start-up loaded.

    A proxy process holds ~70k long-lived objects (price data, compiled patterns, the app)
    and makes a few hundred short-lived ones per call. With CPython's defaults a young
    collection runs every few calls and a full one re-traverses everything (~15 ms, a
    latency spike). Freezing the start-up heap moves it out of the collector's sight, and a
    larger young generation makes collections rarer: together about +20% requests/s
    (bench/proxy_bench.py). Cycles are still collected.
    """
    from genops.proxy.pricing import price_call
    from genops.proxy.providers.base import Usage

    price_call("openai", "gpt-4o-mini", Usage(input_tokens=1, output_tokens=1))  # load the price data now, frozen too
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


def install_uvloop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def open_store(settings: Settings) -> tuple[Any, list[Any], SpanPipeline]:
    """Migrate the store and start the span pipeline; returns (client, applied migrations, pipeline).

    The embedded chDB engine lives in this process (see README, "Architecture"). Against a
    ClickHouse server the pipeline gets its own client with the export timeout, so a hung
    server turns into a retry from the spool instead of a stuck thread.
    """
    settings.private_data_dir()
    client = open_client(settings)
    applied = migrate(client, settings.database, retention_days=settings.retention_days)
    export_client = client
    if not settings.embedded:
        export_client = open_client(settings, connect_timeout=min(10.0, settings.export_timeout_s),
                                    send_receive_timeout=settings.export_timeout_s)
    return client, applied, build_pipeline(settings, export_client)


async def start_receiver(settings: Settings, pipeline: SpanPipeline) -> web.AppRunner | None:
    """Start the OTLP/HTTP receiver on its own port in this event loop (None when disabled or the port is taken)."""
    if not settings.otlp_port:
        return None
    runner = web.AppRunner(create_receiver_app(settings, pipeline), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.otlp_bind_host, settings.otlp_port).start()
    except OSError as exc:
        await runner.cleanup()
        log.error("OTLP receiver not started: cannot listen", extra={
            "host": settings.otlp_bind_host, "port": settings.otlp_port, "error": exc.strerror or str(exc)})
        print(f"genops: OTLP receiver not started, cannot listen on {settings.otlp_bind_host}:{settings.otlp_port}: "
              f"{exc.strerror or exc} (set GENOPS_OTLP_PORT, or 0 to disable)", file=sys.stderr, flush=True)
        return None
    return runner


def serve(settings: Settings) -> None:
    """Run the proxy (and the embedded OTLP receiver) until SIGINT/SIGTERM; pending spans are stored first.

    When the store runs apart (``settings.separate_store``: 2+ cores, or ``--workers`` > 1) this
    process becomes the supervisor of the proxy worker(s) on the public port (see
    :mod:`genops.proxy.workers`); it keeps the store and admin.
    """
    # The export threads (spool, inserts, row spelling in the store) share the GIL with the event loop:
    # a 1 ms switch interval (default 5 ms) bounds how long a request waits for it.
    sys.setswitchinterval(0.001)
    public = settings
    separate = settings.separate_store
    secret = new_secret() if separate else ""
    spawner = None
    if separate:
        settings = supervisor_settings(settings)
        spawner = Spawner()  # before anything else starts a thread: the workers keep the default priority
        lower_store_priority(settings.store_nice)
    client, applied, pipeline = open_store(settings)
    sql_client = open_client(settings, database=settings.database)  # unqualified names mean our tables
    telemetry = build_telemetry(settings, pipeline if settings.export_enabled else None)
    app = create_app(settings, telemetry, sql_client)
    attach_anomaly_jobs(app, settings, sql_client)  # background, off the request path; see collectors/anomaly
    receiver_box: dict[str, web.AppRunner | None] = {"runner": None}

    reports = WorkerReports(app[RECENT_KEY], secret, public.workers) if separate else None

    async def metrics(request: web.Request) -> web.Response:
        runner = receiver_box["runner"]
        stats = runner.app.get(RECEIVER_STATS_KEY) if runner is not None else None
        workers = reports.pipelines if reports is not None else (lambda: ())
        return await metrics_handler(pipeline, stats, workers)(request)

    # Registered after the provider catch-all; aiohttp resolves the exact /metrics path first.
    app.router.add_get("/metrics", metrics)
    if reports is not None:
        ingest_route(app, pipeline, secret)  # the workers' span batches
        reports.register(app)  # the ids they served (feedback) and their pipelines' state (/metrics)
        app[ADMIN_KEY].readiness_checks.append(reports.not_ready)
    loop_name = install_uvloop()

    async def on_startup(_: web.Application) -> None:
        tune_gc()
        url = f"http://{settings.host}:{settings.port}"
        public_url = f"http://{public.host}:{public.port}"
        receiver_box["runner"] = await start_receiver(settings, pipeline)
        otlp_url = f"http://{settings.otlp_bind_host}:{settings.otlp_port}" if receiver_box["runner"] else ""
        state = {"pid": os.getpid(), "url": url, "database": settings.database, "otlp_url": otlp_url}
        state_path(settings).write_bytes(orjson.dumps(state))
        log.info(
            "genops proxy listening",
            extra={"url": url, "openai_base_url": f"{url}/v1", "storage": settings.storage_description(),
                   "data_dir": str(settings.data_path), "migrations_applied": len(applied), "loop": loop_name,
                   "otlp_receiver": otlp_url, "spool_replay_spans": pipeline.spool.pending_spans},
        )
        print(f"GenOps proxy listening on {public_url}  (OpenAI SDKs: OPENAI_BASE_URL={public_url}/v1)", file=sys.stderr, flush=True)
        print(f"Traces go to {settings.storage_description()}; query them with: genops sql \"SELECT ...\"",
              file=sys.stderr, flush=True)
        if otlp_url:
            print(f"OTLP/HTTP receiver on {otlp_url}/v1/traces (agents: OTEL_EXPORTER_OTLP_ENDPOINT={otlp_url})",
                  file=sys.stderr, flush=True)
            notice = token_notice(settings)  # where the token is, never the token
            if notice:
                print(f"GenOps: {notice}", file=sys.stderr, flush=True)

    async def on_cleanup(_: web.Application) -> None:
        try:
            state_path(settings).unlink()
        except OSError:
            pass
        if receiver_box["runner"] is not None:
            await receiver_box["runner"].cleanup()
        await asyncio.get_running_loop().run_in_executor(None, telemetry.shutdown)
        if not settings.export_enabled:
            pipeline.shutdown()
        log.info("genops proxy stopped; spans flushed", extra={
            "exported": pipeline.counters.exported, "left_in_spool": pipeline.spool.pending_spans})

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    pool = None
    if separate:
        replay_orphaned_spools(settings, public.workers, pipeline.sink)
        pool = attach_workers(app, public, settings, secret, spawner)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=None,
        handle_signals=True,
        shutdown_timeout=10,
        reuse_port=None,
        # A connection must bring a request's complete headers within this time (from its start,
        # or from the previous response when kept alive), else it is closed (see README). A
        # supervisor listens on loopback for its own workers only: aiohttp's default there.
        keepalive_timeout=75.0 if separate else settings.client_header_timeout_s,
    )
    if pool is not None and pool.failure:
        raise WorkersFailed(pool.failure)
