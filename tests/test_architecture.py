"""The import boundaries of ARCHITECTURE.md, checked on every source file by parsing its imports.

privacy imports nothing of ours; engine imports only privacy; matchsvc never imports api;
nothing imports tests.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"privacy", "engine", "matchsvc", "api", "tests"}
ALLOWED = {
    "privacy": set(),
    "engine": {"privacy"},
    "matchsvc": {"privacy", "engine"},
    "api": {"privacy", "engine", "matchsvc"},
}


def _imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & OURS


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_respects_import_rules(package: str) -> None:
    sources = _sources(package)
    assert sources, f"package {package} has no sources"
    violations = {
        str(path.relative_to(ROOT)): sorted(imported - ALLOWED[package] - {package})
        for path in sources
        if (imported := _imported_top_levels(path)) - ALLOWED[package] - {package}
    }
    assert not violations, f"forbidden imports: {violations}"


def test_migrations_import_only_the_service() -> None:
    for path in (ROOT / "alembic").rglob("*.py"):
        assert _imported_top_levels(path) <= {"matchsvc"}, path


def test_the_checker_sees_violations(tmp_path: Path) -> None:
    """Guard against a checker that passes vacuously."""
    bad = tmp_path / "bad.py"
    bad.write_text("import api.main\nfrom matchsvc.db import models\nfrom . import sibling\n")
    assert _imported_top_levels(bad) == {"api", "matchsvc"}


def _class_names(package: str) -> set[str]:
    return {
        node.name
        for path in _sources(package)
        for node in ast.parse(path.read_text(), filename=str(path)).body
        if isinstance(node, ast.ClassDef)
    }


def test_no_service_value_shares_a_name_with_an_api_schema() -> None:
    """A router builds its schema from a service's value; one name for both hides which is which."""
    schemas, services = _class_names("api/schemas"), _class_names("matchsvc/services")
    assert schemas and services
    assert not schemas & services, f"named in both api/schemas and matchsvc/services: {sorted(schemas & services)}"
