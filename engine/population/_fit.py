"""``fit_population``: validate the users' likelihoods, calibrate the noise, train, post-process.

torch and Opacus are imported when a fit runs, not with this package: the service's request path
only needs :class:`~engine.population.PopulationModel` and its posterior, which are numpy.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy.special import softmax

from engine._validation import InvalidInputError, check_count, check_positive, check_rng
from engine._opacus import LARGEST_ORDER_WARNING
from engine.population._model import PopulationModel
from privacy.accounting import calibrate_noise_multiplier
from privacy.mechanisms import ADD_REMOVE_USER, Guarantee, check_delta, check_epsilon

__all__ = [
    "DEFAULT_LEARNING_RATE",
    "DEFAULT_MAX_GRAD_NORM",
    "DEFAULT_PERSONAS",
    "DEFAULT_RANK",
    "DEFAULT_SAMPLE_RATE",
    "DEFAULT_STEPS",
    "MECHANISM",
    "fit_population",
]

#: Name the ledger records for a population release.
MECHANISM = "dpsgd"
DEFAULT_PERSONAS = 4
DEFAULT_RANK = 4
#: The DP-SGD schedule: Adam at learning rate 0.03 for 300 steps at sample rate 1/10 recovered
#: the heavier personas best on the tests' synthetic populations; slower rates lose personas to
#: noise, faster ones let them die out (docs/benchmarks.md, "Engine tuning").
DEFAULT_STEPS = 300
DEFAULT_SAMPLE_RATE = 0.1
#: A bound below every user's gradient norm clips every user and gives each the same say; Adam
#: is invariant to the scale of its gradient, so any such bound trains the same (docs/benchmarks.md).
DEFAULT_MAX_GRAD_NORM = 1.0
DEFAULT_LEARNING_RATE = 0.03
#: A user's ``H`` may be negative by this much (relative to its largest eigenvalue) from round-off.
_PSD_TOLERANCE = 1e-9


def _check_users(users: Sequence[tuple[npt.ArrayLike, npt.ArrayLike]]) -> tuple[np.ndarray, np.ndarray]:
    """Stacked ``h`` (n, d+1) and ``H`` (n, d+1, d+1) of the users with ratings, validated."""
    if isinstance(users, (str, bytes)) or not isinstance(users, Sequence) or len(users) == 0:
        raise InvalidInputError("users must be a non-empty sequence of (h, H) pairs")
    try:
        pairs = [(np.asarray(h, dtype=np.float64), np.asarray(H, dtype=np.float64)) for h, H in users]
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"users must be (h, H) pairs of numeric arrays: {exc}") from None
    p = pairs[0][0].size
    for i, (h, H) in enumerate(pairs):
        if h.shape != (p,) or H.shape != (p, p) or p < 2:
            raise InvalidInputError(
                f"user {i}: h must have shape (d + 1,) with d >= 1 and H shape (d + 1, d + 1), the same for "
                f"every user; got {h.shape} and {H.shape}"
            )
    h = np.stack([pair[0] for pair in pairs])
    H = np.stack([pair[1] for pair in pairs])
    if not (np.isfinite(h).all() and np.isfinite(H).all()):
        raise InvalidInputError("users' h and H must be finite")
    if not np.allclose(H, np.swapaxes(H, 1, 2), rtol=1e-10, atol=1e-12):
        raise InvalidInputError("users' H must be symmetric")
    H = (H + np.swapaxes(H, 1, 2)) / 2.0
    eigenvalues = np.linalg.eigvalsh(H)
    if (eigenvalues[:, 0] < -_PSD_TOLERANCE * np.maximum(1.0, eigenvalues[:, -1])).any():
        raise InvalidInputError("users' H must be positive semi-definite")
    rated = (h != 0).any(axis=1) | (H != 0).any(axis=(1, 2))
    if not rated.any():
        raise InvalidInputError("no user has ratings: every (h, H) is zero")
    return h[rated], H[rated]


def _check_sample_rate(value: object) -> float:
    rate = check_positive("sample_rate", value, at_most=1.0)
    if abs(round(1.0 / rate) * rate - 1.0) > 1e-12:
        raise InvalidInputError(f"sample_rate must be 1 / m for an integer m >= 1, got {value!r}")
    return rate


def fit_population(
    users: Sequence[tuple[npt.ArrayLike, npt.ArrayLike]],
    *,
    epsilon: float,
    delta: float,
    rng: np.random.Generator,
    n_personas: int = DEFAULT_PERSONAS,
    rank: int = DEFAULT_RANK,
    steps: int = DEFAULT_STEPS,
    sample_rate: float = DEFAULT_SAMPLE_RATE,
    max_grad_norm: float = DEFAULT_MAX_GRAD_NORM,
    learning_rate: float = DEFAULT_LEARNING_RATE,
) -> PopulationModel:
    """Learn the persona mixture from all users' likelihoods with user-level DP-SGD (Opacus).

    Each user is one example whose whole rating history yields one clipped gradient; users are
    Poisson-sampled into each step. The noise multiplier is the smallest that Opacus' RDP
    accountant proves ``(epsilon, delta)``-DP for ``steps`` steps at ``sample_rate``
    (:func:`privacy.accounting.calibrate_noise_multiplier`); after training the accountant
    that watched the optimiser must agree, or the fit raises. See
    :mod:`engine.population._training` for the model and the privacy argument.

    Parameters
    ----------
    users : sequence of (h, H)
        Each user's likelihood in information form (:func:`engine.preference.gaussian_likelihood`),
        ``h`` of shape (d+1,), ``H`` of shape (d+1, d+1), symmetric positive semi-definite.
        Users whose ``h`` and ``H`` are all zero (no ratings) add nothing and are skipped.
    epsilon : float
        Target epsilon, finite, ``> 0``.
    delta : float
        Target delta, in ``(0, 1)``; below ``1 / n_users`` for a meaningful guarantee.
    rng : numpy.random.Generator
        Source of the mechanism's randomness (Poisson sampling and noise).
    n_personas, rank : int
        Number of personas ``K`` and rank ``r`` of the covariance's low-rank part.
    steps, sample_rate, max_grad_norm, learning_rate
        The DP-SGD schedule; ``sample_rate`` must be ``1 / m`` for an integer ``m``.

    Returns
    -------
    PopulationModel
        Personas ordered by decreasing weight.

    Raises
    ------
    InvalidInputError
        For malformed users or out-of-range parameters.
    InvalidInputError
        If ``rng`` is not a ``numpy.random.Generator``.
    RuntimeError
        If Opacus' accountant reports more than ``epsilon`` after training.
    """
    eps = check_epsilon(epsilon)
    if not math.isfinite(eps):
        raise InvalidInputError(f"epsilon must be finite, got {epsilon!r}")
    if check_delta(delta) == 0.0:
        raise InvalidInputError("delta must be > 0 (Gaussian noise is not pure DP)")
    rng = check_rng(rng)
    schedule = {
        "n_personas": check_count("n_personas", n_personas),
        "rank": check_count("rank", rank),
        "steps": check_count("steps", steps),
        "sample_rate": _check_sample_rate(sample_rate),
        "max_grad_norm": check_positive("max_grad_norm", max_grad_norm),
        "learning_rate": check_positive("learning_rate", learning_rate),
    }
    h, H = _check_users(users)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=LARGEST_ORDER_WARNING, category=UserWarning)
        noise_multiplier = calibrate_noise_multiplier(
            target_epsilon=eps, target_delta=float(delta), sample_rate=schedule["sample_rate"], steps=schedule["steps"]
        )
    from engine.population._training import train

    trained = train(h, H, noise_multiplier=noise_multiplier, delta=float(delta), rng=rng, **schedule)
    if trained.accountant_steps != schedule["steps"] or trained.spent_epsilon > eps:
        raise RuntimeError(
            f"Opacus' accountant reports epsilon={trained.spent_epsilon} after {trained.accountant_steps} steps, "
            f"over the target {eps} or not the {schedule['steps']} steps calibrated for"
        )
    order = np.argsort(-trained.logits, kind="stable")
    return PopulationModel(
        means=trained.means[order],
        weights=softmax(trained.logits[order]),
        factor=trained.factor,
        diagonal=trained.diagonal,
        guarantee=Guarantee(epsilon=eps, delta=float(delta), neighbouring=ADD_REMOVE_USER, mechanism=MECHANISM),
        accounting={
            "noise_multiplier": noise_multiplier,
            "sample_rate": schedule["sample_rate"],
            "steps": schedule["steps"],
            "max_grad_norm": schedule["max_grad_norm"],
            "n_users": int(h.shape[0]),
        },
    )
