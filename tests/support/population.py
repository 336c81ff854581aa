"""Synthetic users for the population-model tests: true preferences, rated faces, stored labels.

A user with true ``theta = [w, b]`` rates faces drawn from the latent prior (truncated to the
box), answers like with probability ``sigmoid(w . z + b)``, and the answer passes randomized
response (the service's mechanism) before it is stored. The population model sees only each
user's ``(h, H)`` from :func:`engine.preference.gaussian_likelihood` of the stored labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from engine.latent._prior import sample_truncated_prior
from engine.preference import gaussian_likelihood
from privacy.mechanisms import RandomizedResponse

__all__ = ["Ratings", "SyntheticPopulation", "persona_population", "rate"]


@dataclass(frozen=True)
class Ratings:
    """One user's rated faces and stored labels, and the flip rate they were stored with."""

    Z: np.ndarray
    stored: np.ndarray
    flip_probability: float

    def likelihood(self) -> tuple[np.ndarray, np.ndarray]:
        """The user's ``(h, H)``: what :func:`engine.population.fit_population` takes."""
        return gaussian_likelihood(self.Z, self.stored, flip_probability=self.flip_probability)


def rate(
    theta: np.ndarray, n: int, *, epsilon: float, rng: np.random.Generator, unused_axis: int | None = None
) -> Ratings:
    """``n`` ratings by a user with preference ``theta`` (shape (d+1,)), stored through randomized response.

    ``unused_axis``: faces have latent 0 on that axis, so the ratings say nothing about it.
    """
    dim = theta.size - 1
    Z = sample_truncated_prior(n, dim, rng)
    if unused_axis is not None:
        Z[:, unused_axis] = 0.0
    answers = rng.random(n) < expit(Z @ theta[:-1] + theta[-1])
    rr = RandomizedResponse(epsilon=epsilon)
    return Ratings(Z=Z, stored=rr.privatise(answers, rng.random(n)), flip_probability=rr.flip_probability)


@dataclass(frozen=True)
class SyntheticPopulation:
    """Users drawn from a mixture of personas: ``theta_u = means[k_u] + N(0, deviation^2 I)``."""

    means: np.ndarray  # (K, d+1)
    weights: np.ndarray  # (K,)
    deviation: float

    def draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """True ``theta`` (n, d+1) and persona (n,) of ``n`` new users."""
        personas = rng.choice(self.weights.size, size=n, p=self.weights)
        return self.means[personas] + self.deviation * rng.standard_normal((n, self.means.shape[1])), personas


def persona_population(
    rng: np.random.Generator, *, n_personas: int = 4, dim: int = 8, scale: float = 1.2, deviation: float = 0.25
) -> SyntheticPopulation:
    """Personas whose ``w`` are ``scale`` times orthonormal directions, with like-rates apart.

    Orthonormal directions keep every pair of personas ``scale * sqrt(2)`` apart, so the test
    asks about recovery, not about telling near-duplicates apart; ``scale = 1.2`` is about the
    length of a ``w`` drawn from the default prior ``N(0, I / 4)`` in 8 dimensions (1.4).
    """
    directions, _ = np.linalg.qr(rng.standard_normal((dim, n_personas)))
    intercepts = np.linspace(-0.6, 0.6, n_personas)
    weights = np.arange(n_personas, 0, -1, dtype=np.float64)
    return SyntheticPopulation(
        means=np.hstack([scale * directions.T, intercepts[:, None]]),
        weights=weights / weights.sum(),
        deviation=deviation,
    )
