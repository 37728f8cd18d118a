"""``genops serve``: migrate, open storage, start the pipeline and the proxy, flush on exit."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from genops.api.admin_forward import AdminForwarder
from genops.api.ingest import ingest_route
from genops.api.jobs import attach as attach_anomaly_jobs
from genops.api.metrics import metrics_handler
from genops.api.request_metrics import multiprocess_collector, multiprocess_dir
from genops.api.rollouts import SERVICE_KEY as ROLLOUT_SERVICE_KEY
from genops.api.rollouts import attach_evaluator as attach_rollout_evaluator
from genops.api.rollouts import register as register_rollouts
from genops.collectors.receiver import RECEIVER_STATS_KEY, token_notice
from genops.config import Settings
from genops.runtime.app import ADMIN_KEY, RECENT_KEY, ROLLOUT_POLL_S, ROUTER_KEY, create_app
from genops.runtime.collector import receiver_app
from genops.runtime.drain import FINAL_FLUSH_S, Drain, listen_sockets, serve_app
from genops.runtime.export_only import ExportOnlyStore, export_only_settings, open_export_only
from genops.runtime.native_app import native_server
from genops.runtime.process import install_uvloop, tune_gc
from genops.runtime.routing import attach_rollout_poll, fetch_in_process, hangup_handler
from genops.runtime.telemetry import build_telemetry
from genops.runtime.worker_report import WorkerReports
from genops.runtime.workers import (
    Spawner,
    WorkersFailed,
    attach_workers,
    lower_store_priority,
    new_secret,
    replay_orphaned_spools,
    supervisor_settings,
)
from genops.storage.pipeline import SpanPipeline
from genops.storage.store_boot import StoreBoot, open_store

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


async def start_receiver(settings: Settings, pipeline: SpanPipeline) -> web.AppRunner | None:
    """Start the OTLP/HTTP receiver on its own port in this event loop (None when disabled or the port is taken)."""
    if not settings.otlp_port:
        return None
    runner = web.AppRunner(receiver_app(settings, pipeline), access_log=None)
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
    """Run the proxy (and the embedded OTLP receiver) until SIGINT/SIGTERM, then drain: readiness
    fails, the listener closes, calls in flight finish, pending spans are stored (:mod:`genops.runtime.drain`).

    When the store runs apart (``settings.separate_store``: 2+ cores, or ``--workers`` > 1) this
    process becomes the supervisor of the proxy worker(s) on the public port (see
    :mod:`genops.runtime.workers`); it keeps the store and admin, and SIGHUP replaces the workers one
    by one (after checking the config file's routes). In one process SIGHUP reads the routes again.
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
    store: StoreBoot | ExportOnlyStore  # the same interface (see runtime/export_only.py)
    if settings.exporter == "otlp":  # no store in this process: spans go to a collector (docs/scale-out.md)
        settings = export_only_settings(settings)
        store, pipeline = open_export_only(settings)
    else:
        store, pipeline = open_store(settings)
    sql_client = store.sql_client  # unqualified names mean our tables; raises StorageUnavailable until migrated
    telemetry = build_telemetry(settings, pipeline if settings.export_enabled else None)
    app = create_app(settings, telemetry, sql_client)
    attach_anomaly_jobs(app, settings, sql_client)  # background, off the request path; see collectors/anomaly
    # Canary rollouts: the admin API, the evaluator, and this process's own view of the rollouts in force
    # (its workers ask this process for theirs: runtime/workers.py).
    register_rollouts(app, sql_client, settings)
    attach_rollout_evaluator(app, sql_client, settings)
    rollouts = app[ROLLOUT_SERVICE_KEY]
    attach_rollout_poll(app, app[ROUTER_KEY].rollouts, fetch_in_process(rollouts.executor, rollouts.routing),
                        ROLLOUT_POLL_S)
    receiver_box: dict[str, web.AppRunner | None] = {"runner": None}

    reports = WorkerReports(app[RECENT_KEY], secret, public.workers) if separate else None

    def request_metrics() -> list[Any]:
        if not separate:  # the proxy runs in this process
            return [telemetry.request_metrics.registry]
        workers_metrics = multiprocess_collector(multiprocess_dir(settings.data_path))  # every worker's, added up
        return [workers_metrics] if workers_metrics is not None else []

    async def metrics(request: web.Request) -> web.Response:
        runner = receiver_box["runner"]
        stats = runner.app.get(RECEIVER_STATS_KEY) if runner is not None else None
        workers = reports.pipelines if reports is not None else (lambda: ())
        return await metrics_handler(pipeline, stats, workers, requests=request_metrics)(request)

    # Registered after the provider catch-all; aiohttp resolves the exact /metrics path first.
    app.router.add_get("/metrics", metrics)
    if reports is not None:
        ingest_route(app, pipeline, secret)  # the workers' span batches
        reports.register(app)  # the ids they served (feedback) and their pipelines' state (/metrics)
        app[ADMIN_KEY].readiness_checks.append(reports.not_ready)
    app[ADMIN_KEY].watch_storage(store, pipeline, lambda: sum(int(w.get("spool_spans", 0))
                                                              for w in (reports.pipelines() if reports else ())))
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
                   "data_dir": str(settings.data_path), "migrations_applied": len(store.applied), "loop": loop_name,
                   "otlp_receiver": otlp_url, "spool_replay_spans": pipeline.spool.pending_spans,
                   "storage_ready": store.migrated},
        )
        print(f"GenOps proxy listening on {public_url}  (OpenAI SDKs: OPENAI_BASE_URL={public_url}/v1)",
              file=sys.stderr, flush=True)
        print(f"Traces go to {settings.storage_description()}; query them with: genops sql \"SELECT ...\"",
              file=sys.stderr, flush=True)
        if settings.exporter == "otlp":  # no store here by design: say where the spans go
            print(f"GenOps: spans are exported to the collector at {settings.otlp_endpoint} (GENOPS_EXPORTER=otlp; "
                  f"spooled to {settings.spool_path} while it does not answer)", file=sys.stderr, flush=True)
        elif not store.migrated:
            print(f"GenOps: the store is unavailable ({store.reason}); serving anyway, spans are spooled to "
                  f"{settings.spool_path} until it answers (see /readyz and /metrics)", file=sys.stderr, flush=True)
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
        await asyncio.get_running_loop().run_in_executor(None, telemetry.shutdown, FINAL_FLUSH_S)
        if not settings.export_enabled:
            pipeline.shutdown()
        log.info("genops proxy stopped; spans flushed", extra={
            "exported": pipeline.counters.exported, "left_in_spool": pipeline.spool.pending_spans})

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    # SIGTERM/SIGINT drain (runtime/drain.py): readiness fails, the listener closes, calls in flight
    # finish, then on_cleanup flushes the spans. A supervisor listens on loopback for its workers
    # only: no load balancer to wait for there (the workers wait GENOPS_DRAIN_DELAY_S themselves).
    drain = Drain(0.0 if separate else settings.drain_delay_s, settings.drain_timeout_s)
    pool = None
    if separate:
        orphans = replay_orphaned_spools(settings, public.workers, pipeline.sink)
        pool = attach_workers(app, public, settings, secret, drain, spawner, orphans,
                              on_exit=reports.retire if reports is not None else None)
    drain.on_hangup = hangup_handler(app[ROUTER_KEY].live, drain.on_hangup)
    native, internal = None, []
    if not separate and settings.http_server == "native":
        # The public port on the native server (runtime/http1/); it hands the admin paths (SQL,
        # feedback, rollouts, /readyz, /metrics) to this application on a loopback port, as a
        # worker hands them to its supervisor.
        internal = listen_sockets("127.0.0.1", 0)
        forwarder = AdminForwarder(f"http://127.0.0.1:{internal[0].getsockname()[1]}")

        async def close_forwarder(_: web.Application) -> None:
            await forwarder.close()

        app.on_cleanup.append(close_forwarder)
        native = native_server(settings, drain, lambda _: forwarder)
    serve_app(
        app, drain,
        host=settings.host,
        port=settings.port,
        # A connection must bring a request's complete headers within this time (from its start,
        # or from the previous response when kept alive), else it is closed (GENOPS_CLIENT_HEADER_TIMEOUT_S
        # in docs/configuration.md). A supervisor listens on loopback for its own workers only: aiohttp's
        # default there.
        keepalive_timeout=75.0 if separate else settings.client_header_timeout_s,
        clients=not separate,
        native=native,
        internal=internal,
    )
    if pool is not None and pool.failure:
        raise WorkersFailed(pool.failure)
