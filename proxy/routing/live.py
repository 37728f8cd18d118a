"""The routes in force, and their reload: a changed config file is read again (a watch every
few seconds, or SIGHUP); a file with a problem is refused with one line naming it, and the
routes already in force stay."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from genops.config import ConfigError, config_file
from genops.routes import NO_ROUTES, RouteTable, load_routes

log = logging.getLogger("genops.proxy.routing")


class LiveRoutes:
    """Holds the current :class:`~genops.routes.RouteTable`. ``names`` is what the route stage tests
    each call's model against (one set lookup for a call that names no route)."""

    def __init__(self, table: RouteTable = NO_ROUTES, env: Mapping[str, str] | None = None) -> None:
        self.env = os.environ if env is None else env
        self.table = table
        self.names: frozenset[str] = frozenset(table.routes)
        self.last_error: str | None = None

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None) -> LiveRoutes:
        """The routes of the config file now; raises :class:`ConfigError` (at start a bad file stops the proxy)."""
        return cls(load_routes(env), env)

    def changed(self) -> bool:
        """Whether the config file is not the one last read (another mtime, appeared or gone)."""
        try:
            path = config_file(self.env)
        except ConfigError:
            return self.table.path is not None
        if path is None:
            return self.table.path is not None
        try:
            return path != self.table.path or path.stat().st_mtime_ns != self.table.mtime_ns
        except OSError:
            return True

    def reload(self, force: bool = False) -> bool:
        """Read the file again if it changed (always with ``force``). Returns whether new routes are in
        force; a file with a problem is logged (one line) and refused, the routes in force stay."""
        if not force and not self.changed():
            return False
        try:
            table = load_routes(self.env)
        except ConfigError as exc:
            message = str(exc)
            if message != self.last_error:  # once per distinct problem, not every poll
                log.error("config reload refused; the running routes stay", extra={"problem": message})
                self.last_error = message
            return False
        self.last_error = None
        before = set(self.table.routes)
        self.table = table
        self.names = frozenset(table.routes)
        log.info("routes reloaded", extra={"routes": sorted(table.routes), "added": sorted(self.names - before),
                                            "removed": sorted(before - self.names), "file": str(table.path)})
        return True
