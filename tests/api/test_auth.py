"""Registration, login, tokens and scopes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import anyio
import jwt
import pytest
from fastapi.testclient import TestClient

from matchsvc.runtime import Runtime
from matchsvc.security import Scope, create_access_token
from matchsvc.services import auth as auth_service
from tests.support.accounts import PASSWORD, auth_headers, register

PROBLEM = "application/problem+json"


def test_register_login_me_round_trip(client: TestClient) -> None:
    register(client, "Alice_1")
    headers = auth_headers(client, "alice_1")  # usernames are case-insensitive
    me = client.get("/v1/me", headers=headers)
    assert me.status_code == 200
    body = me.json()
    assert body["username"] == "alice_1"
    assert body["scopes"] == ["user"]
    assert "password" not in me.text and "argon2" not in me.text


def test_token_response_is_oauth2_bearer(client: TestClient) -> None:
    register(client, "bob")
    response = client.post("/v1/auth/token", data={"username": "bob", "password": PASSWORD})
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["scope"] == "user"
    assert 0 < body["expires_in"] <= 24 * 3600


@pytest.mark.parametrize("birth_year", [datetime.now(UTC).year - 17, datetime.now(UTC).year - 18, datetime.now(UTC).year])
def test_under_18_is_refused_and_nothing_is_stored(client: TestClient, birth_year: int) -> None:
    response = client.post(
        "/v1/auth/register", json={"username": "teen", "password": PASSWORD, "birth_year": birth_year}
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert client.post("/v1/auth/token", data={"username": "teen", "password": PASSWORD}).status_code == 401


def test_duplicate_username_is_a_conflict(client: TestClient) -> None:
    register(client, "carol")
    response = client.post("/v1/auth/register", json={"username": "CAROL", "password": PASSWORD, "birth_year": 1990})
    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM


@pytest.mark.parametrize(
    "form",
    [
        {"username": "dave", "password": "wrong password!"},
        {"username": "nobody-here", "password": PASSWORD},
    ],
)
def test_wrong_credentials_get_401_with_challenge(client: TestClient, form: dict[str, str]) -> None:
    register(client, "dave")
    response = client.post("/v1/auth/token", data=form)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["detail"] == "incorrect username or password"  # same for both cases


def test_scope_not_held_is_forbidden(client: TestClient) -> None:
    register(client, "erin")
    response = client.post("/v1/auth/token", data={"username": "erin", "password": PASSWORD, "scope": "auditor"})
    assert response.status_code == 403


def test_auditor_token_cannot_rate(client: TestClient, db: Runtime) -> None:
    with db.sessions() as session:
        auth_service.register(
            session, keys=db.keys, username="audrey", password=PASSWORD, birth_year=1980, scopes=frozenset({Scope.auditor})
        )
    headers = auth_headers(client, "audrey")
    assert client.get("/v1/me", headers=headers).json()["scopes"] == ["auditor"]
    assert client.get("/v1/faces/next", headers=headers).status_code == 403


def _token(
    db: Runtime,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    *,
    secret: str | None = None,
    minutes: int = 5,
    now: datetime | None = None,
) -> str:
    token, _ = create_access_token(
        user_id=user_id,
        session_id=session_id,
        scopes=frozenset({"user"}),
        secret=secret or db.secrets.token_key,
        minutes=minutes,
        now=now,
    )
    return token


def _signed_in(client: TestClient) -> tuple[uuid.UUID, uuid.UUID]:
    """A new account's id and the session its login opened."""
    login = client.post("/v1/auth/token", data={"username": register(client), "password": PASSWORD}).json()
    me = client.get("/v1/me", headers={"Authorization": f"Bearer {login['access_token']}"})
    return uuid.UUID(me.json()["id"]), uuid.UUID(login["session_id"])


def _without_sid(token: str, *, secret: str) -> str:
    """A correctly signed token from before sessions existed: the same claims, no ``sid``."""
    claims = jwt.decode(token, options={"verify_signature": False})
    del claims["sid"]
    return jwt.encode(claims, secret, algorithm="HS256")


@pytest.mark.parametrize(
    "kind",
    [
        "expired", "forged", "garbage", "alg-none", "unknown-user", "unknown-session", "no-sid", "no-scheme",
        "fifty-years", "issued-later",
    ],
)
def test_bad_tokens_get_401(client: TestClient, db: Runtime, kind: str) -> None:
    """Each token differs from a good one (``control``) in one respect only."""
    user_id, session_id = _signed_in(client)
    control = _token(db, user_id, session_id)
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {control}"}).status_code == 200
    token = {
        "expired": lambda: _token(db, user_id, session_id, now=datetime.now(UTC) - timedelta(hours=1)),
        "forged": lambda: _token(db, user_id, session_id, secret="not-the-server-secret-" * 2),
        "garbage": lambda: "not.a.jwt",
        "alg-none": lambda: jwt.encode({"sub": str(user_id), "scope": "user"}, key=None, algorithm="none"),
        "unknown-user": lambda: _token(db, uuid.uuid4(), session_id),
        "unknown-session": lambda: _token(db, user_id, uuid.uuid4()),
        "no-sid": lambda: _without_sid(control, secret=db.secrets.token_key),
        "no-scheme": lambda: "",
        # Correctly signed, but living longer than the service ever issues tokens, or not yet issued.
        "fifty-years": lambda: _token(db, user_id, session_id, minutes=50 * 365 * 24 * 60),
        "issued-later": lambda: _token(db, user_id, session_id, now=datetime.now(UTC) + timedelta(minutes=5)),
    }[kind]()
    response = client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == PROBLEM


@pytest.mark.parametrize("suffix", [b"\xa0", b" ", b"\t", b"\xff", b"\xa0\xff"])
def test_a_good_token_with_trailing_bytes_is_refused_not_a_500(client: TestClient, db: Runtime, suffix: bytes) -> None:
    """The rate limiter strips the header's token and verifies it; authentication compares that
    with its own reading of the header (D39) and must not fail on bytes outside ASCII. Sent as raw
    ASGI: an HTTP client would re-encode the header."""
    user_id, session_id = _signed_in(client)
    token = _token(db, user_id, session_id).encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": "/v1/me", "raw_path": b"/v1/me", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"testserver"), (b"authorization", b"Bearer " + token + suffix)],
        "client": ("127.0.0.1", 1), "server": ("testserver", 80), "state": {},
    }
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    anyio.run(client.app, scope, receive, send)
    # 200 is fine: the JWT library's base64 ignores what is not in its alphabet, so the signature still holds.
    assert sent[0]["status"] in (200, 401)


def test_a_token_of_the_configured_lifetime_is_accepted(client: TestClient, db: Runtime) -> None:
    user_id, session_id = _signed_in(client)
    token = _token(db, user_id, session_id, minutes=db.settings.access_token_minutes)
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_passwords_are_hashed_with_argon2(db: Runtime, client: TestClient) -> None:
    register(client, "frank")
    with db.engine.connect() as connection:
        stored = connection.exec_driver_sql("SELECT password_hash FROM users WHERE username = 'frank'").scalar_one()
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored
