"""Conventions every endpoint follows: problem+json, request ids, limits, health, metrics, CORS, logs."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from matchsvc.logging import configure_logging
from matchsvc.runtime import Runtime
from matchsvc.security import Scope
from tests.support.accounts import PASSWORD, auth_headers
from tests.support.scenario import staff_headers

PROBLEM = "application/problem+json"


def test_unknown_route_is_problem_json(client: TestClient) -> None:
    response = client.get("/v1/nope")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == 404 and body["title"] and body["type"]


def test_request_id_is_generated_or_propagated(client: TestClient) -> None:
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    # A malformed incoming id is replaced, not reflected.
    assert client.get("/healthz", headers={"X-Request-ID": "a b\x7f"}).headers["x-request-id"] != "a b\x7f"
    problem = client.get("/v1/me", headers={"X-Request-ID": "req-9"}).json()
    assert problem["request_id"] == "req-9"


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200


def test_metrics_count_requests_by_route_template(client: TestClient, db: Runtime) -> None:
    headers = auth_headers(client)
    client.get("/v1/me", headers=headers)
    text = client.get("/metrics", headers=staff_headers(client, db, Scope.admin)).text
    assert 'http_requests_total{method="GET",route="/v1/me",status="200"}' in text
    assert "http_request_duration_seconds_bucket" in text


@pytest.mark.parametrize("declared", [True, False])
def test_huge_bodies_are_413(client: TestClient, declared: bool) -> None:
    body = b'{"username": "' + b"a" * 200_000 + b'"}'
    if declared:
        response = client.post("/v1/auth/register", content=body, headers={"Content-Type": "application/json"})
    else:
        response = client.post(
            "/v1/auth/register", content=iter([body[:100_000], body[100_000:]]),
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM


@pytest.fixture
def limited_client(db: Runtime) -> Iterator[TestClient]:
    settings = db.settings.model_copy(update={"rate_limit_per_minute": 60, "rate_limit_burst": 3})
    runtime = dataclasses.replace(db, settings=settings, embedded=None, scratch=None)
    with TestClient(create_app(runtime)) as test_client:
        yield test_client


def test_rate_limit_is_per_user_with_retry_after(client: TestClient, limited_client: TestClient) -> None:
    alice, bob = auth_headers(client), auth_headers(client)
    statuses = [limited_client.get("/v1/me", headers=alice).status_code for _ in range(5)]
    assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429]
    limited = limited_client.get("/v1/me", headers=alice)
    assert limited.headers["content-type"] == PROBLEM
    assert int(limited.headers["retry-after"]) >= 1
    assert limited_client.get("/v1/me", headers=bob).status_code == 200  # a separate bucket
    assert limited_client.get("/healthz").status_code == 200  # probes are exempt


def test_metrics_are_for_admins_and_rate_limited(client: TestClient, limited_client: TestClient, db: Runtime) -> None:
    assert limited_client.get("/metrics").status_code == 401
    assert limited_client.get("/metrics", headers=auth_headers(client)).status_code == 403
    admin = staff_headers(client, db, Scope.admin)
    first = limited_client.get("/metrics", headers=admin)
    assert first.status_code == 200 and "http_requests_total" in first.text
    statuses = [limited_client.get("/metrics", headers=admin).status_code for _ in range(3)]
    assert statuses[-1] == 429


def test_cors_is_configurable(db: Runtime) -> None:
    settings = db.settings.model_copy(update={"cors_origins": ["https://app.example"]})
    runtime = dataclasses.replace(db, settings=settings, embedded=None, scratch=None)
    with TestClient(create_app(runtime)) as test_client:
        preflight = test_client.options(
            "/v1/me", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"}
        )
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        other = test_client.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_logs_are_json_with_request_ids_and_no_secrets(client: TestClient) -> None:
    stream = io.StringIO()
    configure_logging("INFO")
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    try:
        headers = auth_headers(client)
        token = headers["Authorization"].split()[1]
        client.get("/v1/me", headers={**headers, "X-Request-ID": "log-check"})
        client.post("/v1/auth/token", data={"username": "nobody", "password": PASSWORD})
    finally:
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    requests = [line for line in lines if line.get("event") == "request"]
    assert any(line.get("request_id") == "log-check" and line["route"] == "/v1/me" for line in requests)
    raw = stream.getvalue()
    assert PASSWORD not in raw and token not in raw and "argon2" not in raw


def test_no_request_returns_a_500_for_a_missing_user_row(client: TestClient, db: Runtime) -> None:
    headers = auth_headers(client)
    user_id = uuid.UUID(client.get("/v1/me", headers=headers).json()["id"])
    with db.engine.begin() as connection:
        connection.exec_driver_sql(f"DELETE FROM users WHERE id = '{user_id}'")
    assert client.get("/v1/faces/next", headers=headers).status_code == 401
