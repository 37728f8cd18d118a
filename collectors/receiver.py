"""The OTLP/HTTP trace receiver: ``POST /v1/traces`` (protobuf or JSON, gzip or not).

Response semantics follow the OTLP/HTTP specification:
- 200 with an ``ExportTraceServiceResponse`` (``partial_success`` names spans rejected
  for malformed ids), encoded like the request;
- 400 for a payload that cannot be decoded, with a ``google.rpc.Status`` saying why
  (nothing of that request is stored);
- 413 when the body (or its gunzipped size) exceeds ``GENOPS_OTLP_MAX_BODY_BYTES``;
- 415 for a content type other than ``application/x-protobuf`` / ``application/json``
  or an unsupported ``Content-Encoding``;
- 503 with ``Retry-After`` when the export queue is full (the client retries later).
"""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web
from google.rpc.status_pb2 import Status

from genops.collectors.metrics import ReceiverStats, metrics_handler
from genops.collectors.otlp import (
    OtlpError,
    decode_json,
    decode_protobuf,
    decode_protobuf_for_clickhouse,
    response_body,
)
from genops.config import Settings
from genops.storage.pipeline import SpanPipeline

TRACES_PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
RETRY_AFTER_S = 1
# google.rpc.Code numbers for the Status body.
_RPC_CODES = {400: 3, 413: 8, 415: 3, 503: 14}

RECEIVER_STATS_KEY = web.AppKey("genops.receiver_stats", ReceiverStats)


class OtlpReceiver:
    """Decodes OTLP requests and hands their rows to the span pipeline."""

    def __init__(self, pipeline: SpanPipeline, max_body_bytes: int) -> None:
        self.pipeline = pipeline
        self.max_body_bytes = max_body_bytes
        self.stats = ReceiverStats()

    def register(self, app: web.Application) -> None:
        app.router.add_post(TRACES_PATH, self.traces)
        app[RECEIVER_STATS_KEY] = self.stats

    def _error(self, status: int, message: str, as_json: bool, encoding: str,
               headers: dict[str, str] | None = None) -> web.Response:
        self.stats.requests[(encoding, status)] += 1
        code = _RPC_CODES.get(status, 2)
        if as_json:
            body = orjson.dumps({"code": code, "message": message})
            content_type = JSON
        else:
            body = Status(code=code, message=message).SerializeToString()
            content_type = PROTOBUF
        return web.Response(status=status, body=body, headers={"Content-Type": content_type, **(headers or {})})

    async def traces(self, request: web.Request) -> web.Response:
        content_type = request.content_type.lower()
        if content_type not in (PROTOBUF, JSON):
            return self._error(
                415, f"unsupported Content-Type {request.headers.get('Content-Type', '(none)')!r}: "
                     f"send {PROTOBUF} or {JSON}", True, "unknown")
        as_json = content_type == JSON
        encoding = "json" if as_json else "protobuf"
        content_encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if content_encoding not in ("identity", "gzip", ""):
            return self._error(415, f"unsupported Content-Encoding {content_encoding!r}: send gzip or none",
                               as_json, encoding)
        too_large = (f"the request body exceeds the receiver's limit of {self.max_body_bytes} bytes "
                     "(GENOPS_OTLP_MAX_BODY_BYTES); send smaller batches")
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            return self._error(413, too_large, as_json, encoding, {"Connection": "close"})
        if not self.pipeline.has_room(1):
            return self._shed(as_json, encoding)
        try:
            body = await request.read()  # aiohttp gunzips; its size cap applies after decompression
        except web.HTTPRequestEntityTooLarge:
            return self._error(413, too_large, as_json, encoding, {"Connection": "close"})
        except Exception as exc:  # noqa: BLE001 - a body aiohttp cannot decode (bad gzip)
            return self._error(400, f"malformed OTLP trace export request: cannot read the {content_encoding} body "
                                    f"({exc})", as_json, encoding, {"Connection": "close"})
        if len(body) > self.max_body_bytes:
            return self._error(413, too_large, as_json, encoding, {"Connection": "close"})
        if as_json:
            decode = decode_json
        elif self.pipeline.native_otlp:  # ClickHouse decodes the spans; Python only validates and frames
            decode = decode_protobuf_for_clickhouse
        else:
            decode = decode_protobuf
        loop = asyncio.get_running_loop()
        try:
            decoded = await loop.run_in_executor(None, decode, body)
        except OtlpError as exc:
            return self._error(400, f"malformed OTLP trace export request: {exc}", as_json, encoding)
        if decoded.spans:
            if not self.pipeline.submit_payload(decoded.payload, decoded.spans, "otlp"):
                return self._shed(as_json, encoding)
        if decoded.rows and not self.pipeline.has_room(len(decoded.rows)):
            return self._shed(as_json, encoding)
        if decoded.rows:
            accepted = self.pipeline.submit(decoded.rows, "otlp")
            if accepted < len(decoded.rows):  # raced with another request for the last room
                for _ in range(len(decoded.rows) - accepted):
                    decoded.reject("export queue full")
        self.stats.rejected_spans += decoded.rejected
        self.stats.requests[(encoding, 200)] += 1
        return web.Response(body=response_body(decoded, as_json=as_json),
                            headers={"Content-Type": JSON if as_json else PROTOBUF})

    def _shed(self, as_json: bool, encoding: str) -> web.Response:
        return self._error(503, "the export queue is full; retry later", as_json, encoding,
                           {"Retry-After": str(RETRY_AFTER_S)})


def create_receiver_app(settings: Settings, pipeline: SpanPipeline) -> web.Application:
    """The receiver as its own aiohttp app (own port): ``/v1/traces``, ``/metrics``, ``/healthz``."""
    # The body limit is enforced by the handler (clear 413); aiohttp's own cap sits above it.
    app = web.Application(client_max_size=settings.otlp_max_body_bytes + 1)
    receiver = OtlpReceiver(pipeline, settings.otlp_max_body_bytes)
    receiver.register(app)
    app.router.add_get("/metrics", metrics_handler(pipeline, receiver.stats))

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get("/healthz", healthz)
    return app
