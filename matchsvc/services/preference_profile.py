"""What a user may see about their own preference model: persona mix, certainty, ratings to improve.

A read of the user's current belief (:func:`matchsvc.services.preferences.current_belief`) measured
over public reference faces, so the profile is a function of the belief alone; it spends no
budget. The definitions are in :func:`preference_profile`.
"""

from __future__ import annotations

import functools
import math
import uuid
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sqlalchemy.orm import Session

from engine.latent import LatentSpace
from engine.latent.base import sample_outside_safety
from engine.preference import Posterior, rr_flip_probability, rr_information
from engine.sampling import informative_indices
from matchsvc.errors import Conflict
from matchsvc.keys import KeyRingStore
from matchsvc.services.preferences import current_belief, latest_release, prior_belief
from matchsvc.services.privacy import PrivacyPolicy

__all__ = ["MAX_RATINGS_TO_IMPROVE", "PreferenceProfileView", "preference_profile", "reference_faces"]

#: The profile's reference faces: prior faces that may be shown, from a fixed public seed.
_REFERENCE_FACES = 2048
_REFERENCE_SEED = 20261207
#: Largest ``ratings_to_improve`` the profile computes; beyond it the answer is None.
MAX_RATINGS_TO_IMPROVE = 1000
#: Certainty levels: (lower bound of the score, word), highest first.
_LEVELS: tuple[tuple[float, Literal["low", "medium", "high"]], ...] = ((0.8, "high"), (0.5, "medium"), (0.0, "low"))


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


@dataclass(frozen=True)
class PreferenceProfileView:
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
) -> PreferenceProfileView:
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
      removed. (Against the isotropic prior instead, a new user under a release with
      well-separated personas would start above it and read 0.) ``certainty_level`` is ``low`` below 0.5, ``medium`` below 0.8,
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
    start = prior_belief(space, latest_release(session))
    sd_0 = _logit_sd(start.posterior.covariance, moment)
    certainty = min(max(1.0 - (sd / sd_0) ** 2, 0.0), 1.0)
    shares = np.ones(1) if belief.personas is None else belief.personas.responsibilities
    return PreferenceProfileView(
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
