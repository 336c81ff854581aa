"""Benchmarks and the canary audit of the private preference learners (JSON-able results).

Synthetic users are drawn from the learner's own prior: ``w ~ N(0, I / DEFAULT_L2)``,
``b ~ N(0, 1 / INTERCEPT_L2)``, faces from the truncated latent prior, answers
``Bernoulli(sigmoid(w . z + b))``. Accuracy is the *expected* accuracy on fresh faces against
those answers, ``mean(sigmoid(t) if predicted like else 1 - sigmoid(t))``, so no label noise is
added at evaluation. ``matchsvc bench privacy`` reports these dictionaries.

The canary audit (:func:`audit_release`) is the statistical privacy test: one rating, the
canary, sits on a latent along an axis that no other rated face uses, the worst case for label
privacy since the fitted weight on that axis is driven by the canary alone. The mechanism runs
many times on the two neighbouring datasets (canary answer like vs pass, all other true answers
fixed, fresh randomness per run), the attack score is the released model's decision value at
the canary, and :func:`privacy.auditing.epsilon_lower_bound` turns the two score samples into a
lower bound on epsilon. A correct mechanism keeps it at or below the claim (with probability at
least ``1 - alpha``); a bound above the claim disproves the claim.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.special import expit

from engine._validation import InvalidInputError
from engine.latent._prior import sample_truncated_prior
from engine.latent.base import PRIOR_BOUND
from engine.preference._model import PreferenceModel
from engine.preference._noisy import DEFAULT_L2, INTERCEPT_L2
from engine.preference._online import OnlinePreference
from engine.preference._private import fit_private
from privacy.auditing import epsilon_lower_bound
from privacy.mechanisms import RandomizedResponse

__all__ = [
    "Release",
    "audit_release",
    "benchmark_accuracy",
    "benchmark_timing",
    "canary_dataset",
    "cosine_similarity",
    "expected_accuracy",
    "linear_svc_model",
    "synthetic_user",
]

#: A release under audit: ``(Z, true labels, rng) -> released model``.
Release = Callable[[np.ndarray, np.ndarray, np.random.Generator], PreferenceModel]


def synthetic_user(dim: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A true preference ``(w, b)`` drawn from the learner's prior."""
    return rng.standard_normal(dim) / np.sqrt(DEFAULT_L2), float(rng.standard_normal() / np.sqrt(INTERCEPT_L2))


def expected_accuracy(decision: np.ndarray, true_logit: np.ndarray) -> float:
    """Mean probability that the sign of ``decision`` agrees with a fresh answer (shape (n,) each)."""
    p = expit(true_logit)
    return float(np.mean(np.where(decision > 0, p, 1.0 - p)))


def cosine_similarity(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Cosine between a fitted direction and the true ``w`` (shape (d,) each).

    A zero vector has no direction; it scores 0, the value a direction drawn at random has on
    average, so a model that learned nothing is not rewarded or punished.
    """
    norms = float(np.linalg.norm(estimate) * np.linalg.norm(truth))
    return float(estimate @ truth) / norms if norms > 0.0 else 0.0


def linear_svc_model(Z: np.ndarray, y: np.ndarray) -> PreferenceModel:
    """Non-private baseline: scikit-learn's LinearSVC with its defaults, on the true answers.

    ``Z`` has shape (n, d), ``y`` shape (n,) of bool. The result's sign is the prediction; its
    scale is the SVM margin, not a calibrated log-odds. ``random_state`` is fixed because
    liblinear's dual solver (chosen when n < d) visits the examples in a random order, which
    would otherwise make reruns differ in the sixth decimal.
    """
    from sklearn.svm import LinearSVC

    if y.all() or not y.any():  # one class only: LinearSVC refuses, the constant answer is optimal
        return PreferenceModel(coef=np.zeros(Z.shape[1]), intercept=1.0 if y.all() else -1.0)
    svc = LinearSVC(random_state=0).fit(Z, y)
    return PreferenceModel(coef=svc.coef_[0], intercept=float(svc.intercept_[0]))


def _linear_svc_decision(Z: np.ndarray, y: np.ndarray, T: np.ndarray) -> np.ndarray:
    """:func:`linear_svc_model`'s decision values on the test faces ``T``."""
    return linear_svc_model(Z, y).decision_function(T)


def benchmark_accuracy(
    *,
    dim: int = 16,
    n_ratings: int = 50,
    epsilons: Sequence[float] = (0.5, 1.0, 2.0, 4.0),
    mechanism: str = "randomized_response",
    delta: float = 0.0,
    users: int = 200,
    test_faces: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy and calibration of ``fit_private`` against non-private baselines.

    For each epsilon, over ``users`` synthetic users (the same users for every epsilon):
    ``private`` is ``fit_private(mechanism)``'s expected accuracy, ``linear_svc`` the
    non-private LinearSVC on the true answers, ``nonprivate`` our learner without noise,
    ``bayes`` the true model's; ``probability_mse`` is the mean squared error of the released
    like-probability against the true one (0 is perfect). Means over users.
    """
    rows = []
    for epsilon in epsilons:
        # Users and faces come from their own stream, so every mechanism and epsilon sees the same.
        data_rng, noise_rng = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])
        scores: dict[str, list[float]] = {"private": [], "linear_svc": [], "nonprivate": [], "bayes": []}
        mse: list[float] = []
        for _ in range(users):
            w, b = synthetic_user(dim, data_rng)
            Z = sample_truncated_prior(n_ratings, dim, data_rng)
            y = data_rng.random(n_ratings) < expit(Z @ w + b)
            T = sample_truncated_prior(test_faces, dim, data_rng)
            truth = T @ w + b
            model = fit_private(Z, y, epsilon=epsilon, delta=delta, mechanism=mechanism, rng=noise_rng)
            scores["private"].append(expected_accuracy(model.decision_function(T), truth))
            scores["linear_svc"].append(expected_accuracy(_linear_svc_decision(Z, y, T), truth))
            baseline = fit_private(Z, y, epsilon=epsilon, mechanism="none")
            scores["nonprivate"].append(expected_accuracy(baseline.decision_function(T), truth))
            scores["bayes"].append(expected_accuracy(truth, truth))
            mse.append(float(np.mean((model.predict_proba(T) - expit(truth)) ** 2)))
        row: dict[str, Any] = {"epsilon": float(epsilon)}
        row.update({name: float(np.mean(values)) for name, values in scores.items()})
        row["gap_to_linear_svc"] = row["linear_svc"] - row["private"]
        row["probability_mse"] = float(np.mean(mse))
        rows.append(row)
    return {
        "mechanism": mechanism,
        "dim": dim,
        "n_ratings": n_ratings,
        "users": users,
        "test_faces": test_faces,
        "seed": seed,
        "rows": rows,
    }


def _percentiles_ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": statistics.median(ordered) * 1e3,
        "p90_ms": ordered[int(0.9 * (len(ordered) - 1))] * 1e3,
    }


def benchmark_timing(
    *,
    fit_dim: int = 16,
    fit_ratings: int = 50,
    online_dim: int = 32,
    online_ratings: int = 50,
    repeats: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Wall-clock of ``fit_private("randomized_response")`` and of one :meth:`OnlinePreference.update`."""
    rng = np.random.default_rng(seed)
    w, b = synthetic_user(fit_dim, rng)
    Z = sample_truncated_prior(fit_ratings, fit_dim, rng)
    y = rng.random(fit_ratings) < expit(Z @ w + b)
    fit_times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fit_private(Z, y, epsilon=2.0, rng=rng)
        fit_times.append(time.perf_counter() - start)

    rr = RandomizedResponse(epsilon=2.0)
    w, b = synthetic_user(online_dim, rng)
    Z = sample_truncated_prior(online_ratings + repeats, online_dim, rng)
    y = rr.privatise(rng.random(Z.shape[0]) < expit(Z @ w + b), rng.random(Z.shape[0]))
    online = OnlinePreference.from_fit(Z[:online_ratings], y[:online_ratings], flip_probability=rr.flip_probability)
    update_times = []
    for z, label in zip(Z[online_ratings:], y[online_ratings:], strict=True):
        start = time.perf_counter()
        online.update(z, bool(label), flip_probability=rr.flip_probability)
        update_times.append(time.perf_counter() - start)
    return {
        "fit_private_rr": {"dim": fit_dim, "n_ratings": fit_ratings, "repeats": repeats, **_percentiles_ms(fit_times)},
        "online_update": {"dim": online_dim, "repeats": repeats, **_percentiles_ms(update_times)},
    }


def canary_dataset(*, dim: int, n_ratings: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbouring datasets for the canary audit.

    Returns
    -------
    Z : numpy.ndarray, shape (n_ratings, dim)
        ``n_ratings - 1`` faces from the prior with coordinate 0 set to 0, then the canary
        ``PRIOR_BOUND * e_0`` as the last row.
    y_in, y_out : numpy.ndarray of bool, shape (n_ratings,)
        True answers of a synthetic user; identical except the canary's (like in ``y_in``,
        pass in ``y_out``).
    """
    if n_ratings < 2 or dim < 2:
        raise InvalidInputError(f"the canary audit needs n_ratings >= 2 and dim >= 2, got {n_ratings}, {dim}")
    w, b = synthetic_user(dim, rng)
    others = sample_truncated_prior(n_ratings - 1, dim, rng)
    others[:, 0] = 0.0
    canary = np.zeros((1, dim))
    canary[0, 0] = PRIOR_BOUND
    Z = np.vstack([others, canary])
    y_in = np.append(rng.random(n_ratings - 1) < expit(others @ w + b), True)
    y_out = y_in.copy()
    y_out[-1] = False
    return Z, y_in, y_out


def audit_release(
    release: Release,
    *,
    runs: int,
    dim: int = 16,
    n_ratings: int = 50,
    alpha: float = 0.05,
    delta: float = 0.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the canary audit (module docstring) and return the epsilon lower bound.

    ``runs`` releases per world; each world draws from its own generator seeded from ``seed``,
    so the result is deterministic.
    """
    if runs < 2:
        raise InvalidInputError(f"runs must be >= 2, got {runs}")
    Z, y_in, y_out = canary_dataset(dim=dim, n_ratings=n_ratings, rng=np.random.default_rng([seed, 0]))
    canary = Z[-1:]
    scores = {}
    for world, labels in (("in", y_in), ("out", y_out)):
        rng = np.random.default_rng([seed, 1 if world == "in" else 2])
        scores[world] = np.array([release(Z, labels, rng).decision_function(canary)[0] for _ in range(runs)])
    return {
        "runs_per_world": runs,
        "dim": dim,
        "n_ratings": n_ratings,
        "alpha": alpha,
        "delta": delta,
        "epsilon_lower_bound": epsilon_lower_bound(scores["in"], scores["out"], alpha=alpha, delta=delta),
    }
