"""Issue 5's acceptance through REST: complementary users who pass each other's filters become
candidates and can match; blocked and filtered-out pairs never appear; nothing leaks scores or latents."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from fastapi.testclient import TestClient

from engine.latent import DIMENSION_NAMES
from matchsvc.jobs.matching import run_matching
from matchsvc.runtime import Runtime
from tests.support.accounts import auth_headers
from tests.support.scenario import served_latents

SMILE = DIMENSION_NAMES.index("smile")
GLASSES = DIMENSION_NAMES.index("glasses")


def _train(client: TestClient, db: Runtime, headers: dict[str, str], axis: int, n: int = 20) -> None:
    """Rate ``n`` faces, liking exactly those high on ``axis``."""
    rated = 0
    while rated < n:
        faces = client.get("/v1/faces/next", params={"n": 10}, headers=headers).json()["faces"]
        latents = served_latents(db, faces)
        for face in faces:
            liked = latents[face["id"]][axis] > 0
            response = client.post(
                "/v1/ratings",
                json={"face_id": face["id"], "liked": bool(liked)},
                headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
            )
            assert response.status_code == 201
            rated += 1


def _person(client, db, *, likes_axis, looks_axis, gender, seeks, ages=(18, 99)) -> tuple[dict[str, str], str]:
    headers = auth_headers(client)
    _train(client, db, headers, likes_axis)
    look = np.zeros(db.latent_space.dim)
    look[looks_axis] = 2.5
    assert client.put("/v1/me/appearance", json={"latent": look.tolist()}, headers=headers).status_code == 204
    profile = {"gender": gender, "seeks": seeks, "age_min": ages[0], "age_max": ages[1]}
    assert client.put("/v1/me/profile", json=profile, headers=headers).status_code == 200
    return headers, client.get("/v1/me", headers=headers).json()["id"]


def _candidates(client: TestClient, headers: dict[str, str]) -> list[str]:
    return [item["user_id"] for item in client.get("/v1/candidates", headers=headers).json()["items"]]


@pytest.mark.slow
def test_complementary_users_match_and_filters_and_blocks_hold(client: TestClient, db: Runtime) -> None:
    # Ann likes smiles and wears glasses; Ben likes glasses and smiles: complementary.
    ann, ann_id = _person(client, db, likes_axis=SMILE, looks_axis=GLASSES, gender="woman", seeks=["man"])
    ben, ben_id = _person(client, db, likes_axis=GLASSES, looks_axis=SMILE, gender="man", seeks=["woman"])
    # Cat is a woman seeking women: filtered out for Ann (gender) and Ben (seeks).
    cat, cat_id = _person(client, db, likes_axis=SMILE, looks_axis=SMILE, gender="woman", seeks=["woman"])
    # Dan would suit Ann, but once she is shown him she blocks him.
    dan, dan_id = _person(client, db, likes_axis=GLASSES, looks_axis=SMILE, gender="man", seeks=["woman"])
    # Eve has not set a profile: skipped by the job.
    eve = auth_headers(client)

    assert client.post(f"/v1/users/{dan_id}/block", headers=ann).status_code == 404  # never shown to her
    run_matching(db.sessions, keys=db.keys, k=5, min_ratings=10)
    assert dan_id in _candidates(client, ann)
    assert client.post(f"/v1/users/{dan_id}/block", headers=ann).status_code == 204
    report = run_matching(db.sessions, keys=db.keys, k=5, min_ratings=10)
    assert report.matchable == 4 and report.users == 5 and report.skipped_no_appearance == 1

    assert _candidates(client, ann) == [ben_id]
    assert _candidates(client, ben) == [ann_id]
    assert dan_id not in _candidates(client, ann) and ann_id not in _candidates(client, dan)
    assert cat_id not in _candidates(client, ann) + _candidates(client, ben) and _candidates(client, cat) == []
    assert _candidates(client, eve) == []

    listing = client.get("/v1/candidates", headers=ann).json()
    assert set(listing["items"][0]) == {"user_id", "avatar_url"}  # no score, no latent
    avatar = client.get(listing["items"][0]["avatar_url"], headers=ann)
    assert avatar.status_code == 200 and avatar.content.startswith(b"\x89PNG")
    assert client.get(f"/v1/candidates/{cat_id}/avatar", headers=ann).status_code == 404

    first = client.post(f"/v1/candidates/{ben_id}/like", headers=ann).json()
    assert first == {"matched": False, "match_id": None}
    second = client.post(f"/v1/candidates/{ann_id}/like", headers=ben).json()
    assert second["matched"] is True
    matches = client.get("/v1/matches", headers=ann).json()["items"]
    assert [m["user_id"] for m in matches] == [ben_id] and matches[0]["id"] == second["match_id"]
    assert client.get(matches[0]["avatar_url"], headers=ann).status_code == 200
    assert client.get(f"/v1/matches/{matches[0]['id']}/avatar", headers=cat).status_code == 404

    # Matched pairs are not suggested again; unmatching keeps them apart.
    run_matching(db.sessions, keys=db.keys, k=5, min_ratings=10)
    assert ben_id not in _candidates(client, ann)
    assert client.delete(f"/v1/matches/{second['match_id']}", headers=ben).status_code == 204
    assert client.get("/v1/matches", headers=ann).json()["items"] == []


def test_appearance_is_validated_and_nothing_is_stored_when_invalid(client: TestClient, db: Runtime) -> None:
    headers = auth_headers(client)
    dim = db.latent_space.dim
    young = np.zeros(dim)
    young[DIMENSION_NAMES.index("apparent_age")] = -2.5
    for latent in ([0.0] * (dim - 1), [0.0] * (dim - 1) + [9.0], young.tolist(), [0.0] * (dim - 1) + ["nan"]):
        response = client.put("/v1/me/appearance", json={"latent": latent}, headers=headers)
        assert response.status_code == 422, latent
    with db.engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM appearances").scalar_one() == 0
    assert client.get("/v1/me/avatar", headers=headers).status_code == 404
    assert client.put("/v1/me/appearance", json={"latent": [0.0] * dim}, headers=headers).status_code == 204
    assert client.get("/v1/me/avatar", headers=headers).headers["content-type"] == "image/png"
    bad_profiles = [
        {"gender": "woman", "seeks": [], "age_min": 20, "age_max": 30},
        {"gender": "robot", "seeks": ["man"], "age_min": 20, "age_max": 30},
        {"gender": "woman", "seeks": ["man"], "age_min": 40, "age_max": 30},
        {"gender": "woman", "seeks": ["man"], "age_min": 16, "age_max": 30},
    ]
    for profile in bad_profiles:
        assert client.put("/v1/me/profile", json=profile, headers=headers).status_code == 422, profile
    assert client.get("/v1/me/profile", headers=headers).status_code == 404
