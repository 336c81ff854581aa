"""Rating faces: storage, idempotency, validation, listing."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from matchsvc.runtime import Runtime
from tests.support.accounts import auth_headers
from tests.support.scenario import user_id

PROBLEM = "application/problem+json"


def _serve(client: TestClient, headers: dict[str, str], n: int = 3) -> list[str]:
    return [face["id"] for face in client.get("/v1/faces/next", params={"n": n}, headers=headers).json()["faces"]]


def _rate(client: TestClient, headers: dict[str, str], body: dict, key: str | None = None):
    return client.post("/v1/ratings", json=body, headers={**headers, "Idempotency-Key": key or uuid.uuid4().hex})


def _count(db: Runtime, table: str) -> int:
    with db.engine.connect() as connection:
        return connection.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one()


def test_rate_and_list(client: TestClient) -> None:
    headers = auth_headers(client)
    faces = _serve(client, headers, 3)
    for index, face_id in enumerate(faces):
        response = _rate(client, headers, {"face_id": face_id, "liked": index % 2 == 0, "dwell_ms": 1200})
        assert response.status_code == 201
        assert response.json()["created"] is True
        assert "liked" not in response.json()  # the receipt never echoes the label
    listed = client.get("/v1/me/ratings", headers=headers).json()
    assert [item["face_id"] for item in listed["items"]] == faces
    assert all(item["privatised"] for item in listed["items"])
    assert listed["next_cursor"] is None


def test_retry_with_same_key_replays_and_stores_once(client: TestClient, db: Runtime) -> None:
    headers = auth_headers(client)
    face_id = _serve(client, headers, 1)[0]
    body = {"face_id": face_id, "liked": True}
    first = _rate(client, headers, body, key="retry-1")
    second = _rate(client, headers, body, key="retry-1")
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert _count(db, "ratings") == 1


def test_same_key_different_body_is_a_conflict(client: TestClient, db: Runtime) -> None:
    headers = auth_headers(client)
    face_id = _serve(client, headers, 1)[0]
    assert _rate(client, headers, {"face_id": face_id, "liked": True}, key="k").status_code == 201
    response = _rate(client, headers, {"face_id": face_id, "liked": False}, key="k")
    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM


def test_keys_are_per_user(client: TestClient) -> None:
    alice, bob = auth_headers(client), auth_headers(client)
    assert _rate(client, alice, {"face_id": _serve(client, alice, 1)[0], "liked": True}, key="shared").status_code == 201
    assert _rate(client, bob, {"face_id": _serve(client, bob, 1)[0], "liked": True}, key="shared").status_code == 201


def test_re_rating_a_face_replaces_the_rating(client: TestClient, db: Runtime) -> None:
    headers = auth_headers(client)
    face_id = _serve(client, headers, 1)[0]
    assert _rate(client, headers, {"face_id": face_id, "liked": True}).status_code == 201
    second = _rate(client, headers, {"face_id": face_id, "liked": False})
    assert second.status_code == 200 and second.json()["created"] is False
    assert _count(db, "ratings") == 1
    item = client.get("/v1/me/ratings", headers=headers).json()["items"][0]
    assert item["updated_at"] > item["created_at"]
    # The re-rating is a fresh randomized-response release of the same answer slot: charged again.
    assert client.get("/v1/me/privacy", headers=headers).json()["spends"] == 2


def test_cursor_pagination_walks_every_rating_once(client: TestClient) -> None:
    headers = auth_headers(client)
    faces = _serve(client, headers, 7)
    for face_id in faces:
        assert _rate(client, headers, {"face_id": face_id, "liked": True}).status_code == 201
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/me/ratings", params=params, headers=headers).json()
        seen += [item["face_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == faces


@pytest.mark.parametrize("cursor", ["garbage", "djE6LTE", "eHg6MQ", "!!!!", "dj" * 30])
def test_bad_cursor_is_422(client: TestClient, cursor: str) -> None:
    response = client.get("/v1/me/ratings", params={"cursor": cursor}, headers=auth_headers(client))
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM


BAD_BODIES = [
    ("liked is a string", lambda face: {"face_id": face, "liked": "yes"}),
    ("liked is an int", lambda face: {"face_id": face, "liked": 1}),
    ("liked missing", lambda face: {"face_id": face}),
    ("face_id not a uuid", lambda face: {"face_id": "123", "liked": True}),
    ("negative dwell", lambda face: {"face_id": face, "liked": True, "dwell_ms": -5}),
    ("dwell float", lambda face: {"face_id": face, "liked": True, "dwell_ms": 1.5}),
    ("dwell too large", lambda face: {"face_id": face, "liked": True, "dwell_ms": 10**9}),
    ("unknown field", lambda face: {"face_id": face, "liked": True, "score": 3}),
    ("array body", lambda face: [face]),
    ("null body", lambda face: None),
]


@pytest.mark.parametrize("name,make", BAD_BODIES, ids=[name for name, _ in BAD_BODIES])
def test_bad_bodies_are_422_and_store_nothing(client: TestClient, db: Runtime, name: str, make) -> None:
    headers = auth_headers(client)
    face_id = _serve(client, headers, 1)[0]
    response = _rate(client, headers, make(face_id))
    assert response.status_code == 422, name
    assert response.headers["content-type"] == PROBLEM
    assert _count(db, "ratings") == 0 and _count(db, "idempotency_keys") == 0


def test_unknown_and_unserved_faces_are_404_and_store_nothing(client: TestClient, db: Runtime) -> None:
    alice, bob = auth_headers(client), auth_headers(client)
    bobs_face = _serve(client, bob, 1)[0]
    for face_id in (str(uuid.uuid4()), bobs_face):
        response = _rate(client, alice, {"face_id": face_id, "liked": True})
        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM
    assert _count(db, "ratings") == 0 and _count(db, "idempotency_keys") == 0


@pytest.mark.parametrize("key", [None, "", "x" * 256, "has space", "tab\there"])
def test_idempotency_key_is_required_and_validated(client: TestClient, key: str | None) -> None:
    headers = auth_headers(client)
    face_id = _serve(client, headers, 1)[0]
    extra = {} if key is None else {"Idempotency-Key": key}
    response = client.post("/v1/ratings", json={"face_id": face_id, "liked": True}, headers={**headers, **extra})
    assert response.status_code == 422


def test_malformed_json_is_422(client: TestClient) -> None:
    headers = {**auth_headers(client), "Idempotency-Key": "m", "Content-Type": "application/json"}
    response = client.post("/v1/ratings", content=b'{"face_id": ', headers=headers)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM


@pytest.mark.parametrize("path", ["/v1/ratings", "/v1/ratings/batch"])
def test_a_retry_that_waited_on_the_first_attempt_replays_it(client: TestClient, db: Runtime, path: str) -> None:
    """A mobile client retries while its first attempt is still in flight: both wait on the user's
    writer lock, and whichever runs second replays the first. Its lock was granted after the first
    committed, but its statement's snapshot was older: a record read with the lock would be missed,
    and the rating stored and charged twice."""
    headers = auth_headers(client)
    face_id = _serve(client, headers, 1)[0]
    item = {"face_id": face_id, "liked": True}
    body = item if path == "/v1/ratings" else {"items": [item]}
    with db.engine.connect() as holder:  # an earlier request of the same user, still in flight
        holder.exec_driver_sql("SELECT 1 FROM user_keys WHERE user_id = %s FOR UPDATE", (user_id(client, headers),))
        with ThreadPoolExecutor(2) as pool:
            attempts = [
                pool.submit(client.post, path, json=body, headers={**headers, "Idempotency-Key": "in-flight"})
                for _ in range(2)
            ]
            deadline = time.monotonic() + 10
            while _waiting_on_locks(db) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert _waiting_on_locks(db) == 2
            holder.rollback()
            first, second = (attempt.result(timeout=30) for attempt in attempts)
    assert first.status_code == second.status_code
    assert first.json() == second.json()
    assert sorted(r.headers.get("idempotent-replayed", "false") for r in (first, second)) == ["false", "true"]
    assert _count(db, "ratings") == 1
    assert _count(db, "privacy_ledger") == 1


def _waiting_on_locks(db: Runtime) -> int:
    with db.engine.connect() as connection:
        return connection.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ).scalar_one()
