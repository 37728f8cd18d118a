"""A ClickHouse server stand-in for fault tests: ClickHouse's HTTP interface over a real chDB engine.

Run as its own process (``python fake_clickhouse.py PORT DATA_DIR``) so a test can stop it
(SIGSTOP: a hung server; SIGKILL: a dead one) and start it again on the same port and data.
It serves what clickhouse-connect's HTTP client sends: queries in the ``query`` parameter
and/or the body, settings as URL parameters, and inserts whose data is the body (executed
as ``INSERT ... FROM INFILE``). Every statement runs in a real chDB engine, so the
deduplication, materialized views and formats under test are ClickHouse's own.
"""

from __future__ import annotations

import gzip
import os
import re
import sys
import tempfile
import zlib

from aiohttp import web

# URL parameters that are protocol options, not query settings.
_NOT_SETTINGS = {"query", "database", "default_format", "session_id", "session_timeout", "session_check", "query_id",
                 "compress", "decompress", "user", "password", "quota_key", "wait_end_of_query",
                 "send_progress_in_http_headers", "http_headers_progress_interval_ms", "enable_http_compression",
                 "http_zlib_compression_level", "cancel_http_readonly_queries_on_client_close", "client_protocol_version",
                 "readonly", "role"}
_INSERT = re.compile(r"^\s*INSERT\s+INTO\s+(?P<target>.+?)\s+FORMAT\s+(?P<fmt>\w+)\s*$", re.I | re.S)
# clickhouse-connect sends a bytes insert as "INSERT INTO ... FORMAT X\n" + data, all in the body.
_BODY_INSERT = re.compile(rb"^\s*INSERT\s+INTO\s+(?P<target>[^\n]+?)\s+FORMAT\s+(?P<fmt>\w+)[ \t]*\n", re.I)


def _decode_body(body: bytes, encoding: str) -> bytes:
    encoding = encoding.lower()
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "lz4":
        import lz4.frame

        return lz4.frame.decompress(body)
    if encoding == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    return body


def create_app(path: str) -> web.Application:
    from chdb import session

    sess = session.Session(path)

    async def handle(request: web.Request) -> web.Response:
        if request.path == "/ping":
            return web.Response(text="Ok.\n")
        params = dict(request.query)
        body = _decode_body(await request.read(), request.headers.get("Content-Encoding", ""))
        query = params.get("query", "")
        settings = {k: v for k, v in params.items() if k not in _NOT_SETTINGS and not k.startswith("param_")}
        bound = {k[len("param_"):]: v for k, v in params.items() if k.startswith("param_")}  # {name:Type} values
        database = params.get("database") or request.headers.get("X-ClickHouse-Database") or "default"
        fmt = params.get("default_format") or "TabSeparated"
        try:
            sess.query(f"USE {database}")
            insert = _INSERT.match(query) if query and body else None
            embedded = _BODY_INSERT.match(body) if not query and body else None
            if embedded:
                insert = {"target": embedded["target"].decode(), "fmt": embedded["fmt"].decode()}
                body = body[embedded.end():]
            if insert:
                with tempfile.NamedTemporaryFile(suffix=".data", delete=False) as tmp:
                    tmp.write(body)
                clause = " SETTINGS " + ", ".join(f"{k} = '{v}'" for k, v in settings.items()) if settings else ""
                try:
                    sess.query(f"INSERT INTO {insert['target']} FROM INFILE '{tmp.name}'{clause} "
                               f"FORMAT {insert['fmt']}")
                finally:
                    os.unlink(tmp.name)
                return web.Response(body=b"", headers={"X-ClickHouse-Summary": "{}"})
            sql = (query + "\n" + body.decode()) if query and body else (query or body.decode())
            for key, value in settings.items():
                sess.query(f"SET {key} = '{value}'")
            result = sess.query(sql, fmt, params=bound or None)
            data = result.bytes() if hasattr(result, "bytes") else bytes(result)
            return web.Response(body=data or b"", headers={"X-ClickHouse-Summary": "{}",
                                                           "X-ClickHouse-Format": fmt,
                                                           "X-ClickHouse-Timezone": "UTC"})
        except Exception as exc:  # every error is a ClickHouse error response
            text = str(exc)
            match = re.search(r"Code: (\d+)", text)
            code = match.group(1) if match else "1000"
            return web.Response(status=500, text=text if text.startswith("Code:") else f"Code: {code}. DB::Exception: {text}",
                                headers={"X-ClickHouse-Exception-Code": code})

    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


if __name__ == "__main__":
    port, data_dir = int(sys.argv[1]), sys.argv[2]
    web.run_app(create_app(data_dir), host="127.0.0.1", port=port, print=None, access_log=None)
