"""Stage 1, parse: read the request body (within the size and pause limits) and let the
adapter read just enough of it (operation, model, parameters, stream flag) into its frozen
``RequestFacts``."""

from __future__ import annotations

from genops.config import Settings
from genops.proxy.client_side import BodyPaused, BodyTooLarge, BodyUnreadable
from genops.proxy.providers.base import ProviderAdapter, RequestError
from genops.proxy.stages.base import Exchange


class ParseStage:
    """Sets ``exchange.body`` and ``exchange.request_facts``; names the span after the operation."""

    def __init__(self, adapter: ProviderAdapter, settings: Settings) -> None:
        self.adapter = adapter
        self.max_body_bytes = settings.max_body_bytes
        self.client_body_timeout_s = settings.client_body_timeout_s

    async def run(self, exchange: Exchange) -> None:
        request = exchange.request
        try:
            body = await request.read_body(self.max_body_bytes, self.client_body_timeout_s)
        except BodyTooLarge:
            raise RequestError(
                413,
                f"The request body exceeds the proxy's limit of {self.max_body_bytes} bytes "
                "(GENOPS_MAX_BODY_BYTES).",
                "invalid_request_error",
                "request_too_large",
            ) from None
        except BodyPaused:
            raise RequestError(408, f"The client sent no part of the request body for {self.client_body_timeout_s:g} s "
                               "(GENOPS_CLIENT_BODY_TIMEOUT_S).", "invalid_request_error",
                               "request_timeout") from None
        except BodyUnreadable:  # e.g. "Content-Encoding: gzip" on a body that is not gzip
            raise RequestError(400, "The request body cannot be read (its Content-Encoding does not match "
                               "it, or it is cut short).", "invalid_request_error", "unreadable_body") from None
        exchange.body = body
        facts = exchange.request_facts = self.adapter.parse_request(request.method, exchange.tail, body,
                                                                    request.headers)
        if facts.operation:
            exchange.span.update_name(f"{facts.operation} {facts.model}" if facts.model else facts.operation)
