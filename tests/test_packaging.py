"""The design card's folders install under one ``genops`` import package, in wheels and editable installs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    return next(out.glob("genops-*.whl"))


def test_wheel_maps_top_level_folders_under_genops(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    packages = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert packages == {"genops"}  # no top-level "proxy" or "storage" in site-packages
    for expected in ("genops/proxy/handler.py", "genops/storage/migrate.py", "genops/collectors/__init__.py",
                     "genops/runtime/server.py", "genops/api/admin.py",
                     "genops/dashboards/__init__.py", "genops/storage/migrations/0001_otel_traces.sql",
                     "genops/cli.py", "genops/fake_upstream/openai.py",
                     "genops/proxy/tokenizer/o200k_base.tiktoken.gz",  # offline token estimates
                     "genops/storage/otlp_span_row.proto"):  # the schema ClickHouse decodes OTLP spans with
        assert expected in names, expected
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "genops = genops.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_editable_install_resolves_to_the_repo_folders():
    import genops.proxy
    import genops.storage

    assert Path(genops.proxy.__file__).resolve().parent == ROOT / "proxy"
    assert Path(genops.storage.__file__).resolve().parent == ROOT / "storage"


def test_python_dash_m_genops_from_the_repo_root():
    result = subprocess.run([sys.executable, "-m", "genops", "version"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("genops ")


def test_installed_wheel_runs_migrations(wheel, tmp_path):
    """The wheel alone (no repo folders) carries the SQL files and runs."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    env = {"PYTHONPATH": str(target), "GENOPS_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}
    code = ("import genops.storage, sys; from genops.cli import main; "
            "print(genops.storage.__file__); sys.exit(main(['migrate']))")
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith(str(target))
    assert "applied 0001_otel_traces" in result.stdout
