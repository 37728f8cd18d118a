"""Packages import one way (docs/layout.md, "Layers"): import-linter's contracts in pyproject.toml hold,
an import against them fails the check, and no function-level import hides one."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import package_tree  # noqa: E402 - tools/ is not a package

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` over the package as installed (the tree of tools/package_tree.py)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return package_tree.build(tmp_path_factory.mktemp("package-tree"))


def test_every_module_is_in_the_tree(tree: Path) -> None:
    """The contracts see every package (a missing folder would make them pass vacuously)."""
    for package in ("proxy", "storage", "collectors", "api", "runtime", "dashboards", "commands"):
        assert (tree / "genops" / package / "__init__.py").is_file(), package
    assert (tree / "genops" / "proxy" / "handler.py").resolve() == ROOT / "proxy" / "handler.py"


def test_the_import_contracts_hold(tree: Path) -> None:
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, statement", [
    ("storage", "import genops.proxy.handler"),  # storage is below proxy
    ("proxy", "from genops.collectors import receiver"),  # proxy and collectors are independent
    ("proxy", "import genops.api.metrics"),
    ("api", "import genops.runtime.server"),
    ("storage", "def later():\n    import genops.runtime.server  # a lazy import is still an import\n"),
])
def test_an_import_against_the_layers_fails_the_check(tmp_path: Path, module: str, statement: str) -> None:
    tree = package_tree.build(tmp_path / "tree")
    (tree / "genops" / module / "zz_against_the_layers.py").write_text(statement + "\n")
    result = lint_imports(tree)
    assert result.returncode != 0 and "BROKEN" in result.stdout, result.stdout


def test_no_function_level_import_of_genops_outside_the_commands() -> None:
    """A lazy import is how a cycle hides; only the CLI's commands import lazily (start-up time:
    ``genops --help`` does not load ClickHouse), and nothing imports a command module."""
    found = []
    for folder in package_tree.package_roots().values():
        for path in sorted(folder.rglob("*.py")):
            if "commands" in path.relative_to(ROOT).parts:
                continue
            tree = ast.parse(path.read_text())
            top = {id(node) for node in tree.body}
            for node in ast.walk(tree):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
                    names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                    if any(name == "genops" or name.startswith("genops.") for name in names):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} {names}")
    assert found == []
