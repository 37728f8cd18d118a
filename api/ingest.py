"""The store process's internal ingest endpoint: proxy workers hand their span batches over here.

The worker side is :class:`genops.storage.forward.ForwardingSink`; the batch lands in this
process's span pipeline (its spool first), which inserts it in order, exactly once.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from aiohttp import web

from genops.storage.forward import INGEST_PATH, KIND_HEADER, KINDS, SPANS_HEADER, TOKEN_HEADER
from genops.storage.pipeline import JSON, SpanPipeline


def internal_secret_ok(headers: Any, secret: str) -> bool:
    """Whether a request to an internal endpoint carries the supervisor's secret (constant-time check)."""
    given = headers.get("Authorization", "")
    return bool(secret) and hmac.compare_digest(given.encode(), f"Bearer {secret}".encode())


def ingest_route(app: web.Application, pipeline: SpanPipeline, secret: str) -> None:
    """Register the store process's side: spool a worker's batch in ``pipeline``, answer 204 once
    it is there. The worker keeps a batch the store did not take: 429 when the store's backlog is
    full (its probe, ``GET``, answers 204 once there is room: the worker then retries at once),
    503 when the spool write failed (the worker keeps its backoff).

    The spool write runs on a thread (checksum and write with the GIL released). Inserting,
    compact span batches spelled as rows first, is the pipeline's sender's job; the batch's
    own token deduplicates a retry whose first attempt did land.
    """

    async def ingest(request: web.Request) -> web.Response:
        if not internal_secret_ok(request.headers, secret):
            return web.json_response({"error": "forbidden"}, status=403)
        token = request.headers.get(TOKEN_HEADER, "")
        if len(token) != 32:
            return web.json_response({"error": f"missing or malformed {TOKEN_HEADER}"}, status=400)
        kind = request.headers.get(KIND_HEADER, JSON)
        if kind not in KINDS:
            return web.json_response({"error": f"unknown {KIND_HEADER}: {kind[:40]}"}, status=400)
        spans = request.headers.get(SPANS_HEADER, "")
        if not spans.isdigit():
            return web.json_response({"error": f"missing or malformed {SPANS_HEADER}"}, status=400)
        # Not request.read(): its limit is the proxy's (GENOPS_MAX_BODY_BYTES, for clients' model calls),
        # and a batch of spans is not a client's call; only a worker holding the secret gets here.
        payload = await request.content.read()
        try:
            taken = await asyncio.get_running_loop().run_in_executor(
                None, pipeline.accept_handoff, payload, int(spans), kind, token)
        except OSError as exc:  # the worker keeps the batch and retries (and counts the failure)
            return web.json_response({"error": f"the store's spool cannot take it: {exc}"[:300]}, status=503)
        if not taken:
            return web.json_response({"error": "the store is behind: its spool's backlog is full"}, status=429)
        return web.Response(status=204)

    async def room(request: web.Request) -> web.Response:
        """A worker's probe (:meth:`ForwardingSink.ping`): 204 while a batch would be taken now."""
        if not internal_secret_ok(request.headers, secret):
            return web.json_response({"error": "forbidden"}, status=403)
        return web.Response(status=204 if pipeline.has_handoff_room() else 503)

    app.router.add_post(INGEST_PATH, ingest)
    app.router.add_get(INGEST_PATH, room)
