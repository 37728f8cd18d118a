"""SSE framing of streamed responses: events cut exactly where the plain search cuts them.

``StreamState._events`` bounds each search to the event being cut (linear in the chunk, first
event first); the reference below searches both separators from every event. Both must give the
same events and the same carried-over rest for any data split into any chunks.
"""

from __future__ import annotations

import random

import pytest

from genops.proxy.providers.base import RequestFacts, StreamState

pytestmark = pytest.mark.unit


class _Reference:
    """The framing as first written: both separators searched from every event."""

    def __init__(self) -> None:
        self.buffer = b""

    def events(self, chunk: bytes) -> list[bytes]:
        data = self.buffer + chunk if self.buffer else chunk
        events = []
        start = 0
        while True:
            end = data.find(b"\n\n", start)
            crlf = data.find(b"\r\n\r\n", start)
            if crlf != -1 and (end == -1 or crlf < end):
                events.append(data[start : crlf + 4])
                start = crlf + 4
            elif end != -1:
                events.append(data[start : end + 2])
                start = end + 2
            else:
                break
        self.buffer = data[start:]
        return events


PIECES = [b"data: ", b'{"a":1}', b"event: x", b"\n", b"\r\n", b"\n\n", b"\r\n\r\n", b"\r", b"x", b":", b" ", b"[DONE]"]


def test_events_match_the_reference_for_any_data_and_chunking():
    rng = random.Random(5)
    for _ in range(3000):
        data = b"".join(rng.choice(PIECES) for _ in range(rng.randint(0, 40)))
        cuts = sorted(rng.sample(range(len(data) + 1), k=min(len(data) + 1, rng.randint(0, 6))))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        state, reference = StreamState(RequestFacts(), 0), _Reference()
        for chunk in chunks:
            assert list(state._events(chunk)) == reference.events(chunk), (data, chunks)
            assert state._buffer == reference.buffer


def test_rewrite_events_forwards_the_same_bytes_as_rewrite():
    data = b"".join(b'data: {"n":%d}\n\n' % i for i in range(50)) + b"data: [DONE]\r\n\r\npartial"
    whole, lazy = StreamState(RequestFacts(), 0), StreamState(RequestFacts(), 0)
    events = lazy.rewrite_events(data)
    first = next(events)
    assert first == b'data: {"n":0}\n\n'
    assert first + b"".join(events) == whole.rewrite(data)
    assert lazy._buffer == whole._buffer == b"partial" and lazy.chunks == whole.chunks == 51


def _reference_event_data(event: bytes) -> bytes | None:
    parts = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            parts.append(line[5:].lstrip(b" ") if line[5:6] == b" " else line[5:])
    return b"\n".join(parts) if parts else None


def test_event_data_matches_the_line_by_line_reading():
    rng = random.Random(9)
    pieces = [b"data:", b"data: ", b"  ", b'{"a":1}', b"\n", b"\r\n", b"\r", b"\n\n", b"event: e", b"id: 1", b":", b"x"]
    for _ in range(5000):
        event = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        for candidate in (event, event + b"\n\n", event + b"\r\n\r\n"):
            assert StreamState.event_data(candidate) == _reference_event_data(candidate), candidate
