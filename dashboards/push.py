"""Push the dashboards, their folder and the ClickHouse datasource to a running Grafana.

Uses Grafana's HTTP API through ``grafana-client``. Idempotent: each object is read
first and written only when it is missing or differs, so a second run changes nothing.
Every failure becomes one :class:`PushError` line (unreachable Grafana, bad token, ...).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit

from genops.dashboards.build import PLUGIN_ID, PLUGIN_VERSION

DATASOURCE_UID = "genops-clickhouse"
DATASOURCE_NAME = "GenOps ClickHouse"
DEFAULT_FOLDER = "GenOps"
PUSH_MESSAGE = "genops dashboards push"


class PushError(RuntimeError):
    """The push could not be done; the message is one line for the user."""


@dataclass
class PushReport:
    """What the push did, object by object (``kind:name``)."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)


def load_dashboards() -> list[dict[str, Any]]:
    """The dashboard models shipped with the package (package data, so wheels work too)."""
    folder = resources.files("genops.dashboards").joinpath("grafana")
    models = [json.loads(entry.read_text()) for entry in folder.iterdir() if entry.name.endswith(".json")]
    if not models:
        raise PushError("no dashboard files found in the genops.dashboards package")
    return sorted(models, key=lambda m: m["uid"])


def datasource_model(clickhouse_url: str, database: str) -> dict[str, Any]:
    """The Grafana datasource for a ClickHouse server URL (``http(s)://user:password@host:port/``).

    Its OTel trace settings point at ``otel_traces`` so Grafana's trace view works; the
    provisioning file in ``dashboards/provisioning/`` describes the same datasource.
    """
    parts = urlsplit(clickhouse_url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise PushError(f"the ClickHouse URL must be http(s)://user:password@host:8123/, got scheme {parts.scheme!r}")
    secure = parts.scheme == "https"
    json_data: dict[str, Any] = {
        "version": PLUGIN_VERSION,
        "host": parts.hostname,
        "port": parts.port or (8443 if secure else 8123),
        "protocol": "http",
        "secure": secure,
        "username": unquote(parts.username or "default"),
        "defaultDatabase": database,
        "dialTimeout": "10",
        "queryTimeout": "60",
        "traces": {
            "defaultDatabase": database,
            "defaultTable": "otel_traces",
            "otelEnabled": True,
            "otelVersion": "latest",
            "durationUnit": "nanoseconds",
        },
    }
    if parts.path and parts.path != "/":
        json_data["path"] = parts.path
    model: dict[str, Any] = {
        "uid": DATASOURCE_UID,
        "name": DATASOURCE_NAME,
        "type": PLUGIN_ID,
        "access": "proxy",
        "jsonData": json_data,
    }
    if parts.password:
        model["secureJsonData"] = {"password": unquote(parts.password)}
    return model


def folder_uid(title: str) -> str:
    """A stable folder uid from its title (``GenOps`` -> ``genops``)."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return (slug or "genops")[:40]


def _comparable(dashboard: dict[str, Any]) -> dict[str, Any]:
    """A dashboard without the fields Grafana assigns on save."""
    clean = copy.deepcopy(dashboard)
    for key in ("id", "version"):
        clean.pop(key, None)
    return clean


def _covers(remote: Any, wanted: Any) -> bool:
    """True when ``remote`` holds everything ``wanted`` says; fields Grafana adds on save are ignored."""
    if isinstance(wanted, dict):
        return isinstance(remote, dict) and all(k in remote and _covers(remote[k], v) for k, v in wanted.items())
    if isinstance(wanted, list):
        return isinstance(remote, list) and len(remote) == len(wanted) and all(map(_covers, remote, wanted))
    return remote == wanted


def _datasource_differs(remote: dict[str, Any], wanted: dict[str, Any]) -> bool:
    for key in ("name", "type", "access", "jsonData"):
        if not _covers(remote.get(key), wanted.get(key)):
            return True
    if "secureJsonData" in wanted and not (remote.get("secureJsonFields") or {}).get("password"):
        return True
    return False


class Pusher:
    """One push to one Grafana."""

    def __init__(self, grafana_url: str, token: str, *, timeout: float = 15.0) -> None:
        from grafana_client import GrafanaApi

        url = grafana_url.strip()
        if urlsplit(url).scheme not in {"http", "https"} or not urlsplit(url).hostname:
            raise PushError(f"--grafana-url must be an http(s):// URL, got {grafana_url!r}")
        # grafana-client appends "api" to the path: keep a trailing slash for sub-path installs.
        self.url = url.rstrip("/") + "/"
        self.api = GrafanaApi.from_url(self.url, credential=token, timeout=timeout)
        self.timeout = timeout
        self.step = "connecting"  # what was being done, for error messages

    def push(self, dashboards: list[dict[str, Any]], *, folder: str = DEFAULT_FOLDER,
             datasource: dict[str, Any] | None = None, force: bool = False) -> PushReport:
        """Create or update the folder, the datasource (if given) and every dashboard."""
        report = PushReport()
        try:
            uid = self._folder(folder, report)
            self._check_plugin(report)
            if datasource is not None:
                self._datasource(datasource, report, force)
            for dashboard in dashboards:
                self._dashboard(dashboard, uid, report, force)
        except PushError:
            raise
        except Exception as exc:  # every client/transport error becomes one line
            raise PushError(self._describe(exc)) from exc
        return report

    # -- objects -------------------------------------------------------------------

    def _folder(self, title: str, report: PushReport) -> str:
        from grafana_client.client import GrafanaClientError

        uid = folder_uid(title)
        self.step = f"writing the folder {title!r}"
        try:
            existing = self.api.folder.get_folder(uid)
        except GrafanaClientError as exc:
            if exc.status_code != 404:
                raise
            self.api.folder.create_folder(title, uid=uid)
            report.created.append(f"folder:{title}")
            return uid
        if existing.get("title") != title:
            self.api.folder.update_folder(uid, title=title, version=existing.get("version"), overwrite=True)
            report.updated.append(f"folder:{title}")
        else:
            report.unchanged.append(f"folder:{title}")
        return uid

    def _check_plugin(self, report: PushReport) -> None:
        from grafana_client.client import GrafanaClientError

        try:
            self.api.client.GET(f"/plugins/{PLUGIN_ID}/settings")
        except GrafanaClientError as exc:
            if exc.status_code != 404:
                raise
            report.warnings.append(
                f"the {PLUGIN_ID} plugin is not installed in this Grafana; the dashboards need it "
                f"(grafana cli plugins install {PLUGIN_ID})"
            )

    def _datasource(self, wanted: dict[str, Any], report: PushReport, force: bool) -> None:
        from grafana_client.client import GrafanaClientError

        name = f"datasource:{wanted['name']}"
        self.step = f"writing the datasource {wanted['name']!r}"
        try:
            remote = self.api.datasource.get_datasource_by_uid(wanted["uid"])
        except GrafanaClientError as exc:
            if exc.status_code != 404:
                raise
            self.api.datasource.create_datasource(wanted)
            report.created.append(name)
            return
        if force or _datasource_differs(remote, wanted):
            self.api.datasource.update_datasource_by_uid(wanted["uid"], {**wanted, "id": remote.get("id")})
            report.updated.append(name)
        else:
            report.unchanged.append(name)

    def _dashboard(self, dashboard: dict[str, Any], folder: str, report: PushReport, force: bool) -> None:
        from grafana_client.client import GrafanaClientError

        name = f"dashboard:{dashboard['title']}"
        self.step = f"writing the dashboard {dashboard['title']!r}"
        try:
            remote = self.api.dashboard.get_dashboard(dashboard["uid"])
        except GrafanaClientError as exc:
            if exc.status_code != 404:
                raise
            remote = None
        if remote is not None and not force:
            same = _covers(remote.get("dashboard") or {}, _comparable(dashboard))
            if same and (remote.get("meta") or {}).get("folderUid") == folder:
                report.unchanged.append(name)
                return
        body = {"dashboard": {**_comparable(dashboard), "id": None}, "folderUid": folder, "overwrite": True,
                "message": PUSH_MESSAGE}
        self.api.dashboard.update_dashboard(body)
        (report.updated if remote is not None else report.created).append(name)

    # -- errors ----------------------------------------------------------------------

    def _describe(self, exc: Exception) -> str:
        from grafana_client.client import (
            GrafanaClientError,
            GrafanaException,
            GrafanaServerError,
            GrafanaTimeoutError,
            GrafanaUnauthorizedError,
        )

        where = f"Grafana at {self.url}"
        if isinstance(exc, GrafanaUnauthorizedError):
            return f"{where} rejected the token (401 Unauthorized): pass a valid service-account token with --token"
        if isinstance(exc, GrafanaTimeoutError):
            return f"{where} did not answer within {self.timeout:g} s"
        if isinstance(exc, GrafanaClientError) and exc.status_code == 403:
            return (f"{where} refused {self.step} (403 Forbidden): the token's role is too low "
                    "(the datasource needs Admin, folders and dashboards Editor; --no-datasource skips the datasource)")
        if isinstance(exc, (GrafanaClientError, GrafanaServerError)):
            return f"{where} answered with an error: {_first_line(str(exc))}"
        if isinstance(exc, GrafanaException):
            return f"cannot reach {where}: {_reason(exc)}"
        if isinstance(exc, (ValueError, json.JSONDecodeError)):
            return f"{where} did not answer like Grafana (is this the Grafana URL?): {_first_line(str(exc))}"
        return f"cannot reach {where}: {_reason(exc)}"


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    line = lines[0] if lines else ""
    return line[:300]


def _reason(exc: BaseException) -> str:
    """The OS-level reason of a transport error (``Connection refused``), else its first line."""
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if match:
        return match.group(1).strip()
    match = re.search(r"Failed to resolve '([^']+)'", text)
    if match:
        return f"cannot resolve the host name {match.group(1)}"
    return _first_line(text) or type(exc).__name__
