"""Work a call leaves for after its client has the response: the safety scan, cost and the span's end.

None of it may delay a client. Run inline at the end of the handler, it would still delay
the *next* call: a keep-alive client sends its next request as soon as it has a response,
and an agent making sequential calls (the common case) would wait for the previous call's
bookkeeping every time. So small work is deferred (:func:`defer`) and run when the event
loop next has nothing better to do for a client: when a later call has sent its request
upstream and waits for the model (:func:`kick`), or after :data:`IDLE_DELAY_S` when no
call comes. Big safety scans go to a thread as background tasks (:func:`run_in_background`).
The span's timestamps are taken when the response ends, not when the work runs.

On shutdown, :func:`drain_pending` runs everything still waiting before the exporters stop.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import Any

log = logging.getLogger("genops.proxy")

#: Longest deferred work waits when no later call gives the loop a pause.
IDLE_DELAY_S = 0.002

_PENDING: set[asyncio.Task[None]] = set()


class _Deferred:
    """The deferred work of one event loop, run in the order it was deferred."""

    __slots__ = ("loop", "work", "timer", "scheduled", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.work: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.scheduled = False

    def run(self) -> None:
        self.scheduled = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        work, self.work = self.work, []
        for fn, args in work:
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - one call's bookkeeping must not stop the others'
                log.exception("post-response work failed")


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Deferred] = weakref.WeakKeyDictionary()


def _deferred() -> _Deferred:
    loop = asyncio.get_running_loop()
    deferred = _BY_LOOP.get(loop)
    if deferred is None:
        deferred = _BY_LOOP[loop] = _Deferred(loop)
    return deferred


def defer(fn: Callable[..., None], *args: Any) -> None:
    """Run ``fn(*args)`` on this event loop soon, but not before the loop has served what is waiting."""
    deferred = _deferred()
    deferred.work.append((fn, args))
    if deferred.timer is None:
        deferred.timer = deferred.loop.call_later(IDLE_DELAY_S, deferred.run)


def kick() -> None:
    """A call is about to send its request upstream and wait: run deferred work in that pause.

    On the loop's next turn: the upstream client writes the whole request before its first
    ``await`` (proxy/upstream_client.py), so the request is on its way by then.
    """
    deferred = _BY_LOOP.get(asyncio.get_running_loop())
    if deferred is not None and deferred.work and not deferred.scheduled:
        deferred.scheduled = True
        deferred.loop.call_soon(deferred.run)


def run_in_background(work: Any) -> None:
    """Run a coroutine (a big post-response scan and the span's end) as a task the shutdown waits for."""
    task = asyncio.get_running_loop().create_task(work)
    _PENDING.add(task)
    task.add_done_callback(_PENDING.discard)


async def drain_pending(_: Any = None) -> None:
    """Finish all post-response work still waiting (app cleanup, before the span exporter stops)."""
    deferred = _BY_LOOP.get(asyncio.get_running_loop())
    while _PENDING or (deferred is not None and deferred.work):
        if deferred is not None:
            deferred.run()
        if _PENDING:
            await asyncio.gather(*list(_PENDING), return_exceptions=True)
