"""The collector's memory of the idempotent OTLP requests it has taken (see :mod:`genops.collectors.idempotent`).

A request's token (derived from the sender's ``GenOps-Dedup-Token``) is *remembered* once the
request's spans are on disk, and *persisted* (appended to a file) before they are inserted.
A retry of a remembered request is answered 200 and not stored again.

The file keeps the last :data:`WINDOW` tokens (compacted when it holds twice that many): a
request retried after more than that many newer requests reached the collector is stored
again. At 100 proxies sending a batch a second that is ~17 minutes, far beyond the retry of
a lost answer (seconds); a proxy's own restart replays its spool within that time too.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterable
from pathlib import Path

#: Requests remembered (~8 MB of memory, ~3.3 MB on disk).
WINDOW = 100_000
FILE_NAME = "otlp-batch-tokens"


class TokenLog:
    """A bounded, durable set of request tokens (32 hex characters each). Thread-safe."""

    def __init__(self, directory: Path, *, window: int = WINDOW, fsync: bool = False) -> None:
        self.path = Path(directory) / FILE_NAME
        self.window = window
        self.fsync = fsync
        self._lock = threading.Lock()
        self._order: deque[str] = deque()
        self._known: set[str] = set()
        self._lines = 0
        try:
            lines = self.path.read_text().split()
        except FileNotFoundError:
            lines = []
        for token in lines[-window:]:
            self._add(token)
        self._lines = len(lines)
        self._file = open(self.path, "a")  # held for the log's life

    def __contains__(self, token: str) -> bool:
        return token in self._known

    def __len__(self) -> int:
        return len(self._known)

    def _add(self, token: str) -> bool:
        if token in self._known:
            return False
        self._known.add(token)
        self._order.append(token)
        while len(self._order) > self.window:
            self._known.discard(self._order.popleft())
        return True

    def remember(self, tokens: Iterable[str]) -> None:
        """Know ``tokens`` from now on (their spans are on disk; they are persisted before insert)."""
        with self._lock:
            for token in tokens:
                self._add(token)

    def persist(self, tokens: Iterable[str]) -> None:
        """Write ``tokens`` to the file (before the spans they name are inserted)."""
        tokens = list(tokens)
        if not tokens:
            return
        with self._lock:
            for token in tokens:
                self._add(token)
            self._file.write("".join(f"{token}\n" for token in tokens))
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())
            self._lines += len(tokens)
            if self._lines > 2 * self.window:
                self._compact()

    def _compact(self) -> None:
        """Rewrite the file with the remembered tokens only (atomic rename)."""
        temporary = self.path.with_suffix(".tmp")
        with open(temporary, "w") as handle:
            handle.write("".join(f"{token}\n" for token in self._order))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        self._file.close()
        self._file = open(self.path, "a")
        self._lines = len(self._order)

    def close(self) -> None:
        with self._lock:
            self._file.close()
