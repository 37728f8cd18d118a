"""Shared fixtures: a fake model-API server, and real ``genops serve`` processes on chDB.

Nothing here mocks ClickHouse: every proxy fixture runs the real server process with
the embedded chDB engine in a temporary data directory, and tests read what it stored
through its read-only SQL endpoint (the path ``genops sql`` takes while serving).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class FakeUpstream:
    """The fake provider server, running in a thread of the test process."""

    url: str

    def requests(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.url + "/_fake/requests") as response:
            return orjson.loads(response.read())

    def clear(self) -> None:
        urllib.request.urlopen(urllib.request.Request(self.url + "/_fake/requests", method="DELETE")).read()


@contextlib.contextmanager
def serve_in_thread(app: web.Application) -> Iterator[str]:
    """Serve ``app`` on a free loopback port from a thread of the test process; yields its base URL."""
    port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner_box: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        runner_box["runner"] = runner
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner_box["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeUpstream]:
    from genops.fake_upstream.server import create_app

    with serve_in_thread(create_app()) as url:
        yield FakeUpstream(url)

@dataclass
class Proxy:
    """A running ``genops serve`` process."""

    url: str
    data_dir: Path
    process: subprocess.Popen
    env: dict[str, str]
    log_path: Path
    token: str = ""
    otlp_url: str = ""  # the embedded OTLP/HTTP receiver (GENOPS_OTLP_PORT, a free port per proxy)

    def sql(self, query: str) -> list[dict[str, Any]]:
        """Rows of a read-only query, through the server's SQL endpoint."""
        request = urllib.request.Request(
            self.url + "/genops/v1/sql",
            data=orjson.dumps({"query": query}),
            headers={"Authorization": f"Bearer {self.token}"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                data = orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"SQL failed: {exc.read().decode()}") from None
        return [dict(zip(data["columns"], row, strict=True)) for row in data["rows"]]

    def wait_rows(self, query: str, count: int = 1, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Poll ``query`` until it returns at least ``count`` rows (spans are exported in batches)."""
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = self.sql(query)
            if len(rows) >= count:
                return rows
            time.sleep(0.1)
        raise AssertionError(f"expected {count} rows within {timeout}s, got {len(rows)}: {query}")

    def span(self, request_id: str, timeout: float = 15.0) -> dict[str, Any]:
        """The stored otel_traces row of the call with ``GenOps-Request-Id`` = ``request_id``."""
        rows = self.wait_rows(
            f"SELECT * FROM otel_traces WHERE SpanAttributes['genops.request.id'] = '{request_id}'", 1, timeout
        )
        assert len(rows) == 1, rows
        return rows[0]

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                return self.process.wait()
        return self.process.returncode


def start_proxy(data_dir: Path, extra_env: dict[str, str] | None = None, *, port: int | None = None,
                args: tuple[str, ...] = (), wait: bool = True) -> Proxy:
    """Start ``genops serve`` as a real process and wait until it is ready."""
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENOPS_")}
    env.update(
        {
            "GENOPS_PORT": str(port),
            "GENOPS_DATA_DIR": str(data_dir),
            "GENOPS_EXPORT_INTERVAL_MS": "100",
            "GENOPS_EXPORT_INSERT_INTERVAL_MS": "200",  # tests read their spans soon after the call
            "GENOPS_LOG_LEVEL": "info",
            "GENOPS_OTLP_PORT": str(free_port()),  # never the shared default 4318
        }
    )
    env.update(extra_env or {})
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "serve.log"
    log_file = open(log_path, "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "genops", "serve", *args], env=env, stdout=log_file, stderr=subprocess.STDOUT,
        cwd=str(data_dir),
    )
    otlp_port = int(env["GENOPS_OTLP_PORT"])
    proxy = Proxy(f"http://127.0.0.1:{port}", data_dir, process, env, log_path,
                  otlp_url=f"http://127.0.0.1:{otlp_port}" if otlp_port else "")
    if wait:
        try:
            wait_ready(proxy)
        except BaseException:
            proxy.stop(signal.SIGKILL)  # never leak a server (its worker exits when it notices)
            raise
    return proxy


def wait_ready(proxy: Proxy, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proxy.process.poll() is not None:
            raise AssertionError(f"genops serve exited with {proxy.process.returncode}:\n{proxy.logs()}")
        try:
            with urllib.request.urlopen(proxy.url + "/readyz", timeout=2) as response:
                if response.status == 200:
                    token_file = proxy.data_dir / "admin_token"
                    proxy.token = proxy.env.get("GENOPS_ADMIN_TOKEN") or token_file.read_text().strip()
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"genops serve not ready within {timeout}s:\n{proxy.logs()}")


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, fake_upstream: FakeUpstream) -> Iterator[Proxy]:
    """One proxy per test module, pointed at the fake upstream for every provider."""
    data_dir = tmp_path_factory.mktemp("genops")
    proc = start_proxy(data_dir, upstream_env(fake_upstream.url))
    yield proc
    proc.stop()


def upstream_env(url: str) -> dict[str, str]:
    """Point every provider's upstream at the fake server."""
    return {
        "GENOPS_OPENAI_BASE_URL": url,
        "GENOPS_ANTHROPIC_BASE_URL": url,
        "GENOPS_GEMINI_BASE_URL": url,
        "GENOPS_VERTEX_BASE_URL": url + "/vertex/{location}",
        "GENOPS_AZURE_BASE_URL": url + "/azure/{resource}",
        # Named OpenAI-compatible upstreams (/u/{name}/v1/...): one known service, one self-hosted.
        "GENOPS_UPSTREAM_GROQ": url,
        "GENOPS_UPSTREAM_LOCAL_VLLM": url + "/v1",
    }


@pytest.fixture()
def request_id() -> str:
    import uuid

    return "test-" + uuid.uuid4().hex


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one in-process chDB data directory of the session (chDB allows one per process).

    Tests that open chDB in the test process share it and isolate themselves by database name.
    """
    return tmp_path_factory.mktemp("chdb-inprocess")


def open_chdb(chdb_dir: Path, database: str = "default") -> Any:
    """A clickhouse-connect client on the session's in-process chDB."""
    import clickhouse_connect

    return clickhouse_connect.get_client(dsn=f"chdb://{chdb_dir}", database=database)
