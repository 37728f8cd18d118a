"""The ``genops`` package as one directory tree, for tools that walk a package's files.

setup.py maps the top-level folders into one import package (``proxy/`` is ``genops.proxy``,
``storage/`` is ``genops.storage``, ...). Python's import system sees that mapping through the
editable install, but tools that find modules by walking the package's directory (import-linter's
grimp, mypy) see only ``src/genops``. This builds a tree of real directories and symlinked files
that has the installed layout, so those tools see every module under its real name.

    python tools/package_tree.py DEST     # prints DEST; put it first on PYTHONPATH / MYPYPATH
"""

from __future__ import annotations

import ast
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def package_roots() -> dict[str, Path]:
    """``setup.py``'s ROOTS (package -> folder), read without running setup.py: one source of truth."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "ROOTS" for t in node.targets):
            return {package: ROOT / folder for package, folder in ast.literal_eval(node.value).items()}
    raise RuntimeError("setup.py has no ROOTS mapping")


def build(dest: Path) -> Path:
    """(Re)build the tree under ``dest`` (``dest/genops/...``) and return ``dest``."""
    shutil.rmtree(dest / "genops", ignore_errors=True)
    for package, folder in package_roots().items():
        base = dest.joinpath(*package.split("."))
        for source in folder.rglob("*"):
            if "__pycache__" in source.parts or not source.is_file() or source.suffix not in (".py", ".pyi"):
                continue
            relative = source.relative_to(folder)
            if package == "genops" and relative.parts[0] in {p.split(".")[1] for p in package_roots() if "." in p}:
                continue  # a mapped subpackage is taken from its own folder
            target = base / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source)
    return dest


if __name__ == "__main__":
    print(build(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT / ".cache" / "package-tree"))
