"""Issue 13 item 5: failed logins are throttled per account, across addresses and processes,
identically for unknown usernames, with 429 + Retry-After and an audit entry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.main import create_app
from matchsvc.runtime import Runtime
from matchsvc.services.login_throttle import THRESHOLD
from tests.support.accounts import PASSWORD, register

PROBLEM = "application/problem+json"


@pytest.fixture
def elsewhere(db: Runtime) -> Iterator[TestClient]:
    """A second app (another worker process would be the same) seen from another address."""
    with TestClient(create_app(db), raise_server_exceptions=False, client=("203.0.113.9", 4242)) as test_client:
        yield test_client


def _login(client: TestClient, username: str, password: str):
    return client.post("/v1/auth/token", data={"username": username, "password": password})


def _comparable(response) -> tuple[int, dict, str | None]:
    body = {k: v for k, v in response.json().items() if k not in ("request_id",)} if response.content else {}
    return response.status_code, body, response.headers.get("retry-after")


def test_guessing_one_account_backs_off_whatever_the_address(
    client: TestClient, elsewhere: TestClient, db: Runtime
) -> None:
    name = register(client)
    # Wrong passwords from two addresses through two apps count against the same account.
    statuses = [_login(client if i % 2 else elsewhere, name, f"wrong guess {i}").status_code for i in range(THRESHOLD)]
    assert statuses == [401] * THRESHOLD
    for app in (client, elsewhere):
        refused = _login(app, name, PASSWORD)  # even the right password waits out the back-off
        assert refused.status_code == 429 and refused.headers["content-type"] == PROBLEM
        assert int(refused.headers["retry-after"]) >= 1
    assert _login(client, name.upper(), PASSWORD).status_code == 429  # usernames are case-insensitive
    with db.engine.connect() as connection:
        actions = connection.execute(text("SELECT action FROM audit_log ORDER BY id")).scalars().all()
        stored = connection.execute(text("SELECT count(*) FROM login_throttle")).scalar_one()
    assert actions.count("login_failed") == THRESHOLD and actions.count("login_throttled") == 3
    assert stored == 1
    # Other accounts are unaffected.
    other = register(client)
    assert _login(elsewhere, other, PASSWORD).status_code == 200


def test_an_unknown_username_is_throttled_exactly_like_a_real_one(client: TestClient, db: Runtime) -> None:
    real, ghost = register(client), "nobody-here"
    answers = {}
    for name in (real, ghost):
        answers[name] = [_comparable(_login(client, name, "wrong password!")) for _ in range(THRESHOLD + 1)]
    for step, (mine, theirs) in enumerate(zip(answers[real], answers[ghost], strict=True)):
        assert (mine[0], mine[2] is None) == (theirs[0], theirs[2] is None), step
        assert {k: v for k, v in mine[1].items() if k != "instance"} == {
            k: v for k, v in theirs[1].items() if k != "instance"
        }, step
    assert [status for status, _, _ in answers[ghost]] == [401] * THRESHOLD + [429]


def test_a_successful_login_forgets_earlier_failures(client: TestClient, db: Runtime) -> None:
    name = register(client)
    for _ in range(THRESHOLD - 1):
        assert _login(client, name, "wrong password!").status_code == 401
    assert _login(client, name, PASSWORD).status_code == 200
    for _ in range(THRESHOLD - 1):
        assert _login(client, name, "wrong password!").status_code == 401
    assert _login(client, name, PASSWORD).status_code == 200


def test_a_stolen_token_gets_no_more_password_guesses_than_the_login_form(client: TestClient, db: Runtime) -> None:
    name = register(client)
    token = _login(client, name, PASSWORD).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}

    def change(current: str):
        body = {"current_password": current, "new_password": "a different horse, battery and staple"}
        return client.put("/v1/me/password", json=body, headers=headers)

    assert [change(f"wrong guess {i}").status_code for i in range(THRESHOLD)] == [403] * THRESHOLD
    refused = change(PASSWORD)  # the right password waits out the back-off too, and changes nothing
    assert refused.status_code == 429 and refused.headers["content-type"] == PROBLEM
    assert int(refused.headers["retry-after"]) >= 1
    assert _login(client, name, PASSWORD).status_code == 429  # one counter per account, both doors
    with db.engine.connect() as connection:
        blocked_until = connection.execute(text("SELECT blocked_until FROM login_throttle")).scalar_one()
        connection.execute(text("UPDATE login_throttle SET blocked_until = now() - interval '1 second'"))
        connection.commit()
    assert blocked_until is not None
    assert change(PASSWORD).status_code == 204  # after the back-off, the right password works
