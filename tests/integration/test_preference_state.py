"""The stored preference state through its transitions, against real PostgreSQL.

Ratings go through the API; the state is opened with the user's key and compared with the engine
called directly on the same stored labels: the first rating fits exactly, the next ones take one
online step each, every ``refit_every``-th, a re-rating, a version 1 state and a new population
release ask the refit queue for an exact refit (``Rater.settle`` waits for the refit workers),
and a release-time mechanism keeps its released-model path.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.main import create_app
from engine.population import MECHANISM, PopulationModel
from engine.preference import (
    DRIFT_WINDOW,
    OnlinePreference,
    Posterior,
    PreferenceModel,
    PreferencePrior,
    drift_weights,
    fit_posterior,
    rr_flip_probability,
)
from engine.sampling import FeedConfig, SlotRole, next_batch
from matchsvc.db.models import Rating
from matchsvc.jobs.refit import run_refits
from matchsvc.keys import UserCipher
from matchsvc.repositories import population as population_repo
from matchsvc.repositories import preferences as preferences_repo
from matchsvc.repositories import refits as refits_repo
from matchsvc.repositories.ratings import TrainingRow, training_query
from matchsvc.runtime import Runtime
from matchsvc.services import faces as faces_service
from matchsvc.services.keys import user_cipher
from matchsvc.services.preferences import _fit_belief, current_belief, load_model, safety_anchors
from matchsvc.services.sealed import Belief, export_state, open_label, seal_label
from matchsvc.services.training import TrainingSet, flip_probability, read_training_set
from privacy.mechanisms import ADD_REMOVE_USER, Guarantee
from tests.support.accounts import auth_headers
from tests.support.scenario import served_latents, user_id

PROBLEM = "application/problem+json"


@dataclasses.dataclass
class Rater:
    """A user rating through the API, who remembers the latents and stored labels of their ratings."""

    client: TestClient
    runtime: Runtime
    headers: dict[str, str]
    id: uuid.UUID
    latents: list[np.ndarray] = dataclasses.field(default_factory=list)

    def serve(self, n: int) -> list[tuple[str, np.ndarray]]:
        faces = self.client.get("/v1/faces/next", params={"n": n}, headers=self.headers).json()["faces"]
        latents = served_latents(self.runtime, faces)
        return [(face["id"], latents[face["id"]]) for face in faces]

    def rate(self, face: tuple[str, np.ndarray], liked: bool, *, status: int = 201) -> None:
        response = self.client.post(
            "/v1/ratings",
            json={"face_id": face[0], "liked": liked},
            headers={**self.headers, "Idempotency-Key": uuid.uuid4().hex},
        )
        assert response.status_code == status, response.text
        if status == 201:
            self.latents.append(face[1])

    def settle(self) -> None:
        """Wait until the refit queue is empty (this process's worker and this call share it)."""
        run = run_refits(self.runtime.sessions, keys=self.runtime.keys, space=self.runtime.latent_space)
        assert run.pending == 0

    def stored_labels(self) -> np.ndarray:
        """The labels as stored (after randomized response), in rating order."""
        items = self.client.get("/v1/me/ratings", params={"limit": 100}, headers=self.headers).json()["items"]
        return np.array([item["recorded_like"] for item in items])

    def state(self) -> tuple[dict[str, Any], int, int]:
        """The opened state JSON, ``n_ratings`` and ``pending_updates`` of the stored row."""
        with self.runtime.sessions() as session:
            row = preferences_repo.get_state(session, self.id)
            assert row is not None
            cipher = user_cipher(session, keys=self.runtime.keys, user_id=self.id)
            plain = cipher.open(row.state_ct, table="preference_states", column="state", row="current")
            return json.loads(plain), row.n_ratings, row.pending_updates

    def put_state(self, state: dict[str, Any], *, n: int) -> None:
        with self.runtime.sessions() as session:
            cipher = user_cipher(session, keys=self.runtime.keys, user_id=self.id)
            blob = cipher.seal(json.dumps(state).encode(), table="preference_states", column="state", row="current")
            preferences_repo.state_write(user_id=self.id, state_ct=blob, n_ratings=n, pending_updates=0).execute(session)
            session.commit()

    def posterior(self) -> Posterior:
        state, _, _ = self.state()
        return Belief.from_state(state).posterior


def _rater(client: TestClient, runtime: Runtime) -> Rater:
    headers = auth_headers(client)
    return Rater(client=client, runtime=runtime, headers=headers, id=user_id(client, headers))


def _exact(rater: Rater, prior: PreferencePrior | None = None) -> Posterior:
    """The exact refit of the issue, computed here from the engine on the rater's stored labels."""
    Z, y = np.array(rater.latents), rater.stored_labels()
    rho = rr_flip_probability(rater.runtime.policy.epsilon)
    weights = drift_weights(Z, y, flip_probability=rho, prior=prior)
    return fit_posterior(
        Z, y, flip_probability=rho, prior=prior, public_negatives=safety_anchors(rater.runtime.latent_space),
        weights=weights,
    )


def _assert_same(actual: Posterior, expected: Posterior) -> None:
    np.testing.assert_allclose(actual.mean, expected.mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(actual.covariance, expected.covariance, rtol=1e-9, atol=1e-12)


def test_ratings_refit_exactly_then_step_online_until_refit_every(client: TestClient, db: Runtime) -> None:
    rater = _rater(client, db)
    every = db.policy.refit_every
    faces = rater.serve(every + 2)
    rho = rr_flip_probability(db.policy.epsilon)
    rater.rate(faces[0], True)
    state, n, pending = rater.state()
    assert (state["version"], state["kind"], n, pending) == (3, "posterior", 1, 0)
    assert state["personas"] is None and state["population_version"] is None and state["drift_detected"] is False
    _assert_same(rater.posterior(), _exact(rater))

    for index in range(1, every):
        before = rater.posterior()
        rater.rate(faces[index], index % 3 == 0)
        online = OnlinePreference(before)
        online.update(faces[index][1], bool(rater.stored_labels()[-1]), flip_probability=rho)
        _, n, pending = rater.state()
        assert (n, pending) == (index + 1, index)
        _assert_same(rater.posterior(), online.posterior)

    rater.rate(faces[every], False)  # the refit_every-th update since the last refit
    rater.settle()
    assert rater.state()[1:] == (every + 1, 0)
    _assert_same(rater.posterior(), _exact(rater))

    rater.rate(faces[every + 1], True)
    assert rater.state()[2] == 1
    rater.rate(faces[every + 1], False, status=200)  # a changed answer: exact refit, same count
    rater.settle()
    assert rater.state()[1:] == (every + 2, 0)
    _assert_same(rater.posterior(), _exact(rater))
    with db.sessions() as session:
        stored = load_model(session, cipher=user_cipher(session, keys=db.keys, user_id=rater.id))
    assert stored is not None and stored.model == rater.posterior().model()


def _straightforward_snapshot(
    session: Session, cipher: UserCipher, dim: int, after_id: int | None = None
) -> TrainingSet:
    """The user's ratings read through SQLAlchemy and opened one by one: the refit's input as first written."""
    query = training_query().where(Rating.user_id == cipher.user_id).order_by(Rating.id)
    if after_id is not None:
        query = query.where(Rating.id > after_id)
    rows = [TrainingRow(*row) for row in session.execute(query)]
    return TrainingSet(
        Z=np.array([row.latent for row in rows], dtype=np.float64).reshape(len(rows), dim),
        y=np.array([open_label(cipher, face_id=row.face_id, blob=row.label_ct) for row in rows], dtype=bool),
        flip=np.array([flip_probability(row.label_epsilon) for row in rows], dtype=np.float64),
        last_id=rows[-1].rating_id if rows else after_id,
    )


def _assert_same_training_set(actual: TrainingSet, expected: TrainingSet) -> None:
    for name in ("Z", "y", "flip"):
        a, e = getattr(actual, name), getattr(expected, name)
        assert a.dtype == e.dtype and a.shape == e.shape and a.tobytes() == e.tobytes(), name
    assert actual.last_id == expected.last_id


def test_a_refit_stores_exactly_the_straightforward_computation(client: TestClient, db: Runtime) -> None:
    """The refit's reads (one binary statement, labels opened in one pass, its resumed drift checkpoint)
    change nothing: the stored state is byte for byte the fit of the ratings read the plain way,
    from the prior, with no checkpoint. 72 ratings with a change of taste after 40 and one answer
    changed early on, so the last refit resumes a checkpoint an earlier one stored."""
    rater = _rater(client, db)
    dim = db.latent_space.dim
    faces = [face for _ in range(2) for face in rater.serve(36)]
    for index, face in enumerate(faces[:60]):
        rater.rate(face, bool(face[1][0] > 0) != (index >= 40))
        if index == 30:
            rater.rate(faces[5], True, status=200)  # a changed answer keeps its place
    rater.settle()
    for face in faces[60:]:
        rater.rate(face, bool(face[1][0] <= 0))
    rater.settle()
    with db.sessions() as session:  # the last ratings may have been online steps after the last refit
        refits_repo.enqueue_write(user_id=rater.id).execute(session)
        session.commit()
    rater.settle()
    state, n, pending = rater.state()
    assert (n, pending) == (72, 0)
    assert state["drift_checkpoint"]["through"] == 72 - DRIFT_WINDOW
    with db.sessions() as session:
        cipher = user_cipher(session, keys=db.keys, user_id=rater.id)
        data = read_training_set(session, cipher, dim=dim)
        expected_data = _straightforward_snapshot(session, cipher, dim)
        _assert_same_training_set(data, expected_data)
        _assert_same_training_set(
            read_training_set(session, cipher, dim=dim, after_id=data.last_id - 20 - 3),
            _straightforward_snapshot(session, cipher, dim, after_id=data.last_id - 20 - 3),
        )
        _assert_same_training_set(
            read_training_set(session, cipher, dim=dim, after_id=data.last_id),
            _straightforward_snapshot(session, cipher, dim, after_id=data.last_id),
        )
    expected = _fit_belief(expected_data, space=db.latent_space, release=None, checkpoint=None)
    assert orjson.dumps(expected.to_state()) == orjson.dumps(state)


def test_a_version_2_state_is_stepped_by_the_next_rating_and_stored_packed(client: TestClient, db: Runtime) -> None:
    """States stored as JSON lists before D43 stay current: the next new face is an online step on
    the posterior they hold, and what is stored is version 3."""
    rater = _rater(client, db)
    faces = rater.serve(2)
    rater.rate(faces[0], True)
    state, _, _ = rater.state()
    belief = Belief.from_state(state)
    assert belief.personas is None and belief.drift_checkpoint is not None
    as_lists = {
        **state, "version": 2, "posterior": belief.posterior.to_state(), "drift_checkpoint": belief.drift_checkpoint.to_state()
    }
    rater.put_state(as_lists, n=1)
    rater.rate(faces[1], False)
    state, n, pending = rater.state()
    assert (state["version"], n, pending) == (3, 2, 1)
    label = bool(rater.stored_labels()[-1])
    expected = OnlinePreference(belief.posterior).step(
        faces[1][1], label, flip_probability=rr_flip_probability(db.policy.epsilon)
    )
    np.testing.assert_array_equal(rater.posterior().covariance, expected.covariance)
    np.testing.assert_array_equal(rater.posterior().mean, expected.mean)


def test_version_1_states_are_read_and_converted_by_the_next_rating(client: TestClient, db: Runtime) -> None:
    rater = _rater(client, db)
    faces = rater.serve(5)
    for face in faces[:3]:
        rater.rate(face, True)
    posterior = rater.posterior()
    legacy = {
        "version": 1,
        "kind": "online",
        "online": {
            "version": 1,
            "theta": posterior.mean.tolist(),
            "inverse_hessian": posterior.covariance.tolist(),
            "posterior_covariance": posterior.covariance.tolist(),
        },
    }
    rater.put_state(legacy, n=3)
    with db.sessions() as session:
        cipher = user_cipher(session, keys=db.keys, user_id=rater.id)
        stored = load_model(session, cipher=cipher)
        exported = export_state(cipher, preferences_repo.get_state(session, rater.id).state_ct)
    assert stored is not None and stored.belief is not None
    assert stored.model == posterior.model()  # read as the posterior it describes
    assert exported["posterior_mean"] == posterior.mean.tolist() and exported["persona_shares"] == []
    assert len(rater.serve(2)) == 2  # the feed reads it
    profile = client.get("/v1/me/preference-profile", headers=rater.headers).json()
    assert profile["ratings"] == 3 and profile["population_version"] is None
    assert rater.state()[0]["version"] == 1  # reads leave it alone while no population release exists

    rater.rate(faces[3], False)  # would be an online step for a version 3 state
    rater.settle()
    state, n, pending = rater.state()
    assert (state["version"], n, pending) == (3, 4, 0)
    _assert_same(rater.posterior(), _exact(rater))

    released = PreferenceModel(coef=np.full(db.latent_space.dim, 0.25), intercept=-0.5)
    rater.put_state({"version": 1, "kind": "released", "model": released.to_vector().tolist()}, n=4)
    with db.sessions() as session:
        stored = load_model(session, cipher=user_cipher(session, keys=db.keys, user_id=rater.id))
    assert stored is not None and stored.model == released and stored.belief is None
    rater.rate(faces[4], True)
    rater.settle()
    assert rater.state()[0]["kind"] == "posterior" and rater.state()[2] == 0


def _publish(db: Runtime, seed: int) -> PopulationModel:
    """Store a population release with three random personas, as ``fit_release`` stores its model.

    The release's numbers are made up (its fit is tested with the population service); what
    matters here is that the service picks up whatever release is newest.
    """
    rng = np.random.default_rng(seed)
    p = db.latent_space.dim + 1
    factor = rng.standard_normal((p, 2)) * 0.1
    factor[-1] = 0.0
    model = PopulationModel(
        means=rng.standard_normal((3, p)) * 0.5,
        weights=np.array([0.5, 0.3, 0.2]),
        factor=factor,
        diagonal=np.full(p, 0.05),
        guarantee=Guarantee(epsilon=1.0, delta=1e-6, neighbouring=ADD_REMOVE_USER, mechanism=MECHANISM),
        accounting={"noise_multiplier": 1.0, "sample_rate": 0.05, "steps": 300, "max_grad_norm": 1.0, "n_users": 3},
    )
    with db.sessions() as session:
        latest = population_repo.latest_version(session)
        population_repo.add_release(
            session,
            version=1 if latest is None else latest[0] + 1,
            mechanism=MECHANISM,
            neighbouring=ADD_REMOVE_USER,
            epsilon=1.0,
            delta=1e-6,
            noise_multiplier=1.0,
            sample_rate=0.05,
            steps=300,
            max_grad_norm=1.0,
            n_users=3,
            n_personas=3,
            rank=2,
            state=model.to_state(),
        )
        session.commit()
    return model


def test_a_new_population_release_refits_on_the_next_read_or_rating(client: TestClient, db: Runtime) -> None:
    raters = [_rater(client, db) for _ in range(3)]
    kept = {}
    for rater in raters:
        served = rater.serve(5)
        for index, face in enumerate(served[:4]):
            rater.rate(face, index % 2 == 0)
        kept[rater.id] = served[4]
    first = raters[0]
    assert first.state()[0]["population_version"] is None

    model = _publish(db, seed=1)
    profile = client.get("/v1/me/preference-profile", headers=first.headers).json()
    assert profile["population_version"] == 1 and profile["ratings"] == 4
    assert len(profile["personas"]) == 3 and sum(p["share"] for p in profile["personas"]) == pytest.approx(1.0)
    state, n, pending = first.state()  # the read stored the refit
    assert (state["population_version"], n, pending) == (1, 4, 0)
    rho = rr_flip_probability(db.policy.epsilon)
    Z, y = np.array(first.latents), first.stored_labels()
    weights = drift_weights(Z, y, flip_probability=rho, prior=model.prior())
    expected = model.posterior(
        Z, y, flip_probability=rho, weights=weights, public_negatives=safety_anchors(db.latent_space)
    )
    _assert_same(first.posterior(), expected.posterior)
    np.testing.assert_allclose(state["personas"]["responsibilities"], expected.responsibilities, rtol=1e-9)

    second = raters[1]
    face = second.serve(1)[0]  # the feed's read refits too, so the rating is an online step
    assert second.state()[0]["population_version"] == 1
    before = second.posterior()
    second.rate(face, True)
    state, _, pending = second.state()
    assert state["population_version"] == 1 and pending == 1
    online = OnlinePreference(before)
    online.update(face[1], bool(second.stored_labels()[-1]), flip_probability=rho)
    _assert_same(second.posterior(), online.posterior)

    _publish(db, seed=2)
    third = raters[2]  # not read since version 1: the rating alone notices the newer release
    assert third.state()[0]["population_version"] is None
    third.rate(kept[third.id], True)
    third.settle()
    state, n, pending = third.state()
    assert (state["population_version"], n, pending) == (2, 5, 0)


@pytest.mark.parametrize("with_release", [False, True], ids=["isotropic prior", "population prior"])
def test_a_new_users_feed_is_next_batch_under_the_prior_belief(
    client: TestClient, db: Runtime, with_release: bool
) -> None:
    model = _publish(db, seed=3) if with_release else None
    newcomer = _rater(client, db)
    space = db.latent_space
    with db.sessions() as session:
        current = current_belief(session, keys=db.keys, user_id=newcomer.id, space=space)
        assert current is not None and current.n_ratings == 0
        served = faces_service.next_faces(
            session, user_id=newcomer.id, keys=db.keys, policy=db.policy, space=space, n=10,
            rng=np.random.default_rng(11),
        )
    belief = current.belief
    if model is None:
        anchors = safety_anchors(space)
        expected = fit_posterior(anchors, np.zeros(len(anchors), dtype=bool), flip_probability=0.0)
        assert belief.personas is None and belief.population_version is None
    else:
        prior = model.posterior(
            np.empty((0, space.dim)), np.zeros(0, dtype=bool), flip_probability=0.0,
            public_negatives=safety_anchors(space),
        )
        expected = prior.posterior
        assert belief.population_version == 1
        np.testing.assert_allclose(belief.personas.responsibilities, prior.responsibilities)
    _assert_same(belief.posterior, expected)
    batch = next_batch(
        space, n=10, model=None, n_rated=0, cached=None, rng=np.random.default_rng(11),
        config=FeedConfig(flip_probability=rr_flip_probability(db.policy.epsilon)),
        posterior=belief.posterior, personas=belief.personas,
    )
    assert set(batch.roles) == {SlotRole.ADAPTIVE}
    np.testing.assert_array_equal(np.array([face.latent for face in served]), batch.latents)
    with db.sessions() as session:  # the prior belief is not stored
        assert preferences_repo.get_state(session, newcomer.id) is None


def test_a_change_of_taste_is_detected_stored_and_shown(client: TestClient, db: Runtime) -> None:
    """The stored labels are overwritten with a history whose taste flips after 30 ratings (what
    randomized response stored is then known exactly); a re-rating refits with drift weights."""
    rater = _rater(client, db)
    with db.sessions() as session:
        served = faces_service.next_faces(
            session, user_id=rater.id, keys=db.keys, policy=db.policy, space=db.latent_space, n=50,
            rng=np.random.default_rng(12),
        )
    faces = [(str(face.id), np.asarray(face.latent)) for face in served]
    for face in faces:
        rater.rate(face, True)
    taste = np.zeros(db.latent_space.dim)
    taste[[3, 7, 9, 12]] = 1.0
    labels = np.array([z @ taste > 0 for _, z in faces])
    labels[30:] = ~labels[30:]
    with db.sessions() as session:
        cipher = user_cipher(session, keys=db.keys, user_id=rater.id)
        for (face_id, _), label in zip(faces, labels, strict=True):
            session.execute(
                text("UPDATE ratings SET label_ct = :blob WHERE user_id = :user AND face_id = :face"),
                {"blob": seal_label(cipher, face_id=uuid.UUID(face_id), label=bool(label)), "user": rater.id,
                 "face": face_id},
            )
        session.commit()
    assert rater.state()[0]["drift_detected"] is False
    # A re-rating triggers the exact refit over the new history. It re-rates the oldest face (a rating
    # keeps its place in the history), because randomized response stores either label for it: the
    # change stays detectable both ways, which a re-rated newest face does not guarantee.
    rho = rr_flip_probability(db.policy.epsilon)
    for oldest in (False, True):
        assert drift_weights(np.array(rater.latents), np.r_[oldest, labels[1:]], flip_probability=rho)[0] < 1
    rater.rate(faces[0], bool(labels[0]), status=200)
    rater.settle()
    state, n, pending = rater.state()
    assert (n, pending, state["drift_detected"]) == (50, 0, True)
    _assert_same(rater.posterior(), _exact(rater))
    profile = client.get("/v1/me/preference-profile", headers=rater.headers).json()
    assert profile["drift_detected"] is True and profile["ratings"] == 50


@pytest.fixture
def objective(db: Runtime) -> Iterator[tuple[TestClient, Runtime]]:
    policy = dataclasses.replace(db.policy, mechanism="objective_perturbation", refit_every=2)
    runtime = dataclasses.replace(db, policy=policy, embedded=None, scratch=None)
    with TestClient(create_app(runtime), raise_server_exceptions=False) as client:
        yield client, runtime


def test_release_time_mechanisms_keep_their_released_model_and_have_no_profile(
    objective: tuple[TestClient, Runtime],
) -> None:
    client, runtime = objective
    rater = _rater(client, runtime)
    for index, face in enumerate(rater.serve(2)):
        rater.rate(face, index == 0)
    state, n, _ = rater.state()
    assert state["kind"] == "released" and n == 2 and set(state) == {"version", "kind", "model"}
    assert len(rater.serve(3)) == 3
    response = client.get("/v1/me/preference-profile", headers=rater.headers)
    assert response.status_code == 409 and response.headers["content-type"] == PROBLEM
