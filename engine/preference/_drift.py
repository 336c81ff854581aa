"""Noticing a change of taste: a posterior predictive test of the recent ratings.

The ratings are replayed in order through one-step posterior updates from the prior
(:class:`engine.preference.OnlinePreference`). For a window of the last ``k`` ratings, the
posterior of the ratings *before* the window predicts each stored label in it,
``pi_i = P(stored like)``, and the window's log score is ``L = sum_i log P(stored label_i)``. If
tastes did not change, the window's labels are draws from that same posterior: ``theta`` from
the posterior, answers from ``theta``, randomized response on top. Simulating that (256 draws
from a fixed seed, so the weights are a deterministic function of the data) gives the null mean
and spread of ``L`` including the uncertainty about ``theta``, which an independent-labels
formula misses (it raised the false-alarm rate to 11 % in our simulations). Changed tastes make
the recent labels more surprising: ``Z_k = (L - mean) / sd`` goes negative.

Windows ``k = 5, 10, ..., DRIFT_WINDOW`` that leave at least :data:`MIN_HISTORY` older ratings
are tested; with ``m <= DRIFT_WINDOW / 5`` windows a change is declared when
``min_k Z_k < -Phi^-1(1 - DRIFT_ALPHA / m)`` (Bonferroni). The ratings before the most surprising
window then get weight :data:`DRIFT_OLD_WEIGHT`: they still inform the fit, as a quarter of a
rating each, while the recent ones dominate. The nominal false-alarm rate holds only up to the
normal approximation (docs/benchmarks.md, "Engine tuning", has the measured rates).

**Cost.** The windows are bounded (:data:`DRIFT_WINDOW` most recent ratings), so the simulation
costs the same at 60 ratings as at 6 000. The replay of the older ratings is the only part that
grows with the history; a :class:`DriftCheckpoint` (the replayed posterior of the first
``through`` ratings, with a digest of them) lets the next test resume where the last one stopped,
so a test every ``r`` ratings replays ``O(r + DRIFT_WINDOW)`` ratings, not all ``n``. A checkpoint
whose ratings changed since (a re-rating, another prior) fails its digest and the replay restarts
from the prior: the weights never depend on whether a checkpoint was used.

The test reads only stored (private) labels and public latents: post-processing, no budget.
With randomized response the predictive probabilities stay within ``[rho, 1 - rho]``, so at small
epsilon only large changes are detectable; that is the price of the label noise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import expit, ndtri

from engine.preference._noisy import check_flip_probability, check_labels, check_latents
from engine.preference._online import absorb
from engine.preference._posterior import Posterior, PreferencePrior, _features

__all__ = [
    "DRIFT_ALPHA",
    "DRIFT_OLD_WEIGHT",
    "DRIFT_WINDOW",
    "MIN_HISTORY",
    "DriftCheckpoint",
    "DriftResult",
    "drift_test",
    "drift_weights",
]

#: Family-wise false-alarm rate of the test for a user whose taste did not change.
DRIFT_ALPHA: float = 0.01
#: Weight of each rating older than a detected change (1 = no down-weighting).
DRIFT_OLD_WEIGHT: float = 0.25
#: Ratings the model must have seen before a window can be tested against it.
MIN_HISTORY: int = 15
#: The largest window tested: a change is looked for among this many most recent ratings.
DRIFT_WINDOW: int = 50
_WINDOW_STEP = 5
_SIMULATIONS = 256
_SIMULATION_SEED = 20261123


def _digest(prior: PreferencePrior, Z: np.ndarray, labels: np.ndarray, rho: np.ndarray) -> str:
    """SHA-256 of the prior and of the replayed ratings, in order."""
    h = hashlib.sha256()
    for part in (prior.mean_vector(), prior.covariance(), Z, labels.astype(np.uint8), rho):
        h.update(np.ascontiguousarray(part).tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class DriftCheckpoint:
    """The replay from the prior through the first ``through`` ratings, and their digest."""

    posterior: Posterior
    through: int
    digest: str

    def to_state(self) -> dict[str, Any]:
        return {"posterior": self.posterior.to_state(), "through": self.through, "digest": self.digest}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> DriftCheckpoint:
        return cls(Posterior.from_state(state["posterior"]), int(state["through"]), str(state["digest"]))


@dataclass(frozen=True)
class DriftResult:
    """Weights for the fit (:func:`drift_weights`) and the checkpoint for the next test."""

    weights: np.ndarray
    checkpoint: DriftCheckpoint


def _resume(
    checkpoint: DriftCheckpoint | None,
    Z: np.ndarray,
    X: np.ndarray,
    labels: np.ndarray,
    rho: np.ndarray,
    prior: PreferencePrior,
    base: int,
) -> DriftCheckpoint:
    """The replay through rating ``base``, from ``checkpoint`` when it is still valid, else from the prior."""
    if (
        checkpoint is not None
        and checkpoint.through <= base
        and checkpoint.posterior.dim == Z.shape[1]
        and checkpoint.digest == _digest(prior, Z[: checkpoint.through], labels[: checkpoint.through], rho[: checkpoint.through])
    ):
        posterior, through = checkpoint.posterior, checkpoint.through
    else:
        posterior, through = Posterior.from_prior(prior), 0
    for i in range(through, base):
        posterior = absorb(posterior, X[i], bool(labels[i]), float(rho[i]))
    return DriftCheckpoint(posterior, base, _digest(prior, Z[:base], labels[:base], rho[:base]))


def _window_statistics(
    Z: np.ndarray, X: np.ndarray, labels: np.ndarray, rho: np.ndarray, base: DriftCheckpoint, windows: np.ndarray
) -> np.ndarray:
    """``Z_k`` of each window (module docstring); ``base`` is the replay through ``n - max(windows)``."""
    before = [base.posterior]  # before[j]: the replay through rating base.through + j
    for i in range(base.through, len(labels) - int(windows.min())):
        before.append(absorb(before[-1], X[i], bool(labels[i]), float(rho[i])))
    simulation = np.random.default_rng(_SIMULATION_SEED)
    n = len(labels)
    statistics = np.empty(windows.size)
    for w, k in enumerate(windows):
        posterior, faces, flips = before[n - k - base.through], Z[n - k :], rho[n - k :]
        like = flips + (1.0 - 2.0 * flips) * posterior._predict_features(X[n - k :])
        log_like, log_pass = np.log(like), np.log1p(-like)
        observed = float(np.where(labels[n - k :], log_like, log_pass).sum())
        chol = np.linalg.cholesky(posterior.covariance)
        thetas = posterior.mean + simulation.standard_normal((_SIMULATIONS, posterior.mean.size)) @ chol.T
        stored_like = simulation.random((_SIMULATIONS, k)) < flips + (1.0 - 2.0 * flips) * expit(
            thetas[:, :-1] @ faces.T + thetas[:, -1:]
        )
        null = np.where(stored_like, log_like, log_pass).sum(axis=1)
        spread = float(null.std())
        statistics[w] = (observed - float(null.mean())) / spread if spread > 0 else 0.0
    return statistics


def drift_test(
    Z: npt.ArrayLike,
    y_private: npt.ArrayLike,
    *,
    flip_probability: float | npt.ArrayLike,
    prior: PreferencePrior | None = None,
    checkpoint: DriftCheckpoint | None = None,
) -> DriftResult:
    """The test of the module docstring, resumed from ``checkpoint`` where it is still valid.

    Parameters as for :func:`drift_weights`; ``checkpoint`` is the one a previous call on a prefix
    of the same ratings returned (any other is detected by its digest and ignored). The returned
    checkpoint is the replay through rating ``max(n - DRIFT_WINDOW, 0)``.
    """
    z = check_latents(Z)
    n = z.shape[0]
    labels = check_labels(y_private, n, name="y_private")
    rho = check_flip_probability(flip_probability, n)
    chosen = PreferencePrior.isotropic(z.shape[1]) if prior is None else prior
    X = _features(z)  # each rating's [z, 1], as the online update takes it
    base = _resume(checkpoint, z, X, labels, rho, chosen, max(n - DRIFT_WINDOW, 0))
    weights = np.ones(n)
    windows = np.arange(_WINDOW_STEP, min(n - MIN_HISTORY, DRIFT_WINDOW) + 1, _WINDOW_STEP)
    if windows.size == 0:
        return DriftResult(weights, base)
    statistic = _window_statistics(z, X, labels, rho, base, windows)
    worst = int(np.argmin(statistic))
    if statistic[worst] < -ndtri(1.0 - DRIFT_ALPHA / windows.size):  # norm.ppf's own kernel, without its overhead
        weights[: n - windows[worst]] = DRIFT_OLD_WEIGHT
    return DriftResult(weights, base)


def drift_weights(
    Z: npt.ArrayLike,
    y_private: npt.ArrayLike,
    *,
    flip_probability: float | npt.ArrayLike,
    prior: PreferencePrior | None = None,
) -> np.ndarray:
    """Per-rating weights for :func:`engine.preference.fit_posterior`: 1 unless tastes changed.

    Parameters
    ----------
    Z : array_like, shape (n, d)
        Latents of the rated faces, oldest rating first.
    y_private : array_like of bool or {0, 1}, shape (n,)
        Stored labels, same order.
    flip_probability : float or array_like, shape (n,)
        Each label's flip rate, in ``[0, 1/2)``.
    prior : PreferencePrior, optional
        The prior the replay starts from (the user's fit uses the same); isotropic when omitted.

    Returns
    -------
    numpy.ndarray of float64, shape (n,)
        All 1 when no change is detected among the last :data:`DRIFT_WINDOW` ratings (or with
        fewer than ``MIN_HISTORY + 5`` ratings); otherwise ``DRIFT_OLD_WEIGHT`` before the
        detected change and 1 from it on.
    """
    return drift_test(Z, y_private, flip_probability=flip_probability, prior=prior).weights
