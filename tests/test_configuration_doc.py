"""docs/configuration.md is rendered from the settings' own metadata and cannot go stale;
``genops config`` shows the settings in effect without their secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from genops.cli import build_parser
from genops.commands.config import REGENERATE, render_markdown
from genops.config import FIELDS, env_name

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "configuration.md"


def genops(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GENOPS_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "genops", *args], capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=60)


def test_committed_reference_is_the_rendered_one():
    rendered = render_markdown(build_parser())
    assert DOC.read_text() == rendered, f"docs/configuration.md is stale: regenerate it with `{REGENERATE}`"


def test_every_setting_is_documented_with_its_default_and_help():
    rendered = render_markdown(build_parser())
    rows = {line.split("|")[1].strip(" `"): line for line in rendered.splitlines() if line.startswith("| `GENOPS_")}
    assert set(rows) == {env_name(name) for name in FIELDS}
    assert "`8080`" in rows["GENOPS_PORT"] and "`--port`" in rows["GENOPS_PORT"]
    assert "`33554432` (32 MiB)" in rows["GENOPS_MAX_BODY_BYTES"]
    assert "annotate\\|redact" in rows["GENOPS_SAFETY_POLICY"]  # a | in the help does not split the cell
    assert "&lt;data dir&gt;" in rows["GENOPS_OTLP_TRUSTED_TOKEN"]  # not an HTML tag
    assert "Precedence: flags > environment > file > defaults" in rendered


def test_the_command_prints_it(tmp_path):
    result = genops("config", "--markdown", cwd=tmp_path, env={"GENOPS_PORT": "9999"})  # the environment is no input
    assert result.returncode == 0, result.stderr
    assert result.stdout == render_markdown(build_parser())


def test_settings_in_effect_hide_secrets(tmp_path):
    result = genops("config", cwd=tmp_path, env={
        "GENOPS_UPSTREAM_BASE_URL": "http://127.0.0.1:9100",
        "GENOPS_ADMIN_TOKEN": "admin-secret-123",
        "GENOPS_CLICKHOUSE_URL": "http://genops:ch-password@clickhouse:8123/",
        "GENOPS_ALERT_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B000/webhook-secret",
    })
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for secret in ("admin-secret-123", "ch-password", "webhook-secret"):
        assert secret not in result.stdout
    assert "GENOPS_ADMIN_TOKEN=<set, hidden>  # changed from the default" in lines
    assert "GENOPS_CLICKHOUSE_URL=http://genops:***@clickhouse:8123/  # changed from the default" in lines
    assert "GENOPS_ALERT_WEBHOOK_URL=https://hooks.slack.com/<hidden>  # changed from the default" in lines
    assert "GENOPS_AZURE_BASE_URL=http://127.0.0.1:9100/azure/{resource}  # changed from the default" in lines
    assert "GENOPS_PORT=8080" in lines and "GENOPS_SQL_TIMEOUT_S=30" in lines

    bad = genops("config", cwd=tmp_path, env={"GENOPS_UPSTREAM_BASE_URL": "localhost:9100"})
    assert bad.returncode == 2 and bad.stderr.startswith("genops: configuration error: GENOPS_UPSTREAM_BASE_URL")
