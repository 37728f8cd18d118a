"""The README is a front door (short, CI's commands first, links to every doc); docs/ holds the
rest, its links resolve and the settings it names exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from genops.config import FIELDS, env_name

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
SERVE = "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/genops serve"
TEST = "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest"
# Environment variables that are not Settings fields: the config file, GENOPS_UPSTREAM_<NAME>, and
# GENOPS_KEY_<NAME> (the key GenOps holds for a named upstream a route targets: docs/routing.md).
NOT_FIELDS = {"GENOPS_CONFIG", "GENOPS_UPSTREAM", "GENOPS_KEY"}

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def markdown_files() -> list[Path]:
    return [README, ROOT / "SECURITY.md", *sorted(DOCS.rglob("*.md"))]


def code_blocks(text: str) -> list[str]:
    return [block.split("\n", 1)[1].rsplit("```", 1)[0].strip() for block in FENCE.findall(text)]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {slug(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def test_readme_is_a_front_door_with_ci_commands_first():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    assert code_blocks(text)[:2] == [SERVE, TEST]  # CI runs these, verbatim (.ci/run)
    assert (ROOT / ".ci" / "run").read_text().rstrip().endswith(TEST)
    quick = text[text.index("## Quick start"):]
    blocks = code_blocks(quick)
    assert blocks[0].startswith("$ .venv/bin/genops serve\nGenOps proxy listening on http://127.0.0.1:8080")
    assert "GenOps-Request-Id: quickstart-1" in blocks[1] and blocks[1].startswith("curl ")
    assert "WHERE RequestId = 'quickstart-1'" in blocks[2] and "(1 row)" in blocks[2]
    offline = next(b for b in blocks if "fake-upstream" in b)
    assert "GENOPS_UPSTREAM_BASE_URL=http://127.0.0.1:9100 .venv/bin/genops serve" in offline
    assert "upstream_base_url" in FIELDS


def test_every_doc_is_linked_from_the_readme_and_the_index():
    readme_links = {link.split("#")[0] for link in LINK.findall(README.read_text())}
    index_links = {link.split("#")[0] for link in LINK.findall((DOCS / "README.md").read_text())}
    for path in DOCS.glob("*.md"):
        name = path.relative_to(ROOT).as_posix()
        assert name in readme_links or path.name == "README.md" and "docs/README.md" in readme_links, name
        assert path.name in index_links or path.name == "README.md", name
    assert "docs/benchmarks/README.md" in readme_links
    bench_index = {link for link in LINK.findall((DOCS / "benchmarks" / "README.md").read_text())}
    for path in (DOCS / "benchmarks").glob("20*.md"):
        assert path.name in bench_index, path.name


def test_relative_links_resolve():
    broken = []
    for path in markdown_files():
        for target in LINK.findall(FENCE.sub("", path.read_text())):
            if re.match(r"^[a-z]+:", target):
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(ROOT)}: {target}"
            if not dest.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{where} (no such heading)")
    assert not broken, "\n".join(broken)


def test_settings_named_in_the_docs_exist():
    known = {env_name(name) for name in FIELDS} | NOT_FIELDS
    unknown = sorted({f"{path.relative_to(ROOT)}: {name}" for path in markdown_files()
                      for name in re.findall(r"GENOPS_[A-Z0-9_]*[A-Z0-9]", path.read_text()) if name not in known})
    assert not unknown, "not a setting (src/genops/config.py):\n" + "\n".join(unknown)
