"""``genops serve`` with ``GENOPS_EXPORTER=otlp``: a proxy without a store, exporting to a collector.

Scale-out (docs/scale-out.md): N proxies, one ``genops collector`` that owns the store. Such a
proxy never opens chDB and never migrates anything: its spans go through its own durable
pipeline (spool, retries) to the collector (:mod:`genops.storage.otlp_sink`).

:class:`ExportOnlyStore` stands where ``genops serve`` otherwise has its
:class:`~genops.storage.store_boot.StoreBoot`, with the same interface, so ``/readyz``,
``/metrics``, admin SQL and feedback behave as follows:

- ``/readyz``: 200 whatever the collector does (the spans wait in the proxy's spool, up to
  ``GENOPS_SPOOL_MAX_BYTES``); ``"storage": "ok"`` while exports to the collector succeed,
  ``"unavailable: <why>"`` while they fail; ``?storage=1`` makes it 503 unless the collector
  answers right now. ``genops_storage_up`` in ``/metrics`` says the same;
- with ``GENOPS_CLICKHOUSE_URL`` (the ClickHouse server the collector writes to): admin SQL
  and feedback use it as on any proxy with that store (opened on first use: a server that is
  down does not hold the proxy back); the anomaly jobs run only with ``GENOPS_JOBS_IN_SERVE=on``
  (their usual place is a CronJob or ``genops jobs`` next to the store);
- without it: admin SQL and feedback answer 503 ``storage_unavailable``, naming where the
  spans went (``genops_storage_migrated`` is 0: no schema is in reach); no anomaly jobs.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from genops.config import Settings
from genops.storage.client import StorageUnavailable, open_client
from genops.storage.otlp_sink import build_otlp_pipeline
from genops.storage.pipeline import SpanPipeline
from genops.storage.store_boot import LIVE_CHECK_TIMEOUT_S, DeferredClient, StorageStatus


def no_store_message(settings: Settings) -> str:
    """Where the spans of a proxy without a store are, for its 503 answers."""
    return (f"no store in this process: GENOPS_EXPORTER=otlp sends the spans to the collector at "
            f"{settings.otlp_endpoint}; query them where it stores them, or set GENOPS_CLICKHOUSE_URL "
            "to that store")


class ExportOnlyClient(DeferredClient):
    """The storage client of a proxy with ``GENOPS_EXPORTER=otlp``: the ClickHouse server of
    ``GENOPS_CLICKHOUSE_URL`` when there is one (opened on first use, again after a failure to
    open), else every call raises :class:`StorageUnavailable` naming where the spans went."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(lambda: no_store_message(settings))
        self.settings = settings
        self.has_server = not settings.embedded
        self._lock = threading.Lock()

    def _target(self) -> Any:
        if not self.has_server:
            raise StorageUnavailable(no_store_message(self.settings))
        with self._lock:
            if self._client is None:
                self._client = open_client(self.settings, database=self.settings.database)
            return self._client

    def ping(self, timeout: float | None = None) -> bool:
        return self.has_server and bool(self._target().ping(timeout))


class ExportOnlyStore:
    """What ``genops serve`` knows of the store when the collector owns it (the interface of
    :class:`~genops.storage.store_boot.StoreBoot`; see the module doc)."""

    def __init__(self, settings: Settings, pipeline: SpanPipeline) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.sql_client = ExportOnlyClient(settings)
        #: Nothing is migrated here: the collector (or ``genops migrate``) owns the schema.
        self.applied: list[Any] = []
        self.native_otlp = False

    @property
    def migrated(self) -> bool:
        """Whether a store with its schema is in reach for SQL and feedback (``GENOPS_CLICKHOUSE_URL``)."""
        return self.sql_client.has_server

    @property
    def reason(self) -> str:
        """Why SQL cannot run here ("" when it can)."""
        return "" if self.migrated else no_store_message(self.settings)

    def status(self, pipeline: Any = None) -> StorageStatus:
        """Where the spans go, without I/O: up while the last export to the collector succeeded."""
        pipeline = pipeline or self.pipeline
        if pipeline.failing:
            return StorageStatus(self.migrated, False, f"exports to the collector at {self.settings.otlp_endpoint} "
                                                       f"fail: {pipeline.last_error or 'the last one failed'}")
        return StorageStatus(self.migrated, True, "")

    def check(self, pipeline: Any = None, timeout_s: float = LIVE_CHECK_TIMEOUT_S) -> StorageStatus:
        """:meth:`status`, plus whether the collector answers right now."""
        status = self.status(pipeline)
        if status.up and not self.pipeline.sink.ping():
            why = f"the collector at {self.settings.otlp_endpoint} does not answer"
            return StorageStatus(self.migrated, False, why)
        return status

    def on_ready(self, callback: Any) -> None:
        """Nothing to wait for: the collector owns the store."""

    def start(self, wait_s: float | None = None) -> None:
        """Nothing to bring up."""

    def stop(self) -> None:
        """Nothing to stop (the pipeline is shut down with the telemetry)."""


def export_only_settings(settings: Settings) -> Settings:
    """``settings`` for a proxy without a store: the anomaly jobs run in it only when asked to
    (``GENOPS_JOBS_IN_SERVE=on``, which needs ``GENOPS_CLICKHOUSE_URL``: checked by load_settings)."""
    if settings.jobs_in_serve == "auto":
        return dataclasses.replace(settings, jobs_in_serve="off")
    return settings


def open_export_only(settings: Settings) -> tuple[ExportOnlyStore, SpanPipeline]:
    """The proxy's pipeline to the collector (started) and what stands for its store; opens no store."""
    pipeline = build_otlp_pipeline(settings)
    store = ExportOnlyStore(settings, pipeline)
    pipeline.store = store  # /metrics reports it (genops_storage_up)
    return store, pipeline
