"""``genops serve --workers N``: several proxy processes sharing one port.

The embedded chDB store can be opened by one process only, so the processes split the work:

- the **supervisor** (the process the user started) owns the store: migrations, the span
  pipeline and spool, the OTLP receiver, the admin/SQL/feedback endpoints and the anomaly
  jobs. It listens only on loopback (an internal port), never on the public one;
- **N workers** share the public port (``SO_REUSEPORT``: the kernel spreads connections),
  proxy the model calls, and export their spans by OTLP/HTTP to the supervisor's receiver,
  which feeds the same pipeline. Admin paths (``/genops/...``, ``/readyz``, ``/metrics``)
  are forwarded to the supervisor, so clients and ``genops sql`` see one server.

A worker that dies is restarted. On SIGTERM the supervisor stops the workers first (each
flushes its spans to the receiver), then flushes its own pipeline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
from typing import Any

import aiohttp
from aiohttp import web

from genops.config import Settings
from genops.proxy.headers import downstream_headers, relayed_request_headers

log = logging.getLogger("genops.workers")

# Paths a worker hands to the supervisor (they need the store).
FORWARDED_PREFIXES = ("/genops/", "/readyz", "/metrics")


def free_loopback_port() -> int:
    """A port nobody listens on right now, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def supervisor_settings(settings: Settings) -> Settings:
    """The supervisor's own settings: loopback on an internal port, an OTLP receiver always on."""
    otlp_port = settings.otlp_port or free_loopback_port()
    return dataclasses.replace(settings, host="127.0.0.1", port=free_loopback_port(), otlp_port=otlp_port)


class WorkerPool:
    """Starts, watches and stops the worker processes."""

    def __init__(self, public: Settings, admin_url: str, otlp_url: str) -> None:
        self.public = public
        self.admin_url = admin_url
        self.otlp_url = otlp_url
        self.processes: list[subprocess.Popen] = []
        self._watch: asyncio.Task | None = None
        self._stopping = False

    def _spawn(self) -> subprocess.Popen:
        env = dict(os.environ)
        env.update({"GENOPS_HOST": self.public.host, "GENOPS_PORT": str(self.public.port), "GENOPS_WORKERS": "1",
                    "GENOPS_OTLP_PORT": "0", "GENOPS_DATA_DIR": str(self.public.data_path)})
        cmd = [sys.executable, "-m", "genops", "serve", "--worker-admin-url", self.admin_url,
               "--worker-otlp-url", self.otlp_url]
        return subprocess.Popen(cmd, env=env)

    async def start(self) -> None:
        self.processes = [self._spawn() for _ in range(self.public.workers)]
        log.info("workers started", extra={"workers": len(self.processes), "port": self.public.port,
                                           "pids": [p.pid for p in self.processes]})
        self._watch = asyncio.get_running_loop().create_task(self._watch_loop())

    async def _watch_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(1.0)
            for index, process in enumerate(self.processes):
                code = process.poll()
                if code is not None and not self._stopping:
                    log.error("worker exited; restarting", extra={"pid": process.pid, "code": code})
                    self.processes[index] = self._spawn()

    async def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM every worker and wait: each flushes its pending spans to the receiver first."""
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
            async with self._session.request(request.method, self.admin_url + request.path_qs,
                                             data=await request.read(), headers=headers,
                                             timeout=aiohttp.ClientTimeout(total=300)) as upstream:
                body = await upstream.read()
                return web.Response(status=upstream.status, body=body, headers=downstream_headers(upstream.headers))
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return web.json_response({"error": {"message": f"the GenOps supervisor is unreachable: {type(exc).__name__}",
                                                "type": "genops_error", "code": "supervisor_unreachable"}}, status=503)

    async def _close(self, _: web.Application) -> None:
        if self._session is not None:
            await self._session.close()


def serve_worker(settings: Settings, admin_url: str, otlp_url: str) -> None:
    """One worker: proxy on the shared public port, spans by OTLP to the supervisor, no store."""
    from genops.proxy.app import create_app
    from genops.proxy.server import install_uvloop
    from genops.proxy.telemetry import build_telemetry

    telemetry = build_telemetry(dataclasses.replace(settings, otlp_endpoint=otlp_url), None)
    app = create_app(settings, telemetry, None, admin_forward_url=admin_url)
    install_uvloop()

    async def flush(_: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, telemetry.shutdown)

    app.on_cleanup.append(flush)
    log.info("worker listening", extra={"pid": os.getpid(), "url": f"http://{settings.host}:{settings.port}"})
    web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None,
                handle_signals=True, shutdown_timeout=10, reuse_port=True)


def attach_workers(app: web.Application, public: Settings, internal: Settings, otlp_url: str) -> Any:
    """Make the supervisor's app start the workers after its own startup and stop them first at shutdown."""
    pool = WorkerPool(public, f"http://{internal.host}:{internal.port}", otlp_url)

    async def start(_: web.Application) -> None:
        await pool.start()
        print(f"GenOps: {public.workers} workers serving http://{public.host}:{public.port} "
              f"(supervisor, store and admin on http://{internal.host}:{internal.port})", file=sys.stderr, flush=True)

    async def stop(_: web.Application) -> None:
        await pool.stop()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)  # before on_cleanup, which flushes the pipeline
    return pool
