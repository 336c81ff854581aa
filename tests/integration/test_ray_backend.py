"""The Ray backend decrypts in its tasks and stores exactly the local job's lists (local two-worker Ray)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import ray
from fastapi.testclient import TestClient
from sqlalchemy import text

from benchmarks.matching import load_synthetic_users
from matchsvc.jobs import match_inputs
from matchsvc.jobs.matching import run_matching
from matchsvc.jobs.ray_backend import Found, merge_found, score_ranges
from matchsvc.keys import KeyRingStore
from matchsvc.repositories import matching as matching_repo
from matchsvc.repositories.id_ranges import IdRange
from matchsvc.runtime import Runtime
from matchsvc.services import matching as matching_service
from privacy.crypto import KeyRing
from tests.support.accounts import auth_headers
from tests.support.scenario import rate_faces, set_profile


@pytest.fixture(scope="module")
def local_ray(runtime: Runtime) -> Iterator[None]:
    """Two workers on loopback that, like docker-compose's nodes, find the database and the key ring
    in their own environment."""
    assert runtime.scratch is not None
    env = {
        "DATABASE_URL": runtime.engine.url.render_as_string(hide_password=False),
        "MATCHSVC_KEYRING_FILE": str(runtime.scratch / "keyring.json"),
        "MATCHSVC_LOG_LEVEL": "ERROR",
    }
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=100 * 2**20,
        runtime_env={"env_vars": env},
    )
    yield
    ray.shutdown()


def _lists(db: Runtime) -> dict[str, list[str]]:
    with db.engine.connect() as connection:
        rows = connection.execute(text("SELECT user_id, candidate_id FROM candidates ORDER BY user_id, rank"))
        lists: dict[str, list[str]] = {}
        for owner, candidate in rows:
            lists.setdefault(str(owner), []).append(str(candidate))
    return lists


def _decide_some(db: Runtime) -> None:
    """Likes, passes and blocks on stored candidates, so that exclusions cross the Ray ranges."""
    for number, owner in enumerate(_owners(db)[::3]):
        with db.sessions() as session:
            candidates = matching_repo.stored_lists(session, [owner]).get(owner, [])
        if len(candidates) < 3:
            continue
        with db.sessions() as session:
            matching_service.decide(session, user_id=owner, target_id=candidates[0], like=True, keys=db.keys)
        with db.sessions() as session:
            matching_service.decide(session, user_id=owner, target_id=candidates[1], like=False, keys=db.keys)
        if number % 2:
            with db.sessions() as session:
                matching_service.block(session, user_id=owner, target_id=candidates[2])


def _owners(db: Runtime) -> list:
    with db.engine.connect() as connection:
        return [row[0] for row in connection.execute(text("SELECT id FROM users ORDER BY id"))]


@pytest.mark.slow
def test_ray_stores_the_local_lists_for_any_number_of_ranges(local_ray: None, db: Runtime) -> None:
    load_synthetic_users(db, n=150, seed=4)
    run_matching(db.sessions, keys=db.keys, k=6, min_ratings=1)
    _decide_some(db)
    local = run_matching(db.sessions, keys=db.keys, k=6, min_ratings=1)
    expected = _lists(db)
    assert sum(map(len, expected.values())) > 300
    for partitions in (1, 2, 3, 5):
        with db.engine.begin() as connection:
            connection.execute(text("DELETE FROM candidates"))
        remote = run_matching(db.sessions, keys=db.keys, k=6, min_ratings=1, backend="ray", partitions=partitions)
        assert (remote.matchable, remote.refreshed, remote.backend) == (local.matchable, local.matchable, "ray")
        assert _lists(db) == expected, partitions


@pytest.mark.slow
def test_the_driver_opens_nothing(local_ray: None, db: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver has no usable key and cannot open a row: the tasks still produce the local lists."""
    load_synthetic_users(db, n=60, seed=5)
    run_matching(db.sessions, keys=db.keys, k=5, min_ratings=1)
    expected = _lists(db)

    def refuse(**_: object) -> None:
        raise AssertionError("the driver opened a user's data key")

    monkeypatch.setattr(match_inputs, "open_cipher", refuse)
    stranger = KeyRingStore(json_text=KeyRing.generate().to_json())
    with db.engine.begin() as connection:
        connection.execute(text("DELETE FROM candidates"))
    report = run_matching(db.sessions, keys=stranger, k=5, min_ratings=1, backend="ray", partitions=3)
    assert report.matchable == 60
    assert _lists(db) == expected


def test_merge_keeps_each_candidate_once_at_its_best_score_and_breaks_ties_by_id() -> None:
    seeker = np.array([[0, 9]], dtype=np.uint64)
    pad = np.iinfo(np.uint64).max

    def found(scores: list[float], ids: list[int], ok: list[bool]) -> Found:
        candidates = np.array([[[0, i] if i >= 0 else [pad, pad] for i in ids]], dtype=np.uint64)
        return Found(users=seeker, scores=np.array([scores], dtype=np.float32), candidates=candidates, acceptable=np.array([ok]))

    a = found([0.9, 0.5, 0.5, -np.inf], [4, 3, 2, -1], [True, True, True, False])
    b = found([0.9, 0.8, 0.7, 0.1], [5, 2, 6, 7], [True, True, False, True])
    ranked = merge_found([a, b], k=3, width=4)
    # by score: 4 and 5 tie at 0.9 (lower id first), 2 at its best 0.8, then 6 (not acceptable) fills the width
    assert [u.int for u in next(iter(ranked.values()))] == [4, 5, 2]
    ranked = merge_found([a, b], k=5, width=4)
    assert [u.int for u in next(iter(ranked.values()))] == [4, 5, 2]


def test_a_merge_of_tasks_that_saw_different_users_is_refused() -> None:
    one = Found(
        users=np.array([[0, 1]], dtype=np.uint64),
        scores=np.zeros((1, 1), dtype=np.float32),
        candidates=np.zeros((1, 1, 2), dtype=np.uint64),
        acceptable=np.ones((1, 1), dtype=bool),
    )
    other = Found(users=np.array([[0, 2]], dtype=np.uint64), scores=one.scores, candidates=one.candidates, acceptable=one.acceptable)
    with pytest.raises(RuntimeError, match="snapshot"):
        merge_found([one, other], k=1, width=1)


def test_matching_job_with_the_ray_backend_stores_the_same_candidates(
    local_ray: None, client: TestClient, db: Runtime
) -> None:
    users = []
    for index in range(4):
        headers = auth_headers(client)
        rate_faces(client, headers, n=12)
        look = np.zeros(db.latent_space.dim)
        look[3] = index - 1.5  # four different looks
        set_profile(client, headers, look=look, gender="woman" if index % 2 else "man", seeks=["woman", "man"])
        users.append(headers)

    def candidates() -> list[list[str]]:
        return [[c["user_id"] for c in client.get("/v1/candidates", headers=h).json()["items"]] for h in users]

    local = run_matching(db.sessions, keys=db.keys, k=3, min_ratings=10)
    expected = candidates()
    remote = run_matching(db.sessions, keys=db.keys, k=3, min_ratings=10, backend="ray", partitions=2)
    assert remote.matchable == local.matchable == 4 and remote.backend == "ray"
    assert candidates() == expected


def test_a_range_without_matchable_users_yields_no_lists(db: Runtime) -> None:
    load_synthetic_users(db, n=8, seed=6)
    beyond = IdRange(low=uuid.UUID(int=2**128 - 1), high=None)
    (found,), stats = score_ranges(db.sessions, keys=db.keys, ranges=[beyond], snapshot=None, min_ratings=1, width=4)
    assert found.users.shape == (0, 2) and stats.matchable == 0
    assert merge_found([found], k=2, width=4) == {}
