"""Opening a ClickHouse client: embedded chDB or a server, one client API.

Both are ``clickhouse-connect`` clients, so the rest of GenOps never cares which it has.
"""

from __future__ import annotations

import re
import threading
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from genops.config import Settings


class StorageError(RuntimeError):
    """ClickHouse could not be opened or reached."""


class StorageUnavailable(StorageError):
    """The store is not reachable or not migrated yet (``genops serve`` runs on, spooling; see
    :mod:`genops.storage.store_boot`). Raised without touching the network."""


_embedded_lock = threading.Lock()


def open_client(settings: Settings, *, database: str | None = None,
                credentials: tuple[str, str] | None = None, **kwargs: Any) -> Client:
    """Open a client for ``settings`` (chDB when embedded, else the server URL).

    ``database`` sets the default database for unqualified table names; GenOps's own
    SQL always qualifies names, so migrations can run before the database exists.
    ``credentials`` (user, password) replace the server URL's own.
    """
    try:
        if settings.embedded:
            settings.private_data_dir()  # stored prompts: readable by this user only
            path = settings.chdb_path
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            with _embedded_lock:  # one engine per process: open it once at a time
                return clickhouse_connect.get_client(dsn=f"chdb://{path}", database=database or "default", **kwargs)
        parts = urlsplit(settings.clickhouse_url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        return clickhouse_connect.get_client(
            host=parts.hostname,
            port=parts.port or (8443 if parts.scheme == "https" else 8123),
            username=credentials[0] if credentials else unquote(parts.username or "default"),
            password=credentials[1] if credentials else unquote(parts.password or ""),
            secure=parts.scheme == "https",
            database=database or query.get("database") or "default",
            autogenerate_session_id=False,  # the client is shared by threads
            **kwargs,
        )
    except Exception as exc:  # noqa: BLE001 - every driver error becomes one clear line
        raise StorageError(f"cannot open {settings.storage_description()}: {_first_line(exc)}") from exc


READER_PASSWORD_FILE = "sql_password"


def reader_credentials(settings: Settings) -> tuple[str, str] | None:
    """The read-only user ``genops sql`` logs in as on a ClickHouse server, or None when none was set up.

    Its password is ``GENOPS_SQL_PASSWORD``, else the one ``genops migrate --create-reader``
    kept in the data directory (0600).
    """
    if settings.sql_password:
        return settings.sql_user, settings.sql_password
    try:
        password = (settings.data_path / READER_PASSWORD_FILE).read_text().strip()
    except OSError:
        return None
    return (settings.sql_user, password) if password else None


def open_query_client(settings: Settings) -> Client:
    """A client for one user query: its own chDB connection, or its own server session as the read-only user.

    Close it after the query: whatever the query did to its session ends with it.
    """
    if settings.embedded:
        return open_client(settings, database=settings.database)
    return open_client(settings, database=settings.database, credentials=reader_credentials(settings))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# Parts of a driver error that differ between two attempts failing alike (query ids, object addresses).
_NOISE = re.compile(r"query_id=[\w-]+|\b0x[0-9a-fA-F]+\b")
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def describe_error(exc: BaseException) -> str:
    """One short line saying why a store call failed, the same for two attempts failing alike
    (``Connection refused``, ``Name or service not known``...), for logs and ``/readyz``."""
    text = _first_line(exc)
    errno = _ERRNO.search(text)
    if errno:
        return errno.group(1).strip()
    return _NOISE.sub("...", text)[:300]
