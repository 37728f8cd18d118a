"""The interface of a wire-format translation: a client speaking one provider's format (today the
OpenAI Chat Completions format) whose routed call lands on a target speaking another's.

A translation turns the client's (already parsed, already safety-masked) request into the
target's request, and the target's answer back into the client's format: a whole body, an error
body, or a stream, event by event, as it arrives. Telemetry does not read the translated bytes:
the target's own adapter reads the target's raw answer (exact tokens, the target's price).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol


class TranslatedRequest(NamedTuple):
    """What to send to the target: the path after the target adapter's prefix, its query string,
    the body, and headers the target's format needs (``anthropic-version``; never a key)."""

    tail: str
    query: str
    body: bytes
    headers: Mapping[str, str]


class StreamTranslator(Protocol):
    """Turns a target's stream into the client's, as it arrives."""

    def feed(self, chunk: bytes) -> bytes:
        """Target-format bytes in (decoded; any split), client-format bytes out: whole events only
        (``b""`` until one is complete)."""
        ...

    def finish(self) -> bytes:
        """The client's closing events (OpenAI: a usage chunk when asked for, then ``data: [DONE]``)."""
        ...


class Translation(Protocol):
    """One (client format, target format) pair."""

    client_format: str  # e.g. "openai.chat"
    target_format: str  # e.g. "anthropic.messages"

    def request(self, body: Any, target_model: str, stream: bool) -> TranslatedRequest:
        """The target's request for the client's parsed JSON ``body``, asking for ``target_model``.
        Raises ``genops.proxy.providers.base.RequestError`` (400) for what the target cannot express."""
        ...

    def response(self, status: int, body: bytes) -> bytes:
        """A whole answer (success or the target's error body, any status) in the client's format."""
        ...

    def stream(self, include_usage: bool) -> StreamTranslator:
        """A translator for one streamed answer; ``include_usage``: the client asked for a usage chunk
        (OpenAI ``stream_options.include_usage``)."""
        ...
