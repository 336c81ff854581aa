"""The Ray backend returns exactly what the local kernel returns, on a local Ray runtime."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import ray
from fastapi.testclient import TestClient

from engine.scoring import reciprocal_topk
from matchsvc.jobs.matching import run_matching
from matchsvc.jobs.ray_backend import ray_reciprocal_topk
from matchsvc.runtime import Runtime
from tests.support.accounts import auth_headers
from tests.support.scenario import rate_faces, set_profile



@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20)
    yield
    ray.shutdown()


def _case(seed: int, n: int, d: int) -> dict:
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 4, n)
    seeks = np.array([int(rng.integers(1, 16)) for _ in range(n)], dtype=np.int64)
    exclude = rng.integers(0, n, (2, n // 3))
    return {
        "pref": rng.normal(size=(n, d)),
        "bias": rng.normal(size=n),
        "looks": rng.uniform(-3, 3, (n, d)),
        "group": group,
        "seeks": seeks,
        "exclude": exclude,
    }


@pytest.mark.slow
@pytest.mark.parametrize("seed,n,partitions", [(0, 57, 3), (1, 300, 4), (2, 5, 2), (3, 120, 1)])
def test_ray_matches_local(local_ray: None, seed: int, n: int, partitions: int) -> None:
    case = _case(seed, n, 24)
    k = 7
    local_scores, local_indices = reciprocal_topk(**case, k=k, device="cpu")
    ray_scores, ray_indices = ray_reciprocal_topk(**case, k=k, device="cpu", partitions=partitions)
    assert np.array_equal(ray_indices, local_indices)
    finite = np.isfinite(local_scores)
    assert np.array_equal(finite, np.isfinite(ray_scores))
    np.testing.assert_allclose(ray_scores[finite], local_scores[finite], rtol=1e-6, atol=0)


def test_ray_tie_breaking_on_duplicated_users(local_ray: None) -> None:
    rng = np.random.default_rng(9)
    base = rng.normal(size=(6, 8))
    pref = np.repeat(base, 3, axis=0)  # users come in identical triples: exact score ties
    looks = np.repeat(rng.uniform(-2, 2, (6, 8)), 3, axis=0)
    bias = np.zeros(18)
    local = reciprocal_topk(pref, bias, looks, 5, device="cpu")
    remote = ray_reciprocal_topk(pref, bias, looks, 5, device="cpu", partitions=3)
    assert np.array_equal(local[1], remote[1])


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
