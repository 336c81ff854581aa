"""A user's preference as a Gaussian (Laplace) posterior under the exact randomized-response likelihood.

Model. ``theta = [w, b]``, ``x = [z, 1]``; a stored label ``s`` in {-1, +1} has likelihood
``rho + (1 - 2 rho) sigmoid(s theta . x)`` (:mod:`engine.preference._noisy`), and ``theta`` has
a Gaussian prior :class:`PreferencePrior`: the isotropic default, or the population model's
(:mod:`engine.population`). The weight of the prior against the user's own labels is therefore
not a tuning constant: it follows from ``rho`` (so from epsilon) and the number of ratings, through
the likelihood. Optional per-rating weights ``c_i`` in (0, 1] temper each log-likelihood term
(old ratings after a change of taste, :mod:`engine.preference._drift`).

Fit. The MAP maximises ``sum_i c_i log P(s_i | theta . x_i) + log N(theta; m0, P0^-1)`` with a
backtracking line search on that exact objective. The likelihood is not log-concave, so a step
is Newton's with the observed Hessian, its spectrum shifted where it is not negative definite:
every step is an ascent direction. The Laplace covariance is the inverse of the Fisher matrix
``Q = X^T diag(c I_rr) X + P0`` at the MAP (positive definite by construction; the online update
and the population model's per-user input use the same information), and the evidence is the Laplace approximation

    log p(labels) ~ log-likelihood(MAP) - (MAP - m0)^T P0 (MAP - m0) / 2 + (log|P0| - log|Q|) / 2,

with ``Q`` the posterior precision; the population model compares personas with it.

Release. Matching computes ``sigmoid(coef . looks + intercept)`` from two numbers per user, so
the released like-probability must already average over what is unknown about ``theta``:
``E[sigmoid(t)] ~ sigmoid(mu / sqrt(1 + pi v / 8))`` for ``t ~ N(mu, v)`` (MacKay 1992). The
released :class:`PreferenceModel` is the posterior mean scaled by that factor with ``v`` averaged
over faces from the latent prior; :meth:`Posterior.predict_proba` applies it per face. An
uncertain posterior thus gives less extreme scores. All of this is post-processing of private
labels and costs no privacy budget.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.linalg.lapack
from scipy.special import expit

from engine._validation import InvalidInputError
from engine.preference._model import PreferenceModel
from engine.preference._noisy import (
    DEFAULT_L2,
    INTERCEPT_L2,
    calibration_factor,
    check_flip_probability,
    check_l2,
    check_labels,
    check_latents,
    rr_curvature,
    rr_information,
    rr_log_likelihood,
)
from privacy.mechanisms import RandomizedResponse

__all__ = [
    "Posterior",
    "PreferencePrior",
    "fit_noisy",
    "fit_posterior",
    "gaussian_likelihood",
    "rr_flip_probability",
]

_MAX_ITERATIONS = 100
#: Stop when the Newton decrement (an estimate of the objective gap) is below this share
#: of ``max(1, |objective|)``: far below anything that moves a prediction, above round-off.
_TOLERANCE = 1e-12
_ARMIJO = 0.25
_PROBIT = math.pi / 8.0


def rr_flip_probability(epsilon: float) -> float:
    """Flip rate of randomized response at ``epsilon`` (0 for ``math.inf``: clean labels)."""
    return RandomizedResponse(epsilon=epsilon).flip_probability


def _symmetric_positive_definite(name: str, matrix: npt.ArrayLike, size: int) -> np.ndarray:
    m = np.array(matrix, dtype=np.float64)
    if m.shape != (size, size):
        raise InvalidInputError(f"{name} must have shape ({size}, {size}), got shape {m.shape}")
    if not np.isfinite(m).all():
        raise InvalidInputError(f"{name} must be finite")
    if not np.all(np.abs(m - m.T) <= 1e-12 + 1e-10 * np.abs(m.T)):  # np.allclose's test, without its overhead
        raise InvalidInputError(f"{name} must be symmetric")
    m = (m + m.T) / 2.0
    if not positive_definite(m):
        raise InvalidInputError(f"{name} must be positive definite")
    m.flags.writeable = False
    return m


def positive_definite(m: np.ndarray) -> bool:
    """Whether the finite symmetric matrix ``m`` has a Cholesky factor (LAPACK's, without numpy's wrapper)."""
    return scipy.linalg.lapack.dpotrf(m)[1] == 0


def _finite_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise InvalidInputError(f"{name} must be a finite real number, got {value!r}")
    return float(value)


@dataclass(frozen=True, eq=False)
class PreferencePrior:
    """Gaussian prior over ``theta = [w, b]``: ``w ~ N(mean, cov)``, ``b ~ N(intercept_mean, intercept_variance)``.

    ``w`` and ``b`` are independent a priori. :meth:`isotropic` is the default a user starts
    from without a population model.
    """

    mean: np.ndarray
    cov: np.ndarray
    intercept_mean: float = 0.0
    intercept_variance: float = 1.0 / INTERCEPT_L2

    def __post_init__(self) -> None:
        mean = np.array(self.mean, dtype=np.float64)
        if mean.ndim != 1 or mean.size == 0 or not np.isfinite(mean).all():
            raise InvalidInputError(f"mean must be a finite array of shape (d,) with d >= 1, got shape {mean.shape}")
        mean.flags.writeable = False
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "cov", _symmetric_positive_definite("cov", self.cov, mean.size))
        object.__setattr__(self, "intercept_mean", _finite_real("intercept_mean", self.intercept_mean))
        variance = _finite_real("intercept_variance", self.intercept_variance)
        if variance <= 0:
            raise InvalidInputError(f"intercept_variance must be > 0, got {variance!r}")
        object.__setattr__(self, "intercept_variance", variance)

    @classmethod
    def isotropic(cls, dim: int, *, l2: float = DEFAULT_L2) -> PreferencePrior:
        """``w ~ N(0, I / l2)``, ``b ~ N(0, 1 / INTERCEPT_L2)``: the prior of a user with no population model."""
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 1:
            raise InvalidInputError(f"dim must be an integer >= 1, got {dim!r}")
        return cls(mean=np.zeros(int(dim)), cov=np.eye(int(dim)) / check_l2(l2))

    @property
    def dim(self) -> int:
        """Latent dimension ``d``."""
        return int(self.mean.size)

    def mean_vector(self) -> np.ndarray:
        """``[mean..., intercept_mean]``, shape (d + 1,)."""
        return np.append(self.mean, self.intercept_mean)

    def covariance(self) -> np.ndarray:
        """Block-diagonal covariance of ``theta``, shape (d + 1, d + 1)."""
        out = np.zeros((self.dim + 1, self.dim + 1))
        out[:-1, :-1] = self.cov
        out[-1, -1] = self.intercept_variance
        return out

    def precision(self) -> np.ndarray:
        """Inverse of :meth:`covariance`, shape (d + 1, d + 1)."""
        out = np.zeros((self.dim + 1, self.dim + 1))
        out[:-1, :-1] = np.linalg.inv(self.cov)
        out[-1, -1] = 1.0 / self.intercept_variance
        return (out + out.T) / 2.0


def _features(Z: np.ndarray) -> np.ndarray:
    return np.hstack([Z, np.ones((Z.shape[0], 1))])


@dataclass(frozen=True, eq=False)
class Posterior:
    """Gaussian posterior over ``theta = [w, b]`` (module docstring).

    Attributes
    ----------
    mean : numpy.ndarray, shape (d + 1,)
        Posterior mean (the MAP of the Laplace approximation) ``[w, b]``.
    covariance : numpy.ndarray, shape (d + 1, d + 1)
    log_evidence : float
        Laplace approximation of the log marginal likelihood of the stored labels under the
        prior; ``nan`` where it is not tracked.
    """

    mean: np.ndarray
    covariance: np.ndarray
    log_evidence: float = math.nan

    def __post_init__(self) -> None:
        mean = np.array(self.mean, dtype=np.float64)
        if mean.ndim != 1 or mean.size < 2 or not np.isfinite(mean).all():
            raise InvalidInputError(f"mean must be a finite array of shape (d + 1,) with d >= 1, got shape {mean.shape}")
        mean.flags.writeable = False
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "covariance", _symmetric_positive_definite("covariance", self.covariance, mean.size))
        evidence = self.log_evidence
        if isinstance(evidence, bool) or not isinstance(evidence, numbers.Real) or math.isinf(evidence):
            raise InvalidInputError(f"log_evidence must be a real number or nan, got {evidence!r}")
        object.__setattr__(self, "log_evidence", float(evidence))

    @classmethod
    def _trusted(cls, mean: np.ndarray, covariance: np.ndarray, log_evidence: float) -> Posterior:
        """A posterior from fresh float64 arrays the engine computed, without re-validating them.

        Only for a mean and covariance of the right shapes, finite, and a covariance exactly
        symmetric and positive definite (:func:`engine.preference._online.absorb` ensures it);
        the arrays are made read-only.
        """
        mean.flags.writeable = False
        covariance.flags.writeable = False
        posterior = object.__new__(cls)
        object.__setattr__(posterior, "mean", mean)
        object.__setattr__(posterior, "covariance", covariance)
        object.__setattr__(posterior, "log_evidence", log_evidence)
        return posterior

    @classmethod
    def from_prior(cls, prior: PreferencePrior) -> Posterior:
        """The posterior before any rating: the prior itself (its evidence is ``log 1 = 0``)."""
        return cls(mean=prior.mean_vector(), covariance=prior.covariance(), log_evidence=0.0)

    @property
    def dim(self) -> int:
        """Latent dimension ``d``."""
        return int(self.mean.size - 1)

    def logit_variance(self, Z: npt.ArrayLike) -> np.ndarray:
        """Posterior variance of each face's logit, ``x^T Sigma x``, shape (n,)."""
        X = _features(check_latents(Z, dim=self.dim))
        return np.einsum("ij,jk,ik->i", X, self.covariance, X)

    def predict_proba(self, Z: npt.ArrayLike) -> np.ndarray:
        """Like-probability of each face integrated over the posterior (probit approximation), shape (n,)."""
        return self._predict_features(_features(check_latents(Z, dim=self.dim)))

    def _predict_features(self, X: np.ndarray) -> np.ndarray:
        """:meth:`predict_proba` of faces given as checked feature rows ``[z, 1]`` (the drift test has them)."""
        variance = np.einsum("ij,jk,ik->i", X, self.covariance, X)
        return expit(X @ self.mean / np.sqrt(1.0 + _PROBIT * variance))

    def model(self) -> PreferenceModel:
        """The released model: the mean scaled by the probit factor averaged over prior faces."""
        scaled = self.mean * calibration_factor(np.diag(self.covariance))
        return PreferenceModel(coef=scaled[:-1], intercept=float(scaled[-1]))

    def to_state(self) -> dict[str, Any]:
        """Plain lists and floats (``None`` for an untracked evidence); :meth:`from_state` restores it."""
        evidence = None if math.isnan(self.log_evidence) else self.log_evidence
        return {"mean": self.mean.tolist(), "covariance": self.covariance.tolist(), "log_evidence": evidence}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Posterior:
        """Inverse of :meth:`to_state`; ``InvalidInputError`` on a malformed state."""
        try:
            evidence = state.get("log_evidence")
            return cls(
                mean=np.asarray(state["mean"], dtype=np.float64),
                covariance=np.asarray(state["covariance"], dtype=np.float64),
                log_evidence=math.nan if evidence is None else evidence,
            )
        except (AttributeError, KeyError, TypeError) as exc:
            raise InvalidInputError(f"posterior state is malformed: {exc!r}") from exc


def _check_weights(weights: npt.ArrayLike | None, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    c = np.asarray(weights, dtype=np.float64)
    if c.shape != (n,):
        raise InvalidInputError(f"weights must have shape ({n},), got shape {c.shape}")
    if not ((c > 0.0) & (c <= 1.0)).all():
        raise InvalidInputError("weights must lie in (0, 1]")
    return c


def _check_prior(prior: PreferencePrior | None, dim: int) -> PreferencePrior:
    if prior is None:
        return PreferencePrior.isotropic(dim)
    if not isinstance(prior, PreferencePrior):
        raise InvalidInputError(f"prior must be a PreferencePrior or None, got {type(prior).__name__}")
    if prior.dim != dim:
        raise InvalidInputError(f"prior has dimension {prior.dim}, the latents have {dim}")
    return prior


def _log_posterior(
    X: np.ndarray, s: np.ndarray, rho: np.ndarray, c: np.ndarray, theta: np.ndarray, m0: np.ndarray, P0: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """Objective (unnormalised log posterior), the weighted log-likelihood terms' ``d/dt``, and ``t``."""
    t = X @ theta
    log_p, slope = rr_log_likelihood(t, s, rho)
    offset = theta - m0
    return float(c @ log_p - 0.5 * offset @ P0 @ offset), c * slope, t


def _newton_step(
    X: np.ndarray, s: np.ndarray, rho: np.ndarray, c: np.ndarray, t: np.ndarray, P0: np.ndarray, gradient: np.ndarray
) -> np.ndarray:
    """Newton's step, with the observed Hessian shifted to be negative definite where it is not.

    Near the mode the observed curvature gives quadratic convergence. Where the likelihood is
    convex along some direction the Hessian is indefinite; shifting its spectrum by twice the
    offending eigenvalue keeps a long step along that direction, which the line search then
    shortens as needed. (Fisher scoring there crawled along such ridges: 451 steps on a case
    from the cold-start benchmark, against 6 with the shift.)
    """
    observed = (X.T * (c * rr_curvature(t, s, rho))) @ X + P0
    try:
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(observed), gradient)
    except np.linalg.LinAlgError:
        lowest = float(np.linalg.eigvalsh(observed)[0])
        shift = 2.0 * abs(lowest) + 1e-8 * max(1.0, float(np.abs(np.diag(observed)).max()))
        return np.linalg.solve(observed + shift * np.eye(observed.shape[0]), gradient)


def _maximise(
    X: np.ndarray, s: np.ndarray, rho: np.ndarray, c: np.ndarray, m0: np.ndarray, P0: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Damped Newton with Armijo backtracking; returns the MAP, the Fisher precision there and the objective."""
    theta = m0.copy()
    value, slope, t = _log_posterior(X, s, rho, c, theta, m0, P0)
    for _ in range(_MAX_ITERATIONS):
        gradient = X.T @ slope - P0 @ (theta - m0)
        step = _newton_step(X, s, rho, c, t, P0, gradient)
        decrement = float(gradient @ step)
        if decrement <= 2.0 * _TOLERANCE * max(1.0, abs(value)):
            return theta, (X.T * (c * rr_information(t, rho)[1])) @ X + P0, value
        size = 1.0
        while True:
            candidate = theta + size * step
            cand_value, cand_slope, cand_t = _log_posterior(X, s, rho, c, candidate, m0, P0)
            if cand_value >= value + _ARMIJO * size * decrement:
                break
            size *= 0.5
            if size < 1e-12:
                raise ArithmeticError("Newton line search failed: the objective is not finite")
        theta, value, slope, t = candidate, cand_value, cand_slope, cand_t
    raise ArithmeticError(f"Newton's method did not converge in {_MAX_ITERATIONS} iterations")


def fit_posterior(
    Z: npt.ArrayLike,
    y_private: npt.ArrayLike,
    *,
    flip_probability: float | npt.ArrayLike,
    prior: PreferencePrior | None = None,
    public_negatives: npt.ArrayLike | None = None,
    weights: npt.ArrayLike | None = None,
) -> Posterior:
    """The Laplace posterior over ``[w, b]`` given stored (randomized) labels.

    Parameters
    ----------
    Z : array_like, shape (n, d)
        Latents of the rated faces (public).
    y_private : array_like of bool or {0, 1}, shape (n,)
        Stored labels, 1 = like.
    flip_probability : float or array_like, shape (n,)
        The flip rate each label was privatised with, in ``[0, 1/2)``; 0 for clean labels.
    prior : PreferencePrior, optional
        :meth:`PreferencePrior.isotropic` when omitted.
    public_negatives : array_like, shape (m, d), optional
        Latents known to be negatives without asking (the safety region): clean passes, weight 1.
    weights : array_like, shape (n,), optional
        Tempering of each rating's log-likelihood, in (0, 1]; all 1 when omitted.

    Returns
    -------
    Posterior
        Its :meth:`Posterior.model` is the released model.
    """
    return _fit(Z, y_private, flip_probability, prior, public_negatives, weights)[0]


def _fit(
    Z: npt.ArrayLike,
    y_private: npt.ArrayLike,
    flip_probability: float | npt.ArrayLike,
    prior: PreferencePrior | None,
    public_negatives: npt.ArrayLike | None,
    weights: npt.ArrayLike | None,
) -> tuple[Posterior, np.ndarray, PreferencePrior]:
    """:func:`fit_posterior`, also returning the likelihood's information matrix and the prior used."""
    z = check_latents(Z)
    n, d = z.shape
    s = np.where(check_labels(y_private, n, name="y_private"), 1.0, -1.0)
    rho = check_flip_probability(flip_probability, n)
    c = _check_weights(weights, n)
    chosen = _check_prior(prior, d)
    if public_negatives is not None:
        negatives = check_latents(public_negatives, name="public_negatives", dim=d)
        z = np.vstack([z, negatives])
        s = np.concatenate([s, -np.ones(len(negatives))])
        rho = np.concatenate([rho, np.zeros(len(negatives))])
        c = np.concatenate([c, np.ones(len(negatives))])
    m0, P0 = chosen.mean_vector(), chosen.precision()
    theta, precision, value = _maximise(_features(z), s, rho, c, m0, P0)
    covariance = np.linalg.inv(precision)
    evidence = value + 0.5 * (np.linalg.slogdet(P0)[1] - np.linalg.slogdet(precision)[1])
    posterior = Posterior(mean=theta, covariance=(covariance + covariance.T) / 2.0, log_evidence=evidence)
    return posterior, precision - P0, chosen


def gaussian_likelihood(
    Z: npt.ArrayLike,
    y_private: npt.ArrayLike,
    *,
    flip_probability: float | npt.ArrayLike,
    weights: npt.ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One user's likelihood over ``theta`` as a Gaussian in information form, ``(h, H)``.

    ``p(labels | theta) ~ exp(h . theta - theta^T H theta / 2)``, the Laplace approximation
    taken at the MAP ``m`` under the isotropic prior ``N(m0, P0^-1)``: ``H = X^T diag(I_rr) X``
    (posterior precision minus ``P0``) and ``h = (H + P0) m - P0 m0``, so that multiplying this
    Gaussian by that prior gives back the posterior. ``H`` is positive semi-definite (singular with
    fewer ratings than dimensions). It depends on this user's stored labels only, which is what
    makes it the population model's per-user input (:mod:`engine.population`).

    Returns
    -------
    h : numpy.ndarray, shape (d + 1,)
    H : numpy.ndarray, shape (d + 1, d + 1)
    """
    posterior, H, prior = _fit(Z, y_private, flip_probability, None, None, weights)
    H = (H + H.T) / 2.0
    return H @ posterior.mean + prior.precision() @ (posterior.mean - prior.mean_vector()), H


def fit_noisy(
    Z: npt.ArrayLike,
    y_private: npt.ArrayLike,
    *,
    flip_probability: float | npt.ArrayLike,
    public_negatives: npt.ArrayLike | None = None,
    prior: PreferencePrior | None = None,
    weights: npt.ArrayLike | None = None,
) -> PreferenceModel:
    """The released model from stored labels: ``fit_posterior(...).model()`` (same arguments)."""
    return fit_posterior(
        Z, y_private, flip_probability=flip_probability, prior=prior, public_negatives=public_negatives, weights=weights
    ).model()
