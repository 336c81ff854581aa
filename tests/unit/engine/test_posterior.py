"""The per-user Laplace posterior under the exact randomized-response likelihood, and drift."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit, logsumexp
from scipy.stats import norm

from engine.latent._prior import sample_truncated_prior
from engine.preference import (
    DRIFT_ALPHA,
    DRIFT_OLD_WEIGHT,
    DRIFT_WINDOW,
    DriftCheckpoint,
    OnlinePreference,
    Posterior,
    PreferencePrior,
    drift_test,
    drift_weights,
    fit_noisy,
    fit_posterior,
    fit_private,
    gaussian_likelihood,
    rr_flip_probability,
)
from engine.preference._drift import MIN_HISTORY, _window_statistics
from privacy.mechanisms import RandomizedResponse


def _answers(Z: np.ndarray, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.random(len(Z)) < expit(Z @ theta[:-1] + theta[-1])


def _stored(y: np.ndarray, epsilon: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    rr = RandomizedResponse(epsilon=epsilon)
    return rr.privatise(y, rng.random(len(y))), rr.flip_probability


def _negative_log_posterior(theta: np.ndarray, X: np.ndarray, y: np.ndarray, rho: float, prior: PreferencePrior) -> float:
    """Written out independently of the module: -log prior - sum log(rho + (1 - 2 rho) sigmoid(s t))."""
    like = rho + (1 - 2 * rho) * expit(X @ theta)
    log_lik = np.sum(np.log(np.where(y, like, 1 - like)))
    offset = theta - prior.mean_vector()
    return float(-log_lik + 0.5 * offset @ np.linalg.inv(prior.covariance()) @ offset)


def _informative_prior(dim: int, rng: np.random.Generator) -> PreferencePrior:
    A = rng.normal(size=(dim, dim)) * 0.2
    return PreferencePrior(mean=rng.normal(size=dim), cov=A @ A.T + 0.1 * np.eye(dim), intercept_mean=0.3)


# --- PreferencePrior ---------------------------------------------------------------------------


def test_prior_blocks_and_validation() -> None:
    prior = PreferencePrior(mean=[1.0, 2.0], cov=[[2.0, 0.5], [0.5, 1.0]], intercept_mean=-1.0, intercept_variance=4.0)
    assert prior.mean_vector().tolist() == [1.0, 2.0, -1.0]
    assert prior.covariance() @ prior.precision() == pytest.approx(np.eye(3))
    assert PreferencePrior.isotropic(3).cov == pytest.approx(np.eye(3) / 4.0)
    for bad in (
        {"mean": [1.0], "cov": [[-1.0]]},
        {"mean": [1.0, 2.0], "cov": [[1.0, 0.9], [0.1, 1.0]]},
        {"mean": [1.0], "cov": [[1.0, 0.0]]},
        {"mean": [math.nan], "cov": [[1.0]]},
        {"mean": [1.0], "cov": [[1.0]], "intercept_variance": 0.0},
    ):
        with pytest.raises(ValueError):
            PreferencePrior(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        PreferencePrior.isotropic(0)


# --- fit_posterior -----------------------------------------------------------------------------


@pytest.mark.parametrize("epsilon", [0.5, 2.0, math.inf])
def test_map_is_the_exact_randomized_response_posterior_mode(epsilon: float) -> None:
    rng = np.random.default_rng(1)
    dim, n = 4, 40
    prior = _informative_prior(dim, rng)
    Z = sample_truncated_prior(n, dim, rng)
    y, rho = _stored(_answers(Z, rng.normal(size=dim + 1), rng), epsilon, rng)
    X = np.hstack([Z, np.ones((n, 1))])
    reference = minimize(_negative_log_posterior, prior.mean_vector(), args=(X, y, rho, prior), method="BFGS", tol=1e-10)
    posterior = fit_posterior(Z, y, flip_probability=rho, prior=prior)
    assert posterior.mean == pytest.approx(reference.x, abs=1e-5)


def test_laplace_evidence_and_probit_prediction_match_numerical_integration() -> None:
    """d = 1: integrate the exact posterior on a grid over (w, b)."""
    rng = np.random.default_rng(2)
    n, epsilon = 40, 1.0
    prior = PreferencePrior(mean=[0.5], cov=[[0.5]], intercept_mean=0.0, intercept_variance=1.0)
    Z = sample_truncated_prior(n, 1, rng)
    y, rho = _stored(_answers(Z, np.array([1.5, 0.2]), rng), epsilon, rng)
    posterior = fit_posterior(Z, y, flip_probability=rho, prior=prior)
    grid = np.linspace(-6, 6, 601)
    W, B = np.meshgrid(grid, grid, indexing="ij")
    thetas = np.stack([W.ravel(), B.ravel()], axis=1)
    like = rho + (1 - 2 * rho) * expit(thetas @ np.hstack([Z, np.ones((n, 1))]).T)
    log_lik = np.log(np.where(y, like, 1 - like)).sum(axis=1)
    offset = thetas - prior.mean_vector()
    log_prior = -0.5 * np.einsum("ij,jk,ik->i", offset, prior.precision(), offset) - math.log(2 * math.pi)
    log_prior += 0.5 * np.linalg.slogdet(prior.precision())[1]
    cell = (grid[1] - grid[0]) ** 2
    exact_evidence = float(logsumexp(log_lik + log_prior) + math.log(cell))
    assert posterior.log_evidence == pytest.approx(exact_evidence, abs=0.1)
    weights = np.exp(log_lik + log_prior - logsumexp(log_lik + log_prior))
    faces = np.array([[-2.0], [0.0], [1.0], [2.5]])
    exact = weights @ expit(thetas @ np.hstack([faces, np.ones((4, 1))]).T)
    assert posterior.predict_proba(faces) == pytest.approx(exact, abs=0.03)  # Laplace + probit
    assert np.abs(posterior.predict_proba(faces) - 0.5).max() < np.abs(expit(faces[:, 0] * posterior.mean[0] + posterior.mean[1]) - 0.5).max()


def test_prior_weight_follows_epsilon_and_the_number_of_ratings() -> None:
    """The data pull the posterior away from a (wrong) prior more with more ratings and less noise."""
    rng = np.random.default_rng(3)
    dim, users = 6, 60
    prior = _informative_prior(dim, rng)
    pull: dict[tuple[float, int], float] = {}
    for epsilon in (0.5, 1.0, 2.0, math.inf):
        for n in (5, 20, 80):
            moves = []
            for _ in range(users):
                theta = rng.normal(size=dim + 1) * 1.5
                Z = sample_truncated_prior(n, dim, rng)
                y, rho = _stored(_answers(Z, theta, rng), epsilon, rng)
                posterior = fit_posterior(Z, y, flip_probability=rho, prior=prior)
                to_truth = theta - prior.mean_vector()
                moves.append(float((posterior.mean - prior.mean_vector()) @ to_truth / (to_truth @ to_truth)))
            pull[epsilon, n] = float(np.mean(moves))
    for epsilon in (0.5, 1.0, 2.0, math.inf):
        assert pull[epsilon, 5] < pull[epsilon, 20] < pull[epsilon, 80]
    for n in (20, 80):
        assert pull[0.5, n] < pull[1.0, n] < pull[2.0, n] < pull[math.inf, n]


def test_credible_intervals_cover_the_truth_when_the_prior_is_right() -> None:
    """Users drawn from the prior: 90 % posterior intervals of a face's logit cover about 90 %."""
    rng = np.random.default_rng(4)
    dim, n = 6, 30
    prior = _informative_prior(dim, rng)
    chol = np.linalg.cholesky(prior.covariance())
    hits = []
    for _ in range(300):
        theta = prior.mean_vector() + chol @ rng.normal(size=dim + 1)
        Z = sample_truncated_prior(n, dim, rng)
        y, rho = _stored(_answers(Z, theta, rng), 1.0, rng)
        posterior = fit_posterior(Z, y, flip_probability=rho, prior=prior)
        faces = sample_truncated_prior(20, dim, rng)
        X = np.hstack([faces, np.ones((20, 1))])
        half = 1.6449 * np.sqrt(posterior.logit_variance(faces))
        hits.append(np.abs(X @ posterior.mean - X @ theta) <= half)
    coverage = float(np.mean(hits))
    assert 0.85 <= coverage <= 0.95


def test_a_confident_prior_dominates_few_ratings_and_no_prior_means_isotropic() -> None:
    rng = np.random.default_rng(5)
    Z = sample_truncated_prior(5, 3, rng)
    y = np.array([1, 0, 1, 1, 0], dtype=bool)
    sure = PreferencePrior(mean=[2.0, -1.0, 0.5], cov=np.eye(3) * 1e-6, intercept_mean=0.5, intercept_variance=1e-6)
    model = fit_noisy(Z, y, flip_probability=0.2, prior=sure)
    assert model.coef == pytest.approx([2.0, -1.0, 0.5], abs=1e-3)
    assert model.intercept == pytest.approx(0.5, abs=1e-3)
    default = fit_posterior(Z, y, flip_probability=0.2)
    explicit = fit_posterior(Z, y, flip_probability=0.2, prior=PreferencePrior.isotropic(3))
    assert np.array_equal(default.mean, explicit.mean)


def test_weights_temper_ratings() -> None:
    rng = np.random.default_rng(6)
    Z = sample_truncated_prior(30, 4, rng)
    y = _answers(Z, rng.normal(size=5), rng)
    full = fit_posterior(Z, y, flip_probability=0.1)
    half = fit_posterior(Z, y, flip_probability=0.1, weights=np.full(30, 0.5))
    assert np.trace(half.covariance) > np.trace(full.covariance)
    assert np.linalg.norm(half.mean) < np.linalg.norm(full.mean)


def test_posterior_state_round_trips_and_from_prior_is_the_prior() -> None:
    rng = np.random.default_rng(7)
    Z = sample_truncated_prior(20, 3, rng)
    posterior = fit_posterior(Z, _answers(Z, rng.normal(size=4), rng), flip_probability=0.2)
    restored = Posterior.from_state(json.loads(json.dumps(posterior.to_state())))
    assert np.array_equal(restored.mean, posterior.mean)
    assert np.array_equal(restored.covariance, posterior.covariance)
    assert restored.log_evidence == posterior.log_evidence
    prior = PreferencePrior.isotropic(3)
    start = Posterior.from_prior(prior)
    assert np.array_equal(start.covariance, prior.covariance())
    assert start.log_evidence == 0.0
    with pytest.raises(ValueError):
        Posterior.from_state({"mean": [1.0, 2.0]})
    with pytest.raises(ValueError):
        Posterior(mean=[1.0, 2.0], covariance=np.eye(2), log_evidence=math.inf)


@pytest.mark.parametrize("share", [0.0, 0.5, 0.99, 1.01, 2.0])
def test_covariance_symmetry_is_checked_as_np_allclose_would(share: float) -> None:
    """An asymmetry of ``share`` times np.allclose's tolerance (rtol 1e-10, atol 1e-12)."""
    rng = np.random.default_rng(8)
    A = rng.normal(size=(5, 5))
    covariance = A @ A.T + np.eye(5)
    covariance[1, 3] += share * (1e-12 + 1e-10 * abs(covariance[3, 1]))
    assert np.allclose(covariance, covariance.T, rtol=1e-10, atol=1e-12) == (share < 1.0)
    if share < 1.0:
        accepted = Posterior(mean=np.zeros(5), covariance=covariance)
        assert np.array_equal(accepted.covariance, (covariance + covariance.T) / 2.0)
    else:
        with pytest.raises(ValueError, match="symmetric"):
            Posterior(mean=np.zeros(5), covariance=covariance)


# --- gaussian_likelihood -----------------------------------------------------------------------


def test_gaussian_likelihood_times_the_prior_gives_back_the_posterior() -> None:
    rng = np.random.default_rng(8)
    for n in (2, 40):
        Z = sample_truncated_prior(n, 5, rng)
        y, rho = _stored(_answers(Z, rng.normal(size=6), rng), 1.0, rng)
        h, H = gaussian_likelihood(Z, y, flip_probability=rho)
        assert np.linalg.eigvalsh(H).min() > -1e-9
        prior = PreferencePrior.isotropic(5)
        posterior = fit_posterior(Z, y, flip_probability=rho)
        precision = H + prior.precision()
        assert np.linalg.solve(precision, h + prior.precision() @ prior.mean_vector()) == pytest.approx(posterior.mean)
        assert np.linalg.inv(precision) == pytest.approx(posterior.covariance)


# --- fit_private -------------------------------------------------------------------------------


def test_fit_private_passes_the_prior_to_the_label_private_learners_only() -> None:
    rng = np.random.default_rng(9)
    Z = sample_truncated_prior(10, 3, rng)
    y = _answers(Z, rng.normal(size=4), rng)
    sure = PreferencePrior(mean=[1.0, 1.0, 1.0], cov=np.eye(3) * 1e-8, intercept_variance=1e-8)
    model = fit_private(Z, y, epsilon=1.0, prior=sure, rng=np.random.default_rng(0))
    assert model.coef == pytest.approx([1.0, 1.0, 1.0], abs=1e-3)
    with pytest.raises(ValueError, match="prior"):
        fit_private(Z, y, epsilon=1.0, delta=1e-5, mechanism="dpsgd", prior=sure)
    assert rr_flip_probability(math.inf) == 0.0
    assert rr_flip_probability(1.0) == pytest.approx(1 / (1 + math.e))


# --- drift -------------------------------------------------------------------------------------


def _history(n: int, change: int | None, rng: np.random.Generator, epsilon: float = 2.0) -> tuple[np.ndarray, np.ndarray, float]:
    dim = 6
    theta = np.append(rng.normal(size=dim) * 1.2, 0.0)
    Z = sample_truncated_prior(n, dim, rng)
    logits = Z @ theta[:-1] + theta[-1]
    if change is not None:
        logits[change:] = -logits[change:]  # tastes reversed from rating `change` on
    y, rho = _stored(rng.random(n) < expit(logits), epsilon, rng)
    return Z, y, rho


def test_drift_rarely_fires_for_stable_tastes_and_catches_a_reversal() -> None:
    rng = np.random.default_rng(10)
    users = 150
    prior = PreferencePrior(mean=np.zeros(6), cov=np.eye(6) * 1.44)
    false_alarms = sum(
        (drift_weights(*_history(60, None, rng)[:2], flip_probability=rr_flip_probability(2.0), prior=prior) < 1).any()
        for _ in range(users)
    )
    detected, located = 0, 0
    for _ in range(users):
        Z, y, rho = _history(60, 35, rng)
        weights = drift_weights(Z, y, flip_probability=rho, prior=prior)
        if (weights < 1).any():
            detected += 1
            start = int(np.argmax(weights == 1.0))
            assert set(np.unique(weights)) == {DRIFT_OLD_WEIGHT, 1.0}
            assert (weights[start:] == 1.0).all()
            located += abs(start - 35) <= 10
    assert false_alarms / users <= 0.04
    assert detected / users >= 0.65
    assert located >= 0.8 * detected


def test_drift_needs_enough_history() -> None:
    rng = np.random.default_rng(11)
    Z, y, rho = _history(14, 7, rng)
    assert (drift_weights(Z, y, flip_probability=rho) == 1.0).all()


def test_a_resumed_drift_test_equals_the_full_one_and_a_changed_history_restarts_it() -> None:
    """The checkpoint only saves work: resumed or not, the weights are the same; a re-rated face
    before the checkpoint fails its digest, and a checkpoint from another prior is not used."""
    rng = np.random.default_rng(12)
    Z, y, rho = _history(400, 370, rng)
    first = drift_test(Z[:380], y[:380], flip_probability=rho)
    assert first.checkpoint.through == 380 - DRIFT_WINDOW
    resumed = drift_test(Z, y, flip_probability=rho, checkpoint=first.checkpoint)
    full = drift_test(Z, y, flip_probability=rho)
    np.testing.assert_array_equal(resumed.weights, full.weights)
    assert (full.weights < 1).any()  # the reversal 30 ratings ago lies in the window: found at n = 400
    np.testing.assert_array_equal(resumed.checkpoint.posterior.mean, full.checkpoint.posterior.mean)
    round_trip = DriftCheckpoint.from_state(json.loads(json.dumps(first.checkpoint.to_state())))
    np.testing.assert_array_equal(drift_test(Z, y, flip_probability=rho, checkpoint=round_trip).weights, full.weights)

    y_changed = y.copy()
    y_changed[3] = not y_changed[3]
    restarted = drift_test(Z, y_changed, flip_probability=rho, checkpoint=first.checkpoint)
    fresh = drift_test(Z, y_changed, flip_probability=rho)
    np.testing.assert_array_equal(restarted.checkpoint.posterior.mean, fresh.checkpoint.posterior.mean)
    assert not np.array_equal(restarted.checkpoint.posterior.mean, resumed.checkpoint.posterior.mean)
    other_prior = PreferencePrior(mean=np.ones(6), cov=np.eye(6))
    np.testing.assert_array_equal(
        drift_test(Z, y, flip_probability=rho, prior=other_prior, checkpoint=first.checkpoint).checkpoint.posterior.mean,
        drift_test(Z, y, flip_probability=rho, prior=other_prior).checkpoint.posterior.mean,
    )


def test_the_drift_replay_is_the_online_update() -> None:
    """The drift test replays ratings through the online step directly; its checkpoint is exactly
    what OnlinePreference.update gives rating by rating from the prior."""
    rng = np.random.default_rng(14)
    Z, y, rho = _history(120, None, rng)
    prior = PreferencePrior(mean=np.zeros(6), cov=np.eye(6) * 1.44)
    checkpoint = drift_test(Z, y, flip_probability=rho, prior=prior).checkpoint
    online = OnlinePreference(Posterior.from_prior(prior))
    for z, label in zip(Z[: checkpoint.through], y[: checkpoint.through], strict=True):
        online.update(z, bool(label), flip_probability=rho)
    np.testing.assert_array_equal(checkpoint.posterior.mean, online.posterior.mean)
    np.testing.assert_array_equal(checkpoint.posterior.covariance, online.posterior.covariance)
    assert checkpoint.posterior.log_evidence == online.posterior.log_evidence


def _reference_drift_test(
    Z: np.ndarray, y: np.ndarray, rho: np.ndarray, prior: PreferencePrior
) -> tuple[np.ndarray, np.ndarray]:
    """The drift test written out the plain way, from its docstring and public APIs only: every
    rating replayed from the prior with OnlinePreference, predict_proba, norm.ppf. Returns the
    window statistics and the weights."""
    n = len(y)
    online = OnlinePreference(Posterior.from_prior(prior))
    replay = [online.posterior]
    for z, label, flip in zip(Z, y, rho, strict=True):
        online.update(z, bool(label), flip_probability=float(flip))
        replay.append(online.posterior)
    simulation = np.random.default_rng(20261123)
    windows = list(range(5, min(n - MIN_HISTORY, DRIFT_WINDOW) + 1, 5))
    statistics = []
    for k in windows:
        posterior, flips = replay[n - k], rho[n - k :]
        like = flips + (1.0 - 2.0 * flips) * posterior.predict_proba(Z[n - k :])
        log_like, log_pass = np.log(like), np.log1p(-like)
        observed = float(np.where(y[n - k :], log_like, log_pass).sum())
        chol = np.linalg.cholesky(posterior.covariance)
        thetas = posterior.mean + simulation.standard_normal((256, posterior.mean.size)) @ chol.T
        stored_like = simulation.random((256, k)) < flips + (1.0 - 2.0 * flips) * expit(
            thetas[:, :-1] @ Z[n - k :].T + thetas[:, -1:]
        )
        null = np.where(stored_like, log_like, log_pass).sum(axis=1)
        statistics.append((observed - float(null.mean())) / float(null.std()) if null.std() > 0 else 0.0)
    weights = np.ones(n)
    if windows:
        worst = int(np.argmin(statistics))
        if statistics[worst] < -norm.ppf(1.0 - DRIFT_ALPHA / len(windows)):
            weights[: n - windows[worst]] = DRIFT_OLD_WEIGHT
    return np.array(statistics), weights


@pytest.mark.parametrize(
    ("n", "change", "same", "dim"),
    [(1, None, False, 6), (13, None, True, 6), (19, None, False, 6), (20, None, True, 6), (50, None, False, 24),
     (75, 45, False, 6), (150, 120, False, 6), (150, None, True, 6), (600, 580, False, 24)],
)
def test_the_drift_test_is_its_plain_computation_bit_for_bit(n: int, change: int | None, same: bool, dim: int) -> None:
    """Whatever makes the test cheap (checkpoints, feature rows, ndtri) changes no bit of its statistics
    or weights, fresh or resumed from an earlier call's checkpoint; all-same labels included. (With no
    ratings the service does not run the test: the fit is the prior belief.)"""
    rng = np.random.default_rng(n + dim)
    theta = np.append(rng.normal(size=dim) * 1.2, 0.0)
    Z = sample_truncated_prior(n, dim, rng)
    logits = Z @ theta[:-1] + theta[-1]
    if change is not None:
        logits[change:] = -logits[change:]
    y, _ = _stored(rng.random(n) < expit(logits), 2.0, rng)
    if same:
        y = np.ones(n, dtype=bool)
    rho = np.where(rng.random(n) < 0.3, rr_flip_probability(1.0), rr_flip_probability(2.0))  # on-device epsilons too
    prior = PreferencePrior(mean=rng.normal(size=dim) * 0.1, cov=np.eye(dim) * 1.44)
    expected_statistics, expected_weights = _reference_drift_test(Z, y, rho, prior)
    if change is not None:
        assert (expected_weights < 1).any()  # the cases with a change do exercise the down-weighting
    checkpoints = [None]
    if n > 12:  # the checkpoint an earlier refit (12 ratings ago) stored
        checkpoints.append(drift_test(Z[: n - 12], y[: n - 12], flip_probability=rho[: n - 12], prior=prior).checkpoint)
    for checkpoint in checkpoints:
        result = drift_test(Z, y, flip_probability=rho, prior=prior, checkpoint=checkpoint)
        assert result.weights.tobytes() == expected_weights.tobytes()
        windows = np.arange(5, min(n - MIN_HISTORY, DRIFT_WINDOW) + 1, 5)
        if windows.size:
            statistics = _window_statistics(Z, np.hstack([Z, np.ones((n, 1))]), y, rho, result.checkpoint, windows)
            assert statistics.tobytes() == expected_statistics.tobytes()


def test_the_drift_windows_are_bounded_so_an_old_change_is_no_longer_tested() -> None:
    """Only the last DRIFT_WINDOW ratings are windows: a change longer ago is absorbed by the fit."""
    rng = np.random.default_rng(13)
    Z, y, rho = _history(DRIFT_WINDOW + 60, 20, rng)
    assert (drift_weights(Z, y, flip_probability=rho) == 1.0).all()


def test_a_non_log_concave_posterior_converges_to_its_mode() -> None:
    """A case from the cold-start benchmark (eps 1, 45 ratings, a tight persona prior) where the
    likelihood is convex along a direction: Fisher scoring crawled for 451 steps; the result must
    be a stationary point with a negative definite observed Hessian and beat the optimiser's."""
    data = np.load(__file__.rsplit("/", 1)[0] + "/data/nonconcave_posterior.npz")
    cov = np.linalg.inv(data["precision"])
    prior = PreferencePrior(
        mean=data["mean"][:-1], cov=cov[:-1, :-1], intercept_mean=float(data["mean"][-1]), intercept_variance=float(cov[-1, -1])
    )
    posterior = fit_posterior(data["Z"], data["y"], flip_probability=data["rho"], prior=prior)
    X = np.hstack([data["Z"], np.ones((len(data["y"]), 1))])
    reference = minimize(
        _negative_log_posterior, prior.mean_vector(), args=(X, data["y"], float(data["rho"][0]), prior), method="BFGS", tol=1e-12
    )
    assert _negative_log_posterior(posterior.mean, X, data["y"], float(data["rho"][0]), prior) <= reference.fun + 1e-9
