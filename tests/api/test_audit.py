"""GET /v1/audit/log and /v1/audit/log/verify: who may read, what is listed, what is never written."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from matchsvc.runtime import Runtime
from matchsvc.security import Scope
from matchsvc.services import auth as auth_service
from matchsvc.services.audit import pseudonym
from matchsvc.services.keys import rotate_keys
from tests.support.accounts import PASSWORD, auth_headers, register

PROBLEM = "application/problem+json"
ROUTES = ["/v1/audit/log", "/v1/audit/log/verify"]


def _staff(client: TestClient, db: Runtime, username: str, *scopes: Scope) -> dict[str, str]:
    """Staff accounts are created by the CLI's service call, never over the API."""
    with db.sessions() as session:
        auth_service.register(
            session, keys=db.keys, username=username, password=PASSWORD, birth_year=1980, scopes=frozenset(scopes)
        )
    return auth_headers(client, username)


def _user_id(client: TestClient, headers: dict[str, str]) -> uuid.UUID:
    return uuid.UUID(client.get("/v1/me", headers=headers).json()["id"])


def _entries(client: TestClient, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    """Every page of the log for these filters, following the cursor."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = client.get("/v1/audit/log", params=query, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items


@pytest.mark.parametrize("route", ROUTES)
def test_only_auditors_reach_the_audit_routes(client: TestClient, db: Runtime, route: str) -> None:
    anonymous = client.get(route)
    assert anonymous.status_code == 401 and anonymous.headers["content-type"] == PROBLEM
    assert anonymous.headers["www-authenticate"] == "Bearer"
    user = client.get(route, headers=auth_headers(client))
    assert user.status_code == 403 and user.headers["content-type"] == PROBLEM
    admin = client.get(route, headers=_staff(client, db, "root", Scope.admin))
    assert admin.status_code == 403
    assert client.get(route, headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    assert client.get(route, headers=_staff(client, db, "audrey", Scope.auditor)).status_code == 200


def test_user_scope_alone_never_reaches_audit_even_on_a_staff_account(client: TestClient, db: Runtime) -> None:
    _staff(client, db, "both", Scope.user, Scope.auditor)
    user_only = auth_headers(client, "both", scope="user")
    assert all(client.get(route, headers=user_only).status_code == 403 for route in ROUTES)


def test_logins_are_listed_under_pseudonyms_and_every_read_is_logged(client: TestClient, db: Runtime) -> None:
    alice = auth_headers(client, register(client, "alice"))
    alice_id = _user_id(client, alice)
    auth_headers(client, "alice")
    client.post("/v1/auth/token", data={"username": "alice", "password": "not her password"})
    auditor = _staff(client, db, "audrey", Scope.auditor)
    auditor_id = _user_id(client, auditor)

    alias = pseudonym(alice_id, key=db.secrets.audit_pseudonym_key)
    about_alice = _entries(client, auditor, subject=alias)
    assert [(e["action"], e["actor_scope"], e["actor_id"]) for e in about_alice] == [("login", "user", None)] * 2
    assert about_alice[0]["details"] == {"granted": ["user"]}
    failed = _entries(client, auditor, action="login_failed")
    assert [(e["actor_scope"], e["subject"], e["details"]) for e in failed] == [
        ("anonymous", None, {"reason": "bad-credentials"})
    ]
    reads = _entries(client, auditor, action="auditor_read")
    assert len(reads) == 2  # the two reads above (this one is recorded after it is answered)
    assert all(read["actor_id"] == str(auditor_id) and read["actor_scope"] == "auditor" for read in reads)
    assert reads[0]["subject"] == alias  # reading about alice is itself an entry about alice
    assert reads[0]["details"] == {"resource": "log", "filters": {"subject": alias}, "returned": 2}
    assert reads[1]["details"]["filters"] == {"action": "login_failed"}


def test_pagination_and_time_filters(client: TestClient, db: Runtime) -> None:
    for _ in range(4):
        auth_headers(client)
    auditor = _staff(client, db, "audrey", Scope.auditor)
    paged = _entries(client, auditor, action="login", limit=2)
    ids = [entry["id"] for entry in paged]
    assert len(ids) == 5 and ids == sorted(set(ids))  # four users and the auditor, no page overlap
    middle = paged[2]["created_at"]
    since = _entries(client, auditor, action="login", since=middle)
    until = _entries(client, auditor, action="login", until=middle)
    assert [e["id"] for e in until] + [e["id"] for e in since] == ids
    assert _entries(client, auditor, since="2000-01-01T00:00:00Z", until="2000-01-02T00:00:00Z") == []


@pytest.mark.parametrize(
    "params",
    [
        {"since": "2026-01-01T00:00:00"},  # no timezone
        {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        {"subject": "alice"},
        {"subject": "A" * 64},
        {"action": "coffee_break"},
        {"cursor": "not-a-cursor"},
        {"limit": 0},
        {"limit": 101},
    ],
)
def test_bad_filters_are_422(client: TestClient, db: Runtime, params: dict[str, Any]) -> None:
    response = client.get("/v1/audit/log", params=params, headers=_staff(client, db, "audrey", Scope.auditor))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM


def test_verify_reports_a_tampered_entry_and_the_check_is_logged(client: TestClient, db: Runtime) -> None:
    for _ in range(3):
        auth_headers(client)
    rotate_keys(db.sessions, keys=db.keys)
    auditor = _staff(client, db, "audrey", Scope.auditor)
    intact = client.get("/v1/audit/log/verify", headers=auditor).json()
    assert intact["ok"] is True and intact["entries"] == 5 and intact["first_bad_id"] is None
    anchored = client.get("/v1/audit/log/verify", params={"anchor": intact["head_hash"]}, headers=auditor).json()
    assert anchored["ok"] is True and anchored["entries"] == 6  # the first check was logged
    unknown = client.get("/v1/audit/log/verify", params={"anchor": "0" * 64}, headers=auditor).json()
    assert unknown["ok"] is False and unknown["first_bad_id"] is None
    assert client.get("/v1/audit/log/verify", params={"anchor": "xyz"}, headers=auditor).status_code == 422

    victim = _entries(client, auditor, action="key_rotation")[0]["id"]
    with db.engine.begin() as connection:
        connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
        connection.execute(
            text("UPDATE audit_log SET details = jsonb_set(details, '{rewrapped}', '0') WHERE id = :id"), {"id": victim}
        )
    broken = client.get("/v1/audit/log/verify", headers=auditor).json()
    assert broken["ok"] is False and broken["first_bad_id"] == victim and broken["head_hash"] is None
    assert "edited" in broken["reason"]


def test_the_log_never_holds_a_password_token_or_user_identity(client: TestClient, db: Runtime) -> None:
    names = ["carol.k", "dave_99"]
    headers = [auth_headers(client, register(client, name)) for name in names]
    user_ids = [_user_id(client, h) for h in headers]
    tokens = [h["Authorization"].split()[1] for h in headers]
    client.post("/v1/auth/token", data={"username": "carol.k", "password": "carol-wrong-password"})
    client.post("/v1/auth/token", data={"username": PASSWORD, "password": "dave_99"})  # fields swapped
    client.post("/v1/auth/token", data={"username": "carol.k", "password": PASSWORD, "scope": "auditor"})
    rotate_keys(db.sessions, keys=db.keys)
    auditor = _staff(client, db, "audrey", Scope.auditor)
    subject = pseudonym(user_ids[0], key=db.secrets.audit_pseudonym_key)
    _entries(client, auditor, subject=subject)
    client.get("/v1/audit/log/verify", headers=auditor)

    with db.engine.connect() as connection:
        rows = connection.execute(text("SELECT entry::text FROM audit_log AS entry ORDER BY id")).scalars().all()
    dump = "\n".join(rows).lower()
    assert len(rows) == 9
    secrets = [PASSWORD, "carol-wrong-password", "argon2", *tokens]
    identities = [*names, *(str(i) for i in user_ids), *(i.hex for i in user_ids)]
    for needle in secrets + identities:
        assert needle.lower() not in dump, needle
    assert subject in dump  # users appear, as pseudonyms only
