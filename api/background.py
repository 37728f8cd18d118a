"""Background work that lives as long as an aiohttp app: started with it, cancelled at its cleanup."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from aiohttp import web


def lifetime_task(work: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` entry running ``work()`` from the app's start until its cleanup cancels it."""

    async def context(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(work())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return context
