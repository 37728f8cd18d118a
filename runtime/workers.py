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
replayed by the next start). On SIGTERM the supervisor fails readiness and stops the workers
first (each drains: :mod:`genops.runtime.drain`; then hands its pending spans over, or leaves
them in its spool), then flushes its own pipeline.

On SIGHUP the supervisor replaces the workers one by one (a rolling restart): it starts a new
worker, which binds the port next to the old one (``SO_REUSEPORT``), waits until it listens,
then tells the old one to retire (SIGUSR2: stop accepting, finish its calls, hand its spans
over, exit). A worker's spool and report are keyed by an index; the new worker takes the
lowest index no live worker uses, so old and new never share a spool.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from genops.api.request_metrics import cache_pid_in_values, multiprocess_dir, prepare_multiprocess_dir, worker_env, worker_exited
from genops.config import Settings
from genops.runtime.app import FORWARDER_KEY, create_app
from genops.runtime.drain import FINAL_FLUSH_S, Drain, serve_app
from genops.runtime.native_app import native_server
from genops.runtime.process import install_uvloop, tune_gc
from genops.runtime.routing import fetch_from_supervisor, hangup_handler, load_or_keep_empty
from genops.runtime.telemetry import build_telemetry
from genops.runtime.worker_report import WorkerReporter
from genops.storage.forward import SECRET_ENV, ForwardingSink
from genops.storage.pipeline import SpanPipeline
from genops.storage.spool import Spool, SpoolLocked

log = logging.getLogger("genops.workers")

WATCH_KEY = web.AppKey("genops.watch_supervisor", asyncio.Task)
#: Tells a worker which process is its supervisor (it stops itself when that one is gone).
SUPERVISOR_PID_ENV = "GENOPS_SUPERVISOR_PID"
#: A pipe a worker of a rolling restart writes to once it listens (its supervisor then retires the old one).
READY_FD_ENV = "GENOPS_WORKER_READY_FD"
#: How long a rolling restart waits for a new worker to listen before it gives up (the old one keeps serving).
READY_TIMEOUT_S = 60.0
#: Beyond the drain delay and timeout, how long a stopping worker may take to hand its spans over.
FLUSH_MARGIN_S = FINAL_FLUSH_S + 5.0
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


@dataclasses.dataclass
class OrphanReplay:
    """The spools of a previous start that the supervisor replays itself, in a thread."""

    indexes: set[int]
    thread: threading.Thread

    def busy(self) -> set[int]:
        """Worker indexes whose spool is being replayed (a new worker must not take them yet)."""
        return self.indexes if self.thread.is_alive() else set()


def replay_orphaned_spools(settings: Settings, workers: int, sink: Any) -> OrphanReplay | None:
    """Insert, in the background, the spools of worker indexes this start does not run.

    A worker's spool is replayed by the next worker of the same index; after a restart with
    fewer ``--workers`` the supervisor drains the others itself: in order, each batch with
    the token it was spooled with (so one that did land is not stored twice), retrying while
    the store is unavailable. Emptied spools are removed.
    """

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
    return OrphanReplay({int(p.name[7:]) for p in orphans}, thread)


class Spawner:
    """Starts processes from a thread of its own, created before the store process lowers its priority.

    On Linux the nice value belongs to each thread and a child inherits its forking thread's:
    workers forked here (restarts too) keep the default priority while the store's threads
    (the main thread and every thread it starts: chDB's, the executors) yield to them.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genops-spawner")
        self._executor.submit(lambda: None).result()  # the thread exists now, before any nice()

    def popen(self, cmd: list[str], env: dict[str, str], pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
        return self._executor.submit(subprocess.Popen, cmd, env=env, pass_fds=pass_fds).result()


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


@dataclasses.dataclass
class _Worker:
    """One worker process and the index of its spool and reports."""

    process: subprocess.Popen
    index: int
    started: float = dataclasses.field(default_factory=time.monotonic)
    quick_failures: int = 0
    #: When a retiring worker is killed if it has not exited by then.
    deadline: float = 0.0


class WorkerPool:
    """Starts, watches, replaces (rolling restart) and stops the worker processes."""

    def __init__(self, public: Settings, admin_url: str, secret: str, spawner: Spawner | None = None,
                 orphans: OrphanReplay | None = None, on_exit: Callable[[int], None] | None = None) -> None:
        self.public = public
        self.admin_url = admin_url
        self.secret = secret
        self.spawner = spawner
        self.orphans = orphans
        #: Told the index of a worker that exited for good (replaced): its reports end.
        self.on_exit = on_exit
        #: The workers serving the port, one per slot (``--workers``).
        self.slots: list[_Worker] = []
        self._retiring: list[_Worker] = []  # replaced, finishing their calls
        self._starting: list[_Worker] = []  # started by a rolling restart, not listening yet
        self._watch: asyncio.Task | None = None
        self._restart: asyncio.Task | None = None
        self._stopping = False
        #: How long a stopping worker may take: its drain (delay + calls in flight), then its hand-over.
        self.stop_timeout_s = public.drain_delay_s + public.drain_timeout_s + FLUSH_MARGIN_S
        #: Rolling restarts completed.
        self.restarts = 0
        #: Why the workers could not be kept running (``genops serve`` then exits with an error).
        self.failure: str | None = None
        #: The workers' request metric files (prometheus_client multiprocess mode; the supervisor's /metrics adds them up).
        self.metrics_dir = multiprocess_dir(public.data_path)

    def _spawn(self, index: int, ready_fd: int | None = None) -> _Worker:
        env = dict(os.environ)
        env.update({"GENOPS_HOST": self.public.host, "GENOPS_PORT": str(self.public.port),
                    "GENOPS_WORKERS": str(self.public.workers),
                    "GENOPS_OTLP_PORT": "0", "GENOPS_DATA_DIR": str(self.public.data_path), SECRET_ENV: self.secret,
                    SUPERVISOR_PID_ENV: str(os.getpid()),
                    # Batch payloads are large, short-lived bytes: with glibc's default dynamic mmap
                    # threshold they end up in the heap, which keeps its high-water mark; mmapped,
                    # they go back to the OS when freed (resident memory stays flat).
                    "MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_", "262144")})
        env.update(worker_env(self.metrics_dir))
        env.pop(READY_FD_ENV, None)
        pass_fds: tuple[int, ...] = ()
        if ready_fd is not None:
            env[READY_FD_ENV] = str(ready_fd)
            pass_fds = (ready_fd,)
        cmd = [sys.executable, "-m", "genops", "serve", "--worker-admin-url", self.admin_url,
               "--worker-index", str(index)]
        process = (self.spawner.popen(cmd, env, pass_fds) if self.spawner is not None
                   else subprocess.Popen(cmd, env=env, pass_fds=pass_fds))
        return _Worker(process, index)

    @property
    def processes(self) -> list[subprocess.Popen]:
        """The worker processes serving the port now."""
        return [w.process for w in self.slots]

    @property
    def pids(self) -> list[int]:
        """The workers' process ids (the processes serving the public port)."""
        return [w.process.pid for w in self.slots]

    async def start(self) -> None:
        prepare_multiprocess_dir(self.public.data_path)  # this start's counts only
        self.slots = [self._spawn(i) for i in range(self.public.workers)]
        log.info("workers started", extra={"workers": len(self.slots), "port": self.public.port, "pids": self.pids})
        self._watch = asyncio.get_running_loop().create_task(self._watch_loop())

    async def _watch_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(1.0)
            for slot, worker in enumerate(self.slots):
                code = worker.process.poll()
                if code is None or self._stopping:
                    continue
                # A worker that cannot even start (port taken, bad config) would be restarted forever.
                quick = time.monotonic() - worker.started < QUICK_EXIT_S
                failures = worker.quick_failures + 1 if quick else 0
                if failures >= MAX_QUICK_FAILURES:
                    self.failure = (f"the proxy worker exited with code {code} {MAX_QUICK_FAILURES} times in a row "
                                    "right after starting; its error is above")
                    log.error("worker keeps failing; stopping", extra={"code": code, "worker": worker.index})
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
                log.error("worker exited; restarting", extra={"pid": worker.process.pid, "code": code})
                worker_exited(self.metrics_dir, worker.process.pid)
                self.slots[slot] = self._spawn(worker.index)  # its own spool again: it replays what is left
                self.slots[slot].quick_failures = failures
            self._reap_retired()

    def _reap_retired(self) -> None:
        for worker in list(self._retiring):
            if worker.process.poll() is None and time.monotonic() > worker.deadline:
                log.error("retired worker still running after its drain; killing it",
                          extra={"pid": worker.process.pid, "timeout_s": self.stop_timeout_s})
                worker.process.kill()  # its spool stays on disk: the next worker of its index replays it
            if worker.process.poll() is not None:
                self._retiring.remove(worker)
                worker_exited(self.metrics_dir, worker.process.pid)
                log.info("retired worker exited", extra={"pid": worker.process.pid, "code": worker.process.returncode,
                                                         "worker": worker.index})
                if self.on_exit is not None:
                    self.on_exit(worker.index)

    def rolling_restart(self) -> None:
        """Replace every worker, one at a time, without refusing a call (the supervisor's SIGHUP)."""
        if self._stopping:
            return
        if self._restart is not None and not self._restart.done():
            log.warning("a rolling restart is under way; SIGHUP ignored")
            return
        self._restart = asyncio.get_running_loop().create_task(self._roll())

    async def _roll(self) -> None:
        began = time.monotonic()
        log.info("rolling restart", extra={"workers": len(self.slots), "pids": self.pids})
        for slot in range(len(self.slots)):
            new = await self._start_listening(self._free_index())
            if new is None:
                log.error("rolling restart stopped: a new worker did not start listening; the old ones keep serving",
                          extra={"timeout_s": READY_TIMEOUT_S})
                return
            old, self.slots[slot] = self.slots[slot], new
            old.deadline = time.monotonic() + self.stop_timeout_s
            self._retiring.append(old)
            if old.process.poll() is None:
                old.process.send_signal(signal.SIGUSR2)  # retire: stop accepting, finish, hand spans over
            log.info("worker replaced", extra={"old_pid": old.process.pid, "pid": new.process.pid,
                                               "worker": new.index})
        while self._retiring and not self._stopping:
            await asyncio.sleep(0.2)
            self._reap_retired()
        self.restarts += 1
        log.info("rolling restart done", extra={"pids": self.pids, "seconds": round(time.monotonic() - began, 2)})

    def _free_index(self) -> int:
        """The lowest index no live worker uses and no orphan replay holds."""
        used = {w.index for w in (*self.slots, *self._retiring, *self._starting)}
        used |= self.orphans.busy() if self.orphans is not None else set()
        index = 0
        while index in used:
            index += 1
        return index

    async def _start_listening(self, index: int) -> _Worker | None:
        """Start a worker and wait until it listens (None when it does not within READY_TIMEOUT_S)."""
        read_fd, write_fd = os.pipe()
        try:
            worker = self._spawn(index, ready_fd=write_fd)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)  # the child holds its copy: EOF here once it exits
        self._starting.append(worker)
        try:
            listening = await _wait_readable(read_fd, READY_TIMEOUT_S)
        except asyncio.CancelledError:  # stopping: this one stops with the others
            self._retiring.append(worker)
            raise
        finally:
            os.close(read_fd)
            self._starting.remove(worker)
        if listening:
            return worker
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
        worker.deadline = time.monotonic() + self.stop_timeout_s
        self._retiring.append(worker)
        return None

    async def stop(self) -> None:
        """Stop every worker (SIGTERM: each drains, then hands its pending spans to this process) and wait."""
        if self._stopping:
            return
        self._stopping = True
        for task in (self._watch, self._restart):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        workers = [*self.slots, *self._retiring, *self._starting]
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.stop_timeout_s
        for worker in workers:
            try:
                await loop.run_in_executor(None, worker.process.wait, max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker did not stop in time; killing it",
                          extra={"pid": worker.process.pid, "timeout_s": self.stop_timeout_s})
                worker.process.kill()
            worker_exited(self.metrics_dir, worker.process.pid)
        log.info("workers stopped", extra={"workers": len(workers)})


async def _wait_readable(fd: int, timeout_s: float) -> bool:
    """True once ``fd`` (a pipe's read end) has data; False at EOF or after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bool] = loop.create_future()

    def readable() -> None:
        try:
            data = os.read(fd, 64)
        except BlockingIOError:
            return
        if not answer.done():
            answer.set_result(bool(data))

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)
    try:
        return await asyncio.wait_for(answer, timeout_s)
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)


def worker_pipeline(settings: Settings, admin_url: str, secret: str, spool: Spool) -> SpanPipeline:
    """A worker's span pipeline (not started): its batches go to the supervisor over loopback, with the
    same batching, queue and probe settings as the store's own pipeline."""
    return SpanPipeline(ForwardingSink(admin_url, secret, timeout_s=settings.export_timeout_s), spool,
                        batch_size=settings.export_batch_size, interval_s=settings.export_interval_ms / 1000,
                        queue_size=settings.export_queue_size,
                        probe_interval_s=settings.export_probe_interval_ms / 1000,
                        # the store answers once the batch is in its spool; ours takes what it cannot
                        write_ahead=False)


def serve_worker(settings: Settings, admin_url: str, index: int) -> None:
    """One worker: the proxy on the shared public port; its spans go to the supervisor's store."""

    sys.setswitchinterval(0.001)  # the pipeline threads yield the GIL to the event loop within 1 ms
    pipeline = None
    if settings.export_enabled:
        pipeline = worker_pipeline(settings, admin_url, os.environ.get(SECRET_ENV, ""),
                                   _open_spool(worker_spool_path(settings, index), settings))
        pipeline.start()
    cache_pid_in_values()  # before the request metrics exist
    telemetry = build_telemetry(settings, pipeline)
    # The supervisor answers feedback and /metrics for us: it hears of our calls and pipeline at once.
    reporter = WorkerReporter(admin_url, os.environ.get(SECRET_ENV, ""), index, pipeline)
    telemetry.add_span_processor(reporter)
    routes = load_or_keep_empty()
    app = create_app(settings, telemetry, None, admin_forward_url=admin_url, routes=routes,
                     rollout_fetch=fetch_from_supervisor(admin_url, settings.resolved_admin_token()))
    reporter.attach(app)
    install_uvloop()
    drain = Drain(settings.drain_delay_s, settings.drain_timeout_s)
    drain.retire_on_usr2 = True  # the supervisor's rolling restart
    # A SIGHUP to the process group: the supervisor restarts us, if anyone; meanwhile the routes are read again.
    drain.on_hangup = hangup_handler(routes, None)
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
            drain.begin("supervisor gone", delay_s=0.0)

        app[WATCH_KEY] = asyncio.get_running_loop().create_task(loop())
        tune_gc()

    async def flush(_: web.Application) -> None:
        if orphaned and pipeline is not None:
            # Nobody to hand spans to: spool them and exit at once, freeing the spool for the
            # next start's worker (which replays it).
            await asyncio.get_running_loop().run_in_executor(None, pipeline.shutdown, 1.0)
            return
        await asyncio.get_running_loop().run_in_executor(None, telemetry.shutdown, FINAL_FLUSH_S)

    def listening() -> None:
        log.info("worker listening", extra={"pid": os.getpid(), "worker": index,
                                            "url": f"http://{settings.host}:{settings.port}"})
        _tell_supervisor_listening()

    app.on_startup.append(watch_supervisor)
    app.on_cleanup.append(flush)
    # Every worker binds with SO_REUSEPORT (one worker too): in a rolling restart its successor
    # binds the port next to it. Only processes of the same user can share it (Linux), and a
    # port another program holds is still an error.
    serve_app(app, drain, host=settings.host, port=settings.port, reuse_port=True,
              keepalive_timeout=settings.client_header_timeout_s,  # headers due within it (runtime/server.py)
              on_listening=[listening],
              native=native_server(settings, drain, lambda app: app[FORWARDER_KEY])
              if settings.http_server == "native" else None)


def _tell_supervisor_listening() -> None:
    """Write to the pipe the supervisor gave a worker of a rolling restart (it then retires the old one)."""
    fd = os.environ.pop(READY_FD_ENV, "")
    if not fd.isdigit():
        return
    try:
        os.write(int(fd), b"listening\n")
    except OSError:
        pass  # the supervisor gave up waiting: it stops this worker
    finally:
        with contextlib.suppress(OSError):
            os.close(int(fd))


def _open_spool(path: Any, settings: Settings) -> Any:
    """The worker's spool; waits a little for a previous worker of the same index still flushing."""

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


def attach_workers(app: web.Application, public: Settings, internal: Settings, secret: str, drain: Drain,
                   spawner: Spawner | None = None, orphans: OrphanReplay | None = None,
                   on_exit: Callable[[int], None] | None = None) -> WorkerPool:
    """Make the supervisor's app start the workers after its own startup, stop them first when it
    drains (it still listens for their last spans), and replace them on SIGHUP."""
    pool = WorkerPool(public, f"http://{internal.host}:{internal.port}", secret, spawner, orphans, on_exit)

    async def start(_: web.Application) -> None:
        await pool.start()
        workers = f"{public.workers} worker processes" if public.workers > 1 else "a worker process"
        print(f"GenOps: the proxy runs in {workers} on http://{public.host}:{public.port}; the store and admin "
              f"in this process (http://{internal.host}:{internal.port}); SIGHUP restarts them one by one",
              file=sys.stderr, flush=True)

    async def stop(_: web.Application) -> None:
        await pool.stop()  # when the drain did not (start-up failed): before on_cleanup flushes the pipeline

    drain.before_close.append(pool.stop)
    drain.on_hangup = pool.rolling_restart
    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    return pool
