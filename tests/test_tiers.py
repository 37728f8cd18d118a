"""Every test file declares exactly one tier (unit, integration or e2e), so `pytest -m unit` is a real subset."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

TESTS = Path(__file__).resolve().parent
TIERS = {"unit", "integration", "e2e"}


def _tiers(path: Path) -> set[str]:
    """The tier markers in the module's ``pytestmark`` assignment."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
            marks = node.value.elts if isinstance(node.value, (ast.List, ast.Tuple)) else [node.value]
            return {m.attr for m in marks if isinstance(m, ast.Attribute)} & TIERS
    return set()


def test_every_test_file_has_one_tier() -> None:
    wrong = {p.name: sorted(_tiers(p)) for p in sorted(TESTS.glob("test_*.py")) if len(_tiers(p)) != 1}
    assert wrong == {}
