"""Where the span pipeline's batches go: the :class:`Sink` protocol, its abilities, and :class:`ClickHouseSink`.

The exporter end of the pipeline (:mod:`genops.storage.pipeline`), as the OpenTelemetry SDK's
``SpanExporter`` is the end of its ``BatchSpanProcessor``: one call takes one batch with its
deduplication token. What a sink can do beyond that is declared here, as attributes of the
protocol with their defaults, and every sink states its own (by subclassing :class:`Sink`):
the pipeline reads them as attributes, it never probes a sink for them.

The sinks: :class:`ClickHouseSink` (this module: inserts), :class:`~genops.storage.forward.ForwardingSink`
(a proxy worker hands its batches to the store process) and :class:`~genops.storage.otlp_sink.OtlpSink`
(a proxy without a store exports to a collector).
"""

from __future__ import annotations

import http.client
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from genops.storage import otlp_native, otlp_span_rows, span_batch, span_batch_sql
from genops.storage.client import StorageUnavailable
from genops.storage.rows import insert_json_payload
from genops.storage.spool import Buffer, FileRegion

#: Batch kinds (the spool records each batch's kind, so a replay inserts it the same way):
#: JSONEachRow ``otel_traces`` rows (OTLP/JSON, and OTLP protobuf that ClickHouse cannot decode),
JSON = "json"
#: OTLP SpanRow payloads that ClickHouse decodes itself (:mod:`genops.storage.otlp_span_rows`),
SPAN_ROWS = otlp_span_rows.KIND
#: and the proxy's own spans as compact lines (:mod:`genops.storage.span_batch`).
SPANS = span_batch.KIND

#: The kinds whose consecutive batches one insert may take together (their rows simply follow
#: each other); SpanRow payloads go one batch per insert.
GROUPED_KINDS = frozenset({JSON, SPANS})

#: How long a sink's :meth:`Sink.ping` waits for the store's answer.
PING_TIMEOUT_S = 1.0


class StoreFull(RuntimeError):
    """The store answered but has no room for a batch now; the sink's :meth:`Sink.ping` says when it has.

    The refusal itself is what a probe would have found, so the sender retries at the first probe
    that finds room (see :meth:`~genops.storage.sender.Sender._wait_out_backoff`).
    """


def http_answers(connection: http.client.HTTPConnection, path: str, headers: Mapping[str, str], status: int) -> bool:
    """Whether ``GET path`` on ``connection`` (a fresh one, closed here) answers ``status``; any
    failure of the probe (refused, timed out, not HTTP) means no. The HTTP sinks' ``ping``."""
    try:
        connection.request("GET", path, headers=dict(headers))
        response = connection.getresponse()
        response.read()
        return response.status == status
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()

#: What :meth:`Sink.insert` is given: a batch's bytes; its parts, in order, only to a sink that
#: ``accepts_parts``; the spool's file region of it only to a sink that ``accepts_regions``.
Payload = bytes | Sequence[Buffer] | FileRegion


class Sink(Protocol):
    """Where batches go: one :meth:`insert` takes one batch with its deduplication token.

    A sink declares its abilities by subclassing this protocol (keeping the defaults below, or
    setting its own): the pipeline reads them as plain attributes.
    """

    #: A batch may come as its consecutive parts (a list of buffers, in order), sent as they
    #: are and never joined. Default False: a batch comes as one ``bytes``.
    accepts_parts: bool = False
    #: A spooled batch not held in memory may come as the :class:`~genops.storage.spool.FileRegion`
    #: it occupies (for ``sendfile``), never read into the process. Default False: it is read.
    accepts_regions: bool = False
    #: An acknowledged batch is handed on (to the store process's spool), not inserted: ``/metrics``
    #: counts it as forwarded; the process that inserts it counts it exported. Default False.
    forwards: bool = False
    #: Consecutive batches of one of :data:`GROUPED_KINDS` may come as one group
    #: (:meth:`insert_group`), inserted at once with the group's own token. Default False.
    accepts_groups: bool = False
    #: SpanRow batches that ClickHouse handed back to the Python decoder (``/metrics``). Default 0:
    #: a sink that never inserts SpanRows has none.
    python_fallbacks: int = 0
    #: Groups of the proxy's own spans that ClickHouse handed back to Python's spelling
    #: (:mod:`genops.storage.span_batch_sql`, ``/metrics``). Default 0.
    span_fallbacks: int = 0

    def insert(self, payload: Payload, token: str, kind: str = JSON, spans: int = 0) -> None:
        """Store one batch of ``kind`` (:data:`JSON`, :data:`SPANS`, :data:`SPAN_ROWS`) holding
        ``spans`` spans, deduplicated by ``token``; raise when it is not stored (it is retried).

        ``payload`` is the batch's bytes, or what the abilities above allow (:data:`Payload`)."""
        ...

    def insert_group(self, payloads: Sequence[bytes], token: str, kind: str, spans: int) -> None:
        """Store consecutive batches of ``kind`` (one of :data:`GROUPED_KINDS`) as one insert,
        deduplicated by ``token``; only called on a sink that ``accepts_groups``."""
        raise TypeError(f"{type(self).__name__} does not take batches in groups")

    def ping(self) -> bool:
        """Whether the store would take a batch now: cheap (no batch sent), answers within about a
        second. The sender probes with it while a failed batch waits for its retry. Default: False
        (a sink that cannot tell lets the backoff run its course)."""
        return False


class ClickHouseSink(Sink):
    """Inserts into ``{database}.otel_traces`` (parsed by ClickHouse in C++), deduplicated by token.

    ``client`` may be None until the store is reachable and migrated (:meth:`attach`,
    :mod:`genops.storage.store_boot`): until then every insert fails at once, never trying
    tables that may not exist yet, and :meth:`ping` says no.
    """

    accepts_parts = False
    accepts_regions = False
    forwards = False
    #: An insert's cost in ClickHouse is mostly fixed (each view's pipeline, a part per table:
    #: docs/benchmarks/2026-12-03-per-core-22-store.md), so the store inserts several batches at once.
    accepts_groups = True

    def __init__(self, client: Any, database: str, sql_spelling: bool = True) -> None:
        self.client = client
        self.database = database
        self.python_fallbacks = 0  # SpanRow batches the view handed back to the Python decoder
        # The proxy's compact batches, spelled by ClickHouse (sql_spelling=False: by Python, the reference)
        self.spans = span_batch_sql.SqlSpelling(sql_spelling)

    @property
    def span_fallbacks(self) -> int:  # type: ignore[override]  # counted by the spelling, not set
        return self.spans.fallbacks

    def attach(self, client: Any) -> None:
        """Start inserting through ``client`` (the store answers and its schema is current)."""
        self.client = client

    def ping(self) -> bool:
        client = self.client
        return client is not None and bool(client.ping(PING_TIMEOUT_S))

    def insert(self, payload: bytes, token: str, kind: str = JSON,  # type: ignore[override]  # no parts, no regions: bytes
               spans: int = 0) -> None:
        if kind != SPAN_ROWS:
            self.insert_group([payload], token, kind, spans)  # a group of one: each kind spelled once
            return
        if not otlp_native.insert_span_rows(self.client, self.database, payload, **self._settings(token)):
            self.python_fallbacks += 1

    def insert_group(self, payloads: Sequence[bytes], token: str, kind: str, spans: int) -> None:
        settings = self._settings(token)
        if kind == SPANS:
            self.spans.insert(self.client, self.database, payloads, **settings)
        elif kind == JSON:
            insert_json_payload(self.client, self.database, b"\n".join(p.rstrip(b"\n") for p in payloads), **settings)
        else:
            raise ValueError(f"batches of kind {kind!r} are not inserted as a group")

    def _settings(self, token: str) -> dict[str, Any]:
        if self.client is None:
            raise StorageUnavailable("the store is not reachable or not migrated yet")
        return {
            "insert_deduplication_token": token,
            # dependent materialized views (genops_calls, ...) skip a duplicate block too
            "deduplicate_blocks_in_dependent_materialized_views": 1,
        }
