"""The proxy's compact span batches spelled into ``otel_traces`` rows by ClickHouse instead of Python.

The store inserts the lines of a group of compact batches (:mod:`genops.storage.span_batch`) as
they are, ``FORMAT JSONCompactEachRow``, into the Null table of migration 0090, whose view spells
each line exactly as :func:`~genops.storage.span_batch.compact_rows` does. ClickHouse parses the
lines in C++ and the store process runs no Python per span: this halves the store's CPU per span
(docs/benchmarks/2026-12-03-per-core-22-sql-spelling.md). Python's spelling stays the reference,
and the fallback: a group ClickHouse cannot take this way (lines spooled before the view's
values existed, a server without the table or settings) is spelled in Python and inserted with
the same deduplication token, so a replay stays exactly-once either way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from genops.storage.rows import insert_compact_payload
from genops.storage.span_batch import compact_rows, json_floats_as_expected

log = logging.getLogger("genops.storage.span_batch_sql")

TABLE = "otel_traces_genops_in"
#: Every attribute value is read as its JSON text (a string as itself); the view puts the
#: floats' stored spellings in place. One parsing thread: a group is one block, so an insert
#: that fails writes nothing, and its Python fallback is not half deduplicated.
SETTINGS = {
    "input_format_json_read_numbers_as_strings": 1,
    "input_format_json_read_bools_as_strings": 1,
    "input_format_json_read_arrays_as_strings": 1,
    "input_format_json_read_objects_as_strings": 1,
    "input_format_parallel_parsing": 0,
}
#: ClickHouse error codes that mean this ClickHouse cannot take the lines this way at all (no
#: table: migration 0090 not applied; a setting unknown or not allowed): Python from then on.
_UNABLE = ("Code: 60.", "Code: 115.", "Code: 164.")
#: How ClickHouse's row input formats name the row they could not read: the insert stopped while
#: parsing its one block, before anything was written (a line of fourteen values, spooled before
#: migration 0090's values existed, is refused so).
_ROW_REFUSED = "(at row "


def lines_of(payloads: Sequence[bytes]) -> bytes:
    """The span lines of consecutive compact batches, without their headers, one per line.

    Each batch's lines are viewed in place, not sliced: the group (megabytes) is copied once, by
    the join. A copy of a fresh buffer of that size costs about as much again in page faults as
    in copying (docs/benchmarks/2026-12-04-per-core-22-the-request-path.md)."""
    bodies = []
    for payload in payloads:
        start = payload.find(b"\n") + 1  # after the header line
        if not start:
            continue  # a header and no line
        end = len(payload)
        while end > start and payload[end - 1] == 10:  # b"\n"
            end -= 1
        while start < end and payload[start] == 10:
            start += 1
        if start < end:
            bodies.append(memoryview(payload)[start:end])
    return b"\n".join(bodies)


class SqlSpelling:
    """Inserts groups of compact batches through the view, or through Python when it cannot.

    ``enabled`` turns off for good after an error that every later insert would meet too.
    ``fallbacks`` counts the groups spelled in Python after ClickHouse refused them.
    """

    def __init__(self, enabled: bool = True) -> None:
        if enabled and not json_floats_as_expected():
            log.warning("this orjson spells floats otherwise than migration 0090's view expects; Python spells "
                        "the proxy's spans")
            enabled = False
        self.enabled = enabled
        self.fallbacks = 0

    def insert(self, client: Any, database: str, payloads: Sequence[bytes], **settings: Any) -> None:
        """Insert the compact batches ``payloads`` as one insert with ``settings`` (the token...)."""
        if self.enabled:
            lines = lines_of(payloads)
            if not lines:
                return
            try:
                client.raw_insert(f"{database}.{TABLE}", None, lines, fmt="JSONCompactEachRow",
                                  settings={**SETTINGS, **settings})
                return
            except Exception as exc:  # noqa: BLE001 - only refusals of these bytes, before any write, fall back
                text = str(exc)
                first_line = text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__
                unable = any(code in text for code in _UNABLE)
                # Anything else (a timeout, a lost answer, a full disk) is raised and the group is
                # retried this same way: an insert through the view that landed unanswered and was
                # then retried through Python would be stored twice (the two paths' blocks are not
                # deduplicated against each other).
                if not unable and _ROW_REFUSED not in text:
                    raise
                if unable:
                    self.enabled = False
                    log.warning("ClickHouse-side spelling of the proxy's spans unavailable; Python spells them",
                                extra={"error": first_line})
                else:
                    log.info("a group of the proxy's spans goes through Python's spelling", extra={"error": first_line})
                self.fallbacks += 1
        rows = b"\n".join(compact_rows(payload) for payload in payloads if payload)
        insert_compact_payload(client, database, rows, **settings)
