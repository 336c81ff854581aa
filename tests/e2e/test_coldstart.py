"""Issue 7's acceptance through REST: a brand-new user's first 10 faces are the adaptive ones, and
``GET /v1/me/preference-profile`` changes as they rate, their persona mix moving towards their own
persona once the population service has released a model.

Simulated people with a hidden preference answer through the API only; the test reads the
served faces' latents and the user's belief from the service to judge the feed's choices.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy.special import expit

from engine.latent.base import sample_outside_safety
from engine.preference import Posterior, rr_flip_probability, rr_information
from engine.sampling import informative_indices
from matchsvc.jobs.refit import run_refits
from matchsvc.runtime import Runtime
from matchsvc.services.population import PopulationPolicy, current_release, fit_release
from matchsvc.services.preferences import current_belief
from tests.support.accounts import auth_headers
from tests.support.scenario import served_latents, user_id

PROFILE_KEYS = {
    "ratings", "personas", "dominant_persona", "certainty", "ratings_to_improve", "population_version",
    "drift_detected",
}


def _information(posterior: Posterior, Z: np.ndarray, flip_probability: float) -> float:
    """Expected information gain of rating all of ``Z`` together: ``0.5 log det(I + C^1/2 X S X^T C^1/2)``.

    ``X`` the features ``[z, 1]``, ``S`` the posterior covariance, ``C`` each face's Fisher
    information about its logit under randomized response at the posterior mean.
    """
    X = np.hstack([Z, np.ones((len(Z), 1))])
    c = rr_information(X @ posterior.mean, np.full(len(Z), flip_probability))[1]
    A = np.sqrt(c)[:, None] * X
    return 0.5 * float(np.linalg.slogdet(np.eye(len(Z)) + A @ posterior.covariance @ A.T)[1])


def _belief(runtime: Runtime, account: uuid.UUID) -> Posterior:
    with runtime.sessions() as session:
        current = current_belief(session, keys=runtime.keys, user_id=account, space=runtime.latent_space)
        session.commit()
    assert current is not None
    return current.belief.posterior


def _serve_and_rate(
    client: TestClient, runtime: Runtime, headers: dict[str, str], *, n: int, w: np.ndarray, b: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """One batch of ``n`` faces, each answered like/pass by a person with preference ``(w, b)``; returns the latents."""
    response = client.get("/v1/faces/next", params={"n": n}, headers=headers)
    assert response.status_code == 200, response.text
    faces = response.json()["faces"]
    latents = served_latents(runtime, faces)
    for face in faces:
        z = latents[face["id"]]
        rated = client.post(
            "/v1/ratings",
            json={"face_id": face["id"], "liked": bool(rng.random() < expit(z @ w + b))},
            headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
        )
        assert rated.status_code == 201, rated.text
    return np.array([latents[face["id"]] for face in faces])


def test_a_new_users_first_ten_faces_are_the_adaptive_ones(client: TestClient, db: Runtime) -> None:
    rng = np.random.default_rng(7)
    space = db.latent_space
    rho = rr_flip_probability(db.policy.epsilon)
    headers = auth_headers(client)
    account = user_id(client, headers)
    w, b = rng.standard_normal(space.dim) / 2.0, 0.0
    for _ in range(2):  # two batches of 5: the second under the posterior the first 5 ratings made
        posterior = _belief(db, account)
        served = _serve_and_rate(client, db, headers, n=5, w=w, b=b, rng=rng)
        ours = _information(posterior, served, rho)
        random = [_information(posterior, sample_outside_safety(space, size=5, need=5, rng=rng)[:5], rho)
                  for _ in range(300)]
        greedy = np.mean([  # the feed's criterion on independent candidate pools of its size
            _information(posterior, pool[informative_indices(
                pool, mean=posterior.mean, covariance=posterior.covariance, flip_probability=rho, n=5
            )], rho)
            for pool in (sample_outside_safety(space, size=2048, need=2048, rng=rng) for _ in range(3))
        ])
        # Measured offline over 20 seeds: adaptive batches reach at least 1.63x the random mean and
        # 0.91x the greedy value; the warm-up feed without a posterior (farthest-point spread) at
        # most 1.54x and 0.86x, so together the two bounds tell the adaptive batch apart.
        assert ours >= 1.5 * float(np.mean(random)), (ours, np.mean(random))
        assert ours >= 0.88 * greedy, (ours, greedy)
    assert client.get("/v1/me/preference-profile", headers=headers).json()["ratings"] == 10


def test_the_preference_profile_follows_the_ratings(client: TestClient, db: Runtime) -> None:
    rng = np.random.default_rng(8)
    headers = auth_headers(client)
    w, b = rng.standard_normal(db.latent_space.dim) / 2.0, 0.0
    before = client.get("/v1/me/preference-profile", headers=headers)
    assert before.status_code == 200, before.text
    first = before.json()
    assert set(first) == PROFILE_KEYS
    assert first["ratings"] == 0 and first["population_version"] is None and first["drift_detected"] is False
    assert first["personas"] == [{"persona": 0, "share": 1.0}] and first["dominant_persona"] == 0
    assert 0.0 <= first["certainty"]["score"] < 0.5 and first["certainty"]["level"] == "low"
    assert first["ratings_to_improve"] >= 1
    history = [first]
    for _ in range(3):
        _serve_and_rate(client, db, headers, n=10, w=w, b=b, rng=rng)
        history.append(client.get("/v1/me/preference-profile", headers=headers).json())
    assert [profile["ratings"] for profile in history] == [0, 10, 20, 30]
    sds = [profile["certainty"]["logit_sd"] for profile in history]
    scores = [profile["certainty"]["score"] for profile in history]
    assert all(later < earlier for earlier, later in zip(sds, sds[1:], strict=False)), sds
    assert scores[-1] >= scores[0] + 0.2, scores  # measured: about 0.09 -> 0.5 at epsilon 2
    # Halving a smaller uncertainty takes more ratings.
    improve = [profile["ratings_to_improve"] for profile in history]
    assert improve[-1] is None or improve[-1] > improve[0], improve


#: Newcomers per persona and ratings each in the persona test. Measured offline over 27 releases
#: made by this test's population (random faces, eps 2): the contrast below fell under 0.3 in
#: 0.6 % of draws with 4 newcomers x 40 ratings, against 1.8 % with 3 x 30.
_NEWCOMERS = 4
_NEWCOMER_BATCHES = 4


@pytest.mark.slow
def test_the_persona_mix_moves_towards_the_users_persona(client: TestClient, db: Runtime) -> None:
    """30 people of two opposite tastes rate through the API, the population service fits a release
    from their stored labels, and newcomers whose tastes are the release's personas rate 40 faces
    each: the newcomers of a persona end with a clearly larger share of it in their profiles than
    the other persona's newcomers. Newcomers are drawn from the fitted personas, not from the
    population's true clusters, so the test is about the service's use of a release, whatever the
    DP noise made of the clusters (the population tests judge those). One newcomer alone is not
    judged: with personas as close as some releases at this size make them, 40 answers at eps 2
    identify a persona only most of the time."""
    rng = np.random.default_rng(9)
    dim = db.latent_space.dim
    axis = rng.standard_normal(dim)
    axis /= np.linalg.norm(axis)
    for index in range(30):
        w = (2.5 if index % 2 else -2.5) * axis + 0.15 * rng.standard_normal(dim)
        headers = auth_headers(client)
        for _ in range(2):
            _serve_and_rate(client, db, headers, n=10, w=w, b=0.0, rng=rng)
    policy = PopulationPolicy(
        epsilon=8.0, delta=1e-6, epsilon_cap=8.0, ledger_delta=1e-6, n_personas=2, rank=2, min_users=20
    )
    with db.sessions() as session:
        fit_release(session, keys=db.keys, policy=policy, rng=np.random.default_rng(10))
        release = current_release(session)
    assert release is not None and release.version == 1

    second_share = {0: [], 1: []}  # each newcomer's final share of persona 1, by their own persona
    for persona in (0, 1):
        mean = release.model.means[persona]
        for _ in range(_NEWCOMERS):
            headers = auth_headers(client)
            start = client.get("/v1/me/preference-profile", headers=headers).json()
            assert start["population_version"] == 1 and start["ratings"] == 0
            # The public safety anchor constrains each persona but does not reweigh them.
            np.testing.assert_allclose([p["share"] for p in start["personas"]], release.model.weights, rtol=1e-9)
            w = mean[:-1] + 0.1 * rng.standard_normal(dim)
            for _ in range(_NEWCOMER_BATCHES):
                _serve_and_rate(client, db, headers, n=10, w=w, b=float(mean[-1]), rng=rng)
            # The persona mix moves with the exact refits, which the workers take once settled (D40):
            # the profile is read once they are done, as it would be within the stated lag.
            assert run_refits(db.sessions, keys=db.keys, space=db.latent_space).pending == 0
            end = client.get("/v1/me/preference-profile", headers=headers).json()
            assert end["ratings"] == 10 * _NEWCOMER_BATCHES and end["population_version"] == 1
            assert end["certainty"]["score"] > start["certainty"]["score"]
            second_share[persona].append(end["personas"][1]["share"])
    contrast = float(np.mean(second_share[1]) - np.mean(second_share[0]))
    assert contrast >= 0.3, second_share
