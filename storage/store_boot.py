"""Bringing the store up without holding the proxy back: connect, migrate, retry in the background.

A proxy on the request path must not be down because its store is: calls do not need
ClickHouse, only their spans do, and those wait in the disk spool. So ``genops serve`` and
``genops collector`` start whether or not a ClickHouse server answers:

- :class:`StoreBoot` makes one attempt (connect, migrate, open the clients) and waits for it
  up to ``GENOPS_STORAGE_BOOT_WAIT_S``; when it fails (or is still running) the process
  serves anyway and the attempts go on in a thread of their own, with backoff, logging
  once per change of state (not once per attempt);
- until the store is migrated the pipeline's sink has no client (:class:`ClickHouseSink`
  raises :class:`StorageUnavailable` without touching the network), so no insert is ever
  tried against tables that may not exist: spans are spooled and the sender waits, probing;
- the routes and jobs that query the store hold a :class:`DeferredClient`, which raises
  :class:`StorageUnavailable` until then (feedback and SQL answer 503);
- once migrated, the clients are attached and the sender's next probe finds the store:
  the spool drains, in order, each batch with its deduplication token.

The embedded chDB engine lives in this process: it cannot be "down", and a failure to open
it (another process holds its directory) is a configuration error, so it is opened
synchronously and a failure still stops the start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from genops.config import Settings
from genops.storage import otlp_native
from genops.storage.client import StorageUnavailable, describe_error, open_client
from genops.storage.migrate import Migration, migrate
from genops.storage.pipeline import SpanPipeline, build_pipeline
from genops.storage.sinks import ClickHouseSink

log = logging.getLogger("genops.storage.boot")

#: Retries of the start-up attempt: the first soon (a store starting next to the proxy is up
#: within seconds), then at most this far apart. An attempt against a store that refuses
#: connections costs ~1 ms, so a short cap costs nothing and bounds the delay once it is back.
BOOT_RETRY_INITIAL_S = 0.25
BOOT_RETRY_MAX_S = 2.0
#: How long ``/readyz?storage=1`` waits for the store's answer (a hung server must not hang the probe).
LIVE_CHECK_TIMEOUT_S = 2.0
BOOT_THREAD = "genops-store-boot"
#: The HTTP driver's logger, which warns on every failed request.
DRIVER_LOGGER = "clickhouse_connect.driver._backend.http_sync"


class _QuietBootAttempts(logging.Filter):
    """Drops the driver's warning for each failed attempt of the boot thread, which logs once per
    change of state instead (an attempt every 2 s during an outage would otherwise log one each)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.threadName != BOOT_THREAD


_QUIET = _QuietBootAttempts()


class DeferredClient:
    """A ClickHouse client that exists once the store is reachable and migrated.

    Until :meth:`attach`, every call raises :class:`StorageUnavailable` at once (no network,
    no wait), so whoever holds it (admin SQL, feedback, the anomaly jobs) answers "storage
    unavailable" instead of failing on missing tables. Offers the client methods GenOps uses.
    """

    def __init__(self, why: Callable[[], str]) -> None:
        self._client: Any = None
        self._why = why

    def attach(self, client: Any) -> None:
        self._client = client

    @property
    def attached(self) -> bool:
        return self._client is not None

    def _target(self) -> Any:
        client = self._client
        if client is None:
            raise StorageUnavailable(f"storage unavailable: {self._why()}")
        return client

    def query(self, *args: Any, **kwargs: Any) -> Any:
        return self._target().query(*args, **kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        return self._target().command(*args, **kwargs)

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        return self._target().insert(*args, **kwargs)

    def raw_insert(self, *args: Any, **kwargs: Any) -> Any:
        return self._target().raw_insert(*args, **kwargs)

    def query_row_block_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self._target().query_row_block_stream(*args, **kwargs)

    def ping(self, timeout: float | None = None) -> bool:
        """Whether the store answers now (False before it was reached and migrated)."""
        client = self._client
        return client is not None and bool(client.ping(timeout))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


@dataclass(frozen=True)
class StorageStatus:
    """What ``/readyz`` and ``/metrics`` say about the store."""

    #: The schema is current and the pipeline inserts (clients attached).
    migrated: bool
    #: Migrated, and the last insert (or live check) did not fail.
    up: bool
    #: Why not up ("" when up).
    reason: str

    @property
    def text(self) -> str:
        """``ok``, or ``unavailable: <reason>`` (the readiness body's ``storage`` field)."""
        return "ok" if self.up else f"unavailable: {self.reason}"


def needs_storage(query: Any) -> bool:
    """Whether a ``/readyz`` request asks for the store too (``?storage=1``)."""
    return str(query.get("storage", "0")).lower() not in {"", "0", "false", "no"}


def readiness(status: StorageStatus, spooled_spans: int, need_storage: bool) -> tuple[int, dict[str, Any]]:
    """The ``/readyz`` answer (HTTP status, JSON body) of a process that can serve.

    200 whether or not the store answers (calls do not need it; their spans wait in the
    spool), unless ``need_storage`` (``?storage=1``): then 503 until it does. The body says
    which part is ready: ``{"status", "proxy", "storage": "ok" | "unavailable: <reason>",
    "storage_migrated", "spooled_spans"}`` (docs/operations.md, "Storage outages").
    """
    body = {"status": "ready", "proxy": "ready", "storage": status.text, "storage_migrated": status.migrated,
            "spooled_spans": spooled_spans}
    if need_storage and not status.up:
        body["status"] = "unavailable"
        return 503, body
    return 200, body


class StoreBoot:
    """The store's clients and schema, brought up now or in the background (see the module doc)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: Admin SQL (cancelling), feedback and the anomaly jobs: unqualified names mean our tables.
        self.sql_client = DeferredClient(self._why)
        #: The pipeline's sink: gets the export client once the schema is current.
        self.sink = ClickHouseSink(None, settings.database)
        #: Migrations applied by this start (known once migrated).
        self.applied: list[Migration] = []
        #: Whether ClickHouse decodes OTLP protobuf here (known once migrated).
        self.native_otlp = False
        self._reason = "not connected yet"
        self._migrated = threading.Event()
        self._settled = threading.Event()  # the first attempt ended, either way
        self._stop = threading.Event()
        self._on_ready: list[Callable[[StoreBoot], None]] = []
        self._thread: threading.Thread | None = None
        self._down_since: float | None = None
        self._clients: list[Any] = []

    # -- state ----------------------------------------------------------------------------

    @property
    def migrated(self) -> bool:
        """The store answered and its schema is current: inserts go ahead."""
        return self._migrated.is_set()

    @property
    def reason(self) -> str:
        """Why the store is not migrated yet ("" once it is)."""
        return "" if self.migrated else self._reason

    def _why(self) -> str:
        return self.reason or "the store is not migrated yet"

    def status(self, pipeline: Any = None) -> StorageStatus:
        """The store's state without any I/O: migrated, and whether ``pipeline``'s last insert failed."""
        if not self.migrated:
            return StorageStatus(False, False, self._why())
        if pipeline is not None and pipeline.failing:
            return StorageStatus(True, False, pipeline.last_error or "the last insert failed")
        return StorageStatus(True, True, "")

    def check(self, pipeline: Any = None, timeout_s: float = LIVE_CHECK_TIMEOUT_S) -> StorageStatus:
        """:meth:`status`, plus a live ping of the store (blocks up to about ``timeout_s``)."""
        status = self.status(pipeline)
        if not status.migrated:
            return status
        try:
            answers = self.sql_client.ping(timeout_s)
        except Exception as exc:  # noqa: BLE001 - any failure means "not answering"
            return StorageStatus(True, False, describe_error(exc))
        return status if answers else StorageStatus(True, False, f"no answer to a ping within {timeout_s:g} s")

    def on_ready(self, callback: Callable[[StoreBoot], None]) -> None:
        """Call ``callback(self)`` once migrated (at once when it already is)."""
        self._on_ready.append(callback)
        if self.migrated:
            callback(self)

    # -- bringing it up ---------------------------------------------------------------------

    def attempt(self) -> None:
        """Connect, migrate and open the clients; attach them. Raises on any failure (nothing attached)."""
        settings = self.settings
        opened: list[Any] = []
        try:
            client = open_client(settings)
            opened.append(client)
            self._reason = "migrating"
            applied = migrate(client, settings.database, retention_days=settings.retention_days,
                              cluster=settings.clickhouse_cluster)
            export_client = client
            if not settings.embedded:
                # The pipeline's own client, with the export timeout: a hung server turns into a
                # retry from the spool instead of a stuck sender.
                export_client = open_client(settings, connect_timeout=min(10.0, settings.export_timeout_s),
                                            send_receive_timeout=settings.export_timeout_s)
                opened.append(export_client)
            sql_client = open_client(settings, database=settings.database)
            opened.append(sql_client)
            native = (settings.otlp_decode == "clickhouse"
                      and otlp_native.native_ingest_available(export_client, settings.database))
        except Exception:
            for client in opened:
                try:
                    client.close()
                except Exception:  # noqa: BLE001 - closing a client that failed
                    pass
            raise
        self.applied = applied
        self.native_otlp = native
        self._clients = opened
        self.sql_client.attach(sql_client)
        self.sink.attach(export_client)
        self._migrated.set()
        for callback in self._on_ready:
            try:
                callback(self)
            except Exception:  # noqa: BLE001 - a hook's failure must not undo the boot
                log.exception("storage ready hook failed")

    def start(self, wait_s: float | None = None) -> None:
        """Bring the store up: synchronously for the embedded engine (raises on failure), else in a
        thread of its own, waiting up to ``wait_s`` (default ``GENOPS_STORAGE_BOOT_WAIT_S``) for the
        first attempt. Returns with the store migrated, or not yet (then it goes on in the background).
        """
        if self.settings.embedded:
            self.attempt()
            return
        logging.getLogger(DRIVER_LOGGER).addFilter(_QUIET)  # (added once: filters are a set)
        self._thread = threading.Thread(target=self._run, name=BOOT_THREAD, daemon=True)
        self._thread.start()
        self._settled.wait(self.settings.storage_boot_wait_s if wait_s is None else wait_s)
        if not self.migrated:
            log.warning("storage unavailable at start: serving without it; spans are spooled until it answers",
                        extra={"storage": self.settings.storage_description(), "reason": self._why()})

    def stop(self) -> None:
        """Stop retrying (shutdown). An attempt in progress ends with the process (daemon thread)."""
        self._stop.set()

    def _run(self) -> None:
        delay = BOOT_RETRY_INITIAL_S
        last_reason = ""
        while not self._stop.is_set():
            try:
                self.attempt()
            except Exception as exc:  # noqa: BLE001 - every failure is retried; logged once per distinct reason
                reason = describe_error(exc)
                self._reason = reason
                if self._down_since is None:
                    self._down_since = time.monotonic()
                if reason != last_reason:
                    log.warning("storage not ready; retrying in the background", extra={
                        "storage": self.settings.storage_description(), "reason": reason})
                    last_reason = reason
                self._settled.set()
                if self._stop.wait(delay):
                    return
                delay = min(BOOT_RETRY_MAX_S, delay * 2)
                continue
            self._settled.set()
            extra: dict[str, Any] = {"storage": self.settings.storage_description(),
                                     "migrations_applied": len(self.applied), "native_otlp": self.native_otlp}
            if self._down_since is not None:
                extra["unavailable_s"] = round(time.monotonic() - self._down_since, 1)
            log.info("storage ready: migrated; spooled spans go out now", extra=extra)
            return


def open_store(settings: Settings) -> tuple[StoreBoot, SpanPipeline]:
    """Bring the store up (migrations) and start the span pipeline; returns (store, pipeline).

    The embedded chDB engine lives in this process (see docs/architecture.md) and is opened
    now (a failure stops the start). A ClickHouse server that does not answer within
    ``GENOPS_STORAGE_BOOT_WAIT_S`` does not stop it: the process serves, the pipeline spools,
    and the store is migrated in the background once it answers (:mod:`genops.storage.store_boot`).
    """
    settings.private_data_dir()
    store = StoreBoot(settings)
    pipeline = build_pipeline(settings, sink=store.sink, start=False)  # the spool first: a locked one stops the start
    pipeline.store = store

    def ready(boot: StoreBoot) -> None:
        pipeline.native_otlp = boot.native_otlp

    store.on_ready(ready)
    store.start()
    pipeline.start()  # after the first attempt: a spool replayed at start does not try an unmigrated store
    return store, pipeline
