"""Ratings randomized on the device (issue 17), and batches of ratings for offline swipes (issue 14)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.main import create_app
from matchsvc.runtime import Runtime
from tests.support.accounts import auth_headers

PROBLEM = "application/problem+json"


def _serve(client: TestClient, headers: dict[str, str], n: int) -> list[str]:
    return [face["id"] for face in client.get("/v1/faces/next", params={"n": n}, headers=headers).json()["faces"]]


def _post(client: TestClient, path: str, headers: dict[str, str], body: object, key: str | None = None):
    return client.post(path, json=body, headers={**headers, "Idempotency-Key": key or uuid.uuid4().hex})


def _stored(db: Runtime, headers_user: uuid.UUID) -> dict[str, tuple[float | None]]:
    with db.engine.connect() as connection:
        rows = connection.execute(
            text("SELECT face_id::text, label_epsilon FROM ratings WHERE user_id = :u"), {"u": headers_user}
        ).all()
    return dict(rows)


def _ledger(db: Runtime, user: uuid.UUID) -> list[tuple[str, str, float, str, bool]]:
    with db.engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                text("SELECT scope, mechanism, epsilon, neighbouring, randomized_on_device FROM privacy_ledger "
                     "WHERE user_id = :u ORDER BY id"),
                {"u": user},
            )
        ]


def _me(client: TestClient, headers: dict[str, str]) -> uuid.UUID:
    return uuid.UUID(client.get("/v1/me", headers=headers).json()["id"])


def _count(db: Runtime, table: str) -> int:
    with db.engine.connect() as connection:
        return connection.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one()


# --- on the device -------------------------------------------------------------------------------


def test_on_device_labels_are_stored_exactly_as_sent_and_charged_like_server_randomization(
    client: TestClient, db: Runtime
) -> None:
    headers = auth_headers(client)
    user = _me(client, headers)
    faces = _serve(client, headers, 9)
    sent = [(face, index % 3 != 0, [0.5, 1, 2.5, 8][index % 4]) for index, face in enumerate(faces[:8])]
    for face, label, epsilon in sent:
        response = _post(client, "/v1/ratings", headers, {"face_id": face, "randomized_like": label, "epsilon": epsilon})
        assert response.status_code == 201, response.text
    server = _post(client, "/v1/ratings", headers, {"face_id": faces[8], "liked": True})
    assert server.status_code == 201
    listed = {item["face_id"]: item for item in client.get("/v1/me/ratings", headers=headers).json()["items"]}
    assert all(listed[face]["recorded_like"] is label and listed[face]["privatised"] for face, label, _ in sent)
    stored = _stored(db, user)
    assert all(stored[face] == float(epsilon) for face, _, epsilon in sent)
    assert stored[faces[8]] == db.policy.epsilon
    ledger = _ledger(db, user)
    server_entry = ledger[-1]
    assert server_entry[4] is False
    for (scope, mechanism, epsilon, relation, on_device), (face, _, sent_epsilon) in zip(ledger[:-1], sent, strict=True):
        assert (scope, epsilon, on_device) == (f"rating:{face}", float(sent_epsilon), True)
        assert (mechanism, relation) == server_entry[1:4:2]  # same mechanism name and relation


def test_the_privacy_report_tells_a_client_what_to_send(client: TestClient, db: Runtime) -> None:
    report = client.get("/v1/me/privacy", headers=auth_headers(client)).json()
    assert report["epsilon_per_rating"] == db.policy.epsilon
    assert (report["on_device_epsilon_min"], report["on_device_epsilon_max"]) == (
        db.settings.local_epsilon_min, db.settings.local_epsilon_max,
    )


BAD_ON_DEVICE = [
    ("both forms", lambda f: {"face_id": f, "liked": True, "randomized_like": True, "epsilon": 2}),
    ("neither form", lambda f: {"face_id": f, "epsilon": 2}),
    ("no epsilon", lambda f: {"face_id": f, "randomized_like": True}),
    ("epsilon with liked", lambda f: {"face_id": f, "liked": True, "epsilon": 2}),
    ("epsilon a string", lambda f: {"face_id": f, "randomized_like": True, "epsilon": "2"}),
    ("epsilon a bool", lambda f: {"face_id": f, "randomized_like": True, "epsilon": True}),
    ("epsilon below the range", lambda f: {"face_id": f, "randomized_like": True, "epsilon": 0.1}),
    ("epsilon above the range", lambda f: {"face_id": f, "randomized_like": True, "epsilon": 9}),
    ("epsilon null", lambda f: {"face_id": f, "randomized_like": True, "epsilon": None}),
    ("randomized_like a string", lambda f: {"face_id": f, "randomized_like": "true", "epsilon": 2}),
]


@pytest.mark.parametrize("name,make", BAD_ON_DEVICE, ids=[name for name, _ in BAD_ON_DEVICE])
@pytest.mark.parametrize("path", ["/v1/ratings", "/v1/ratings/batch"])
def test_bad_on_device_ratings_are_422_and_store_nothing(client: TestClient, db: Runtime, name: str, make, path: str) -> None:
    headers = auth_headers(client)
    face = _serve(client, headers, 1)[0]
    body = make(face) if path == "/v1/ratings" else {"items": [make(face)]}
    response = _post(client, path, headers, body)
    assert response.status_code == 422, (name, response.text)
    assert response.headers["content-type"] == PROBLEM
    assert _count(db, "ratings") == _count(db, "privacy_ledger") == _count(db, "idempotency_keys") == 0


# --- batches -------------------------------------------------------------------------------------


def test_a_batch_reports_each_item_in_order_and_keeps_the_others(client: TestClient, db: Runtime) -> None:
    headers = auth_headers(client)
    user = _me(client, headers)
    faces = _serve(client, headers, 4)
    unserved = _serve(client, auth_headers(client), 1)[0]
    at_cap = faces[3]  # one rating at the cap's epsilon: a second one of this face is refused
    assert _post(client, "/v1/ratings", headers, {"face_id": at_cap, "randomized_like": True, "epsilon": 8}).status_code == 201
    assert _post(client, "/v1/ratings", headers, {"face_id": faces[2], "liked": True}).status_code == 201
    items = [
        {"face_id": faces[0], "liked": True, "dwell_ms": 800},
        {"face_id": unserved, "liked": True},
        {"face_id": faces[1], "randomized_like": False, "epsilon": 1.5},
        {"face_id": at_cap, "liked": False},
        {"face_id": faces[2], "liked": False},
    ]
    ledger_before = len(_ledger(db, user))
    response = _post(client, "/v1/ratings/batch", headers, {"items": items}, key="offline-1")
    assert response.status_code == 200, response.text
    results = response.json()["items"]
    assert [(r["face_id"], r["status"]) for r in results] == [
        (faces[0], "created"), (unserved, "not_found"), (faces[1], "created"), (at_cap, "budget_exhausted"),
        (faces[2], "replaced"),
    ]
    assert [r["recorded_at"] is None for r in results] == [False, True, False, True, False]
    ledger = _ledger(db, user)[ledger_before:]  # one spend per stored item, exactly as single ratings
    assert [(scope, epsilon, on_device) for scope, _, epsilon, _, on_device in ledger] == [
        (f"rating:{faces[0]}", db.policy.epsilon, False),
        (f"rating:{faces[1]}", 1.5, True),
        (f"rating:{faces[2]}", db.policy.epsilon, False),
    ]
    listed = {item["face_id"]: item for item in client.get("/v1/me/ratings", headers=headers).json()["items"]}
    assert listed[faces[1]]["recorded_like"] is False and set(listed) == set(faces)
    assert _stored(db, user)[at_cap] == 8.0  # the refused item left the earlier rating alone

    again = _post(client, "/v1/ratings/batch", headers, {"items": items}, key="offline-1")
    assert again.status_code == 200 and again.json() == response.json()
    assert again.headers["idempotent-replayed"] == "true" and len(_ledger(db, user)) == ledger_before + 3
    changed = _post(client, "/v1/ratings/batch", headers, {"items": items[:2]}, key="offline-1")
    assert changed.status_code == 409 and changed.headers["content-type"] == PROBLEM
    single = _post(client, "/v1/ratings", headers, items[0], key="offline-1")  # keys are shared with singles
    assert single.status_code == 409


@pytest.mark.parametrize("size", [0, 101])
def test_a_batch_holds_1_to_100_items(client: TestClient, db: Runtime, size: int) -> None:
    headers = auth_headers(client)
    face = _serve(client, headers, 1)[0]
    response = _post(client, "/v1/ratings/batch", headers, {"items": [{"face_id": face, "liked": True}] * size})
    assert response.status_code == 422 and response.headers["content-type"] == PROBLEM
    assert _count(db, "ratings") == _count(db, "idempotency_keys") == 0


def test_a_face_twice_in_one_batch_is_422_and_stores_nothing(client: TestClient, db: Runtime) -> None:
    headers = auth_headers(client)
    faces = _serve(client, headers, 2)
    items = [{"face_id": faces[0], "liked": True}, {"face_id": faces[1], "liked": True},
             {"face_id": faces[0], "randomized_like": False, "epsilon": 2}]
    response = _post(client, "/v1/ratings/batch", headers, {"items": items})
    assert response.status_code == 422 and response.headers["content-type"] == PROBLEM
    assert _count(db, "ratings") == _count(db, "privacy_ledger") == _count(db, "idempotency_keys") == 0


@pytest.fixture
def limited(db: Runtime) -> Iterator[TestClient]:
    settings = db.settings.model_copy(update={"rate_limit_per_minute": 1, "rate_limit_burst": 10})
    runtime = dataclasses.replace(db, settings=settings, embedded=None, scratch=None)
    with TestClient(create_app(runtime), raise_server_exceptions=False) as client:
        yield client


def test_the_rate_limiter_counts_a_batch_as_its_items(limited: TestClient, db: Runtime) -> None:
    """Burst 10: register + token + the feed take 3 tokens (register and token by address)."""
    headers = auth_headers(limited)
    faces = _serve(limited, headers, 8)  # the user's bucket: 1 token spent, 9 left
    first = _post(limited, "/v1/ratings/batch", headers, {"items": [{"face_id": f, "liked": True} for f in faces]})
    assert first.status_code == 200  # 8 tokens: 1 left
    second = _post(limited, "/v1/ratings/batch", headers, {"items": [{"face_id": faces[0], "liked": True}] * 1})
    assert second.status_code == 200  # the last token
    refused = _post(limited, "/v1/ratings", headers, {"face_id": faces[1], "liked": False})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1


def test_the_rating_endpoints_check_the_session_and_the_scopes_of_the_account_now(
    client: TestClient, db: Runtime
) -> None:
    """They check the session in their own database work (D40, in the lock's statement since D44),
    with the answers every endpoint gives, and before they look at what the body asks for."""
    headers = auth_headers(client)
    user = _me(client, headers)
    face = _serve(client, headers, 1)[0]
    with db.engine.begin() as connection:  # the account no longer holds the user scope
        connection.execute(text("UPDATE users SET scopes = '{auditor}' WHERE id = :id"), {"id": user})
    single = _post(client, "/v1/ratings", headers, {"face_id": face, "liked": True})
    batch = _post(client, "/v1/ratings/batch", headers, {"items": [{"face_id": face, "liked": True}]})
    assert single.status_code == batch.status_code == 403
    assert single.headers["content-type"] == PROBLEM
    with db.engine.begin() as connection:
        connection.execute(text("UPDATE users SET scopes = '{user}' WHERE id = :id"), {"id": user})
    assert client.post("/v1/auth/logout", headers=headers).status_code == 204
    single = _post(client, "/v1/ratings", headers, {"face_id": face, "liked": True})
    batch = _post(client, "/v1/ratings/batch", headers, {"items": [{"face_id": face, "liked": True}]})
    assert single.status_code == batch.status_code == 401
    assert single.json()["detail"] == "invalid or expired token"
    out_of_range = _post(client, "/v1/ratings", headers, {"face_id": face, "randomized_like": True, "epsilon": 1e6})
    assert out_of_range.status_code == 401  # a valid caller would get 422 for this epsilon
    assert _count(db, "ratings") == _count(db, "privacy_ledger") == _count(db, "idempotency_keys") == 0
