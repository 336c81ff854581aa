"""Issue 17: refresh tokens with rotation and reuse detection, sessions per device, logout, password change.

Every step goes through HTTP as a mobile client would. Time passing is the one thing a test cannot
wait for: the expiry tests move a session's deadlines into the past in the database instead.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from matchsvc.runtime import Runtime
from matchsvc.security import Scope
from matchsvc.services.audit import pseudonym
from tests.support.accounts import PASSWORD, register
from tests.support.scenario import staff_headers, user_id

PROBLEM = "application/problem+json"
NEW_PASSWORD = "a different horse, battery and staple"


def _login(client: TestClient, username: str, *, password: str = PASSWORD, device: str | None = None) -> dict[str, Any]:
    form = {"username": username, "password": password, **({"device_name": device} if device else {})}
    response = client.post("/v1/auth/token", data=form)
    assert response.status_code == 200, response.text
    _never_cached(response)
    return response.json()


def _never_cached(response: httpx.Response) -> None:
    """RFC 6749 section 5.1: a response carrying tokens is never stored by a cache."""
    assert response.headers["cache-control"] == "no-store" and response.headers["pragma"] == "no-cache"


def _bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def _refresh(client: TestClient, refresh_token: str) -> httpx.Response:
    return client.post("/v1/auth/refresh", data={"grant_type": "refresh_token", "refresh_token": refresh_token})


def _refused(response: httpx.Response, status: int = 401) -> dict[str, Any]:
    """The problem body, after checking the status, media type and (for 401) the Bearer challenge."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    return {k: v for k, v in body.items() if k not in ("instance", "request_id")}


def _works(client: TestClient, tokens: dict[str, Any]) -> bool:
    response = client.get("/v1/me", headers=_bearer(tokens))
    assert response.status_code in (200, 401), response.text
    return response.status_code == 200


def _sql(db: Runtime, sql: str, **params: Any) -> list[Any]:
    with db.engine.begin() as connection:
        result = connection.execute(text(sql), params)
        return list(result.all()) if result.returns_rows else []


def test_login_returns_a_refresh_token_stored_only_as_its_sha256(client: TestClient, db: Runtime) -> None:
    tokens = _login(client, register(client), device="Pixel 8")
    assert tokens["token_type"] == "bearer" and tokens["scope"] == "user"
    assert 0 < tokens["expires_in"] <= 15 * 60
    assert 13 * 24 * 3600 < tokens["refresh_expires_in"] <= 14 * 24 * 3600
    assert len(tokens["refresh_token"]) >= 43  # 256 random bits, URL-safe base64
    digest = hashlib.sha256(tokens["refresh_token"].encode()).digest()
    assert _sql(db, "SELECT session_id::text FROM refresh_tokens WHERE token_hash = :h", h=digest) == [
        (tokens["session_id"],)
    ]
    dump = "".join(str(row) for row in _sql(db, "SELECT t::text FROM refresh_tokens AS t"))
    dump += "".join(str(row) for row in _sql(db, "SELECT s::text FROM user_sessions AS s"))
    assert tokens["refresh_token"] not in dump and "Pixel 8" in dump


def test_refresh_rotates_the_pair_and_spends_the_old_refresh_token(client: TestClient) -> None:
    first = _login(client, register(client))
    second = _refresh(client, first["refresh_token"])
    assert second.status_code == 200, second.text
    _never_cached(second)
    second = second.json()
    assert second["session_id"] == first["session_id"]
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert _works(client, second) and _works(client, first)  # same session, both access tokens live
    third = _refresh(client, second["refresh_token"])  # a form without grant_type is accepted too
    assert third.status_code == 200
    assert client.post("/v1/auth/refresh", data={"refresh_token": third.json()["refresh_token"]}).status_code == 200


def test_reusing_a_spent_refresh_token_revokes_the_session_and_is_audited(client: TestClient, db: Runtime) -> None:
    name = register(client)
    stolen = _login(client, name, device="phone")
    elsewhere = _login(client, name, device="tablet")
    rotated = _refresh(client, stolen["refresh_token"]).json()  # the legitimate client rotates
    assert _works(client, rotated)

    replay = _refresh(client, stolen["refresh_token"])  # an attacker replays the copy
    _refused(replay)
    assert not _works(client, rotated) and not _works(client, stolen)  # the whole family, at once
    _refused(_refresh(client, rotated["refresh_token"]))
    assert _works(client, elsewhere)  # other devices are other families

    owner = user_id(client, _bearer(elsewhere))
    entries = _sql(
        db,
        "SELECT subject, actor_id, details FROM audit_log WHERE action = 'refresh_token_reuse' ORDER BY id",
    )
    assert entries == [
        (
            pseudonym(owner, key=db.secrets.audit_pseudonym_key),
            None,
            {"session": stolen["session_id"], "session_revoked": True},
        )
    ]
    _refused(_refresh(client, stolen["refresh_token"]))  # every later replay is recorded too
    assert len(_sql(db, "SELECT id FROM audit_log WHERE action = 'refresh_token_reuse'")) == 2


def test_one_refresh_token_sent_twice_at_once_never_yields_two_pairs(client: TestClient) -> None:
    """Two requests racing with one token: the row lock makes the second see it spent (reuse)."""
    name = register(client)
    for _ in range(5):
        tokens = _login(client, name)
        barrier = threading.Barrier(2)

        def spend(token: str = tokens["refresh_token"]) -> int:
            barrier.wait()
            return _refresh(client, token).status_code

        with ThreadPoolExecutor(2) as pool:
            statuses = sorted(pool.map(lambda _: spend(), range(2)))
        assert statuses == [200, 401], statuses
        assert not _works(client, tokens)  # whichever order, the second one revoked the session


def test_unknown_expired_and_revoked_refresh_tokens_get_one_answer(client: TestClient, db: Runtime) -> None:
    name = register(client)
    idle, logged_out, absolute = (_login(client, name) for _ in range(3))
    _sql(db, "UPDATE user_sessions SET idle_expires_at = now() - interval '1 second' WHERE id = :id",
         id=idle["session_id"])
    _sql(db, "UPDATE user_sessions SET expires_at = now() - interval '1 second' WHERE id = :id",
         id=absolute["session_id"])
    assert client.post("/v1/auth/logout", headers=_bearer(logged_out)).status_code == 204

    bodies = [
        _refused(_refresh(client, token))
        for token in ("x" * 43, idle["refresh_token"], logged_out["refresh_token"], absolute["refresh_token"])
    ]
    assert all(body == bodies[0] for body in bodies), bodies
    assert bodies[0]["detail"] == "invalid or expired refresh token"
    # A session past either deadline also stops honouring its access tokens.
    assert not _works(client, idle) and not _works(client, absolute)


@pytest.mark.parametrize(
    "form",
    [
        {"grant_type": "password", "refresh_token": "abc"},
        {"grant_type": "refresh_token"},
        {"refresh_token": ""},
        {"refresh_token": "x" * 257},
    ],
)
def test_malformed_refresh_requests_are_422(client: TestClient, form: dict[str, str]) -> None:
    _refused(client.post("/v1/auth/refresh", data=form), 422)


def test_device_name_longer_than_64_is_422_and_opens_no_session(client: TestClient, db: Runtime) -> None:
    name = register(client)
    form = {"username": name, "password": PASSWORD, "device_name": "d" * 65}
    _refused(client.post("/v1/auth/token", data=form), 422)
    assert _sql(db, "SELECT count(*) FROM user_sessions") == [(0,)]


def test_a_blank_device_name_is_no_name(client: TestClient) -> None:
    tokens = _login(client, register(client), device="   ")
    assert client.get("/v1/me/sessions", headers=_bearer(tokens)).json()["items"][0]["device_name"] is None


def test_logout_ends_this_session_at_once_and_only_this_one(client: TestClient) -> None:
    name = register(client)
    phone, laptop = _login(client, name), _login(client, name)
    assert client.post("/v1/auth/logout", headers=_bearer(phone)).status_code == 204
    assert not _works(client, phone)
    _refused(_refresh(client, phone["refresh_token"]))
    _refused(client.post("/v1/auth/logout", headers=_bearer(phone)))
    assert _works(client, laptop)
    assert _refresh(client, laptop["refresh_token"]).status_code == 200


def test_sessions_are_listed_per_device_and_revocable(client: TestClient) -> None:
    name = register(client)
    phone, laptop, old = (_login(client, name, device=d) for d in ("phone", "laptop", "old tablet"))
    assert client.post("/v1/auth/logout", headers=_bearer(old)).status_code == 204

    listed = client.get("/v1/me/sessions", headers=_bearer(phone))
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert {item["id"]: (item["device_name"], item["current"]) for item in items} == {
        phone["session_id"]: ("phone", True),
        laptop["session_id"]: ("laptop", False),
    }
    assert set(items[0]) == {"id", "device_name", "created_at", "last_used_at", "expires_at", "current"}

    assert client.delete(f"/v1/me/sessions/{laptop['session_id']}", headers=_bearer(phone)).status_code == 204
    assert not _works(client, laptop)
    _refused(_refresh(client, laptop["refresh_token"]))
    assert [item["id"] for item in client.get("/v1/me/sessions", headers=_bearer(phone)).json()["items"]] == [
        phone["session_id"]
    ]
    # Revoking it again, or a revoked one, is like revoking one that never existed.
    _refused(client.delete(f"/v1/me/sessions/{laptop['session_id']}", headers=_bearer(phone)), 404)
    _refused(client.delete(f"/v1/me/sessions/{old['session_id']}", headers=_bearer(phone)), 404)


def test_another_users_session_is_indistinguishable_from_an_unknown_one(client: TestClient) -> None:
    mine, theirs = _login(client, register(client)), _login(client, register(client))
    foreign = _refused(client.delete(f"/v1/me/sessions/{theirs['session_id']}", headers=_bearer(mine)), 404)
    unknown_id = uuid.uuid4()
    unknown = _refused(client.delete(f"/v1/me/sessions/{unknown_id}", headers=_bearer(mine)), 404)
    assert foreign == {**unknown, "detail": unknown["detail"].replace(str(unknown_id), theirs["session_id"])}
    assert _works(client, theirs)
    assert theirs["session_id"] not in client.get("/v1/me/sessions", headers=_bearer(mine)).text


def test_refresh_moves_last_used_and_keeps_created(client: TestClient, db: Runtime) -> None:
    tokens = _login(client, register(client))
    _sql(db, "UPDATE user_sessions SET created_at = created_at - interval '1 hour', "
             "last_used_at = last_used_at - interval '1 hour' WHERE id = :id", id=tokens["session_id"])
    before = client.get("/v1/me/sessions", headers=_bearer(tokens)).json()["items"][0]
    fresh = _refresh(client, tokens["refresh_token"]).json()
    after = client.get("/v1/me/sessions", headers=_bearer(fresh)).json()["items"][0]
    assert after["created_at"] == before["created_at"] and after["expires_at"] == before["expires_at"]
    assert after["last_used_at"] > before["last_used_at"]


def test_password_change_ends_every_session_and_only_the_new_password_logs_in(
    client: TestClient, db: Runtime
) -> None:
    name = register(client)
    phone, laptop = _login(client, name), _login(client, name)
    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    assert client.put("/v1/me/password", json=body, headers=_bearer(phone)).status_code == 204

    for tokens in (phone, laptop):
        assert not _works(client, tokens)
        _refused(_refresh(client, tokens["refresh_token"]))
    _refused(client.post("/v1/auth/token", data={"username": name, "password": PASSWORD}))
    fresh = _login(client, name, password=NEW_PASSWORD)
    assert [item["id"] for item in client.get("/v1/me/sessions", headers=_bearer(fresh)).json()["items"]] == [
        fresh["session_id"]
    ]
    owner = pseudonym(user_id(client, _bearer(fresh)), key=db.secrets.audit_pseudonym_key)
    assert _sql(db, "SELECT subject, details FROM audit_log WHERE action = 'password_change'") == [
        (owner, {"sessions_revoked": 2})
    ]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"current_password": "not the password", "new_password": NEW_PASSWORD}, 403),
        ({"current_password": PASSWORD, "new_password": "short"}, 422),
        ({"current_password": PASSWORD, "new_password": "n" * 129}, 422),
        ({"current_password": PASSWORD}, 422),
        ({"current_password": PASSWORD, "new_password": NEW_PASSWORD, "extra": 1}, 422),
    ],
)
def test_refused_password_change_changes_nothing(client: TestClient, body: dict[str, Any], status: int) -> None:
    name = register(client)
    tokens = _login(client, name)
    problem = _refused(client.put("/v1/me/password", json=body, headers=_bearer(tokens)), status)
    assert NEW_PASSWORD not in str(problem) and PASSWORD not in str(problem)
    assert _works(client, tokens)
    assert _refresh(client, tokens["refresh_token"]).status_code == 200
    _login(client, name)  # the old password still works


def test_deleting_the_account_deletes_its_sessions_and_refresh_tokens(client: TestClient, db: Runtime) -> None:
    name = register(client)
    tokens, bystander = _login(client, name), _login(client, register(client))
    _refresh(client, _login(client, name)["refresh_token"])
    owner = user_id(client, _bearer(tokens))
    count = "SELECT count(*) FROM refresh_tokens JOIN user_sessions ON id = session_id WHERE user_id = :u"
    assert _sql(db, count, u=owner) == [(3,)]
    assert client.delete("/v1/me", headers=_bearer(tokens)).status_code == 204
    assert _sql(db, "SELECT count(*) FROM user_sessions WHERE user_id = :u", u=owner) == [(0,)]
    assert _sql(db, "SELECT count(*) FROM refresh_tokens") == [(1,)]  # the bystander's
    _refused(_refresh(client, tokens["refresh_token"]))
    assert _works(client, bystander)


def test_the_export_lists_sessions_but_no_token_material(client: TestClient, db: Runtime) -> None:
    tokens = _login(client, register(client), device="phone")
    auditor = staff_headers(client, db, Scope.auditor)
    bundle = client.get(f"/v1/audit/users/{user_id(client, _bearer(tokens))}/export", headers=auditor)
    assert bundle.status_code == 200, bundle.text
    (row,) = bundle.json()["tables"]["user_sessions"]
    assert row["id"] == tokens["session_id"] and row["device_name"] == "phone"
    digest = hashlib.sha256(tokens["refresh_token"].encode()).hexdigest()
    assert tokens["refresh_token"] not in bundle.text and digest not in bundle.text


@pytest.mark.parametrize("scope", [Scope.auditor, Scope.admin])
def test_staff_accounts_get_sessions_too(client: TestClient, db: Runtime, scope: Scope) -> None:
    name = f"{scope.value}{uuid.uuid4().hex[:8]}"
    staff_headers(client, db, scope, username=name)
    tokens = _login(client, name, device="console")
    fresh = _refresh(client, tokens["refresh_token"]).json()
    assert fresh["scope"] == scope.value
    listed = client.get("/v1/me/sessions", headers=_bearer(fresh)).json()["items"]
    # staff_headers logged in once without a device name; this is the "console" login, refreshed.
    assert [(item["device_name"], item["current"]) for item in listed] == [("console", True), (None, False)]
    assert client.post("/v1/auth/logout", headers=_bearer(fresh)).status_code == 204
    assert not _works(client, fresh)
