"""Issue 13 item 9: ``true`` is not a number. Walks every JSON request body in the OpenAPI document
and sends ``true`` in place of each numeric field (and of the first item of a numeric array) in an
otherwise valid body: every one must be refused with 422, while the valid body itself is not. The
same for every numeric query parameter."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from fastapi.testclient import TestClient

from matchsvc.runtime import Runtime
from matchsvc.security import Scope
from tests.support.accounts import auth_headers
from tests.support.scenario import staff_headers


def _valid_bodies(dim: int) -> dict[tuple[str, str], dict[str, Any]]:
    """One acceptable body per operation that takes JSON (a new operation must add its own)."""
    return {
        ("post", "/v1/auth/register"): {
            "username": f"strict{uuid.uuid4().hex[:8]}", "password": "correct horse battery", "birth_year": 1990
        },
        ("put", "/v1/me/appearance"): {"latent": [0] + [0.0] * (dim - 1)},
        ("post", "/v1/me/appearance/preview"): {"latent": [0] + [0.0] * (dim - 1)},
        ("put", "/v1/me/profile"): {"gender": "woman", "seeks": ["man"], "age_min": 20, "age_max": 40},
        ("post", "/v1/ratings"): {"face_id": str(uuid.uuid4()), "liked": True, "dwell_ms": 1200},
        ("post", "/v1/ratings/batch"): {"items": [{"face_id": str(uuid.uuid4()), "liked": True, "dwell_ms": 1200}]},
        # A wrong current password: valid, refused without changing anything (no session is revoked).
        ("put", "/v1/me/password"): {"current_password": "not the password", "new_password": "another horse battery"},
    }


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _numeric(schema: dict[str, Any], node: dict[str, Any]) -> bool:
    node = _resolve(schema, node)
    return node.get("type") in ("integer", "number") or any(_numeric(schema, n) for n in node.get("anyOf", []))


def _numeric_paths(schema: dict[str, Any], body: dict[str, Any]) -> Iterator[tuple[str, ...]]:
    """(field,) for a numeric field, (field, 0) for the first item of a numeric array."""
    for name, prop in _resolve(schema, body).get("properties", {}).items():
        prop = _resolve(schema, prop)
        if _numeric(schema, prop):
            yield (name,)
        elif prop.get("type") == "array" and _numeric(schema, prop.get("items", {})):
            yield (name, 0)


def _fresh(headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "Idempotency-Key": uuid.uuid4().hex}


def test_true_is_refused_in_every_numeric_request_field(client: TestClient, db: Runtime) -> None:
    schema = client.get("/openapi.json").json()
    headers = auth_headers(client)
    valid = _valid_bodies(db.latent_space.dim)
    checked = 0
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" not in content:
                continue
            assert (method, path) in valid, f"add a valid body for {method.upper()} {path}"
            body_schema = content["application/json"]["schema"]
            base = valid[(method, path)]
            accepted = client.request(method, path, json=base, headers=_fresh(headers))
            assert accepted.status_code != 422, (method, path, accepted.text)
            for field in _numeric_paths(schema, body_schema):
                name = field[0]
                body = {**base, name: [True, *base[name][1:]] if len(field) == 2 else True}
                response = client.request(method, path, json=body, headers=_fresh(headers))
                assert response.status_code == 422, (method, path, field, response.text)
                assert response.headers["content-type"] == "application/problem+json"
                checked += 1
    assert checked >= 5  # birth_year, latent[0], age_min, age_max, dwell_ms


def test_true_is_refused_in_every_numeric_query_parameter(client: TestClient, db: Runtime) -> None:
    schema = client.get("/openapi.json").json()
    user, auditor = auth_headers(client), staff_headers(client, db, Scope.auditor)
    checked = 0
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] != "query" or not _numeric(schema, parameter["schema"]):
                    continue
                headers = auditor if path.startswith("/v1/audit") else user
                response = client.request(method, path, params={parameter["name"]: "true"}, headers=headers)
                assert response.status_code == 422, (method, path, parameter["name"], response.text)
                checked += 1
    assert checked >= 5  # n, limit (three lists), score
