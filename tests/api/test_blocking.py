"""Issue 13 item 4: blocking works on people the API showed you, and cannot probe for accounts."""

from __future__ import annotations

import uuid

import httpx
from fastapi.testclient import TestClient

from matchsvc.jobs.matching import run_matching
from matchsvc.runtime import Runtime
from tests.support.accounts import auth_headers
from tests.support.scenario import matchable_user, user_id

PROBLEM = "application/problem+json"


def _without_request(response: httpx.Response) -> dict:
    """The problem body without the fields that echo the request (its path and id)."""
    return {k: v for k, v in response.json().items() if k not in ("instance", "request_id")}


def test_unknown_and_unshown_ids_get_the_same_answer(client: TestClient, db: Runtime) -> None:
    ann, ann_id = matchable_user(client, db, gender="woman", seeks=["man"], ratings=2)
    ben, ben_id = matchable_user(client, db, gender="man", seeks=["woman"], ratings=2)
    stranger = str(user_id(client, auth_headers(client)))  # exists, never shown to Ann
    answers = [client.post(f"/v1/users/{target}/block", headers=ann) for target in (stranger, uuid.uuid4())]
    assert [a.status_code for a in answers] == [404, 404]
    assert all(a.headers["content-type"] == PROBLEM for a in answers)
    assert _without_request(answers[0]) == _without_request(answers[1])
    assert client.post(f"/v1/users/{ben_id}/block", headers=ann).status_code == 404  # not shown yet either

    run_matching(db.sessions, keys=db.keys, k=5, min_ratings=2)
    assert [item["user_id"] for item in client.get("/v1/candidates", headers=ann).json()["items"]] == [ben_id]
    assert client.post(f"/v1/users/{ben_id}/block", headers=ann).status_code == 204
    assert client.post(f"/v1/users/{ben_id}/block", headers=ann).status_code == 204  # idempotent
    assert client.get("/v1/candidates", headers=ben).json()["items"] == []  # hidden both ways
    assert client.post(f"/v1/users/{ann_id}/block", headers=ben).status_code == 404  # no longer shown to Ben
    assert client.post(f"/v1/users/{stranger}/block", headers=ann).status_code == 404


def test_a_past_match_can_still_be_blocked(client: TestClient, db: Runtime) -> None:
    ann, ann_id = matchable_user(client, db, gender="woman", seeks=["man"], ratings=2)
    ben, ben_id = matchable_user(client, db, gender="man", seeks=["woman"], ratings=2)
    run_matching(db.sessions, keys=db.keys, k=5, min_ratings=2)
    client.post(f"/v1/candidates/{ben_id}/like", headers=ann)
    match_id = client.post(f"/v1/candidates/{ann_id}/like", headers=ben).json()["match_id"]
    assert client.delete(f"/v1/matches/{match_id}", headers=ann).status_code == 204
    assert client.post(f"/v1/users/{ben_id}/block", headers=ann).status_code == 204
    assert client.post(f"/v1/users/{ann_id}/block", headers=ben).status_code == 204
