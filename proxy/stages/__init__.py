"""The request path as explicit stages: parse -> route -> policy and safety -> forward -> relay,
then record.

:func:`build_chain` is the one place the chain is put together (once per route, when the app
is built; proxy/handler.py runs it for every request). A new stage (a budget check, a cache
lookup, a key check) is an object with ``async def run(exchange)`` (:class:`Stage`) inserted
in the list there; the handler does not change. See docs/architecture.md, "Request path".
"""

from __future__ import annotations

from typing import Any, NamedTuple

from genops.config import Settings
from genops.proxy.providers.base import ProviderAdapter
from genops.proxy.routing.router import Router
from genops.proxy.stages.base import Exchange, Stage
from genops.proxy.stages.forward import ForwardStage
from genops.proxy.stages.parse import ParseStage
from genops.proxy.stages.record import RecordStage
from genops.proxy.stages.relay import RelayStage
from genops.proxy.stages.route import RouteStage
from genops.proxy.stages.safety import SafetyStage
from genops.proxy.upstream import UpstreamClientLike

__all__ = ["Chain", "Exchange", "Stage", "build_chain"]


class Chain(NamedTuple):
    """The stages one request runs through, in order, and the record stage that always ends it."""

    stages: tuple[Stage, ...]
    record: RecordStage


def build_chain(adapter: ProviderAdapter, settings: Settings, client: UpstreamClientLike,
                router: Router | None = None, tracer: Any = None) -> Chain:
    """The request path of one route. Built once per adapter when the app starts, never per request.

    Route comes before safety so a request whose target is refused is answered before any
    scan is spent on it, and so a refused route's span carries no safety verdict (as before
    the stages existed). Stages that act on the request before it leaves (keys, budgets,
    cache) go before ``ForwardStage``.

    ``router`` (shared by every route's chain): the gateway routes; a call naming one gets a plan
    in ``RouteStage`` that ``ForwardStage`` hands to :class:`~genops.proxy.routing.attempts.Attempts`
    (``tracer`` records its failed attempts as child spans).
    """
    forward = ForwardStage(adapter, settings, client)
    if router is not None:
        forward.attempts = router.attempts_for(adapter, forward.send, tracer)
    return Chain(
        stages=(
            ParseStage(adapter, settings),
            RouteStage(adapter, settings, router),
            SafetyStage(adapter, settings),
            forward,
            RelayStage(adapter),
        ),
        record=RecordStage(adapter),
    )
