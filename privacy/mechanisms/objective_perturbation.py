"""Objective perturbation for L2-regularised logistic regression (pure epsilon-DP).

Chaudhuri, Monteleoni & Sarwate, "Differentially Private Empirical Risk Minimization", JMLR 12
(2011), Algorithm 2 and Theorem 9. This module holds the mechanism's pure parts (the public
feature map, the privacy parameters, the noise draw); the learner in ``engine`` minimises the
perturbed objective. With features ``x_i`` in the unit ball, labels ``s_i`` in {-1, +1}, the
release is

    f_priv = argmin_f  (1/n) sum_i log(1 + exp(-s_i f.x_i)) + (Lambda + Delta)/2 ||f||^2 + (1/n) b.f

where ``(epsilon', Delta) = perturbation_parameters(...)`` and ``b = sample_noise(...)``.
Requirements of the theorem, met here: the loss is convex and twice differentiable with
``|l'| <= 1`` and ``|l''| <= c = 1/4`` (logistic), ``||x_i|| <= 1`` (enforced by
:func:`unit_ball_features`), the regulariser ``||f||^2 / 2`` is 1-strongly convex, and the
minimisation is exact (the engine solves to numerical precision).

Guarantee: each release is pure ``epsilon``-DP under ``REPLACE_ONE`` (one rated example, face and
answer, replaced), which implies ``LABEL_CHANGE``. Repeated releases compose and are each charged.
For label changes alone the bound is conservative: for the logistic loss the Hessian does not
depend on the label and the gradient moves by exactly ``||x_i|| <= 1`` instead of up to 2, so the
true label-level loss is at most ``epsilon' / 2 <= epsilon / 2``. The claim stays the paper's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from privacy.mechanisms.base import REPLACE_ONE, Guarantee

__all__ = [
    "LOGISTIC_CURVATURE",
    "PerturbationParameters",
    "feature_scale",
    "guarantee",
    "l2_for_noise_share",
    "perturbation_parameters",
    "sample_noise",
    "unit_ball_features",
]

#: ``c``: an upper bound on the second derivative of the logistic loss, ``sigma(t) sigma(-t) <= 1/4``.
LOGISTIC_CURVATURE: float = 0.25

_MECHANISM = "objective_perturbation"


def _check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    result = float(value)
    if not (math.isfinite(result) and result > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return result


def _check_count(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    return int(n)


@dataclass(frozen=True)
class PerturbationParameters:
    """The numbers Algorithm 2 derives from ``(epsilon, n, Lambda, c)``.

    Attributes
    ----------
    epsilon : float
        The claimed privacy parameter.
    epsilon_prime : float
        ``epsilon'``: the noise density is proportional to ``exp(-epsilon' ||b|| / 2)``.
    l2 : float
        ``Lambda``, the caller's regularisation strength.
    extra_l2 : float
        ``Delta >= 0``, added to ``Lambda`` when ``Lambda`` alone is too small for ``epsilon``.
    n : int
        Number of examples in the objective (private and public together).
    """

    epsilon: float
    epsilon_prime: float
    l2: float
    extra_l2: float
    n: int

    @property
    def total_l2(self) -> float:
        """``Lambda + Delta``: the regularisation strength of the objective actually solved."""
        return self.l2 + self.extra_l2


def perturbation_parameters(
    *, epsilon: float, n: int, l2: float, curvature: float = LOGISTIC_CURVATURE
) -> PerturbationParameters:
    """Steps 1-2 of Algorithm 2.

    ``epsilon' = epsilon - log(1 + 2c/(n Lambda) + c^2/(n Lambda)^2)``; if that is not positive,
    ``Delta = c / (n (e^(epsilon/4) - 1)) - Lambda`` and ``epsilon' = epsilon / 2``, else
    ``Delta = 0``.

    Parameters
    ----------
    epsilon : float
        Target privacy parameter, finite and ``> 0``.
    n : int
        Number of examples, ``>= 1``.
    l2 : float
        ``Lambda > 0``, the coefficient of ``||f||^2 / 2`` in the averaged objective.
    curvature : float
        ``c``, a bound on the loss' second derivative (1/4 for logistic).
    """
    eps = _check_positive("epsilon", epsilon)
    count = _check_count(n)
    lam = _check_positive("l2", l2)
    c = _check_positive("curvature", curvature)
    ratio = c / (count * lam)
    eps_prime = eps - math.log1p(2.0 * ratio + ratio * ratio)
    extra = 0.0
    if eps_prime <= 0:
        extra = c / (count * math.expm1(eps / 4.0)) - lam
        eps_prime = eps / 2.0
    return PerturbationParameters(epsilon=eps, epsilon_prime=eps_prime, l2=lam, extra_l2=extra, n=count)


def l2_for_noise_share(*, epsilon: float, n: int, noise_share: float, curvature: float = LOGISTIC_CURVATURE) -> float:
    """The ``Lambda`` at which Algorithm 2 gives ``epsilon' = noise_share * epsilon`` with ``Delta = 0``.

    Solves ``2 log(1 + c / (n Lambda)) = (1 - noise_share) epsilon``:
    ``Lambda = c / (n (e^((1 - noise_share) epsilon / 2) - 1))``. A larger share means less noise
    (``||b||`` scales as ``1 / epsilon'``) but a larger ``Lambda``, i.e. more shrinkage;
    ``noise_share = 1/2`` is the smallest ``Lambda`` that needs no ``Delta``.

    Parameters
    ----------
    noise_share : float
        In ``(0, 1)``; ``epsilon'`` as a fraction of ``epsilon``.
    """
    eps = _check_positive("epsilon", epsilon)
    count = _check_count(n)
    c = _check_positive("curvature", curvature)
    share = _check_positive("noise_share", noise_share)
    if share >= 1.0:
        raise ValueError(f"noise_share must be < 1, got {noise_share!r}")
    return c / (count * math.expm1((1.0 - share) * eps / 2.0))


def sample_noise(dim: int, *, epsilon_prime: float, rng: np.random.Generator) -> np.ndarray:
    """Step 3: draw ``b`` with density proportional to ``exp(-epsilon' ||b|| / 2)`` on ``R^dim``.

    In polar form the norm has density proportional to ``r^(dim-1) exp(-epsilon' r / 2)``, i.e.
    ``Gamma(shape=dim, scale=2/epsilon')``, and the direction is uniform on the sphere.

    Returns
    -------
    numpy.ndarray of float64, shape (dim,)
    """
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be an integer >= 1, got {dim!r}")
    eps_prime = _check_positive("epsilon_prime", epsilon_prime)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    direction = rng.standard_normal(int(dim))
    while not (norm := float(np.linalg.norm(direction))) > 0:  # probability zero, but exact
        direction = rng.standard_normal(int(dim))
    return direction * (rng.gamma(shape=float(dim), scale=2.0 / eps_prime) / norm)


def feature_scale(dim: int, *, coordinate_bound: float) -> float:
    """``sqrt(d B^2 + 1)``: the norm of ``[z, 1]`` at a corner of the box ``[-B, B]^d``.

    A weight ``f`` on the scaled features is the weight ``f / feature_scale`` on ``[z, 1]``.
    """
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be an integer >= 1, got {dim!r}")
    bound = _check_positive("coordinate_bound", coordinate_bound)
    return math.sqrt(int(dim) * bound * bound + 1.0)


def unit_ball_features(Z: npt.ArrayLike, *, coordinate_bound: float) -> np.ndarray:
    """Public feature map ``x = [z, 1] / feature_scale(d)`` into the unit ball.

    Every latent in the box ``[-B, B]^d`` lands in the closed unit ball; a row that still has norm
    above 1 (a latent outside the box) is scaled back onto the sphere. Both steps use public
    constants and act row by row, so they cost no privacy.

    Parameters
    ----------
    Z : array_like, shape (n, d)
    coordinate_bound : float
        ``B``, the public bound on each latent coordinate.

    Returns
    -------
    numpy.ndarray of float64, shape (n, d + 1)
        The last column is the (scaled) constant feature that carries the intercept.
    """
    z = np.asarray(Z, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 1:
        raise ValueError(f"Z must have shape (n, d) with d >= 1, got shape {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError("Z must be finite")
    scale = feature_scale(z.shape[1], coordinate_bound=coordinate_bound)
    x = np.hstack([z, np.ones((z.shape[0], 1))]) / scale
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1.0)


def guarantee(epsilon: float) -> Guarantee:
    """The claim for one release: ``(epsilon, 0)``-DP under ``REPLACE_ONE``."""
    return Guarantee(
        epsilon=_check_positive("epsilon", epsilon), delta=0.0, neighbouring=REPLACE_ONE, mechanism=_MECHANISM
    )
