"""The proxy in worker processes, the store in the supervisor (``genops serve`` with the store
in its own process, and ``genops serve --workers N``).

The embedded chDB store can be opened by one process only, and its inserts and merges cost
CPU the proxy's event loop would otherwise have, so the processes split the work:

- the **supervisor** (the process the user started) owns the store: migrations, the OTLP
  receiver and its pipeline, the admin/SQL/feedback endpoints and the anomaly jobs. It
  listens only on loopback (an internal port), never on the public one;
- **N workers** share the public port (``SO_REUSEPORT``: the kernel spreads connections)
  and proxy the model calls. Each has its own span pipeline and disk spool
  (``GENOPS_DATA_DIR/spool-workers/worker-<i>``) whose batches go to the supervisor's
  internal ingest endpoint (:mod:`genops.storage.forward`) instead of a local insert.
  Admin paths (``/genops/...``, ``/readyz``, ``/metrics``) are forwarded to the supervisor,
  so clients and ``genops sql`` see one server.

A worker that dies is restarted; a worker whose supervisor died stops itself (its spool is
replayed by the next start). On SIGTERM the supervisor stops the workers first (each hands
its pending spans over, or leaves them in its spool), then flushes its own pipeline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
from aiohttp import web

from genops.config import Settings
from genops.proxy.admin import ClientGone, until_answered
from genops.proxy.headers import downstream_headers, relayed_request_headers
from genops.proxy.worker_report import WorkerReporter
from genops.storage.forward import SECRET_ENV, ForwardingSink

log = logging.getLogger("genops.workers")

WATCH_KEY = web.AppKey("genops.watch_supervisor", asyncio.Task)
#: Tells a worker which process is its supervisor (it stops itself when that one is gone).
SUPERVISOR_PID_ENV = "GENOPS_SUPERVISOR_PID"
#: Spooled batch payloads a worker keeps in memory (beyond that the sender reads them back from disk).
WORKER_SPOOL_CACHE_BYTES = 16 << 20
#: A worker exiting this soon after its start, this many times in a row, stops ``genops serve``.
QUICK_EXIT_S = 10.0
MAX_QUICK_FAILURES = 3
# Paths a worker hands to the supervisor (they need the store).
FORWARDED_PREFIXES = ("/genops/", "/readyz", "/metrics")


class WorkersFailed(RuntimeError):
    """The proxy workers could not be kept running (``genops serve`` exits with this message)."""


def free_loopback_port(avoid: tuple[int, ...] = ()) -> int:
    """A port nobody listens on right now, on 127.0.0.1, and none of ``avoid``."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in avoid:
            return port


def supervisor_settings(settings: Settings) -> Settings:
    """The supervisor's own settings: loopback on an internal port (never the public one nor the
    receiver's: they are not bound yet, so the kernel could hand out the same number)."""
    return dataclasses.replace(settings, host="127.0.0.1",
                               port=free_loopback_port(avoid=(settings.port, settings.otlp_port)))


def new_secret() -> str:
    """The shared secret a supervisor gives its workers for its internal ingest endpoint."""
    return secrets.token_hex(24)


def worker_spool_path(settings: Settings, index: int) -> Any:
    """Worker ``index``'s own spool directory (stable across restarts, so it replays its own)."""
    return settings.data_path / "spool-workers" / f"worker-{index}"


def replay_orphaned_spools(settings: Settings, workers: int, sink: Any) -> threading.Thread | None:
    """Insert, in the background, the spools of worker indexes this start does not run.

    A worker's spool is replayed by the next worker of the same index; after a restart with
    fewer ``--workers`` the supervisor drains the others itself: in order, each batch with
    the token it was spooled with (so one that did land is not stored twice), retrying while
    the store is unavailable. Emptied spools are removed.
    """
    from genops.storage.pipeline import SpanPipeline
    from genops.storage.spool import Spool, SpoolLocked

    root = settings.data_path / "spool-workers"
    orphans = sorted(p for p in root.glob("worker-*") if p.is_dir() and p.name[7:].isdigit() and int(p.name[7:]) >= workers)
    if not orphans:
        return None

    def drain() -> None:
        for path in orphans:
            try:
                spool = Spool(path, max_bytes=settings.spool_max_bytes)
            except SpoolLocked:
                continue  # a worker of the previous start is still flushing it; the next start takes it
            log.info("replaying the spool of a worker index not running now",
                     extra={"spool": str(path), "spans": spool.pending_spans})
            # The pipeline's own sender replays it: in order, by batch kind, with backoff.
            pipeline = SpanPipeline(sink, spool)
            pipeline.start()
            while not pipeline.flush(timeout_s=60):
                pass
            pipeline.shutdown()
            shutil.rmtree(path, ignore_errors=True)

    thread = threading.Thread(target=drain, name="genops-orphan-spools", daemon=True)
    thread.start()
    return thread


class Spawner:
    """Starts processes from a thread of its own, created before the store process lowers its priority.

    On Linux the nice value belongs to each thread and a child inherits its forking thread's:
    workers forked here (restarts too) keep the default priority while the store's threads
    (the main thread and every thread it starts: chDB's, the executors) yield to them.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genops-spawner")
        self._executor.submit(lambda: None).result()  # the thread exists now, before any nice()

    def popen(self, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        return self._executor.submit(subprocess.Popen, cmd, env=env).result()


def lower_store_priority(nice: int) -> None:
    """Make this thread, and the threads it starts from now on, ``nice`` steps nicer (Linux only).

    The store's work (inserts, merges, jobs) is never waited on by a request, so on cores it
    shares with the proxy workers, or with the model server next to them, it should go last.
    """
    if nice > 0 and sys.platform.startswith("linux"):
        try:
            os.nice(nice)
        except OSError:
            pass  # not allowed here: the store keeps the default priority


class WorkerPool:
    """Starts, watches and stops the worker processes."""

    def __init__(self, public: Settings, admin_url: str, secret: str, spawner: Spawner | None = None) -> None:
        self.public = public
        self.admin_url = admin_url
        self.secret = secret
        self.spawner = spawner
        self.processes: list[subprocess.Popen] = []
        self._watch: asyncio.Task | None = None
        self._stopping = False
        #: Why the workers could not be kept running (``genops serve`` then exits with an error).
        self.failure: str | None = None

    def _spawn(self, index: int) -> subprocess.Popen:
        env = dict(os.environ)
        env.update({"GENOPS_HOST": self.public.host, "GENOPS_PORT": str(self.public.port),
                    "GENOPS_WORKERS": str(self.public.workers),
                    "GENOPS_OTLP_PORT": "0", "GENOPS_DATA_DIR": str(self.public.data_path), SECRET_ENV: self.secret,
                    SUPERVISOR_PID_ENV: str(os.getpid()),
                    # Batch payloads are large, short-lived bytes: with glibc's default dynamic mmap
                    # threshold they end up in the heap, which keeps its high-water mark; mmapped,
                    # they go back to the OS when freed (resident memory stays flat).
                    "MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_", "262144")})
        cmd = [sys.executable, "-m", "genops", "serve", "--worker-admin-url", self.admin_url,
               "--worker-index", str(index)]
        return self.spawner.popen(cmd, env) if self.spawner is not None else subprocess.Popen(cmd, env=env)

    @property
    def pids(self) -> list[int]:
        """The workers' process ids (the processes serving the public port)."""
        return [p.pid for p in self.processes]

    async def start(self) -> None:
        self.processes = [self._spawn(i) for i in range(self.public.workers)]
        log.info("workers started", extra={"workers": len(self.processes), "port": self.public.port,
                                           "pids": [p.pid for p in self.processes]})
        self._watch = asyncio.get_running_loop().create_task(self._watch_loop())

    async def _watch_loop(self) -> None:
        started = [time.monotonic()] * len(self.processes)
        quick_failures = [0] * len(self.processes)
        while not self._stopping:
            await asyncio.sleep(1.0)
            for index, process in enumerate(self.processes):
                code = process.poll()
                if code is None or self._stopping:
                    continue
                # A worker that cannot even start (port taken, bad config) would be restarted forever.
                quick_failures[index] = quick_failures[index] + 1 if time.monotonic() - started[index] < QUICK_EXIT_S else 0
                if quick_failures[index] >= MAX_QUICK_FAILURES:
                    self.failure = (f"the proxy worker exited with code {code} {MAX_QUICK_FAILURES} times in a row "
                                    "right after starting; its error is above")
                    log.error("worker keeps failing; stopping", extra={"code": code, "worker": index})
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
                log.error("worker exited; restarting", extra={"pid": process.pid, "code": code})
                self.processes[index] = self._spawn(index)
                started[index] = time.monotonic()

    async def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM every worker and wait: each hands its pending spans to this process first."""
        if self._stopping:
            return
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        for process in self.processes:
            try:
                await loop.run_in_executor(None, process.wait, timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
        log.info("workers stopped", extra={"workers": len(self.processes)})


class AdminForwarder:
    """A worker's admin paths, answered by the supervisor."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    def register(self, app: web.Application) -> None:
        app.router.add_route("*", "/genops/{tail:.*}", self.forward)
        app.router.add_get("/readyz", self.forward)
        app.router.add_get("/metrics", self.forward)
        app.on_cleanup.append(self._close)

    async def forward(self, request: web.Request) -> web.Response:
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        headers = relayed_request_headers(request.headers)
        try:
            # A client that leaves closes the hand-on too, so the supervisor cancels its SQL query.
            return await until_answered(request, self._relay(request, headers))
        except ClientGone:
            return web.Response(status=499)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return web.json_response({"error": {"message": f"the GenOps supervisor is unreachable: {type(exc).__name__}",
                                                "type": "genops_error", "code": "supervisor_unreachable"}}, status=503)

    async def _relay(self, request: web.Request, headers: Any) -> web.Response:
        assert self._session is not None
        async with self._session.request(request.method, self.admin_url + request.path_qs,
                                         data=await request.read(), headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=300)) as upstream:
            body = await upstream.read()
            return web.Response(status=upstream.status, body=body, headers=downstream_headers(upstream.headers))

    async def _close(self, _: web.Application) -> None:
        if self._session is not None:
            await self._session.close()


def serve_worker(settings: Settings, admin_url: str, index: int) -> None:
    """One worker: the proxy on the shared public port; its spans go to the supervisor's store."""
    from genops.proxy.app import create_app
    from genops.proxy.server import install_uvloop, tune_gc
    from genops.proxy.telemetry import build_telemetry
    from genops.storage.pipeline import SpanPipeline

    sys.setswitchinterval(0.001)  # the pipeline threads yield the GIL to the event loop within 1 ms
    pipeline = None
    if settings.export_enabled:
        spool = _open_spool(worker_spool_path(settings, index), settings)
        pipeline = SpanPipeline(ForwardingSink(admin_url, os.environ.get(SECRET_ENV, ""),
                                               timeout_s=settings.export_timeout_s),
                                spool, batch_size=settings.export_batch_size,
                                interval_s=settings.export_interval_ms / 1000, queue_size=settings.export_queue_size,
                                write_ahead=False)  # the store answers once the batch is in its spool; ours takes what it cannot
        pipeline.start()
    telemetry = build_telemetry(settings, pipeline)
    # The supervisor answers feedback and /metrics for us: it hears of our calls and pipeline at once.
    reporter = WorkerReporter(admin_url, os.environ.get(SECRET_ENV, ""), index, pipeline)
    telemetry.add_span_processor(reporter)
    app = create_app(settings, telemetry, None, admin_forward_url=admin_url)
    reporter.attach(app)
    install_uvloop()
    # The supervisor's pid as it told us: had it died before we got here, getppid() would
    # already be someone else's and we would never notice.
    supervisor = int(os.environ.get(SUPERVISOR_PID_ENV) or os.getppid())
    orphaned: list[bool] = []

    async def watch_supervisor(_: web.Application) -> None:
        async def loop() -> None:
            while os.getppid() == supervisor:
                await asyncio.sleep(1.0)
            orphaned.append(True)
            log.error("supervisor gone; worker stopping, pending spans stay in its spool", extra={"pid": os.getpid()})
            os.kill(os.getpid(), signal.SIGTERM)

        app[WATCH_KEY] = asyncio.get_running_loop().create_task(loop())
        tune_gc()

    async def flush(_: web.Application) -> None:
        if orphaned and pipeline is not None:
            # Nobody to hand spans to: spool them and exit at once, freeing the spool for the
            # next start's worker (which replays it).
            await asyncio.get_running_loop().run_in_executor(None, pipeline.shutdown, 1.0)
            return
        await asyncio.get_running_loop().run_in_executor(None, telemetry.shutdown)

    app.on_startup.append(watch_supervisor)
    app.on_cleanup.append(flush)
    log.info("worker listening", extra={"pid": os.getpid(), "worker": index,
                                        "url": f"http://{settings.host}:{settings.port}"})
    web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None,
                # Share the port only among our own workers: one worker binds it alone, so a port
                # already in use is an error, not a silent split with another server.
                handle_signals=True, shutdown_timeout=10, reuse_port=settings.workers > 1,
                keepalive_timeout=settings.client_header_timeout_s)  # headers due within it (proxy/server.py)


def _open_spool(path: Any, settings: Settings) -> Any:
    """The worker's spool; waits a little for a previous worker of the same index still flushing."""
    from genops.storage.spool import Spool, SpoolLocked

    deadline = time.monotonic() + 30
    while True:
        try:
            # A small payload cache: a worker's batches normally leave within one interval, and
            # one read back from the page cache is cheap (the proxy's memory stays small).
            return Spool(path, max_bytes=settings.spool_max_bytes, fsync=settings.spool_fsync,
                         cache_bytes=WORKER_SPOOL_CACHE_BYTES)
        except SpoolLocked:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _stop_workers_first(pool: WorkerPool) -> None:
    """On SIGTERM/SIGINT, stop the workers while this process still listens, then exit.

    aiohttp's own handler stops listening first and runs ``on_shutdown`` after, when the
    workers could no longer hand over their last spans; this replaces it.
    """
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task] = []

    def raise_graceful_exit() -> None:
        raise web.GracefulExit()

    def on_signal() -> None:
        if stopping:
            return
        async def stop_then_exit() -> None:
            try:
                await pool.stop()
            finally:
                loop.call_soon(raise_graceful_exit)

        stopping.append(loop.create_task(stop_then_exit()))

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)


def attach_workers(app: web.Application, public: Settings, internal: Settings, secret: str,
                   spawner: Spawner | None = None) -> WorkerPool:
    """Make the supervisor's app start the workers after its own startup and stop them first at shutdown."""
    pool = WorkerPool(public, f"http://{internal.host}:{internal.port}", secret, spawner)

    async def start(_: web.Application) -> None:
        await pool.start()
        _stop_workers_first(pool)
        workers = f"{public.workers} worker processes" if public.workers > 1 else "a worker process"
        print(f"GenOps: the proxy runs in {workers} on http://{public.host}:{public.port}; the store and admin "
              f"in this process (http://{internal.host}:{internal.port})", file=sys.stderr, flush=True)

    async def stop(_: web.Application) -> None:
        await pool.stop()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)  # before on_cleanup, which flushes the pipeline
    return pool
