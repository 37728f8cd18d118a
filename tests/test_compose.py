"""docker-compose.yml, the Dockerfile, Grafana provisioning and the wheel's package data, checked statically.

No Docker engine runs here: the stack is checked for what makes ``docker compose up``
work (pinned images, health-gated start order, mounts that exist, names and ports that
agree with the provisioning files, no committed secrets) and the wheel is built to prove
the dashboards and migrations ship inside it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from genops.cli import COMMAND_MODULES
from genops.dashboards import build
from genops.dashboards.push import DATASOURCE_UID, datasource_model, folder_uid

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PROVISIONING = ROOT / "dashboards" / "provisioning"
DATASOURCES = yaml.safe_load((PROVISIONING / "datasources" / "genops-clickhouse.yaml").read_text())
PROVIDERS = yaml.safe_load((PROVISIONING / "dashboards" / "genops.yaml").read_text())
PINNED = re.compile(r"^[\w./-]+:(v?\d+(\.\d+){1,3})([\w.-]*)$")


def _env(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment") or {}
    assert isinstance(env, dict), f"{service}: use the mapping form of environment"
    return {k: str(v) for k, v in env.items()}


def _mounts(service: str) -> list[tuple[str, str]]:
    out = []
    for volume in SERVICES[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        out.append((source, target))
    return out


def test_expected_services() -> None:
    assert set(SERVICES) == {"clickhouse", "migrate", "proxy", "collector", "jobs", "grafana"}


def test_every_image_is_pinned() -> None:
    for name, service in SERVICES.items():
        if "build" in service:  # built from this repository's Dockerfile, never pulled
            assert service.get("pull_policy") == "build", name
            assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
            continue
        image = service["image"]
        assert PINNED.match(image) and not image.endswith(":latest"), f"{name}: {image} is not pinned"
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("FROM "):
            assert PINNED.match(line.split()[1]), line


def test_only_the_proxy_and_grafana_publish_ports() -> None:
    published = {name: service["ports"] for name, service in SERVICES.items() if service.get("ports")}
    assert set(published) == {"proxy", "grafana"}
    assert [p.rsplit(":", 1)[1] for p in published["proxy"]] == [_env("proxy")["GENOPS_PORT"]]
    assert [p.rsplit(":", 1)[1] for p in published["grafana"]] == ["3000"]


def test_health_gated_start_order() -> None:
    for name, service in SERVICES.items():
        if name != "migrate":
            assert "healthcheck" in service and service["healthcheck"]["test"], f"{name} has no healthcheck"
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in SERVICES
            expected = "service_completed_successfully" if dependency == "migrate" else "service_healthy"
            assert rule == {"condition": expected}, (name, dependency, rule)
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[dependency]
    for name in ("proxy", "collector", "jobs"):
        assert set(SERVICES[name]["depends_on"]) == {"clickhouse", "migrate"}
    assert SERVICES["migrate"]["restart"] == "no"


def test_volumes_are_named_or_exist_in_the_repo() -> None:
    declared = set(COMPOSE["volumes"])
    used = set()
    for name in SERVICES:
        for source, _ in _mounts(name):
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
    assert used == declared


def test_genops_services_run_registered_commands() -> None:
    registered = {module.rsplit(".", 1)[1].replace("_", "-") for module in COMMAND_MODULES}
    pending = []
    for service in SERVICES.values():
        if "build" not in service:
            continue
        command = service["command"][0]
        if command not in registered:
            pending.append(command)
    assert {"serve", "migrate"} & set(pending) == set()
    if pending:  # commands built by the collector / anomaly-jobs work, not on this branch yet
        assert set(pending) <= {"collector", "jobs"}, pending
        pytest.skip(f"genops {', '.join(sorted(set(pending)))} not registered on this branch yet")


def test_secrets_come_from_the_env_file_never_the_repo() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    assert {"CLICKHOUSE_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "GENOPS_ADMIN_TOKEN"} <= required
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^(\w+)=", example, re.M))
    assert required <= documented
    for service in ("clickhouse", "grafana"):
        assert _env(service)["CLICKHOUSE_PASSWORD"].startswith("${CLICKHOUSE_PASSWORD")
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()
    tracked = subprocess.run(["git", "ls-files", ".env"], cwd=ROOT, capture_output=True, text=True).stdout
    assert tracked.strip() == ""


def test_storage_url_names_the_clickhouse_service_and_database() -> None:
    for name in ("migrate", "proxy", "collector", "jobs"):
        env = _env(name)
        url = urlsplit(env["GENOPS_CLICKHOUSE_URL"].replace("${CLICKHOUSE_USER:-genops}", "genops")
                       .replace("${CLICKHOUSE_PASSWORD:?set CLICKHOUSE_PASSWORD in .env}", "pw"))
        assert (url.scheme, url.hostname, url.port) == ("http", "clickhouse", 8123)
        assert env["GENOPS_DATABASE"] == _env("clickhouse")["CLICKHOUSE_DB"] == "genops"


def test_datasource_provisioning_matches_the_stack_and_push() -> None:
    (datasource,) = DATASOURCES["datasources"]
    assert datasource["type"] == build.PLUGIN_ID and datasource["uid"] == DATASOURCE_UID
    data = datasource["jsonData"]
    assert data["host"] in SERVICES and data["host"] == "clickhouse" and data["port"] == 8123
    assert data["defaultDatabase"] == _env("clickhouse")["CLICKHOUSE_DB"]
    assert data["traces"]["defaultTable"] == "otel_traces" and data["traces"]["otelEnabled"] is True
    # Grafana fills ${...} from its own environment: compose must pass every one.
    grafana_env = _env("grafana")
    for variable in re.findall(r"\$\{(\w+)\}", (PROVISIONING / "datasources" / "genops-clickhouse.yaml").read_text()):
        assert variable in grafana_env, variable
    # `genops dashboards push` creates the same datasource for the same server.
    pushed = datasource_model("http://genops:pw@clickhouse:8123/", "genops")
    assert {**data, "username": "genops"} == pushed["jsonData"]
    assert datasource["name"] == pushed["name"] and datasource["access"] == pushed["access"]
    assert set(datasource["secureJsonData"]) == set(pushed["secureJsonData"]) == {"password"}


def test_dashboard_provider_points_at_the_mounted_dashboards() -> None:
    (provider,) = PROVIDERS["providers"]
    mounts = dict((target, source) for source, target in _mounts("grafana"))
    assert mounts["/etc/grafana/provisioning"] == "./dashboards/provisioning"
    assert mounts[provider["options"]["path"]] == "./dashboards/grafana"
    assert provider["folderUid"] == folder_uid(provider["folder"])
    home = _env("grafana")["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"] + "/")
    assert (ROOT / "dashboards" / "grafana" / Path(home).name).is_file()
    assert _env("grafana")["GF_PLUGINS_PREINSTALL_SYNC"] == f"{build.PLUGIN_ID}@{build.PLUGIN_VERSION}"


def test_dockerfile_copies_what_the_wheel_needs() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), line
    assert 'ENTRYPOINT ["genops"]' in text


@pytest.mark.slow
def test_wheel_ships_dashboards_and_migrations(tmp_path: Path) -> None:
    """Build the wheel from exactly what the Dockerfile copies, then look inside."""
    context = tmp_path / "context"
    context.mkdir()
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                src = ROOT / source
                if src.is_dir():
                    shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
                else:
                    shutil.copy(src, context / source)
    out = tmp_path / "wheel"
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(context)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = out.glob("genops-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.rsplit("/", 1)[1] for n in names if n.startswith("genops/dashboards/grafana/") and n.endswith(".json")}
    assert shipped == {f"{name}.json" for name in build.DASHBOARDS}
    migrations = {n.rsplit("/", 1)[1] for n in names if n.startswith("genops/storage/migrations/")}
    assert migrations == {p.name for p in (ROOT / "storage" / "migrations").glob("*.sql")}


def test_jobs_healthcheck_reads_the_watermark_the_jobs_write(chdb_dir: Path) -> None:
    """The jobs' healthcheck runs `genops sql`: check its SQL on the real schema and its CSV output."""
    import datetime as dt
    import shlex
    import uuid

    from conftest import open_chdb

    from genops.collectors.anomaly import store
    from genops.commands.sql import render
    from genops.storage.migrate import migrate
    from genops.storage.sql import run_readonly

    command = SERVICES["jobs"]["healthcheck"]["test"][1]
    words = shlex.split(command.split("|")[0])
    assert words[:4] == ["genops", "sql", "--format", "csv"]
    assert command.split("|")[1].split() == ["grep", "-qx", "1"]
    database = "health_" + uuid.uuid4().hex[:8]
    migrate(open_chdb(chdb_dir), database)
    client = open_chdb(chdb_dir, database)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)  # the jobs keep naive UTC
    lines = lambda: render(run_readonly(client, words[4], database=database), "csv").splitlines()  # noqa: E731
    assert "1" not in lines()  # no pass yet: unhealthy
    store.set_watermark(client, database, now - dt.timedelta(hours=1))
    assert "1" not in lines()  # stale
    store.set_watermark(client, database, now - dt.timedelta(minutes=3))
    assert lines() == ["fresh", "1"]
    client.command(f"DROP DATABASE {database}")
