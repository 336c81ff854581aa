"""The import boundaries of ARCHITECTURE.md, checked on every source file by parsing its imports.

privacy imports nothing of ours; engine imports only privacy; matchsvc never imports api;
nothing imports tests. The benchmark harnesses (``benchmarks``) use the service but the service
never loads them, except the CLI's ``bench`` commands, inside the command (docs/architecture.md).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"privacy", "engine", "matchsvc", "api", "benchmarks", "tests"}
ALLOWED = {
    "privacy": set(),
    "engine": {"privacy"},
    "matchsvc": {"privacy", "engine"},
    "api": {"privacy", "engine", "matchsvc"},
    "benchmarks": {"privacy", "engine", "matchsvc"},
}
#: The one module of the service that may load benchmarks, and only inside a function.
BENCH_LOADER = "matchsvc/cli.py"


def _imported_top_levels(path: Path, *, module_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    nodes = _module_level(tree) if module_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & OURS


def _module_level(tree: ast.Module) -> list[ast.AST]:
    """The statements that run at import: the module body, into ``if``/``try``/``with`` but not into functions."""
    found: list[ast.AST] = []
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        found.append(node)
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            stack.extend(child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt))
    return found


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_respects_import_rules(package: str) -> None:
    sources = _sources(package)
    assert sources, f"package {package} has no sources"
    violations = {
        name: sorted(imported - ALLOWED[package] - {package})
        for path in sources
        if (name := str(path.relative_to(ROOT)))
        and (imported := _imported_top_levels(path) - ({"benchmarks"} if name == BENCH_LOADER else set()))
        - ALLOWED[package]
        - {package}
    }
    assert not violations, f"forbidden imports: {violations}"


def test_the_cli_loads_benchmarks_only_inside_its_bench_commands() -> None:
    cli = ROOT / BENCH_LOADER
    assert "benchmarks" in _imported_top_levels(cli), "the bench commands no longer load benchmarks"
    assert "benchmarks" not in _imported_top_levels(cli, module_level_only=True)


def test_migrations_import_only_the_service() -> None:
    for path in (ROOT / "alembic").rglob("*.py"):
        assert _imported_top_levels(path) <= {"matchsvc"}, path


def test_the_checker_sees_violations(tmp_path: Path) -> None:
    """Guard against a checker that passes vacuously."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import api.main\nfrom matchsvc.db import models\nfrom . import sibling\n"
        "if True:\n    import engine\ndef f():\n    import benchmarks.scoring\n"
    )
    assert _imported_top_levels(bad) == {"api", "matchsvc", "engine", "benchmarks"}
    assert _imported_top_levels(bad, module_level_only=True) == {"api", "matchsvc", "engine"}


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
