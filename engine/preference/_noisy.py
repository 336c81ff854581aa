"""The randomized-response label channel: validation, exact likelihood and Fisher information.

A stored label is the true answer flipped with probability ``rho < 1/2`` (``rho = 0``: clean).
With ``p = sigmoid(t)`` the model's like-probability at logit ``t``, the stored label is a like
with probability

    q(t) = rho + (1 - 2 rho) p,

and, writing ``s = +1`` for a stored like and ``-1`` for a pass, ``P(s | t) = rho + (1 - 2 rho)
sigmoid(s t)``. This is the likelihood :mod:`engine.preference._posterior` uses; it is not
log-concave in ``t`` (it flattens at ``rho`` and ``1 - rho``), which is why the fit uses the
expected (Fisher) information, always positive, for its steps and its Laplace covariance:

    I_clean(t) = p (1 - p),   I_rr(t) = (1 - 2 rho)^2 p^2 (1 - p)^2 / (q (1 - q)).

Prior scale. ``DEFAULT_L2`` is the precision of each weight coordinate in the default isotropic
prior (a one-standard-deviation move along a latent axis shifts the log-odds by about 0.5) and
``INTERCEPT_L2`` that of the intercept (standard deviation 1 logit).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy.special import expit

from engine._validation import InvalidInputError
from engine.latent.base import PRIOR_BOUND

__all__ = ["DEFAULT_L2", "INTERCEPT_L2", "rr_curvature", "rr_information", "rr_log_likelihood"]

#: Default prior precision of each weight coordinate (module docstring).
DEFAULT_L2: float = 4.0
#: Prior precision of the intercept: standard deviation 1 logit (like-rates 27-73 % within 1 sd).
INTERCEPT_L2: float = 1.0


def _truncated_second_moment(bound: float) -> float:
    """``E[z^2]`` for ``z ~ N(0, 1)`` truncated to ``[-bound, bound]``."""
    density = math.exp(-0.5 * bound * bound) / math.sqrt(2.0 * math.pi)
    return 1.0 - 2.0 * bound * density / math.erf(bound / math.sqrt(2.0))


#: ``E[z_j^2]`` of a face drawn from the latent prior (0.973 for the box [-3, 3]).
_LATENT_SECOND_MOMENT = _truncated_second_moment(PRIOR_BOUND)
_LOG2 = math.log(2.0)


def check_latents(Z: npt.ArrayLike, *, name: str = "Z", dim: int | None = None) -> np.ndarray:
    """``Z`` as a finite float64 array of shape (n, d), ``n >= 1`` (``d == dim`` when given)."""
    z = np.asarray(Z, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] < 1 or z.shape[1] < 1:
        raise InvalidInputError(f"{name} must have shape (n, d) with n, d >= 1, got shape {z.shape}")
    if dim is not None and z.shape[1] != dim:
        raise InvalidInputError(f"{name} must have {dim} columns, got shape {z.shape}")
    if not np.isfinite(z).all():
        raise InvalidInputError(f"{name} must be finite")
    return z


def check_labels(y: npt.ArrayLike, n: int, *, name: str = "y") -> np.ndarray:
    """Labels of shape (n,) as bool; accepts bool or 0/1 numbers."""
    labels = np.asarray(y)
    if labels.shape != (n,):
        raise InvalidInputError(f"{name} must have shape ({n},), got shape {labels.shape}")
    if labels.dtype != np.bool_:
        if labels.dtype.kind not in "iuf" or not np.isin(labels, (0, 1)).all():
            raise InvalidInputError(f"{name} must be booleans or 0/1 values")
        labels = labels.astype(bool)
    return labels


def check_flip_probability(flip_probability: float | npt.ArrayLike, n: int) -> np.ndarray:
    """Per-example flip rates of shape (n,), each in ``[0, 1/2)``."""
    rho = np.asarray(flip_probability, dtype=np.float64)
    if rho.ndim == 0:
        rho = np.full(n, float(rho))
    if rho.shape != (n,):
        raise InvalidInputError(f"flip_probability must be a scalar or have shape ({n},), got shape {rho.shape}")
    if not ((rho >= 0.0) & (rho < 0.5)).all():
        raise InvalidInputError(f"flip_probability must lie in [0, 0.5), got values in [{rho.min()}, {rho.max()}]")
    return rho


def check_l2(l2: float) -> float:
    """``l2`` as a finite float ``> 0``."""
    if isinstance(l2, bool) or not isinstance(l2, (int, float, np.floating, np.integer)):
        raise InvalidInputError(f"l2 must be a real number, got {l2!r}")
    value = float(l2)
    if not (math.isfinite(value) and value > 0):
        raise InvalidInputError(f"l2 must be finite and > 0, got {l2!r}")
    return value


def rr_information(t: np.ndarray, rho: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fisher information about the logit of a clean label and of a randomized-response label.

    Returns
    -------
    clean, private : numpy.ndarray, shape (n,)
        ``p (1 - p)`` and ``(1 - 2 rho)^2 p^2 (1 - p)^2 / (q (1 - q))``.
    """
    p = expit(t)
    clean = p * (1.0 - p)
    q = rho + (1.0 - 2.0 * rho) * p
    spread = q * (1.0 - q)
    ratio = np.divide(clean, spread, out=np.ones_like(clean), where=spread > 0)
    return clean, (1.0 - 2.0 * rho) ** 2 * clean * ratio


def rr_log_likelihood(t: np.ndarray, s: np.ndarray, rho: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``log P(s | t)`` of each stored label and its derivative in ``t``, stable for any ``t``.

    ``log(rho + (1 - 2 rho) sigmoid(s t))`` is evaluated as a log-sum-exp, so ``rho = 0`` gives
    the plain logistic log-likelihood without ``log(0)``. The derivative is
    ``s r sigmoid(-s t)`` with ``r = (1 - 2 rho) sigmoid(s t) / P(s | t)`` in ``[0, 1]``: the
    share of the stored label's probability that came from the true answer.
    """
    with np.errstate(divide="ignore"):
        log_rho = np.log(rho)
    log_true = np.log1p(-2.0 * rho) - np.logaddexp(0.0, -s * t)
    log_p = np.logaddexp(log_rho, log_true)
    return log_p, s * np.exp(log_true - log_p) * expit(-s * t)


def _expit(t: float) -> float:
    """:func:`scipy.special.expit` of one float: ``1 / (1 + e^-t)``, 0 where ``e^-t`` overflows."""
    try:
        return 1.0 / (1.0 + math.exp(-t))
    except OverflowError:
        return 0.0


def _logaddexp(a: float, b: float) -> float:
    """:func:`numpy.logaddexp` of two floats, the same formula (``a = -inf`` gives ``b``)."""
    if a == b:
        return a + _LOG2
    gap = a - b
    return a + math.log1p(math.exp(-gap)) if gap > 0 else b + math.log1p(math.exp(gap))


def rr_log_likelihood_scalar(t: float, s: float, rho: float) -> tuple[float, float]:
    """:func:`rr_log_likelihood` of one rating, with :mod:`math` instead of arrays.

    The online step evaluates it about ten times per rating, where numpy's per-call overhead
    would dominate; a test ties it to the array version (same formula, same operations).
    """
    log_true = math.log1p(-2.0 * rho) - _logaddexp(0.0, -s * t)
    log_p = log_true if rho == 0.0 else _logaddexp(math.log(rho), log_true)
    return log_p, s * math.exp(log_true - log_p) * _expit(-s * t)


def rr_information_scalar(t: float, rho: float) -> float:
    """The randomized-response half of :func:`rr_information` for one rating, with :mod:`math`."""
    p = _expit(t)
    clean = p * (1.0 - p)
    q = rho + (1.0 - 2.0 * rho) * p
    spread = q * (1.0 - q)
    return (1.0 - 2.0 * rho) ** 2 * clean * (clean / spread if spread > 0 else 1.0)


def rr_curvature(t: np.ndarray, s: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """Observed information ``-d^2/dt^2 log P(s | t)``; negative where the likelihood is convex in ``t``.

    With ``r`` as in :func:`rr_log_likelihood` and ``u = sigmoid(-s t)`` it is
    ``r u (1 - 2 u + r u)``: ``u (1 - u)`` for clean labels (``r = 1``), the logistic curvature.
    """
    log_true = np.log1p(-2.0 * rho) - np.logaddexp(0.0, -s * t)
    with np.errstate(divide="ignore"):
        r = np.exp(log_true - np.logaddexp(np.log(rho), log_true))
    u = expit(-s * t)
    return r * u * (1.0 - 2.0 * u + r * u)


def calibration_factor(posterior_covariance_diagonal: np.ndarray) -> float:
    """MacKay's ``1 / sqrt(1 + pi v / 8)`` with ``v`` the posterior variance of ``x . theta``.

    ``v = sum_j E[x_j^2] Cov_jj``: the latent prior has independent, centred coordinates, so
    only the diagonal of the covariance contributes; the intercept's feature is 1.
    """
    moments = np.full(posterior_covariance_diagonal.size, _LATENT_SECOND_MOMENT)
    moments[-1] = 1.0
    variance = float(moments @ posterior_covariance_diagonal)
    return 1.0 / math.sqrt(1.0 + math.pi * variance / 8.0)
