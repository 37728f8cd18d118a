"""A pipeline sink that exports each batch to an OTLP/HTTP collector (``GENOPS_EXPORTER=otlp``).

Scale-out: many ``genops serve`` instances, no store of their own, one ``genops collector``
that owns it. Each proxy keeps its whole durable pipeline (:mod:`genops.storage.pipeline`:
disk spool, batching, in-order replay after a restart, retries with backoff and probing) and
this sink replaces the insert: a batch is POSTed to the collector's ``/v1/traces`` as OTLP
protobuf (:mod:`genops.storage.otlp_encode`), gzipped, and leaves the proxy's spool only
once the collector answered 200. The collector answers 200 once the batch is in its own
spool (:mod:`genops.collectors.receiver`), so a batch is always on some disk.

Exactly once: every request carries an idempotency token (``GenOps-Dedup-Token``): the
batch's own spool token, ``.<n>`` appended when the batch takes several requests (cut always
at the same places). A GenOps collector derives the batch's ClickHouse
``insert_deduplication_token`` from it and the sender's credential, so a request retried
after a lost answer, a collector crash or a proxy restart is stored once.

Trust: the proxy sends ``Authorization: Bearer <GENOPS_OTLP_TRUSTED_TOKEN>``; a collector
that knows that token stores the spans as the proxy's own (``ScopeName = 'genops.proxy'``:
they count as recorded calls, feed ``genops_calls`` and take feedback). Without it they are
stored like any OTLP sender's (``otlp:genops.proxy``). ``OTEL_EXPORTER_OTLP_HEADERS`` /
``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` add headers, as for any OTel SDK (for another OTLP backend).

Answers: 200 = stored (spans a partial success names as rejected are malformed: counted as
dropped, invalid); 400 and 415 = the collector can never take this request: dropped and
counted, logged as errors; 413 = the collector's body limit is smaller: the request is split
in halves (down to single spans); anything else (429, 5xx, 401/403 while a token is being
fixed, connection errors, timeouts) = kept in the spool and retried.
"""

from __future__ import annotations

import http.client
import logging
import os
import ssl
import threading
import zlib
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from genops import __version__
from genops.storage import otlp_encode
from genops.storage.forward import TOKEN_HEADER
from genops.storage.pipeline import SpanPipeline
from genops.storage.sinks import JSON, PING_TIMEOUT_S, Sink, http_answers
from genops.storage.spool import Spool

log = logging.getLogger("genops.storage.otlp_sink")

TRACES_PATH = "/v1/traces"
#: gzip level: 1 compresses proxy spans ~6x at a fraction of level 6's CPU.
GZIP_LEVEL = 1
#: Answers that no retry can change.
_PERMANENT = frozenset((400, 415))


class OtlpExportError(RuntimeError):
    """The collector did not take the batch (the pipeline keeps it and retries)."""


def traces_url(endpoint: str) -> str:
    """The collector's traces URL for ``GENOPS_OTLP_ENDPOINT`` (``/v1/traces`` appended unless given)."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(TRACES_PATH) else endpoint + TRACES_PATH


def otel_headers(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Headers from ``OTEL_EXPORTER_OTLP_HEADERS`` then ``OTEL_EXPORTER_OTLP_TRACES_HEADERS``
    (``key=value`` pairs, comma-separated, URL-encoded), as the OTel SDKs read them."""
    env = os.environ if env is None else env
    headers: dict[str, str] = {}
    for name in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"):
        for pair in env.get(name, "").split(","):
            key, sep, value = pair.partition("=")
            if sep and key.strip():
                headers[unquote(key.strip())] = unquote(value.strip())
    return headers


def gzip_body(body: bytes) -> bytes:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(body) + compressor.flush()


class OtlpSink(Sink):
    """Exports pipeline batches as OTLP/HTTP protobuf requests (see the module doc).

    Used by the pipeline's sender thread, and by the thread that replays the spools of worker
    indexes no longer running: each thread has its own keep-alive connection.
    """

    #: A batch comes whole (it is parsed to be re-encoded).
    accepts_parts = False
    accepts_regions = False
    #: Counted as exported once the collector took it (its own /metrics counts the insert).
    forwards = False

    def __init__(self, endpoint: str, *, token: str = "", timeout_s: float = 10.0,
                 headers: Mapping[str, str] | None = None,
                 max_request_bytes: int = otlp_encode.MAX_REQUEST_BYTES) -> None:
        self.url = traces_url(endpoint)
        parts = urlsplit(self.url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.https else 80)
        self.path = parts.path or TRACES_PATH
        base = self.path[: -len(TRACES_PATH)] if self.path.endswith(TRACES_PATH) else ""
        self.health_path = base + "/healthz"
        self.timeout_s = timeout_s
        self.max_request_bytes = max_request_bytes
        self.headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip",
                        "User-Agent": f"genops-proxy/{__version__}", **(headers or {})}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        #: Counts spans the collector refused for good (the pipeline's counters, set by build_otlp_pipeline).
        self.on_dropped: Callable[[int], None] = lambda spans: None
        self._local = threading.local()
        # Requests of the batch being sent that the collector took (token -> their indexes): a
        # batch retried after its later requests failed does not send the earlier ones again.
        self._acked: tuple[str, set[str]] = ("", set())

    # -- the pipeline's Sink protocol -------------------------------------------------------

    def insert(self, payload: bytes, token: str, kind: str = JSON,  # type: ignore[override]  # no parts, no regions: bytes
               spans: int = 0) -> None:
        """Export one batch; returns once the collector holds every span of it (or refused some for
        good: counted). Raises :class:`OtlpExportError` or ``OSError`` to have it retried."""
        origins, encoded = otlp_encode.batch_spans(bytes(payload), kind)
        chunks = otlp_encode.chunks(encoded, self.max_request_bytes)
        acked = self._acked[1] if self._acked[0] == token else set()
        self._acked = (token, acked)
        for index, chunk in enumerate(chunks):
            self._send_chunk(origins, chunk, token if len(chunks) == 1 else f"{token}.{index}", acked)
        self._acked = ("", set())

    def ping(self) -> bool:
        """Whether the collector answers its ``/healthz`` within :data:`PING_TIMEOUT_S` (no batch sent)."""
        return http_answers(self._new_connection(PING_TIMEOUT_S), self.health_path,
                            {"User-Agent": self.headers["User-Agent"]}, 200)

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    # -- sending ------------------------------------------------------------------------------

    def _send_chunk(self, origins: list[otlp_encode.Origin], chunk: otlp_encode.Chunk, token: str,
                    acked: set[str]) -> None:
        if token in acked:
            return
        body = otlp_encode.request_bytes(origins, chunk)
        status, answer = self._post(gzip_body(body), token)
        if status == 200:
            self._accepted(answer, len(chunk.spans))
        elif status == 413 and len(chunk.spans) > 1:
            # The collector's body limit is below our request size: halves, each with its own token
            # (the same halves every time, so a retry after a restart is deduplicated as well).
            first, second = chunk.halves()
            self._send_chunk(origins, first, f"{token}.a", acked)
            self._send_chunk(origins, second, f"{token}.b", acked)
        elif status in _PERMANENT or status == 413:
            log.error("the collector refused a span batch for good; its spans are dropped", extra={
                "collector": self.url, "status": status, "spans": len(chunk.spans), "answer": _message(answer)})
            self.on_dropped(len(chunk.spans))
        else:
            raise OtlpExportError(f"the collector at {self.url} answered {status}: {_message(answer)}")
        acked.add(token)

    def _accepted(self, answer: bytes, spans: int) -> None:
        try:
            response = ExportTraceServiceResponse.FromString(answer)
        except Exception:  # noqa: BLE001 - a 200 is a 200; a body we cannot read names no rejected spans
            return
        rejected = response.partial_success.rejected_spans
        if rejected:
            log.warning("the collector rejected spans of a batch as malformed", extra={
                "collector": self.url, "rejected": rejected, "spans": spans,
                "error": response.partial_success.error_message[:300]})
            self.on_dropped(int(rejected))

    def _new_connection(self, timeout_s: float) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout_s,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)

    def _post(self, body: bytes, token: str) -> tuple[int, bytes]:
        headers = {**self.headers, TOKEN_HEADER: token}
        for attempt in (1, 2):  # a keep-alive connection the collector closed meanwhile gets one fresh retry
            connection = getattr(self._local, "connection", None)
            if connection is None:
                connection = self._local.connection = self._new_connection(self.timeout_s)
            try:
                connection.request("POST", self.path, body=body, headers=headers)
                response = connection.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException):
                connection.close()
                self._local.connection = None
                if attempt == 2:
                    raise
                continue
            if response.will_close:
                connection.close()
                self._local.connection = None
            return response.status, answer
        raise AssertionError("unreachable")


def _message(answer: bytes) -> str:
    """The error message of an OTLP error body (google.rpc.Status, or JSON), for logs."""
    try:
        from google.rpc.status_pb2 import Status

        message = Status.FromString(answer).message
        if message:
            return message[:300]
    except Exception:  # noqa: BLE001 - not a Status: show the bytes
        pass
    return answer[:300].decode(errors="replace")


def build_otlp_pipeline(settings: Any) -> SpanPipeline:
    """The proxy's pipeline with an :class:`OtlpSink` to ``GENOPS_OTLP_ENDPOINT`` (spool under
    ``GENOPS_DATA_DIR/spool``), started. Nothing here opens a store."""
    settings.private_data_dir()
    sink = OtlpSink(settings.otlp_endpoint, token=settings.resolved_otlp_trusted_token(),
                    timeout_s=settings.export_timeout_s, headers=otel_headers())
    spool = Spool(settings.spool_path, max_bytes=settings.spool_max_bytes, fsync=settings.spool_fsync)
    pipeline = SpanPipeline(sink, spool, batch_size=settings.export_batch_size,
                            interval_s=settings.export_interval_ms / 1000, queue_size=settings.export_queue_size,
                            probe_interval_s=settings.export_probe_interval_ms / 1000)

    def dropped(spans: int) -> None:
        pipeline.counters.dropped_invalid += spans

    sink.on_dropped = dropped
    pipeline.start()
    return pipeline
