"""The user's preference: a Gaussian posterior learned from private labels, stored encrypted.

With randomized response (the default) labels are private when stored, so everything here is
post-processing and spends no budget. The stored state (sealed JSON in ``preference_states``,
version 3, kind ``posterior``; :mod:`matchsvc.services.sealed` has the format) holds

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
  version 2 or 3 posterior, or the current population release is not the one the state was fitted
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
import math
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from engine.latent import LatentSpace
from engine.latent.base import LatentSpaceError
from engine.population import PopulationModel
from engine.preference import (
    DriftCheckpoint,
    OnlinePreference,
    Posterior,
    PreferenceModel,
    PreferencePrior,
    drift_test,
    fit_posterior,
    fit_private,
)
from matchsvc.db.statements import Write, execute_writes
from matchsvc.errors import PrivacyBudgetExhausted
from matchsvc.keys import KeyRingStore, UserCipher
from matchsvc.repositories import ledger as ledger_repo
from matchsvc.repositories import preferences as preferences_repo
from matchsvc.repositories import ratings as ratings_repo
from matchsvc.repositories import refits as refits_repo
from matchsvc.repositories.preferences import StateRow
from matchsvc.services.keys import user_cipher
from matchsvc.services.population import current_release
from matchsvc.services.privacy import PrivacyPolicy, checked_spend
from matchsvc.services.sealed import (
    Belief,
    PersonaMix,
    SteppableState,
    decode_state,
    open_state,
    released_state,
    seal_state,
)
from matchsvc.services.training import TrainingSet, flip_probability, read_training_set

__all__ = [
    "CurrentBelief",
    "StoredModel",
    "absorb_rating",
    "current_belief",
    "latest_release",
    "load_model",
    "prior_belief",
    "refit_user",
    "safety_anchors",
]

#: The public known negative is the mean of this many prior draws that fall in the safety region
#: (drawn from a fixed public seed), so it is the same for every user and every process.
_ANCHOR_DRAWS = 4096
_ANCHOR_ROUNDS = 64
_ANCHOR_SEED = 20261123


@functools.lru_cache(maxsize=8)
def safety_anchors(space: LatentSpace) -> np.ndarray:
    """Everyone's known negative, shape ``(1, dim)``: the typical safety-region face, at no budget cost.

    One clean pass at the centroid of the safety region under the prior (the in-region draw
    nearest to it where the region is not convex). One, at the centre, because a linear model
    cannot dislike only under-18 faces: every clean negative there tilts users who like younger
    adult faces towards older ones; one centroid costs the least accuracy of the choices tried
    (docs/decisions.md D9 has the measurements).
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


@dataclass(frozen=True)
class StoredModel:
    """A user's stored state: the released model, and the belief behind it (None for release-time mechanisms)."""

    model: PreferenceModel
    n_ratings: int
    belief: Belief | None = None


def load_model(session: Session, *, cipher: UserCipher) -> StoredModel | None:
    """The user's released model (and belief), decrypted in memory; None before the first fit."""
    row = preferences_repo.get_state(session, cipher.user_id)
    if row is None:
        return None
    model, belief = decode_state(open_state(cipher, row.state_ct))
    return StoredModel(model=model, n_ratings=row.n_ratings, belief=belief)


def _fit_belief(
    data: TrainingSet,
    *,
    space: LatentSpace,
    release: tuple[int, PopulationModel] | None,
    checkpoint: DriftCheckpoint | None = None,
) -> Belief:
    """The exact refit (module docstring); with no ratings, the prior belief.

    ``checkpoint`` (the last refit's) only saves drift-test work: the result is the same without it.
    """
    Z, y, rho = data.Z, data.y, data.flip
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


def prior_belief(space: LatentSpace, release: tuple[int, PopulationModel] | None) -> Belief:
    """The belief of a user with no ratings."""
    empty = TrainingSet(np.empty((0, space.dim)), np.zeros(0, dtype=bool), np.zeros(0), None)
    return _fit_belief(empty, space=space, release=release)


def latest_release(session: Session) -> tuple[int, PopulationModel] | None:
    """The current population release as ``(version, model)``; None before the first."""
    release = current_release(session)
    return None if release is None else (release.version, release.model)


def _state_write(cipher: UserCipher, state: dict[str, Any], *, n: int, pending: int) -> Write:
    """The only writer of ``preference_states``: every path that moves a user's state ends here."""
    return preferences_repo.state_write(
        user_id=cipher.user_id, state_ct=seal_state(cipher, state), n_ratings=n, pending_updates=pending
    )


def _store(session: Session, cipher: UserCipher, state: dict[str, Any], *, n: int, pending: int) -> None:
    _state_write(cipher, state, n=n, pending=pending).execute(session)


def _online_posterior(posterior: Posterior, latent: np.ndarray, label: bool, flip: float) -> Posterior:
    return OnlinePreference(posterior).step(latent, label, flip_probability=flip)


def _online_step(belief: Belief, latent: np.ndarray, label: bool, flip: float) -> Belief:
    return dataclasses.replace(belief, posterior=_online_posterior(belief.posterior, latent, label, flip))


@dataclass(frozen=True)
class _Snapshot:
    """What an exact refit reads before it computes: the ratings, the release, the last checkpoint."""

    data: TrainingSet
    release: tuple[int, PopulationModel] | None
    checkpoint: DriftCheckpoint | None


def _snapshot(session: Session, cipher: UserCipher, space: LatentSpace) -> _Snapshot:
    row = preferences_repo.get_state(session, cipher.user_id)
    checkpoint = None
    if row is not None:
        _, belief = decode_state(open_state(cipher, row.state_ct))
        checkpoint = None if belief is None else belief.drift_checkpoint
    return _Snapshot(read_training_set(session, cipher, dim=space.dim), latest_release(session), checkpoint)


def _store_refit(
    session: Session, *, keys: KeyRingStore, user_id: uuid.UUID, snapshot: _Snapshot, belief: Belief, space: LatentSpace
) -> tuple[Belief, int]:
    """Under the user's writer lock: the refit plus one online step per rating that arrived since its snapshot.

    The computation ran without the lock; what it missed is exactly the ratings with a larger id
    (new faces; a changed answer to an older face asks for another refit, see :func:`absorb_rating`).
    A user's ratings commit in id order, since each is written under this same lock.
    """
    cipher = user_cipher(session, keys=keys, user_id=user_id, for_update=True)
    newer = read_training_set(session, cipher, dim=space.dim, after_id=snapshot.data.last_id or 0)
    for z, label, flip in zip(newer.Z, newer.y, newer.flip, strict=True):
        belief = _online_step(belief, z, bool(label), float(flip))
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
    refit_queued: bool,
    writes: list[Write],
) -> list[Write]:
    """Bring the stored state up to date with a rating (same transaction, writer lock held).

    Randomized response: one online step for a new face (``O(d^2)``), and a refit asked of the
    refit queue when one is due (module docstring); only a user's first rating is fitted here.
    ``stored``, ``release_version`` and ``refit_queued``: the stored state, the newest population
    release and whether a refit is queued or running, as the caller read them under the lock
    (:func:`matchsvc.repositories.ratings.rating_context`). A new face's rating does not ask again
    for a queued refit: the refit reads it, or, if it is already running, steps it in when it
    stores (:func:`_store_refit`). A changed answer always asks, so that a running refit, which
    read the old answer, leaves the job queued.

    ``writes``: the rating's own writes, not sent yet. Returns them with this update's, to be sent
    together (:func:`matchsvc.db.statements.execute_writes`); a path that must read the rating back
    sends them first and returns only its own.
    """
    if policy.privatises_labels:
        if stored is None:  # the first rating: an exact fit of it, as cheap as a step
            execute_writes(session, writes)
            data = read_training_set(session, cipher, dim=space.dim)
            fitted = _fit_belief(data, space=space, release=latest_release(session))
            return [_state_write(cipher, fitted.to_state(), n=len(data.y), pending=0)]
        opened = SteppableState.of(open_state(cipher, stored.state_ct))
        due = (
            not created
            or opened is None
            or stored.pending_updates + 1 >= _refit_interval(policy, stored.n_ratings)
            or not opened.is_current(release_version)
        )
        if opened is not None and created:
            posterior = _online_posterior(opened.posterior, latent, stored_label, flip_probability(label_epsilon))
            state = opened.stepped(posterior)
            writes = [*writes, _state_write(cipher, state, n=stored.n_ratings + 1, pending=stored.pending_updates + 1)]
        if due and not (created and refit_queued):
            writes = [*writes, refits_repo.enqueue_write(user_id=cipher.user_id)]
        return writes
    execute_writes(session, writes)
    row = preferences_repo.get_state(session, cipher.user_id)
    n = ratings_repo.count_ratings(session, user_id=cipher.user_id)
    released = row.n_ratings if row is not None else 0
    if n - released < policy.refit_every:
        return []
    try:
        spend = checked_spend(
            session, user_id=cipher.user_id, guarantee=policy.guarantee, scope=ledger_repo.MODEL_SCOPE, cap=policy.cap
        )
    except PrivacyBudgetExhausted:
        return []  # the cap is reached: the last released model stays, the rating is still stored
    data = read_training_set(session, cipher, dim=space.dim)
    model = fit_private(
        data.Z, data.y, epsilon=policy.epsilon, delta=policy.delta, mechanism=policy.mechanism,
        public_negatives=safety_anchors(space),
    )
    return [*spend, _state_write(cipher, released_state(model), n=n, pending=0)]


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
    release = latest_release(session)
    version = None if release is None else release[0]
    cipher = user_cipher(session, keys=keys, user_id=user_id)
    row = preferences_repo.get_state(session, user_id)
    if row is None:
        return CurrentBelief(prior_belief(space, release), 0)
    state = open_state(cipher, row.state_ct)
    _, belief = decode_state(state)
    if belief is None:
        return None
    if belief.population_version == version:
        return CurrentBelief(belief, row.n_ratings)
    snapshot = _snapshot(session, cipher, space)
    fitted = _fit_belief(snapshot.data, space=space, release=snapshot.release, checkpoint=snapshot.checkpoint)
    refreshed, n = _store_refit(session, keys=keys, user_id=user_id, snapshot=snapshot, belief=fitted, space=space)
    return CurrentBelief(refreshed, n)
