"""Test modules never import one another: shared helpers live in conftest fixtures or in
``*_support`` modules (importing a test module runs its collection-time code twice and makes
pytest collect its tests under two names)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.rsplit(".", 1)[-1] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.rsplit(".", 1)[-1])
    return names


def test_no_test_module_imports_another() -> None:
    modules = sorted(TESTS.rglob("test_*.py"))
    assert len(modules) > 50
    test_names = {p.stem for p in modules}
    offenders = {
        str(p.relative_to(TESTS)): sorted(_imported(p) & test_names)
        for p in modules
        if _imported(p) & test_names
    }
    assert offenders == {}
