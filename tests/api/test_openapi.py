"""The committed OpenAPI document (docs/openapi.json) must match the app.

Regenerate after an intentional API change with:
``MATCHSVC_WRITE_OPENAPI=1 python -m pytest tests/api/test_openapi.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fastapi.testclient import TestClient

OPENAPI_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_openapi_document_is_committed_and_current(client: TestClient) -> None:
    current = client.get("/openapi.json").json()
    if os.environ.get("MATCHSVC_WRITE_OPENAPI") == "1":
        OPENAPI_PATH.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    committed = json.loads(OPENAPI_PATH.read_text())
    assert committed == current, "docs/openapi.json is stale: regenerate it (see this test's docstring)"


def test_every_operation_documents_its_errors_as_problem_json(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    assert "application/problem+json" in response.get("content", {}), (method, path, status)
