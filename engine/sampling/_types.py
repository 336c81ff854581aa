"""The feed's vocabulary: what it reads (protocols), how it is tuned, what it returns."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import numpy as np

from engine._validation import InvalidInputError, check_int, check_real
from privacy.mechanisms import RandomizedResponse

__all__ = [
    "MAX_BATCH_SIZE",
    "FeedBatch",
    "FeedConfig",
    "PersonaView",
    "PosteriorView",
    "ReleasedModel",
    "SlotRole",
    "linear_params",
]

#: Largest batch one call may ask for.
MAX_BATCH_SIZE: int = 64


class ReleasedModel(Protocol):
    """What the feed needs from a released preference model: a linear logit.

    ``sigmoid(coef @ z + intercept)`` is the calibrated like-probability of latent ``z``.
    """

    @property
    def coef(self) -> np.ndarray:
        """Preference direction, shape ``(d,)``."""
        ...

    @property
    def intercept(self) -> float:
        """Logit offset."""
        ...


class PosteriorView(Protocol):
    """What the feed needs from a Gaussian posterior over ``theta = [w, b]``.

    :class:`engine.preference.Posterior` is one; the like-probability of latent ``z`` is
    ``sigmoid(theta . [z, 1])``.
    """

    @property
    def mean(self) -> np.ndarray:
        """Posterior mean of ``theta``, shape ``(d + 1,)``."""
        ...

    @property
    def covariance(self) -> np.ndarray:
        """Posterior covariance of ``theta``, shape ``(d + 1, d + 1)``, symmetric PSD."""
        ...


class PersonaView(Protocol):
    """What the feed needs from a user's posterior over personas.

    :class:`engine.population.PersonaPosterior` is one.
    """

    @property
    def responsibilities(self) -> np.ndarray:
        """Posterior probability of each of the ``K`` personas, shape ``(K,)``, summing to 1."""
        ...

    @property
    def components(self) -> Sequence[PosteriorView]:
        """The user's posterior within each persona, ``K`` of them; only their ``mean`` is read."""
        ...


class SlotRole(str, Enum):
    """Why a face is in the batch (for metrics; never shown to the user)."""

    SPREAD = "spread"
    ADAPTIVE = "adaptive"
    EXPLOIT = "exploit"
    EXPLORE = "explore"
    OUTSIDE_PERSONA = "outside_persona"


@dataclass(frozen=True)
class FeedConfig:
    """Tuning of the feed; validated on construction.

    Attributes
    ----------
    pool_size : int
        Fresh prior samples drawn per batch as candidates (>= ``MAX_BATCH_SIZE``).
    warmup_ratings : int
        Without a posterior: ratings below which the model is ignored and the batch is pure
        spread.
    coldstart_ratings : int
        With a posterior: ratings below which every slot is adaptive (most informative).
    exploit_fraction : float
        Expected share of exploit slots once learning, in [0, 1]; the rest explore.
    outside_persona_fraction : float
        Expected share of outside-persona slots once learning with at least two personas, taken
        from the explore share: in [0, 1 - ``exploit_fraction``].
    flip_probability : float
        Flip rate of the stored labels the information criterion assumes, in [0, 0.5); default
        randomized response at epsilon 1, ``1 / (1 + e)``. The service passes its own.
    shortlist_fraction : float
        Share of a source's candidates kept as the exploit (top scores) or explore (closest to
        the boundary) shortlist before diversity selection, in (0, 1].
    cached_share_start : float
        Share of cached faces for a user with no ratings, in [0, 1].
    cached_share_floor : float
        Share the cached faces decay to, in [0, ``cached_share_start``].
    cached_half_life : float
        Ratings after which the cached share has covered half the way to the floor (> 0).
    """

    pool_size: int = 2048
    warmup_ratings: int = 20
    coldstart_ratings: int = 10
    exploit_fraction: float = 0.7
    outside_persona_fraction: float = 0.1
    flip_probability: float = RandomizedResponse(epsilon=1.0).flip_probability
    shortlist_fraction: float = 0.1
    cached_share_start: float = 0.8
    cached_share_floor: float = 0.1
    cached_half_life: float = 40.0

    def __post_init__(self) -> None:
        check_int("pool_size", self.pool_size, low=MAX_BATCH_SIZE, high=1_000_000)
        check_int("warmup_ratings", self.warmup_ratings, low=0)
        check_int("coldstart_ratings", self.coldstart_ratings, low=0)
        check_real("exploit_fraction", self.exploit_fraction, low=0.0, high=1.0)
        outside = check_real(
            "outside_persona_fraction", self.outside_persona_fraction, low=0.0, high=1.0
        )
        # A sum with a rounding tolerance, not ``high=1 - exploit_fraction``: 1 - 0.9 < 0.1.
        if self.exploit_fraction + outside > 1.0 + 1e-12:
            raise InvalidInputError(
                f"outside_persona_fraction must be at most 1 - exploit_fraction, got {outside}"
            )
        check_real("flip_probability", self.flip_probability, low=0.0, high=0.5, high_open=True)
        check_real(
            "shortlist_fraction", self.shortlist_fraction, low=0.0, high=1.0, low_open=True
        )
        check_real("cached_share_start", self.cached_share_start, low=0.0, high=1.0)
        check_real(
            "cached_share_floor", self.cached_share_floor, low=0.0, high=self.cached_share_start
        )
        check_real(
            "cached_half_life", self.cached_half_life, low=0.0, high=math.inf, low_open=True
        )

    def cached_share(self, n_rated: int) -> float:
        """Expected share of cached faces in a batch for a user with ``n_rated`` ratings.

        Decays geometrically from ``cached_share_start`` to ``cached_share_floor`` with half-life
        ``cached_half_life`` ratings; non-increasing in ``n_rated``.
        """
        n_rated = check_int("n_rated", n_rated, low=0)
        excess = self.cached_share_start - self.cached_share_floor
        return self.cached_share_floor + excess * math.pow(0.5, n_rated / self.cached_half_life)


@dataclass(frozen=True)
class FeedBatch:
    """The faces to show next, in display order.

    Attributes
    ----------
    latents : np.ndarray
        Shape ``(n, d)``, float64, read-only. For cached slots a copy of the cached latent.
    cached_index : np.ndarray
        Shape ``(n,)``, int64, read-only: row of the caller's ``cached`` array, or -1 for a fresh
        face the caller must render and store.
    roles : tuple of SlotRole
        Length ``n``: why each face was picked.
    """

    latents: np.ndarray
    cached_index: np.ndarray
    roles: tuple[SlotRole, ...]

    @property
    def is_cached(self) -> np.ndarray:
        """Boolean mask of shape ``(n,)``: True where the face comes from the shared cache."""
        return self.cached_index >= 0

    def count(self, role: SlotRole) -> int:
        """Number of slots with ``role``."""
        return sum(r is role for r in self.roles)


def linear_params(model: ReleasedModel, *, dim: int) -> tuple[np.ndarray, float]:
    """Validated ``(coef, intercept)`` of a released model for a ``dim``-dimensional space.

    Returns
    -------
    coef : np.ndarray
        Shape ``(dim,)``, float64, finite.
    intercept : float
        Finite.
    """
    coef = np.asarray(model.coef, dtype=np.float64)
    if coef.shape != (dim,):
        raise InvalidInputError(f"model.coef must have shape ({dim},), got {coef.shape}")
    if not np.all(np.isfinite(coef)):
        raise InvalidInputError("model.coef must be finite")
    intercept = np.asarray(model.intercept, dtype=np.float64)
    if intercept.shape != () or not np.isfinite(intercept):
        raise InvalidInputError(f"model.intercept must be a finite scalar, got {model.intercept!r}")
    return coef, float(intercept)
