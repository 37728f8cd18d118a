"""Lint and types are part of the suite (issue #20): ``ruff check`` and mypy pass over the code,
with the configuration in pyproject.toml, and each check fails on an error it is meant to find."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import package_tree  # noqa: E402 - tools/ is not a package
import typecheck  # noqa: E402 - tools/ is not a package

#: Every folder with Python code: the package's folders, the tests, the benchmarks and the tools.
LINT_PATHS = ("proxy", "storage", "collectors", "api", "runtime", "src", "dashboards", "tests", "bench", "tools")


def ruff(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``ruff check`` from the repository root, so ``[tool.ruff]`` in pyproject.toml applies."""
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *args], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for the package trees and one mypy cache the tests share."""
    return tmp_path_factory.mktemp("typecheck")


def test_ruff_passes() -> None:
    result = ruff(*LINT_PATHS)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("source, rule", [
    ("import os\n", "F401"),  # pyflakes: unused import
    ("from typing import List\n\nx: List[int] = []\n", "UP006"),  # pyupgrade
    ("import sys\nimport os\n\nprint(os, sys)\n", "I001"),  # isort
    ("def f(x=[]):\n    return x\n", "B006"),  # bugbear
    (f"x = {'1' * 140}\n", "E501"),  # the 130-column limit
], ids=["F401", "UP006", "I001", "B006", "E501"])
def test_ruff_finds_each_selected_kind_of_error(source: str, rule: str) -> None:
    """The configuration is live: a file in the package (not a pending path) with one error fails the check."""
    result = ruff("--stdin-filename", "collectors/zz_lint_probe.py", "-", stdin=source)
    assert result.returncode == 1 and rule in result.stdout, result.stdout + result.stderr


def test_mypy_passes(scratch: Path) -> None:
    result = typecheck.run(scratch)
    assert result.returncode == 0, typecheck.source_paths(result.stdout, scratch / "tree") + result.stderr


def test_mypy_sees_every_package_and_fails_on_a_type_error(scratch: Path) -> None:
    """A type error in a mapped folder (collectors/ is genops.collectors) fails the check: mypy sees
    the package as installed, not only src/genops."""
    tree = package_tree.build(scratch / "probe-tree")
    (tree / "genops" / "collectors" / "zz_type_probe.py").write_text(
        "from genops.config import Settings\n\n\ndef port(settings: Settings) -> str:\n    return settings.port\n")
    result = typecheck.mypy(tree, scratch / "mypy-cache")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "zz_type_probe.py:5: error: Incompatible return value type" in result.stdout, result.stdout
