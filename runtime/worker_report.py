"""What proxy workers tell their supervisor: the calls they served and their span pipeline's state.

With the proxy in worker processes, the supervisor answers the admin paths for them. It needs
two things only the workers know:

- the request ids they just served (with the call's user, when it has one), so feedback for a
  call whose span is still in a worker's export batch is accepted at once, and a request id
  that names calls in two workers is seen as ambiguous (:class:`~genops.proxy.recent.RecentCalls`);
- their pipelines' counters and gauges (queued, spooled, exported, dropped...), so
  ``/metrics`` shows the whole server, and ``/readyz`` says ready only once every worker
  has reported (its spool, replayed or not, is then visible).

A worker's :class:`WorkerReporter` collects ids in ``on_end``, already as the report's JSON
in one growing buffer (no Python objects per call to pile up while a report is slow), and
posts a report every :data:`REPORT_INTERVAL_S` when it has ids or its pipeline changed, and
at least every second. While the supervisor is slow to answer (its inserts starved of CPU),
ids beyond :data:`MAX_SERVED_BYTES` are not kept: feedback for those calls waits for their
spans' export instead, and the worker's memory stays flat. :class:`WorkerReports` is the
supervisor's side (an internal endpoint that needs the supervisor's secret).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from genops.api.ingest import internal_secret_ok
from genops.api.metrics import snapshot
from genops.proxy.recent import RecentCalls, call_ref
from genops.storage.pipeline import SpanPipeline

REPORT_PATH = "/genops/internal/report"
#: Seconds between a busy worker's reports: a quarter of the feedback endpoint's wait for just-served ids
#: (``api/feedback.RECENT_WAIT_S``). Each report costs the two processes ~0.3 ms of CPU whatever it holds.
REPORT_INTERVAL_S = 0.05
HEARTBEAT_S = 1.0
#: A worker's report values that say what it holds now, not what it did (a retired worker holds nothing).
RETIRED_GAUGES = ("queued", "spool_spans", "spool_bytes")
#: Most served ids held for one report (~100 bytes each: ~2 s of calls at 5,000 calls/s).
MAX_SERVED_BYTES = 1 << 20

log = logging.getLogger("genops.runtime.worker_report")


class WorkerReporter(SpanProcessor):
    """A worker's side: served ids and pipeline state, posted to the supervisor in small reports."""

    def __init__(self, url: str, secret: str, index: int, pipeline: SpanPipeline | None) -> None:
        self.url = url.rstrip("/") + REPORT_PATH
        self.secret = secret
        self.index = index
        self.pipeline = pipeline
        #: ``[request id, trace id, span id(, user id)],`` per served call: the report's "served" list.
        self._served = bytearray()
        self._task: asyncio.Task | None = None

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        found = call_ref(span)
        if found is not None and len(self._served) < MAX_SERVED_BYTES:
            request_id, call = found
            # the user only when there is one: most calls' entries stay three short strings
            entry = (request_id, call.trace_id, call.span_id, call.user_id) if call.user_id else \
                (request_id, call.trace_id, call.span_id)
            self._served += orjson.dumps(entry)
            self._served += b","

    def take_report(self, state: dict[str, Any]) -> bytes:
        """The next report (JSON: worker index, pipeline ``state``, ids served since the last one)."""
        served, self._served = self._served, bytearray()
        return b'{"worker":%d,"pipeline":%s,"served":[%s]}' % (self.index, orjson.dumps(state), served[:-1])

    def attach(self, app: web.Application) -> None:
        """Report for the life of ``app`` (first report right at start-up)."""

        async def start(_: web.Application) -> None:
            self._task = asyncio.get_running_loop().create_task(self._run())

        async def stop(_: web.Application) -> None:
            if self._task is not None:
                self._task.cancel()

        app.on_startup.append(start)
        app.on_cleanup.append(stop)

    async def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.secret}", "Content-Type": "application/json"}
        last_state: dict[str, Any] | None = None
        last_sent = 0.0
        async with aiohttp.ClientSession() as session:
            while True:
                state = snapshot(self.pipeline) if self.pipeline is not None else {}
                now = time.monotonic()
                if self._served or state != last_state or now - last_sent >= HEARTBEAT_S:
                    report = self.take_report(state)
                    try:
                        async with session.post(self.url, data=report, headers=headers,
                                                timeout=aiohttp.ClientTimeout(total=5)) as response:
                            await response.read()
                        last_state, last_sent = state, now
                    except (TimeoutError, aiohttp.ClientError) as exc:
                        # Lost ids only mean feedback waits for the span's export instead.
                        log.debug("worker report not delivered", extra={"error": type(exc).__name__})
                    except Exception:  # reporting must outlive any one bad report
                        log.exception("worker report failed")
                await asyncio.sleep(REPORT_INTERVAL_S)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class WorkerReports:
    """The supervisor's side: records served ids into ``recent``, keeps each worker's latest pipeline state."""

    def __init__(self, recent: RecentCalls, secret: str, workers: int) -> None:
        self.recent = recent
        self.secret = secret
        self.workers = workers
        self._pipelines: dict[int, dict[str, Any]] = {}
        # The counters of workers that exited for good (rolling restart), so totals never go back.
        self._retired: dict[str, Any] = {}
        self._retired_workers = 0

    def register(self, app: web.Application) -> None:
        app.router.add_post(REPORT_PATH, self.receive)

    async def receive(self, request: web.Request) -> web.Response:
        if not internal_secret_ok(request.headers, self.secret):
            return web.json_response({"error": "forbidden"}, status=403)
        try:
            report = orjson.loads(await request.read())
            worker = int(report["worker"])
            self.recent.add_served(report.get("served", ()))
            pipeline = report.get("pipeline") or {}
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return web.json_response({"error": "malformed worker report"}, status=400)
        self._pipelines[worker] = pipeline
        return web.Response(status=204)

    def pipelines(self) -> Iterable[dict[str, Any]]:
        """The latest pipeline state of each worker (for ``/metrics``), and the retired workers' counters."""
        return [*self._pipelines.values(), self._retired] if self._retired else list(self._pipelines.values())

    def retire(self, worker: int) -> None:
        """Worker ``worker`` exited for good (replaced): its counters stay in the totals, its gauges
        (what it held: queued, spooled) go, and its index is free for a new worker."""
        report = self._pipelines.pop(worker, None)
        if report is None:
            return
        self._retired_workers += 1
        for key, value in report.items():
            if key == "received":
                received = self._retired.setdefault("received", {})
                for source, n in value.items():
                    received[source] = received.get(source, 0) + int(n)
            elif key not in RETIRED_GAUGES:
                self._retired[key] = self._retired.get(key, 0) + int(value)

    def not_ready(self) -> str | None:
        """Why the server is not ready yet (a worker has not reported), or None."""
        missing = self.workers - len(self._pipelines) - self._retired_workers
        return f"{missing} proxy worker(s) not reporting yet" if missing > 0 else None
