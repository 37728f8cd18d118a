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

from genops.collectors.anomaly.service import attach as attach_anomaly_jobs
from genops.config import Settings
from genops.proxy.app import create_app
from genops.proxy.telemetry import build_telemetry
from genops.storage.client import open_client
from genops.storage.migrate import migrate

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


def _install_uvloop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def serve(settings: Settings) -> None:
    """Run the proxy until SIGINT/SIGTERM; every pending span is flushed before exit."""
    settings.data_path.mkdir(parents=True, exist_ok=True)
    client = open_client(settings)
    applied = migrate(client, settings.database, retention_days=settings.retention_days)
    sql_client = open_client(settings, database=settings.database)  # unqualified names mean our tables
    telemetry = build_telemetry(settings, client)
    app = create_app(settings, telemetry, sql_client)
    attach_anomaly_jobs(app, settings, sql_client)  # background, off the request path; see collectors/anomaly
    loop_name = _install_uvloop()

    async def on_startup(_: web.Application) -> None:
        url = f"http://{settings.host}:{settings.port}"
        state = {"pid": os.getpid(), "url": url, "database": settings.database}
        state_path(settings).write_bytes(orjson.dumps(state))
        log.info(
            "genops proxy listening",
            extra={"url": url, "openai_base_url": f"{url}/v1", "storage": settings.storage_description(),
                   "data_dir": str(settings.data_path), "migrations_applied": len(applied), "loop": loop_name},
        )
        print(f"GenOps proxy listening on {url}  (OpenAI SDKs: OPENAI_BASE_URL={url}/v1)", file=sys.stderr, flush=True)
        print(f"Traces go to {settings.storage_description()}; query them with: genops sql \"SELECT ...\"",
              file=sys.stderr, flush=True)

    async def on_cleanup(_: web.Application) -> None:
        try:
            state_path(settings).unlink()
        except OSError:
            pass
        telemetry.shutdown()
        log.info("genops proxy stopped; spans flushed")

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=None,
        handle_signals=True,
        shutdown_timeout=10,
        reuse_port=None,
    )
