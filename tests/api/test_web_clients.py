"""The web clients as the server ships them: security headers, packaging, and their API calls
checked against the committed OpenAPI document (a change to the API that breaks a client fails here).
The browser tests that use them are in tests/e2e/test_web_browser.py."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Mount

from api.static import SECURITY_HEADERS, WEB_ROOT

ROOT = Path(__file__).resolve().parents[2]
API_JS = WEB_ROOT / "shared" / "api.js"
SPEC = json.loads((ROOT / "docs" / "openapi.json").read_text())


def _routes_table() -> dict[str, tuple[str, str]]:
    table = re.search(r"export const ROUTES = \{(.*?)\n\};", API_JS.read_text(), flags=re.S)
    assert table, "api.js must define `export const ROUTES = { ... };`"
    rows = re.findall(r'^\s*(\w+): \["(GET|POST|PUT|DELETE|PATCH)", "([^"]+)"\],$', table.group(1), flags=re.M)
    assert len(rows) == len([line for line in table.group(1).splitlines() if line.strip()]), "unparsed ROUTES row"
    return {name: (method, path) for name, method, path in rows}


def _documented() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in SPEC["paths"].items() for method in item}


def _web_files() -> list[Path]:
    return sorted(path for path in WEB_ROOT.rglob("*") if path.is_file())


def test_every_client_call_is_in_the_openapi_document() -> None:
    missing = {name: call for name, call in _routes_table().items() if call not in _documented()}
    assert not missing, f"web client calls that docs/openapi.json does not offer: {missing}"


def test_api_paths_appear_only_in_the_routes_table() -> None:
    for path in _web_files():
        if path.suffix in {".js", ".html"} and path != API_JS:
            assert "/v1/" not in path.read_text(), f"{path.relative_to(ROOT)} calls the API outside api.js"
            assert "fetch(" not in path.read_text(), f"{path.relative_to(ROOT)} fetches outside api.js"


def test_console_audit_actions_match_the_api() -> None:
    source = (WEB_ROOT / "console" / "console.js").read_text()
    listed = re.search(r"export const AUDIT_ACTIONS = \[(.*?)\];", source, flags=re.S)
    assert listed
    assert re.findall(r'"(\w+)"', listed.group(1)) == SPEC["components"]["schemas"]["AuditAction"]["enum"]


def test_nothing_inline_and_nothing_from_other_origins() -> None:
    """What the CSP forbids is not in the files either, so the policy never breaks the clients."""
    for path in _web_files():
        text = path.read_text()
        where = path.relative_to(ROOT)
        assert not re.search(r"\b(?:https?:)?//(?!www\.w3\.org/2000/svg)[\w.-]+\.\w", text), f"{where}: other origin"
        assert "innerHTML" not in text and "eval(" not in text, where
        if path.suffix == ".html":
            assert not re.search(r"<script(?![^>]*\bsrc=)", text), f"{where}: inline script"
            assert not re.search(r"\son\w+=", text), f"{where}: inline event handler"
            assert not re.search(r"\sstyle=|<style", text), f"{where}: inline style"


def test_every_web_file_ships_as_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["api"]
    for path in _web_files():
        relative = path.relative_to(WEB_ROOT.parent).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), f"{relative} would not be installed"


@pytest.mark.parametrize(
    "path", ["/app/", "/console/", "/app/app.js", "/console/console.css", "/shared/api.js", "/app/missing.js"]
)
def test_web_files_carry_the_security_headers(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == (404 if "missing" in path else 200)
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    csp = dict(part.split(" ", 1) for part in response.headers["content-security-policy"].split("; "))
    assert csp["default-src"] == "'self'" and csp["script-src"] == "'self'" and csp["frame-ancestors"] == "'none'"


def test_pages_and_modules_have_the_right_types(client: TestClient) -> None:
    assert client.get("/app/").headers["content-type"].startswith("text/html")
    assert client.get("/shared/api.js").headers["content-type"].split(";")[0] in {"text/javascript", "application/javascript"}
    assert client.get("/console/console.css").headers["content-type"].startswith("text/css")


@pytest.mark.parametrize("name", ["app", "console"])
def test_bare_paths_redirect_to_the_page_and_cannot_be_steered(client: TestClient, name: str) -> None:
    response = client.get(f"/{name}", params={"target": "https://evil.example/"}, follow_redirects=False)
    assert response.status_code == 308 and response.headers["location"] == f"/{name}/"


def test_no_path_escapes_the_web_root(client: TestClient) -> None:
    for path in ["/app/../../main.py", "/app/%2e%2e/%2e%2e/main.py", "/shared/..%2f..%2fstatic.py"]:
        response = client.get(path)
        assert response.status_code == 404 or b"create_app" not in response.content


def test_the_only_mounts_are_the_web_clients(client: TestClient) -> None:
    mounts = {route.path for route in client.app.routes if isinstance(route, Mount)}
    assert mounts == {"/app", "/console", "/shared"}
