"""Stored prompts are private: the data directory is 0700 and every file GenOps writes in it 0600."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import openai
import pytest
from conftest import FakeUpstream, start_proxy, upstream_env

pytestmark = pytest.mark.e2e

HARNESS_FILES = {"serve.log"}  # written by the test harness, not by GenOps


def loose_entries(root: Path) -> list[str]:
    """Entries under ``root`` that others than the owner may read, write or enter."""
    loose = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            if name in HARNESS_FILES or path.is_symlink():
                continue
            mode = stat.S_IMODE(path.lstat().st_mode)
            if mode & 0o077:
                loose.append(f"{oct(mode)} {path.relative_to(root)}")
    return loose


def test_serve_keeps_the_data_dir_private(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)  # an existing install under the usual umask
    proxy = start_proxy(data_dir, upstream_env(fake_upstream.url))
    try:
        client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-test")
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "a private prompt"}],
                                       extra_headers={"GenOps-Request-Id": "private-1"})
        proxy.span("private-1")
    finally:
        proxy.stop()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    files = [p for p in data_dir.rglob("*") if p.is_file() and p.name not in HARNESS_FILES]
    assert any("clickhouse" in p.parts for p in files)  # chDB's parts were checked
    assert any(p.name == "admin_token" for p in files)
    assert loose_entries(data_dir) == []


def test_migrate_and_sql_create_a_private_store(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENOPS_")}
    env["GENOPS_DATA_DIR"] = str(tmp_path / "fresh")
    subprocess.run([sys.executable, "-m", "genops", "migrate"], env=env, check=True, capture_output=True, timeout=120)
    assert stat.S_IMODE((tmp_path / "fresh").stat().st_mode) == 0o700
    assert loose_entries(tmp_path / "fresh") == []
