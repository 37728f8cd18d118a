"""Type-check the ``genops`` package with mypy, as installed (CI runs this through tests/test_lint.py).

setup.py maps top-level folders into one package (``proxy/`` is ``genops.proxy``, ...), which mypy
cannot follow through the editable install. This builds the package's tree of symlinks
(tools/package_tree.py) in a scratch directory and runs ``mypy -p genops`` over it, from the
repository root so ``[tool.mypy]`` in pyproject.toml applies.

    python tools/typecheck.py [SCRATCH_DIR]     # exit status and output are mypy's
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import package_tree  # noqa: E402 - tools/ is not a package

ROOT = package_tree.ROOT


def mypy(tree: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    """``mypy -p genops`` over a package tree (tools/package_tree.py), from the repository root."""
    env = {**os.environ, "MYPYPATH": str(tree)}
    command = [sys.executable, "-m", "mypy", "-p", "genops", "--cache-dir", str(cache)]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def run(scratch: Path) -> subprocess.CompletedProcess[str]:
    """mypy over the package tree built under ``scratch`` (its cache kept there too)."""
    return mypy(package_tree.build(scratch / "tree"), scratch / "mypy-cache")


def source_paths(output: str, tree: Path) -> str:
    """mypy's report with each file in the tree named by its path in the repository (the symlink's target)."""
    lines = []
    for line in output.splitlines(keepends=True):
        path, sep, rest = line.partition(":")
        full = ROOT / path  # mypy names files relative to its working directory (ROOT) when it can
        if sep and path.endswith((".py", ".pyi")) and full.is_relative_to(tree):
            path = os.path.relpath(full.resolve(), ROOT)
        lines.append(path + sep + rest)
    return "".join(lines)


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="genops-typecheck-") as temporary:
        scratch = Path(argv[0]).resolve() if argv else Path(temporary)
        result = run(scratch)
        sys.stdout.write(source_paths(result.stdout, scratch / "tree"))
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
