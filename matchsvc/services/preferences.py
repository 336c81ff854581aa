"""The user's preference: a Gaussian posterior learned from private labels, stored encrypted.

With randomized response (the default) labels are private when stored, so everything here is
post-processing and spends no budget. The stored state (sealed JSON in ``preference_states``,
version 2, kind ``posterior``) holds

* the user's Laplace posterior over ``theta = [w, b]`` (:class:`engine.preference.Posterior`);
  its :meth:`~engine.preference.Posterior.model` is the released model matching reads;
* the persona mix under the population release it was fitted against: the responsibilities and
  the user's posterior mean within each persona (what the feed's outside-persona slots need),
  or nothing without a release;
* that release's version (None without one), and whether the drift test down-weighted old
  ratings at the last refit.

A rating's request does constant work on the state (``O(d^2)``, whatever the history):

* a new face takes **one online step** (:meth:`engine.preference.OnlinePreference.update`) on the
  stored posterior with that label's own flip rate; the persona mix, release version and drift
  flag stay those of the last exact refit until the next one;
* an **exact refit** is *asked for* (a row in ``refit_jobs``) when the rating replaces an
  earlier answer, it is the ``max(refit_every, ceil(0.1 n))``-th since the last refit (so the
  refits' O(n) cost per rating does not grow with the history n), the state is not a
  version 2 posterior, or the current population release is not the one the state was fitted
  against. Only a user's very first rating is fitted in the request (one rating: as cheap).

The exact refit (:func:`refit_user`, run by the refit workers of :mod:`matchsvc.jobs.refit`):
:func:`engine.preference.drift_test` over the stored labels in the order the faces were first
rated (a changed answer keeps its place), resumed from the checkpoint kept in the state, then
:meth:`engine.population.PopulationModel.posterior` under the latest release (or
:func:`engine.preference.fit_posterior` with the isotropic default prior when there is none),
with the public safety anchor as a known negative. It reads a snapshot and computes without the
user's writer lock, then under the lock stores the fit plus one online step for each rating that
arrived meanwhile. Every state ever stored is a valid posterior of stored private labels, so
the feed and matching always read a released model; the refit only makes it exact again.

Reading is not tied to a rating: :func:`current_belief` (the feed, the profile) refits and stores
a state fitted against an older release than the current one, so a new release reaches a user at
their next request, rating or not (matching reads the stored model as it is until then). A user with no state yet has the *prior belief*: the same fit with
no ratings (the population prior, or the isotropic one, plus the anchor), which is what makes
their first faces the adaptive ones.

Version 1 states, written before the posterior existed, are still read everywhere: kind
``online`` (the noise-corrected fit: ``theta`` and its Laplace covariance) as a posterior with
that mean and covariance and no persona mix, kind ``released`` as before. They are converted by
their user's next exact refit, which the rule above asks for at the next rating (or does at the
next read once a population release exists); nothing rewrites them in bulk.

With a release-time mechanism (objective perturbation, DP-SGD) labels are stored encrypted as
answered and every ``refit_every`` new ratings one model release is fitted through the
mechanism, charged to the ledger, and refused (the previous model stays) once the cap is reached.
Those states (kind ``released``) hold the model only: no posterior, no profile.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import secrets
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sqlalchemy.orm import Session

from engine.latent import LatentSpace
from engine.latent.base import LatentSpaceError, sample_outside_safety
from engine.population import PersonaPosterior, PopulationModel
from engine.preference import (
    DriftCheckpoint,
    OnlinePreference,
    Posterior,
    PreferenceModel,
    PreferencePrior,
    drift_test,
    fit_posterior,
    fit_private,
    rr_flip_probability,
    rr_information,
)
from engine.sampling import informative_indices
from matchsvc.errors import Conflict, PrivacyBudgetExhausted
from matchsvc.keys import KeyRingStore, UserCipher
from matchsvc.repositories import ledger as ledger_repo
from matchsvc.repositories import preferences as preferences_repo
from matchsvc.repositories import ratings as ratings_repo
from matchsvc.repositories import refits as refits_repo
from matchsvc.repositories.preferences import StateRow
from matchsvc.services.keys import user_cipher
from matchsvc.services.privacy import PrivacyPolicy, charge
from privacy.mechanisms import RandomizedResponse

__all__ = [
    "MAX_RATINGS_TO_IMPROVE",
    "Belief",
    "CurrentBelief",
    "PersonaMean",
    "PersonaMix",
    "PreferenceProfile",
    "StoredModel",
    "absorb_rating",
    "current_belief",
    "export_state",
    "load_model",
    "model_from_sealed_state",
    "open_label",
    "preference_profile",
    "privatise",
    "refit_user",
    "reference_faces",
    "safety_anchors",
    "seal_label",
]

_TABLE = "preference_states"
_STATE_VERSION = 2
#: The public known negative is the mean of this many prior draws that fall in the safety region
#: (drawn from a fixed public seed), so it is the same for every user and every process.
_ANCHOR_DRAWS = 4096
_ANCHOR_ROUNDS = 64
_ANCHOR_SEED = 20261123
#: The profile's reference faces: prior faces that may be shown, from a fixed public seed.
_REFERENCE_FACES = 2048
_REFERENCE_SEED = 20261207
#: Largest ``ratings_to_improve`` the profile computes; beyond it the answer is None.
MAX_RATINGS_TO_IMPROVE = 1000
#: Certainty levels: (lower bound of the score, word), highest first.
_LEVELS: tuple[tuple[float, Literal["low", "medium", "high"]], ...] = ((0.8, "high"), (0.5, "medium"), (0.0, "low"))


@functools.lru_cache(maxsize=8)
def safety_anchors(space: LatentSpace) -> np.ndarray:
    """Everyone's known negative, shape ``(1, dim)``: the typical safety-region face, at no budget cost.

    One clean pass at the centroid of the safety region under the prior (the in-region draw
    nearest to it where the region is not convex). One, at the centre, because a linear model
    cannot dislike only under-18 faces: every clean negative there tilts users who like younger
    adult faces towards older ones. Measured (eps 2, 50 random ratings, 400 users from the
    default prior): 4 random in-region anchors cost 1.3 accuracy points against none, 4 copies
    of the centroid 1.1, the centroid once 0.2 (docs/decisions.md D9).
    """
    rng = np.random.default_rng(_ANCHOR_SEED)
    found = np.empty((0, space.dim))
    for _ in range(_ANCHOR_ROUNDS):
        draw = space.sample(_ANCHOR_DRAWS, rng)
        found = np.concatenate([found, draw[space.in_safety_region(draw)]])
        if len(found) >= _ANCHOR_DRAWS:
            break
    if len(found) == 0:
        raise LatentSpaceError(f"no prior sample of space {space.name!r} fell in its safety region")
    found = found[:_ANCHOR_DRAWS]
    centroid = found.mean(axis=0, keepdims=True)
    if not space.in_safety_region(centroid)[0]:
        centroid = found[[np.argmin(np.linalg.norm(found - centroid, axis=1))]]
    centroid.flags.writeable = False
    return centroid


@functools.lru_cache(maxsize=8)
def reference_faces(space: LatentSpace) -> np.ndarray:
    """Prior latents outside the safety region, shape ``(2048, dim)``, from a fixed public seed.

    The faces the profile's certainty averages over and picks its hypothetical next ratings
    from; public, so the profile is a function of the user's belief alone.
    """
    rng = np.random.default_rng(_REFERENCE_SEED)
    faces = sample_outside_safety(space, size=_REFERENCE_FACES, need=_REFERENCE_FACES, rng=rng)[:_REFERENCE_FACES]
    faces.flags.writeable = False
    return faces


def seal_label(cipher: UserCipher, *, face_id: uuid.UUID, label: bool) -> bytes:
    return cipher.seal(b"\x01" if label else b"\x00", table="ratings", column="label", row=str(face_id))


def open_label(cipher: UserCipher, *, face_id: uuid.UUID, blob: bytes) -> bool:
    return cipher.open(blob, table="ratings", column="label", row=str(face_id)) == b"\x01"


def privatise(label: bool, *, epsilon: float) -> bool:
    """Randomized response with fresh OS randomness: no one, us included, can undo the noise later."""
    uniform = secrets.randbits(53) / 2.0**53
    return bool(RandomizedResponse(epsilon=epsilon).privatize(np.array([label]), np.array([uniform]))[0])


@dataclass(frozen=True)
class PersonaMean:
    """The user's posterior mean of ``theta = [w, b]`` within one persona, shape ``(d + 1,)``."""

    mean: np.ndarray


@dataclass(frozen=True)
class PersonaMix:
    """The user's posterior over the personas of a population release, as of the last exact refit.

    What :func:`engine.sampling.next_batch` reads as ``personas`` (``responsibilities`` and each
    component's ``mean``); the within-persona covariances are not kept.
    """

    responsibilities: np.ndarray
    components: tuple[PersonaMean, ...]

    @classmethod
    def of(cls, fitted: PersonaPosterior) -> PersonaMix:
        return cls(
            responsibilities=np.array(fitted.responsibilities),
            components=tuple(PersonaMean(mean=np.array(c.mean)) for c in fitted.components),
        )


@dataclass(frozen=True)
class Belief:
    """What the service knows about a user's preference (module docstring)."""

    posterior: Posterior
    personas: PersonaMix | None
    population_version: int | None
    drift_detected: bool
    #: Where the next exact refit's drift test resumes (:class:`engine.preference.DriftCheckpoint`).
    drift_checkpoint: DriftCheckpoint | None = None

    def to_state(self) -> dict[str, Any]:
        personas = None
        if self.personas is not None:
            personas = {
                "responsibilities": self.personas.responsibilities.tolist(),
                "means": [component.mean.tolist() for component in self.personas.components],
            }
        return {
            "version": _STATE_VERSION,
            "kind": "posterior",
            "posterior": self.posterior.to_state(),
            "personas": personas,
            "population_version": self.population_version,
            "drift_detected": self.drift_detected,
            "drift_checkpoint": None if self.drift_checkpoint is None else self.drift_checkpoint.to_state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Belief:
        """A version 2 ``posterior`` state, or a version 1 ``online`` one (no persona mix)."""
        if state["version"] == 1:
            return cls(OnlinePreference.from_state_dict(state["online"]).posterior, None, None, False)
        personas = state["personas"]
        return cls(
            posterior=Posterior.from_state(state["posterior"]),
            personas=None
            if personas is None
            else PersonaMix(
                responsibilities=np.array(personas["responsibilities"], dtype=np.float64),
                components=tuple(PersonaMean(mean=np.array(m, dtype=np.float64)) for m in personas["means"]),
            ),
            population_version=state["population_version"],
            drift_detected=bool(state["drift_detected"]),
            drift_checkpoint=None
            if state.get("drift_checkpoint") is None
            else DriftCheckpoint.from_state(state["drift_checkpoint"]),
        )


@dataclass(frozen=True)
class StoredModel:
    """A user's stored state: the released model, and the belief behind it (None for release-time mechanisms)."""

    model: PreferenceModel
    n_ratings: int
    belief: Belief | None = None


def _seal_state(cipher: UserCipher, state: dict[str, Any]) -> bytes:
    return cipher.seal(json.dumps(state).encode(), table=_TABLE, column="state", row="current")


def _open_state(cipher: UserCipher, blob: bytes) -> dict[str, Any]:
    return json.loads(cipher.open(blob, table=_TABLE, column="state", row="current"))


def _decode(state: dict[str, Any]) -> tuple[PreferenceModel, Belief | None]:
    """The released model and, for a posterior state of either version, the belief."""
    if state["kind"] == "released":
        return PreferenceModel.from_vector(state["model"]), None
    belief = Belief.from_state(state)
    return belief.posterior.model(), belief


def _is_current(state: dict[str, Any], belief: Belief, version: int | None) -> bool:
    """``belief``, read from ``state``, is a version 2 posterior fitted against population release ``version``."""
    return state["version"] == _STATE_VERSION and belief.population_version == version


def model_from_sealed_state(cipher: UserCipher, blob: bytes) -> PreferenceModel:
    """The released model inside a sealed ``preference_states.state_ct`` (either version)."""
    return _decode(_open_state(cipher, blob))[0]


def export_state(cipher: UserCipher, blob: bytes) -> dict[str, Any]:
    """A sealed ``preference_states.state_ct`` for the data-subject export, either version.

    The released model (``coef``, ``intercept``) always; for a posterior state also the posterior
    (mean and covariance of ``[w, b]``), the persona shares, the user's mean within each persona,
    the population release version and the drift flag (empty or None where the state has none).
    """
    model, belief = _decode(_open_state(cipher, blob))
    out: dict[str, Any] = {"coef": model.coef.tolist(), "intercept": model.intercept}
    if belief is not None:
        personas = belief.personas
        out |= {
            "posterior_mean": belief.posterior.mean.tolist(),
            "posterior_covariance": belief.posterior.covariance.tolist(),
            "persona_shares": [] if personas is None else personas.responsibilities.tolist(),
            "persona_means": [] if personas is None else [c.mean.tolist() for c in personas.components],
            "population_version": belief.population_version,
            "drift_detected": belief.drift_detected,
        }
    return out


def load_model(session: Session, *, cipher: UserCipher) -> StoredModel | None:
    """The user's released model (and belief), decrypted in memory; None before the first fit."""
    row = preferences_repo.get_state(session, cipher.user_id)
    if row is None:
        return None
    model, belief = _decode(_open_state(cipher, row.state_ct))
    return StoredModel(model=model, n_ratings=row.n_ratings, belief=belief)


@dataclass(frozen=True)
class _TrainingSet:
    """Latents ``(n, d)``, stored labels and label epsilons (inf: not privatised), oldest first."""

    Z: np.ndarray
    y: np.ndarray
    eps: np.ndarray
    last_id: int | None


def _training_set(
    session: Session, cipher: UserCipher, dim: int, *, after_id: int | None = None
) -> _TrainingSet:
    """The user's ratings (those after rating ``after_id`` only, when given), decrypted in memory."""
    rows = ratings_repo.training_rows(session, user_id=cipher.user_id, after_id=after_id)
    return _TrainingSet(
        Z=np.array([latent for _, _, latent, _, _ in rows], dtype=np.float64).reshape(len(rows), dim),
        y=np.array([open_label(cipher, face_id=face_id, blob=blob) for _, face_id, _, blob, _ in rows], dtype=bool),
        eps=np.array([np.inf if e is None else e for *_, e in rows], dtype=np.float64),
        last_id=rows[-1][0] if rows else after_id,
    )


def _fit_belief(
    data: _TrainingSet,
    *,
    space: LatentSpace,
    release: tuple[int, PopulationModel] | None,
    checkpoint: DriftCheckpoint | None = None,
) -> Belief:
    """The exact refit (module docstring); with no ratings, the prior belief.

    ``checkpoint`` (the last refit's) only saves drift-test work: the result is the same without it.
    """
    Z, y = data.Z, data.y
    rho = np.array([rr_flip_probability(e) for e in data.eps])
    anchors = safety_anchors(space)
    prior = PreferencePrior.isotropic(space.dim) if release is None else release[1].prior()
    drift = drift_test(Z, y, flip_probability=rho, prior=prior, checkpoint=checkpoint) if len(y) else None
    weights = np.ones(0) if drift is None else drift.weights
    resume = None if drift is None else drift.checkpoint
    drifted = bool((weights < 1.0).any())
    if release is not None:
        version, model = release
        fitted = model.posterior(Z, y, flip_probability=rho, weights=weights, public_negatives=anchors)
        return Belief(fitted.posterior, PersonaMix.of(fitted), version, drifted, resume)
    if len(y):
        posterior = fit_posterior(Z, y, flip_probability=rho, prior=prior, public_negatives=anchors, weights=weights)
    else:  # the anchor is the only data: a clean pass, as fit_posterior adds it
        posterior = fit_posterior(anchors, np.zeros(len(anchors), dtype=bool), flip_probability=0.0, prior=prior)
    return Belief(posterior, None, None, drifted, resume)


def _prior_belief(space: LatentSpace, release: tuple[int, PopulationModel] | None) -> Belief:
    """The belief of a user with no ratings."""
    empty = _TrainingSet(np.empty((0, space.dim)), np.zeros(0, dtype=bool), np.zeros(0), None)
    return _fit_belief(empty, space=space, release=release)


def _latest_release(session: Session) -> tuple[int, PopulationModel] | None:
    # Imported here: the population service imports this module (it opens labels with open_label).
    from matchsvc.services.population import current_release

    release = current_release(session)
    return None if release is None else (release.version, release.model)


def _store(session: Session, cipher: UserCipher, state: dict[str, Any], *, n: int, pending: int) -> None:
    """The only writer of ``preference_states``: every path that moves a user's state ends here."""
    preferences_repo.put_state(
        session, user_id=cipher.user_id, state_ct=_seal_state(cipher, state), n_ratings=n, pending_updates=pending
    )


def _online_step(belief: Belief, latent: np.ndarray, label: bool, label_epsilon: float | None) -> Belief:
    online = OnlinePreference(belief.posterior)
    epsilon = math.inf if label_epsilon is None else label_epsilon
    online.update(latent, label, flip_probability=rr_flip_probability(epsilon))
    return dataclasses.replace(belief, posterior=online.posterior)


@dataclass(frozen=True)
class _Snapshot:
    """What an exact refit reads before it computes: the ratings, the release, the last checkpoint."""

    data: _TrainingSet
    release: tuple[int, PopulationModel] | None
    checkpoint: DriftCheckpoint | None


def _snapshot(session: Session, cipher: UserCipher, space: LatentSpace) -> _Snapshot:
    row = preferences_repo.get_state(session, cipher.user_id)
    checkpoint = None
    if row is not None:
        _, belief = _decode(_open_state(cipher, row.state_ct))
        checkpoint = None if belief is None else belief.drift_checkpoint
    return _Snapshot(_training_set(session, cipher, space.dim), _latest_release(session), checkpoint)


def _store_refit(
    session: Session, *, keys: KeyRingStore, user_id: uuid.UUID, snapshot: _Snapshot, belief: Belief, space: LatentSpace
) -> tuple[Belief, int]:
    """Under the user's writer lock: the refit plus one online step per rating that arrived since its snapshot.

    The computation ran without the lock; what it missed is exactly the ratings with a larger id
    (new faces; a changed answer to an older face asks for another refit, see :func:`absorb_rating`).
    A user's ratings commit in id order, since each is written under this same lock.
    """
    cipher = user_cipher(session, keys=keys, user_id=user_id, for_update=True)
    newer = _training_set(session, cipher, space.dim, after_id=snapshot.data.last_id or 0)
    for z, label, epsilon in zip(newer.Z, newer.y, newer.eps, strict=True):
        belief = _online_step(belief, z, bool(label), None if math.isinf(epsilon) else float(epsilon))
    n = len(snapshot.data.y) + len(newer.y)
    _store(session, cipher, belief.to_state(), n=n, pending=len(newer.y))
    return belief, n


def refit_user(session: Session, *, keys: KeyRingStore, user_id: uuid.UUID, space: LatentSpace) -> tuple[Belief, int]:
    """Exact refit of the user's released posterior, computed without holding their writer lock.

    Reads a snapshot, fits, then stores under the lock (:func:`_store_refit`); the caller commits.
    Post-processing of stored private labels: no budget is spent.
    """
    cipher = user_cipher(session, keys=keys, user_id=user_id)
    snapshot = _snapshot(session, cipher, space)
    session.commit()  # ends the snapshot: no lock or old transaction is held while computing
    belief = _fit_belief(snapshot.data, space=space, release=snapshot.release, checkpoint=snapshot.checkpoint)
    return _store_refit(session, keys=keys, user_id=user_id, snapshot=snapshot, belief=belief, space=space)


#: Between exact refits a user rates at least this share of their history again (and at least
#: ``refit_every``): an exact refit costs O(n), so its cost per rating stays constant as n grows.
REFIT_GROWTH = 0.1


def _refit_interval(policy: PrivacyPolicy, n_ratings: int) -> int:
    """Online steps between exact refits: ``max(refit_every, ceil(REFIT_GROWTH * n))``."""
    return max(policy.refit_every, math.ceil(REFIT_GROWTH * n_ratings))


def absorb_rating(
    session: Session,
    *,
    cipher: UserCipher,
    policy: PrivacyPolicy,
    space: LatentSpace,
    latent: np.ndarray,
    stored_label: bool,
    label_epsilon: float | None,
    created: bool,
    stored: StateRow | None,
    release_version: int | None,
) -> None:
    """Bring the stored state up to date with a rating just written (same transaction, writer lock held).

    Randomized response: one online step for a new face (``O(d^2)``), and a refit asked of the
    refit queue when one is due (module docstring); only a user's first rating is fitted here.
    ``stored`` and ``release_version``: the stored state and the newest population release, as
    the caller read them under the lock (:func:`matchsvc.repositories.ratings.rating_context`).
    """
    if policy.privatises_labels:
        if stored is None:  # the first rating: an exact fit of it, as cheap as a step
            data = _training_set(session, cipher, space.dim)
            fitted = _fit_belief(data, space=space, release=_latest_release(session))
            _store(session, cipher, fitted.to_state(), n=len(data.y), pending=0)
            return
        state = _open_state(cipher, stored.state_ct)
        _, belief = _decode(state)
        due = (
            not created
            or belief is None
            or stored.pending_updates + 1 >= _refit_interval(policy, stored.n_ratings)
            or not _is_current(state, belief, release_version)
        )
        if belief is not None and created:
            updated = _online_step(belief, latent, stored_label, label_epsilon)
            _store(session, cipher, updated.to_state(), n=stored.n_ratings + 1, pending=stored.pending_updates + 1)
        if due:
            refits_repo.enqueue(session, user_id=cipher.user_id)
        return
    row = preferences_repo.get_state(session, cipher.user_id)
    n = ratings_repo.count_ratings(session, user_id=cipher.user_id)
    released = row.n_ratings if row is not None else 0
    if n - released < policy.refit_every:
        return
    try:
        charge(
            session, user_id=cipher.user_id, guarantee=policy.guarantee, scope=ledger_repo.MODEL_SCOPE, cap=policy.cap
        )
    except PrivacyBudgetExhausted:
        return  # the cap is reached: the last released model stays, the rating is still stored
    data = _training_set(session, cipher, space.dim)
    model = fit_private(
        data.Z, data.y, epsilon=policy.epsilon, delta=policy.delta, mechanism=policy.mechanism,
        public_negatives=safety_anchors(space),
    )
    state = {"version": _STATE_VERSION, "kind": "released", "model": model.to_vector().tolist()}
    _store(session, cipher, state, n=n, pending=0)


@dataclass(frozen=True)
class CurrentBelief:
    """A user's belief as of now, and the number of ratings behind it."""

    belief: Belief
    n_ratings: int


def current_belief(
    session: Session, *, keys: KeyRingStore, user_id: uuid.UUID, space: LatentSpace
) -> CurrentBelief | None:
    """The user's belief under the current population release (randomized-response deployments).

    The stored one when it was fitted against the current release; otherwise an exact refit,
    stored (the caller commits) under the user's writer lock, so it cannot overwrite a rating's
    update. A user with no state gets the prior belief, which is not stored. None when the stored
    state is a release-time mechanism's model, which has no posterior.
    """
    release = _latest_release(session)
    version = None if release is None else release[0]
    cipher = user_cipher(session, keys=keys, user_id=user_id)
    row = preferences_repo.get_state(session, user_id)
    if row is None:
        return CurrentBelief(_prior_belief(space, release), 0)
    state = _open_state(cipher, row.state_ct)
    _, belief = _decode(state)
    if belief is None:
        return None
    if belief.population_version == version:
        return CurrentBelief(belief, row.n_ratings)
    snapshot = _snapshot(session, cipher, space)
    fitted = _fit_belief(snapshot.data, space=space, release=snapshot.release, checkpoint=snapshot.checkpoint)
    refreshed, n = _store_refit(session, keys=keys, user_id=user_id, snapshot=snapshot, belief=fitted, space=space)
    return CurrentBelief(refreshed, n)


@dataclass(frozen=True)
class PreferenceProfile:
    """What a user may see about their own model (:func:`preference_profile`)."""

    ratings: int
    personas: list[tuple[int, float]]
    dominant_persona: int
    logit_sd: float
    certainty: float
    certainty_level: Literal["low", "medium", "high"]
    ratings_to_improve: int | None
    population_version: int | None
    drift_detected: bool


def _reference_moment(space: LatentSpace) -> np.ndarray:
    """``M = mean x x^T`` over the reference faces, ``x = [z, 1]``: ``mean x^T S x = trace(S M)``."""
    X = np.hstack([reference_faces(space), np.ones((_REFERENCE_FACES, 1))])
    return X.T @ X / len(X)


def _logit_sd(covariance: np.ndarray, moment: np.ndarray) -> float:
    return math.sqrt(max(float(np.sum(covariance * moment)), 0.0))


def _ratings_to_improve(
    posterior: Posterior, *, flip_probability: float, space: LatentSpace, moment: np.ndarray
) -> int | None:
    """Smallest ``k`` with the expected logit sd after ``k`` adaptive ratings at most half of now's."""
    faces = reference_faces(space)
    target = _logit_sd(posterior.covariance, moment) / 2.0
    picks = informative_indices(
        faces, mean=posterior.mean, covariance=posterior.covariance, flip_probability=flip_probability,
        n=MAX_RATINGS_TO_IMPROVE,
    )
    X = np.hstack([faces[picks], np.ones((len(picks), 1))])
    information = rr_information(X @ posterior.mean, np.full(len(picks), flip_probability))[1]
    precision = np.linalg.inv(posterior.covariance)

    def sd_after(k: int) -> float:
        gained = precision + (X[:k].T * information[:k]) @ X[:k]
        return _logit_sd(np.linalg.inv(gained), moment)

    if sd_after(MAX_RATINGS_TO_IMPROVE) > target:
        return None
    low, high = 0, MAX_RATINGS_TO_IMPROVE  # sd_after(low) > target >= sd_after(high); sd_after decreases in k
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if sd_after(middle) <= target else (middle, high)
    return high


def preference_profile(
    session: Session, *, keys: KeyRingStore, user_id: uuid.UUID, policy: PrivacyPolicy, space: LatentSpace
) -> PreferenceProfile:
    """The user's persona mix, how sure the model is, and how many ratings would sharpen it.

    Definitions, all over the *reference faces* (:func:`reference_faces`: 2048 public prior faces
    outside the safety region, features ``x = [z, 1]``):

    * ``logit_sd``: the root mean square, over the reference faces, of the posterior standard
      deviation of the like log-odds, ``sqrt(mean_x x^T S x)`` with ``S`` the posterior
      covariance of ``[w, b]``.
    * ``certainty``: ``1 - (logit_sd / logit_sd_0)^2``, clipped to [0, 1], with ``logit_sd_0``
      the same for the belief of a user with no ratings (the population prior when a release
      exists -- the spread of tastes across people, personas included -- else the isotropic
      default): the share of that no-knowledge variance of the log-odds the user's ratings have
      removed. (Measured against the isotropic prior instead, a new user under a release with
      well-separated personas started above it and read 0.) ``certainty_level`` is ``low`` below 0.5, ``medium`` below 0.8,
      ``high`` from 0.8 on.
    * ``ratings_to_improve``: the number ``k`` of further ratings after which the expected
      ``logit_sd`` is at most half of now's, when those ratings are chosen by the feed's cold-start
      criterion (:func:`engine.sampling.informative_indices`: greedy expected information gain
      under the current posterior and the deployment's flip rate) from the reference faces, and
      each adds its expected Fisher information ``I_rr(t) x x^T`` at the current mean logit ``t``
      to the posterior precision. None when more than :data:`MAX_RATINGS_TO_IMPROVE` would be needed.
    * ``personas``: the responsibilities of the population release's personas (one persona, 1.0,
      without a release); ``drift_detected``: the last exact refit down-weighted old ratings.

    None of it is a score of a face, a latent or the preference vector.

    Raises
    ------
    Conflict
        Under a release-time mechanism (objective, dpsgd): their models are single private
        releases with no posterior, and fitting one from the true labels would spend budget.
    """
    if not policy.privatises_labels:
        raise Conflict(f"the preference profile needs label-private ratings; this deployment uses {policy.mechanism!r}")
    current = current_belief(session, keys=keys, user_id=user_id, space=space)
    session.commit()  # keeps a refit against a newer population release and releases the writer lock
    if current is None:
        raise Conflict("your stored model predates randomized response; rate a face to refit it")
    belief = current.belief
    moment = _reference_moment(space)
    sd = _logit_sd(belief.posterior.covariance, moment)
    start = _prior_belief(space, _latest_release(session))
    sd_0 = _logit_sd(start.posterior.covariance, moment)
    certainty = min(max(1.0 - (sd / sd_0) ** 2, 0.0), 1.0)
    shares = np.ones(1) if belief.personas is None else belief.personas.responsibilities
    return PreferenceProfile(
        ratings=current.n_ratings,
        personas=[(k, float(share)) for k, share in enumerate(shares)],
        dominant_persona=int(np.argmax(shares)),
        logit_sd=sd,
        certainty=certainty,
        certainty_level=next(word for bound, word in _LEVELS if certainty >= bound),
        ratings_to_improve=_ratings_to_improve(
            belief.posterior, flip_probability=rr_flip_probability(policy.epsilon), space=space, moment=moment
        ),
        population_version=belief.population_version,
        drift_detected=belief.drift_detected,
    )
