"""OTLP protobuf spans decoded by ClickHouse instead of Python.

The receiver turns a request into a stream of ``SpanRow`` messages (``otlp_span_row.proto``,
framed by :mod:`genops.storage.otlp_span_rows`). ClickHouse's ``Protobuf`` input format parses the rows into
the Null table ``otel_traces_otlp_in`` and a materialized view (migration 0060) spells them
into ``otel_traces`` exactly like the Python decoder. A batch holding a value the view cannot
spell that way makes the insert fail with :data:`FALLBACK_MARK` before anything is written;
:func:`insert_span_rows` then stores that batch through the Python decoder, with the same
deduplication token, so replays stay exactly-once either way.
"""

from __future__ import annotations

import logging
from typing import Any

from genops.storage.otlp_rows import span_rows_to_json_rows
from genops.storage.otlp_span_rows import SCHEMA, SCHEMA_FILE, split_span_rows
from genops.storage.rows import insert_json_payload, json_rows_payload

log = logging.getLogger("genops.storage.otlp_native")

TABLE = "otel_traces_otlp_in"
FALLBACK_MARK = "OTLP_SQL_FALLBACK"
UNKNOWN_PROTOBUF_FORMAT = 444  # ClickHouse error code: the Protobuf reader cannot read the data
# Settings of every insert into the staging table (the view's JSON spelling depends on the last two).
_COMMON_SETTINGS = {
    "input_format_protobuf_oneof_presence": 1,
    "output_format_json_escape_forward_slashes": 0,
    "output_format_json_quote_64bit_integers": 0,
}
# A ClickHouse server gets the schema's text (and caches it in its own format_schemas directory).
SERVER_SETTINGS = {
    "format_schema_source": "string",
    "format_schema": SCHEMA,
    "format_schema_message_name": "SpanRow",
    **_COMMON_SETTINGS,
}
# Embedded chDB reads the packaged file: a schema given as text would be cached in a
# "__cache__" directory under the process's working directory.
EMBEDDED_SETTINGS = {"format_schema": f"{SCHEMA_FILE}:SpanRow", **_COMMON_SETTINGS}


def insert_settings(client: Any) -> dict[str, Any]:
    """The schema settings for ``client``'s kind of ClickHouse."""
    return EMBEDDED_SETTINGS if _is_embedded(client) and SCHEMA_FILE.is_file() else SERVER_SETTINGS


def _is_embedded(client: Any) -> bool:
    try:
        from clickhouse_connect.driver._chdbclient import ChdbClient
    except ImportError:  # no chDB installed: a server
        return False
    return isinstance(client, ChdbClient)


def insert_span_rows(client: Any, database: str, payload: bytes, **settings: Any) -> bool:
    """Insert a SpanRow payload; returns False when it went through the Python decoder instead.

    ``settings`` (the deduplication token...) apply to either insert.
    """
    try:
        client.raw_insert(f"{database}.{TABLE}", None, payload, fmt="Protobuf",
                          settings={**insert_settings(client), **settings})
        return True
    except Exception as exc:  # noqa: BLE001 - only refusals that the same bytes always meet are handled here
        text = str(exc)
        # The view's refusal, or ClickHouse's Protobuf reader refusing what the protobuf library
        # accepted (a field with another wire type than the schema's, which upb keeps as unknown):
        # either happens before any row is written, and again on every retry.
        if FALLBACK_MARK not in text and f"Code: {UNKNOWN_PROTOBUF_FORMAT}." not in text:
            raise
    insert_json_payload(client, database, json_rows_payload(span_rows_to_json_rows(split_span_rows(payload))),
                        **settings)
    return False


# A SpanRow with only its name, "probe": parsed at start to prove the schema and settings work.
_PROBE = b"\x07\x2a\x05probe"


def native_ingest_available(client: Any, database: str) -> bool:
    """Whether this ClickHouse can take SpanRow inserts (migration 0060 applied, schema and settings accepted).

    The probe parses one SpanRow with the insert's own settings, so a server that does not know
    or does not allow them (an older version, a read-only profile) keeps the Python decoder
    instead of failing every batch later.
    """
    try:
        table = client.query(
            "SELECT count() FROM system.tables WHERE database = {db:String} AND name = {t:String}",
            parameters={"db": database, "t": TABLE},
        ).result_rows[0][0]
        probe = client.query("SELECT name FROM format(Protobuf, 'name String', {data:String})",
                             parameters={"data": _PROBE.decode("latin-1")}, settings=insert_settings(client),
                             ).result_rows
    except Exception as exc:  # noqa: BLE001 - no capability is the safe answer
        log.warning("ClickHouse-side OTLP decoding unavailable; the Python decoder is used",
                    extra={"error": str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__})
        return False
    return int(table) == 1 and probe == [("probe",)]
