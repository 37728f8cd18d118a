"""The OTLP/HTTP trace receiver: ``POST /v1/traces`` (protobuf or JSON, gzip or not).

Response semantics follow the OTLP/HTTP specification:
- 401 when a token is required (``GENOPS_OTLP_TOKEN``, or generated into the data directory
  beyond loopback) and the request lacks ``Authorization: Bearer <token>``; nothing is read;
- 200 with an ``ExportTraceServiceResponse`` (``partial_success`` names spans rejected
  for malformed ids), encoded like the request;
- 400 for a payload that cannot be decoded, with a ``google.rpc.Status`` saying why
  (nothing of that request is stored);
- 413 when the body (or its gunzipped size) exceeds ``GENOPS_OTLP_MAX_BODY_BYTES``;
  gzip is inflated here, off the event loop and never past that limit (aiohttp's own
  decompression, which runs on the loop and to the end of a body, is turned off);
- 415 for a content type other than ``application/x-protobuf`` / ``application/json``
  or an unsupported ``Content-Encoding``;
- 503 with ``Retry-After`` when the export queue is full (the client retries later).

``/metrics`` requires the same token (it tells who sends how much); ``/healthz`` is open.

Trusted senders (scale-out, docs/scale-out.md): a request with ``Authorization: Bearer
<GENOPS_OTLP_TRUSTED_TOKEN>`` comes from a GenOps proxy exporting its spans here
(``GENOPS_EXPORTER=otlp``); its spans keep their scope (``genops.proxy``), so they are stored
exactly as that proxy would have stored them itself. Any other sender's reserved scope names
are renamed (:func:`~genops.storage.otlp_rows.received_scope_name`), whatever headers it sends.

Idempotent requests: a request with a ``GenOps-Dedup-Token`` header (1-128 of ``A-Za-z0-9._-``;
GenOps proxies send one per request) is stored once however often it is sent: the token,
combined with the sender's proven credential (trusted or not, so one kind of sender never
shadows the other's requests), names it; it is answered 200 once its spans are on this
process's disk, merged with other such requests into large inserts
(:mod:`genops.collectors.idempotent`), and a retry of a request already taken is answered 200
without storing it again. 503 with ``Retry-After`` when the collector is behind (the sender
keeps the request in its own spool and retries).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import os
import re
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from google.rpc.status_pb2 import Status

from genops.collectors.idempotent import ACCEPTED, BUSY, DUPLICATE, IdempotentIngest
from genops.collectors.idempotent import DIRECTORY as IDEMPOTENT_DIRECTORY
from genops.config import Settings
from genops.storage.forward import TOKEN_HEADER
from genops.storage.otlp_rows import (
    Decoded,
    OtlpError,
    decode_json,
    decode_protobuf,
    decode_protobuf_for_clickhouse,
    response_body,
)
from genops.storage.pipeline import SpanPipeline
from genops.storage.rows import json_rows_payload

TRACES_PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
RETRY_AFTER_S = 1
#: Who sent a request: a trusted GenOps proxy, or any other authorized OTLP sender.
TRUSTED = "trusted"
UNTRUSTED = "otlp"
_BATCH_TOKEN = re.compile(r"[A-Za-z0-9._-]{1,128}")
# google.rpc.Code numbers for the Status body.
_RPC_CODES = {400: 3, 401: 16, 413: 8, 415: 3, 503: 14}

log = logging.getLogger("genops.collector")

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

class ReceiverStats:
    """Counters of the OTLP receiver (requests by HTTP status, spans rejected by validation)."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()  # (encoding, status)
        self.rejected_spans = 0


RECEIVER_STATS_KEY = web.AppKey("genops.receiver_stats", ReceiverStats)


# Largest piece inflated per zlib call (see gunzip_capped).
_INFLATE_SLICE = 1 << 20


def _inflate_threads() -> int:
    """How many gzip bodies are inflated at once: half the usable cores, at least one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // 2)


def wire_limit(limit: int, gzipped: bool) -> int:
    """The largest body accepted as sent, for a decompressed limit of ``limit`` bytes.

    gzip can be a little larger than what it holds (a header and trailer, and 5 bytes per
    stored block of 16-64 KiB when the data does not compress: ~0.03%), so a gzipped body
    gets 0.1% of slack.
    """
    return limit + (limit // 1024 + 64 if gzipped else 0)


class BodyTooLarge(ValueError):
    """The decompressed body would exceed the receiver's limit."""


def gunzip_capped(data: bytes, limit: int) -> bytes:
    """``data`` gunzipped, raising :class:`BodyTooLarge` as soon as the output would exceed ``limit``.

    Never holds more than ``limit + 1`` decompressed bytes: ``max_length`` stops zlib there,
    so a gzip bomb costs the few kilobytes of input it takes to produce ``limit`` bytes, not
    its full size. Concatenated gzip members are accepted (as ``gzip.decompress`` does);
    anything that is not gzip, or is cut short, is a :class:`zlib.error`.
    """
    parts: list[bytes] = []
    size = 0
    pending = data
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip header and trailer
    while True:
        # At most what is left of the limit plus one byte (to tell "exactly full" from "too large"),
        # in slices: zlib joins each call's output holding the GIL, so slices keep those pauses
        # short for the event loop's thread.
        piece = inflater.decompress(pending, min(limit + 1 - size, _INFLATE_SLICE))
        size += len(piece)
        if size > limit:
            raise BodyTooLarge(f"more than {limit} bytes once decompressed")
        parts.append(piece)
        pending = inflater.unconsumed_tail
        if inflater.eof:
            pending = inflater.unused_data
            if not pending:  # one member of at most one slice (the usual case): no copy
                return parts[0] if len(parts) == 1 else b"".join(parts)
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # the next member
        elif not pending and len(piece) < _INFLATE_SLICE:  # all input read, no output held back
            raise zlib.error("the gzip stream is truncated")


def bearer_matches(header: str, token: str) -> bool:
    """Whether an ``Authorization`` header value carries ``token`` (compared in constant time)."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode(), token.encode())


def token_notice(settings: Settings) -> str:
    """One line on the receiver's token for logs and the terminal (never the token itself), or ""."""
    if settings.otlp_token:
        return ("the OTLP receiver requires Authorization: Bearer <GENOPS_OTLP_TOKEN> "
                "(agents: OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20<token>)")
    if settings.otlp_on_loopback:
        return ""
    return (f"the OTLP receiver requires a token (it listens beyond loopback): it is in "
            f"{settings.data_path / 'otlp_token'}; agents send "
            "OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20<token> (or set GENOPS_OTLP_TOKEN)")


def batch_token(sender: str, token: str) -> str:
    """The name of a sender's idempotent request (32 hex characters), from its ``GenOps-Dedup-Token``.

    ``sender`` is the credential class the request proved (:data:`TRUSTED` or :data:`UNTRUSTED`),
    not anything it claims: a retry of the same request gets the same name, and an untrusted
    sender that reuses a proxy's token gets another one, so it can never suppress that request.
    """
    return hashlib.sha256(f"genops-otlp-batch\0{sender}\0{token}".encode()).hexdigest()[:32]


def _rows(decode: Callable[[bytes], Decoded], body: bytes) -> tuple[Decoded, bytes]:
    """``decode(body)`` (a Python decoder: rows), and its rows as one JSONEachRow payload."""
    decoded = decode(body)
    return decoded, json_rows_payload(decoded.rows)


class OtlpReceiver:
    """Decodes OTLP requests and hands their rows to the span pipeline."""

    def __init__(self, pipeline: SpanPipeline, max_body_bytes: int, token: str = "", trusted_token: str = "",
                 settings: Settings | None = None) -> None:
        self.pipeline = pipeline
        self.max_body_bytes = max_body_bytes
        self.token = token  # "" = no token required (loopback and none configured)
        self.trusted_token = trusted_token  # "" = nobody is trusted
        self.settings = settings
        self.stats = ReceiverStats()
        self._inflating = asyncio.Semaphore(_inflate_threads())
        #: Idempotent requests' path (created with the first one, or at once when requests wait on disk).
        self.idempotent: IdempotentIngest | None = None
        if settings is not None and (settings.data_path / IDEMPOTENT_DIRECTORY).exists():
            self.idempotent = IdempotentIngest(settings, pipeline.sink)

    def sender(self, request: web.Request) -> str | None:
        """Who sent ``request``: :data:`TRUSTED` (the trusted token), :data:`UNTRUSTED` (the ordinary
        token, or none needed), or None (not authorized)."""
        header = request.headers.get("Authorization", "")
        # Both compared every time (constant time each): which one matched leaks nothing either.
        trusted = bool(self.trusted_token) and bearer_matches(header, self.trusted_token)
        ordinary = not self.token or bearer_matches(header, self.token)
        if trusted:
            return TRUSTED
        return UNTRUSTED if ordinary else None

    def authorized(self, request: web.Request) -> bool:
        """Whether ``request`` may use the receiver (always, when no token is required)."""
        return self.sender(request) is not None

    def register(self, app: web.Application) -> None:
        app.router.add_post(TRACES_PATH, self.traces)
        app[RECEIVER_STATS_KEY] = self.stats
        app[RECEIVER_KEY] = self

    def extra_metrics(self) -> str:
        """The idempotent requests' metric lines, once there were any (else "")."""
        return self.idempotent.metrics() if self.idempotent is not None else ""

    def guarded(self, handler: _Handler) -> _Handler:
        """``handler`` behind the receiver's token (Prometheus sends it with ``authorization: {credentials: ...}``)."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            if not self.authorized(request):
                return web.Response(status=401, text="missing or wrong OTLP token (GENOPS_OTLP_TOKEN)\n",
                                    headers={"WWW-Authenticate": 'Bearer realm="genops-otlp"'})
            return await handler(request)

        return guarded

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
        sender = self.sender(request)
        if sender is None:
            # Checked before anything else, and the body is never read: a sender without the
            # token learns nothing and costs nothing.
            as_json = content_type != PROTOBUF  # JSON for another content type, as the 415 below
            return self._error(401, "missing or wrong OTLP token: send Authorization: Bearer <token> "
                                    "(the receiver's GENOPS_OTLP_TOKEN, or the otlp_token file in its data directory)",
                               as_json, "protobuf" if not as_json else "json" if content_type == JSON else "unknown",
                               {"WWW-Authenticate": 'Bearer realm="genops-otlp"', "Connection": "close"})
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
        gzipped = content_encoding == "gzip"
        idempotency = request.headers.get(TOKEN_HEADER)
        if idempotency is not None and not _BATCH_TOKEN.fullmatch(idempotency):
            return self._error(400, f"malformed {TOKEN_HEADER}: send 1 to 128 of A-Za-z0-9._-", as_json, encoding)
        too_large = (f"the request body exceeds the receiver's limit of {self.max_body_bytes} bytes "
                     "(GENOPS_OTLP_MAX_BODY_BYTES); send smaller batches")
        max_wire = wire_limit(self.max_body_bytes, gzipped)
        if request.content_length is not None and request.content_length > max_wire:
            return self._error(413, too_large, as_json, encoding, {"Connection": "close"})
        if not self.pipeline.has_room(1):
            return self._shed(as_json, encoding)
        loop = asyncio.get_running_loop()
        try:
            # The body as sent (aiohttp's decompression is off for this app): its cap is the wire limit.
            body = await request.read()
            if len(body) > max_wire:
                raise web.HTTPRequestEntityTooLarge(max_size=max_wire, actual_size=len(body))
            if gzipped:  # in a thread: inflating up to the limit takes a while, and must not stall the loop
                async with self._inflating:  # and on at most half the cores: bombs cannot starve the loop's
                    body = await loop.run_in_executor(None, gunzip_capped, body, self.max_body_bytes)
        except (web.HTTPRequestEntityTooLarge, BodyTooLarge):
            return self._error(413, too_large, as_json, encoding, {"Connection": "close"})
        except Exception as exc:  # a body that cannot be read or is not gzip
            return self._error(400, f"malformed OTLP trace export request: cannot read the {content_encoding} body "
                                    f"({exc})", as_json, encoding, {"Connection": "close"})
        trusted = sender == TRUSTED
        decode: Callable[[bytes], Decoded]
        if as_json:
            decode = functools.partial(decode_json, trusted=trusted)
        elif trusted or idempotency is not None:
            # In Python: ClickHouse's decoding view renames every reserved scope, the proxy's too
            # (and an idempotent request's rows are merged with others' into one insert).
            decode = functools.partial(decode_protobuf, trusted=trusted)
        elif self.pipeline.native_otlp:  # ClickHouse decodes the spans; Python only validates and frames
            decode = decode_protobuf_for_clickhouse
        else:
            decode = decode_protobuf
        if idempotency is not None:
            try:
                decoded, rows = await loop.run_in_executor(None, _rows, decode, body)
            except OtlpError as exc:
                return self._error(400, f"malformed OTLP trace export request: {exc}", as_json, encoding)
            return await self._idempotent(decoded, rows, batch_token(sender, idempotency),
                                          "proxy" if trusted else "otlp", as_json, encoding)
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

    async def _idempotent(self, decoded: Decoded, rows: bytes, token: str, source: str, as_json: bool,
                          encoding: str) -> web.Response:
        """An idempotent request's rows, stored once however often it is retried (collectors/idempotent.py);
        200 once they are on disk (or were already)."""
        if self.idempotent is None:
            if self.settings is None:
                return self._error(503, "this receiver takes no idempotent requests", as_json, encoding)
            self.idempotent = IdempotentIngest(self.settings, self.pipeline.sink)
        outcome = await self.idempotent.accept(token, rows, len(decoded.rows))
        if outcome not in (ACCEPTED, DUPLICATE):
            why = ("the collector is behind: its spool is full (GENOPS_SPOOL_MAX_BYTES)" if outcome == BUSY
                   else "the collector could not write the request to its disk")
            return self._error(503, f"{why}; retry later", as_json, encoding, {"Retry-After": str(RETRY_AFTER_S)})
        if outcome == ACCEPTED:
            received = self.pipeline.counters.received
            received[source] = received.get(source, 0) + len(decoded.rows)
        self.stats.rejected_spans += decoded.rejected
        self.stats.requests[(encoding, 200)] += 1
        return web.Response(body=response_body(decoded, as_json=as_json),
                            headers={"Content-Type": JSON if as_json else PROTOBUF})

    def _shed(self, as_json: bool, encoding: str) -> web.Response:
        return self._error(503, "the export queue is full; retry later", as_json, encoding,
                           {"Retry-After": str(RETRY_AFTER_S)})


RECEIVER_KEY = web.AppKey("genops.receiver", OtlpReceiver)


def create_receiver_app(settings: Settings, pipeline: SpanPipeline) -> web.Application:
    """The receiver as its own aiohttp app (own port): ``/v1/traces`` and ``/healthz`` (the process
    that runs it adds ``/metrics``, behind :meth:`OtlpReceiver.guarded`; the receiver is ``app[RECEIVER_KEY]``).

    The token is resolved here (created in the data directory on first use beyond loopback);
    where it is gets logged once, the token itself never.
    """
    token = settings.resolved_otlp_token()
    trusted = settings.resolved_otlp_trusted_token()
    if trusted and trusted == token:  # (a configured pair is refused by load_settings already)
        log.error("the trusted OTLP token equals the ordinary one: nobody is trusted (docs/scale-out.md)")
        trusted = ""
    limit = settings.otlp_max_body_bytes
    # auto_decompress off: aiohttp would gunzip on the event loop, all the way through a bomb,
    # before the handler could refuse it; the handler gunzips with the limit instead. The
    # body limit is enforced by the handler (clear 413); aiohttp's own cap sits above it.
    app = web.Application(client_max_size=wire_limit(limit, True) + 1, handler_args={"auto_decompress": False})
    receiver = OtlpReceiver(pipeline, limit, token, trusted, settings)
    receiver.register(app)

    async def close_idempotent(_: web.Application) -> None:
        if receiver.idempotent is not None:
            await asyncio.get_running_loop().run_in_executor(None, receiver.idempotent.close)

    app.on_cleanup.append(close_idempotent)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get("/healthz", healthz)
    notice = token_notice(settings)
    if notice:
        log.info(notice)
    if trusted:
        log.info("trusted senders (GenOps proxies) are recognised by GENOPS_OTLP_TRUSTED_TOKEN: "
                 "their spans are stored as the proxy's own")
    return app
