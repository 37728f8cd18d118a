"""The read-only ClickHouse user for user SQL on a ClickHouse server (``genops migrate --create-reader``).

The SQL sandbox (:mod:`genops.storage.sql_guard`) guards every store; on a server the
grants are a second wall that does not depend on GenOps's parser at all. The statements
are in ``reader.sql`` beside this module; SECURITY.md shows them.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from genops.config import Settings
from genops.storage.client import READER_PASSWORD_FILE
from genops.storage.sql_text import quote

READER_SQL = Path(__file__).with_name("reader.sql")


def reader_role(user: str) -> str:
    """The role that holds the reader's grants."""
    return f"{user}_role"


def reader_statements(database: str, user: str, password: str) -> list[str]:
    """The DDL that creates (or updates) the read-only user ``user`` and its role, one statement each."""
    text = "\n".join(line for line in READER_SQL.read_text().splitlines() if not line.lstrip().startswith("--"))
    text = text.format(database=database, user=user, role=reader_role(user), password=quote(password))
    return [statement.strip() for statement in text.split(";") if statement.strip()]


def reader_password(settings: Settings) -> str:
    """``GENOPS_SQL_PASSWORD``, else the one kept in the data directory, else a new one kept there (0600)."""
    if settings.sql_password:
        return settings.sql_password
    path = settings.private_data_dir() / READER_PASSWORD_FILE
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    password = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    return password


def create_reader(client: Any, settings: Settings) -> str:
    """Create or update the read-only user on the server behind ``client``; returns its name."""
    password = reader_password(settings)
    for statement in reader_statements(settings.database, settings.sql_user, password):
        client.command(statement)
    return settings.sql_user
