"""``genops dashboards push`` against a loopback stand-in for Grafana's HTTP API that records every request.

The stand-in keeps folders, datasources and dashboards the way Grafana's API returns them
(404 for missing objects, 401 for a bad token, ``secureJsonFields`` instead of secrets,
``meta.folderUid`` next to a dashboard), so idempotence is checked on real round trips.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import free_port

from genops.cli import main
from genops.dashboards.push import DATASOURCE_UID, load_dashboards

pytestmark = pytest.mark.unit

TOKEN = "glsa_test_token"
EDITOR_TOKEN = "glsa_editor_token"  # may write dashboards and folders, not datasources


@dataclass
class FakeGrafana:
    url: str
    prefix: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    plugin_installed: bool = True

    def writes(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] != "GET"]


def _handler(state: FakeGrafana) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            path = self.path
            state.requests.append({"method": method, "path": path, "body": body,
                                   "auth": self.headers.get("Authorization")})
            if not path.startswith(state.prefix + "/api/"):
                return self._send(404, {"message": "Not found"})
            path = path[len(state.prefix) + len("/api"):]
            if self.headers.get("Authorization") == f"Bearer {EDITOR_TOKEN}":
                if path.startswith("/datasources") and method != "GET":
                    return self._send(403, {"message": "You'll need additional permissions to perform this action."})
            elif self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._send(401, {"message": "invalid API key", "traceID": ""})
            parts = path.strip("/").split("/")
            if parts[0] == "folders":
                if method == "GET":
                    folder = state.folders.get(parts[1])
                    return self._send(200, folder) if folder else self._send(404, {"message": "folder not found"})
                if method == "POST":
                    assert set(body) <= {"title", "uid", "parentUid"}, body
                    folder = {"id": len(state.folders) + 1, "uid": body["uid"], "title": body["title"], "version": 1}
                    state.folders[body["uid"]] = folder
                    return self._send(200, folder)
                if method == "PUT":
                    folder = state.folders[parts[1]]
                    folder.update(title=body["title"], version=folder["version"] + 1)
                    return self._send(200, folder)
            if parts[0] == "plugins" and method == "GET":
                if state.plugin_installed and parts[1] == "grafana-clickhouse-datasource":
                    return self._send(200, {"id": parts[1], "enabled": True})
                return self._send(404, {"message": "Plugin not found"})
            if parts[0] == "datasources":
                if method == "GET" and parts[1] == "uid":
                    ds = state.datasources.get(parts[2])
                    return self._send(200, ds) if ds else self._send(404, {"message": "Data source not found"})
                if method in ("POST", "PUT"):
                    stored = {k: v for k, v in body.items() if k != "secureJsonData"}
                    stored["id"] = stored.get("id") or len(state.datasources) + 1
                    stored["secureJsonFields"] = {k: True for k in (body.get("secureJsonData") or {})}
                    state.datasources[body["uid"]] = stored
                    return self._send(200, {"datasource": stored, "id": stored["id"], "message": "Datasource added"})
            if parts[0] == "dashboards":
                if method == "GET" and parts[1] == "uid":
                    entry = state.dashboards.get(parts[2])
                    if not entry:
                        return self._send(404, {"message": "Dashboard not found"})
                    return self._send(200, {"dashboard": entry["dashboard"], "meta": {"folderUid": entry["folderUid"]}})
                if method == "POST" and parts[1] == "db":
                    dashboard = copy.deepcopy(body["dashboard"])
                    uid = dashboard["uid"]
                    previous = state.dashboards.get(uid)
                    if previous and not body.get("overwrite"):
                        return self._send(412, {"message": "The dashboard has been changed by someone else"})
                    version = previous["dashboard"]["version"] + 1 if previous else 1
                    dashboard.update(id=previous["dashboard"]["id"] if previous else len(state.dashboards) + 1,
                                     version=version)
                    state.dashboards[uid] = {"dashboard": dashboard, "folderUid": body.get("folderUid")}
                    return self._send(200, {"id": dashboard["id"], "uid": uid, "status": "success", "version": version,
                                            "url": f"/d/{uid}"})
            return self._send(404, {"message": "Not found"})

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_PUT(self) -> None:
            self._handle("PUT")

    return Handler


@pytest.fixture()
def grafana(request: pytest.FixtureRequest) -> Iterator[FakeGrafana]:
    prefix = getattr(request, "param", "")
    port = free_port()
    state = FakeGrafana(f"http://127.0.0.1:{port}{prefix}", prefix)
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(state))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("GENOPS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no genops.toml from the working directory


CH_URL = "http://genops:s3cret@clickhouse:8123/"


def push(grafana: FakeGrafana, *extra: str) -> int:
    return main(["dashboards", "push", "--grafana-url", grafana.url, "--token", TOKEN, "--clickhouse-url", CH_URL, *extra])


def test_first_push_creates_folder_datasource_and_every_dashboard(grafana: FakeGrafana,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert push(grafana) == 0
    shipped = load_dashboards()
    assert len(shipped) == 7
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in grafana.requests)
    writes = grafana.writes()
    assert [(w["method"], w["path"]) for w in writes] == [
        ("POST", "/api/folders"), ("POST", "/api/datasources"), *[("POST", "/api/dashboards/db")] * 7]
    assert writes[0]["body"] == {"title": "GenOps", "uid": "genops"}
    ds = writes[1]["body"]
    assert ds["uid"] == DATASOURCE_UID and ds["type"] == "grafana-clickhouse-datasource" and ds["access"] == "proxy"
    assert ds["jsonData"]["host"] == "clickhouse" and ds["jsonData"]["port"] == 8123
    assert ds["jsonData"]["protocol"] == "http" and ds["jsonData"]["username"] == "genops"
    assert ds["jsonData"]["defaultDatabase"] == "genops"
    assert ds["jsonData"]["traces"]["defaultTable"] == "otel_traces" and ds["jsonData"]["traces"]["otelEnabled"] is True
    assert ds["secureJsonData"] == {"password": "s3cret"}
    assert "s3cret" not in json.dumps(ds["jsonData"])
    for write, model in zip(writes[2:], shipped, strict=True):
        body = write["body"]
        assert body["folderUid"] == "genops" and body["overwrite"] is True and body["dashboard"]["id"] is None
        assert body["dashboard"]["uid"] == model["uid"] and body["dashboard"]["panels"] == model["panels"]
    out = capsys.readouterr().out
    assert "9 created, 0 updated, 0 unchanged" in out


def test_second_push_changes_nothing_and_a_ui_edit_is_repaired(grafana: FakeGrafana, capsys: pytest.CaptureFixture[str]) -> None:
    assert push(grafana) == 0
    stored = copy.deepcopy(grafana.dashboards)
    grafana.requests.clear()
    capsys.readouterr()
    assert push(grafana) == 0
    assert grafana.writes() == []
    assert grafana.dashboards == stored
    assert "0 created, 0 updated, 9 unchanged" in capsys.readouterr().out
    # Fields Grafana adds when it stores a dashboard do not count as a difference...
    for entry in grafana.dashboards.values():
        entry["dashboard"]["weekStart"] = ""
        entry["dashboard"]["panels"][0]["pluginVersion"] = "12.3.1"
    grafana.requests.clear()
    assert push(grafana) == 0 and grafana.writes() == []
    # ...but a panel removed in the UI does.
    grafana.dashboards["genops-tokens"]["dashboard"]["panels"].pop()
    grafana.requests.clear()
    assert push(grafana) == 0
    assert [w["body"]["dashboard"]["uid"] for w in grafana.writes()] == ["genops-tokens"]
    # Someone edits a dashboard in the UI: the next push puts it back, and only it.
    grafana.dashboards["genops-cost"]["dashboard"]["title"] = "edited"
    grafana.requests.clear()
    assert push(grafana) == 0
    assert [(w["method"], w["path"], w["body"]["dashboard"]["uid"]) for w in grafana.writes()] == [
        ("POST", "/api/dashboards/db", "genops-cost")]
    assert grafana.dashboards["genops-cost"]["dashboard"]["title"] == "GenOps / Cost"


def test_a_changed_datasource_or_folder_title_is_updated_in_place(grafana: FakeGrafana) -> None:
    assert push(grafana) == 0
    grafana.requests.clear()
    assert main(["dashboards", "push", "--grafana-url", grafana.url, "--token", TOKEN,
                 "--clickhouse-url", "https://genops:s3cret@ch.example.com/", "--database", "llm"]) == 0
    writes = grafana.writes()
    assert [(w["method"], w["path"]) for w in writes] == [("PUT", f"/api/datasources/uid/{DATASOURCE_UID}")]
    body = writes[0]["body"]
    assert body["jsonData"]["secure"] is True and body["jsonData"]["port"] == 8443
    assert body["jsonData"]["defaultDatabase"] == "llm" and body["id"] == grafana.datasources[DATASOURCE_UID]["id"]


def test_bad_token_is_one_clear_line(grafana: FakeGrafana, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["dashboards", "push", "--grafana-url", grafana.url, "--token", "wrong", "--no-datasource"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "rejected the token" in err and "Traceback" not in err
    assert grafana.writes() == []


def test_unreachable_grafana_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # nothing listens there
    code = main(["dashboards", "push", "--grafana-url", f"http://127.0.0.1:{port}", "--token", TOKEN, "--no-datasource",
                 "--timeout", "5"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().count("\n") == 0 and f"cannot reach Grafana at http://127.0.0.1:{port}/" in err
    assert "Traceback" not in err


def test_missing_token_or_url_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dashboards", "push", "--grafana-url", "http://127.0.0.1:1"]) == 2
    assert "--token is required" in capsys.readouterr().err
    assert main(["dashboards", "push", "--token", TOKEN]) == 2
    assert "--grafana-url is required" in capsys.readouterr().err


@pytest.mark.parametrize("grafana", ["/grafana"], indirect=True)
def test_grafana_under_a_sub_path_and_without_the_plugin(grafana: FakeGrafana, capsys: pytest.CaptureFixture[str]) -> None:
    grafana.plugin_installed = False
    assert main(["dashboards", "push", "--grafana-url", grafana.url, "--token", TOKEN, "--folder", "LLM Ops",
                 "--no-datasource"]) == 0
    assert all(r["path"].startswith("/grafana/api/") for r in grafana.requests)
    assert grafana.folders["llm-ops"]["title"] == "LLM Ops"
    assert {e["folderUid"] for e in grafana.dashboards.values()} == {"llm-ops"}
    assert not grafana.datasources
    assert "plugin is not installed" in capsys.readouterr().err


def test_export_writes_the_shipped_files(tmp_path: Any) -> None:
    assert main(["dashboards", "export", str(tmp_path / "out")]) == 0
    written = {p.name: json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.json")}
    assert sorted(d["uid"] for d in written.values()) == [d["uid"] for d in load_dashboards()]


def test_an_editor_token_is_told_what_it_may_not_do(grafana: FakeGrafana, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["dashboards", "push", "--grafana-url", grafana.url, "--token", EDITOR_TOKEN, "--clickhouse-url", CH_URL]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refused writing the datasource 'GenOps ClickHouse' (403 Forbidden)" in err
    assert main([*args, "--no-datasource"]) == 0
    assert len(grafana.dashboards) == 7
