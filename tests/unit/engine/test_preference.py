"""Private preference learning: the released model, the noise-aware learner, online updates."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.special import expit

from engine.latent._prior import sample_truncated_prior
from engine.preference import (
    MECHANISMS,
    SERVICE_MECHANISMS,
    OnlinePreference,
    Posterior,
    PreferencePrior,
    PreferenceModel,
    fit_noisy,
    fit_private,
    mechanism_guarantee,
)
from engine._validation import InvalidInputError
from engine.preference._noisy import rr_information, rr_information_scalar, rr_log_likelihood, rr_log_likelihood_scalar
from benchmarks.preference import benchmark_accuracy, expected_accuracy, synthetic_user
from privacy.mechanisms import ADD_REMOVE_ONE, LABEL_CHANGE, REPLACE_ONE, Guarantee, RandomizedResponse


def _user_data(dim: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    w, b = synthetic_user(dim, rng)
    Z = sample_truncated_prior(n, dim, rng)
    return Z, rng.random(n) < expit(Z @ w + b), w, b


# --- PreferenceModel ---------------------------------------------------------------------------


def test_model_is_an_immutable_calibrated_logit() -> None:
    model = PreferenceModel(coef=np.array([1.0, -2.0]), intercept=0.5)
    Z = np.array([[0.0, 0.0], [1.0, 1.0]])
    assert model.decision_function(Z).tolist() == [0.5, -0.5]
    assert model.predict_proba(Z) == pytest.approx(expit(np.array([0.5, -0.5])))
    assert model.dim == 2
    with pytest.raises(ValueError):
        model.coef[0] = 3.0
    with pytest.raises(AttributeError):
        model.intercept = 1.0  # type: ignore[misc]


def test_model_copies_its_input() -> None:
    source = np.array([1.0, 2.0])
    model = PreferenceModel(coef=source, intercept=0.0)
    source[0] = 9.0
    assert model.coef[0] == 1.0


@given(hnp.arrays(np.float64, st.integers(2, 40), elements=st.floats(-1e6, 1e6)))
def test_vector_round_trip(vector: np.ndarray) -> None:
    model = PreferenceModel.from_vector(vector)
    assert np.array_equal(model.to_vector(), vector)
    assert model == PreferenceModel.from_vector(vector.copy())
    assert hash(model) == hash(PreferenceModel.from_vector(vector + 0.0))


@pytest.mark.parametrize(
    ("coef", "intercept", "error"),
    [
        ([], 0.0, ValueError),
        ([[1.0]], 0.0, ValueError),
        ([math.nan], 0.0, ValueError),
        ([1.0], math.inf, ValueError),
        ([1.0], "0", TypeError),
    ],
)
def test_model_rejects_bad_values(coef: object, intercept: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        PreferenceModel(coef=coef, intercept=intercept)  # type: ignore[arg-type]


def test_model_rejects_latents_of_the_wrong_dimension() -> None:
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        PreferenceModel(coef=np.array([1.0, 2.0]), intercept=0.0).decision_function(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="vector"):
        PreferenceModel.from_vector([1.0])


# --- fit_noisy ---------------------------------------------------------------------------------


def test_noise_aware_fit_is_consistent_for_the_clean_model() -> None:
    """With many ratings the unbiased loss recovers the true weights; the naive fit is shrunk."""
    rng = np.random.default_rng(0)
    dim, n = 6, 40_000
    w, b = np.array([1.5, -1.0, 0.5, 0.0, 0.8, -0.3]), -0.4
    Z = sample_truncated_prior(n, dim, rng)
    rr = RandomizedResponse(epsilon=1.0)
    y_private = rr.privatise(rng.random(n) < expit(Z @ w + b), rng.random(n))
    model = fit_noisy(Z, y_private, flip_probability=rr.flip_probability)
    assert np.abs(model.coef - w).max() < 0.12
    assert abs(model.intercept - b) < 0.12
    naive = fit_noisy(Z, y_private, flip_probability=0.0)
    assert np.linalg.norm(naive.coef) < 0.6 * np.linalg.norm(w)


def test_fit_noisy_accepts_per_rating_flip_probabilities() -> None:
    rng = np.random.default_rng(1)
    Z, y, _, _ = _user_data(4, 30, rng)
    scalar = fit_noisy(Z, y, flip_probability=0.2)
    per_rating = fit_noisy(Z, y, flip_probability=np.full(30, 0.2))
    assert np.allclose(scalar.to_vector(), per_rating.to_vector())


def test_public_negatives_lower_the_like_probability_there() -> None:
    rng = np.random.default_rng(2)
    Z, y, _, _ = _user_data(4, 40, rng)
    region = np.zeros((20, 4))
    region[:, 0] = -2.5
    region[:, 1:] = rng.normal(size=(20, 3))
    plain = fit_noisy(Z, y, flip_probability=0.2)
    guarded = fit_noisy(Z, y, flip_probability=0.2, public_negatives=region)
    assert guarded.predict_proba(region).mean() < plain.predict_proba(region).mean() - 0.1


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"Z": np.zeros((3,))}, ValueError, "Z must have shape"),
        ({"Z": np.full((3, 2), math.nan)}, ValueError, "finite"),
        ({"y_private": [1, 0]}, ValueError, "shape"),
        ({"y_private": [1, 0, 2]}, ValueError, "0/1"),
        ({"flip_probability": 0.5}, ValueError, "flip_probability"),
        ({"flip_probability": [0.1, 0.1]}, ValueError, "flip_probability"),
        ({"prior": PreferencePrior.isotropic(3)}, ValueError, "dimension"),
        ({"prior": np.zeros(2)}, TypeError, "PreferencePrior"),
        ({"weights": [1.0, 0.0, 1.0]}, ValueError, "weights"),
        ({"weights": [1.0, 1.0]}, ValueError, "weights"),
        ({"public_negatives": np.zeros((2, 3))}, ValueError, "public_negatives"),
    ],
)
def test_fit_noisy_rejects_bad_input(kwargs: dict[str, object], error: type[Exception], message: str) -> None:
    args: dict[str, object] = {"Z": np.zeros((3, 2)), "y_private": [1, 0, 1], "flip_probability": 0.1}
    args.update(kwargs)
    with pytest.raises(error, match=message):
        fit_noisy(**args)  # type: ignore[arg-type]


def test_fit_noisy_is_well_calibrated_on_clean_labels() -> None:
    """Reliability curve and Brier score against the true logistic model (users from the prior)."""
    rng = np.random.default_rng(3)
    dim, n = 16, 100
    rr = RandomizedResponse(epsilon=2.0)
    predicted, truth = [], []
    for _ in range(200):
        Z, y, w, b = _user_data(dim, n, rng)
        model = fit_noisy(Z, rr.privatise(y, rng.random(n)), flip_probability=rr.flip_probability)
        T = sample_truncated_prior(200, dim, rng)
        predicted.append(model.predict_proba(T))
        truth.append(expit(T @ w + b))
    p, q = np.concatenate(predicted), np.concatenate(truth)
    edges = np.quantile(p, np.linspace(0, 1, 11))
    bins = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, 9)
    gaps = [abs(p[bins == k].mean() - q[bins == k].mean()) for k in range(10)]
    assert max(gaps) < 0.03
    brier_gap = np.mean((p - q) ** 2)
    assert brier_gap < 0.5 * np.mean((q - q.mean()) ** 2)  # far better than the population rate
    logit = np.log(p / (1 - p))
    best = min(np.mean((expit(t * logit) - q) ** 2) for t in np.linspace(0.5, 1.5, 101))
    assert brier_gap < 1.02 * best  # no temperature would help by more than 2 %


def test_unbiased_loss_beats_the_naive_fit_at_low_epsilon() -> None:
    rng = np.random.default_rng(4)
    dim, n = 16, 50
    rr = RandomizedResponse(epsilon=1.0)
    errors: dict[str, list[float]] = {"unbiased": [], "naive": []}
    accuracy: dict[str, list[float]] = {"unbiased": [], "naive": []}
    for _ in range(200):
        Z, y, w, b = _user_data(dim, n, rng)
        y_private = rr.privatise(y, rng.random(n))
        T = sample_truncated_prior(200, dim, rng)
        truth = T @ w + b
        for name, rho in (("unbiased", rr.flip_probability), ("naive", 0.0)):
            model = fit_noisy(Z, y_private, flip_probability=rho)
            errors[name].append(float(np.mean((model.predict_proba(T) - expit(truth)) ** 2)))
            accuracy[name].append(expected_accuracy(model.decision_function(T), truth))
    assert np.mean(errors["unbiased"]) < 0.95 * np.mean(errors["naive"])
    assert np.mean(accuracy["unbiased"]) > np.mean(accuracy["naive"])


@pytest.mark.parametrize("n_ratings", [50, 200])
def test_private_accuracy_is_close_to_non_private_linear_svc(n_ratings: int) -> None:
    result = benchmark_accuracy(dim=16, n_ratings=n_ratings, epsilons=(2.0,), users=100, test_faces=300, seed=5)
    row = result["rows"][0]
    assert row["gap_to_linear_svc"] < 0.03
    assert row["private"] < row["bayes"]


# --- OnlinePreference --------------------------------------------------------------------------


def test_online_update_tracks_the_exact_refit() -> None:
    rng = np.random.default_rng(6)
    dim, start, extra = 8, 60, 30
    rr = RandomizedResponse(epsilon=2.0)
    Z, y, _, _ = _user_data(dim, start + extra, rng)
    y_private = rr.privatise(y, rng.random(start + extra))
    online = OnlinePreference.from_fit(Z[:start], y_private[:start], flip_probability=rr.flip_probability)
    stale = online.model
    assert online.model == fit_noisy(Z[:start], y_private[:start], flip_probability=rr.flip_probability)
    for z, label in zip(Z[start:], y_private[start:], strict=True):
        returned = online.update(z, bool(label), flip_probability=rr.flip_probability)
        assert returned is online.model
    exact = fit_noisy(Z, y_private, flip_probability=rr.flip_probability)
    T = sample_truncated_prior(500, dim, rng)
    online_gap = np.abs(online.model.predict_proba(T) - exact.predict_proba(T)).mean()
    stale_gap = np.abs(stale.predict_proba(T) - exact.predict_proba(T)).mean()
    assert online_gap < 0.01
    # One assumed-density step per rating leaves earlier ratings' curvature where it was: the
    # online model closes about 88 % of the stale model's gap; the exact refit closes the rest.
    assert online_gap < 0.15 * stale_gap


def test_a_step_moves_the_posterior_as_an_update_does() -> None:
    rng = np.random.default_rng(8)
    Z, y, _, _ = _user_data(6, 40, rng)
    updated = OnlinePreference.from_fit(Z[:30], y[:30], flip_probability=0.1)
    stepped = OnlinePreference(updated.posterior)
    for z, label in zip(Z[30:], y[30:], strict=True):
        model = updated.update(z, bool(label), flip_probability=0.1)
        posterior = stepped.step(z, bool(label), flip_probability=0.1)
        assert posterior is stepped.posterior
        assert np.array_equal(posterior.mean, updated.posterior.mean)
        assert np.array_equal(posterior.covariance, updated.posterior.covariance)
        assert stepped.model == model


def test_online_state_round_trips_through_json() -> None:
    rng = np.random.default_rng(7)
    Z, y, _, _ = _user_data(5, 30, rng)
    online = OnlinePreference.from_fit(Z, y, flip_probability=0.1)
    online.update(Z[0] * 0.5, True, flip_probability=0.1)
    restored = OnlinePreference.from_state(json.loads(json.dumps(online.to_state())))
    assert restored.model == online.model
    z = rng.normal(size=5)
    assert restored.update(z, False, flip_probability=0.1) == online.update(z, False, flip_probability=0.1)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.update(version=3),
        lambda s: s.pop("posterior"),
        lambda s: s["posterior"].pop("mean"),
        lambda s: s["posterior"].update(mean=s["posterior"]["mean"][:-1]),
        lambda s: s["posterior"].update(covariance=[[1.0]]),
        lambda s: s["posterior"].update(covariance=[[math.nan] * 4] * 4),
        lambda s: s["posterior"].update(covariance=[[1.0, 2.0, 0.0, 0.0]] * 4),
    ],
)
def test_online_state_is_validated(mutate: object) -> None:
    rng = np.random.default_rng(8)
    Z, y, _, _ = _user_data(3, 10, rng)
    state = OnlinePreference.from_fit(Z, y, flip_probability=0.1).to_state()
    mutate(state)  # type: ignore[operator]
    with pytest.raises(ValueError):
        OnlinePreference.from_state(state)


def test_online_reads_version_1_states_as_a_posterior() -> None:
    """States written before the posterior existed load with their mean and covariance."""
    mean, covariance = [0.5, -0.25, 0.1], np.diag([0.2, 0.3, 0.4])
    state = {"version": 1, "theta": mean, "inverse_hessian": np.eye(3).tolist(), "posterior_covariance": covariance.tolist()}
    online = OnlinePreference.from_state(state)
    assert np.array_equal(online.posterior.mean, mean)
    assert np.array_equal(online.posterior.covariance, covariance)
    assert math.isnan(online.posterior.log_evidence)
    with pytest.raises(ValueError):
        OnlinePreference.from_state({"version": 1, "theta": mean})


def test_online_update_validates_input() -> None:
    rng = np.random.default_rng(9)
    Z, y, _, _ = _user_data(3, 10, rng)
    online = OnlinePreference.from_fit(Z, y, flip_probability=0.1)
    with pytest.raises(ValueError, match="z"):
        online.update(np.zeros(4), True, flip_probability=0.1)
    with pytest.raises(ValueError, match="flip_probability"):
        online.update(np.zeros(3), True, flip_probability=0.6)
    with pytest.raises(ValueError, match="y_private"):
        online.update(np.zeros(3), 2, flip_probability=0.1)  # type: ignore[arg-type]


def test_online_update_accepts_what_it_accepted_and_refuses_the_rest() -> None:
    """The cheap checks of one rating take the same inputs as the array checks they stand in for."""
    rng = np.random.default_rng(10)
    Z, y, _, _ = _user_data(3, 10, rng)
    start = OnlinePreference.from_fit(Z, y, flip_probability=0.1).posterior
    z = rng.normal(size=3)
    expected = OnlinePreference(start).update(z, True, flip_probability=0.1)
    for label in (True, np.True_, 1, 1.0, np.int64(1)):
        for rho in (0.1, np.float64(0.1), np.array(0.1), [0.1]):
            for latent in (z, z.tolist(), z.reshape(1, 3)):
                assert OnlinePreference(start).update(latent, label, flip_probability=rho) == expected  # type: ignore[arg-type]
    assert OnlinePreference(start).update(z, 0, flip_probability=0) == OnlinePreference(start).update(  # type: ignore[arg-type]
        z, False, flip_probability=0.0
    )
    for label in (2, 0.5, "yes", None, [True]):
        with pytest.raises(InvalidInputError, match="y_private"):
            OnlinePreference(start).update(z, label, flip_probability=0.1)  # type: ignore[arg-type]
    for rho in (0.5, -0.1, math.nan, math.inf, True, [0.1, 0.1]):
        with pytest.raises(InvalidInputError, match="flip_probability"):
            OnlinePreference(start).update(z, True, flip_probability=rho)  # type: ignore[arg-type]
    for latent in (np.array([0.0, math.nan, 0.0]), np.zeros(2), np.zeros(0), np.zeros((2, 3))):
        with pytest.raises(InvalidInputError, match="z"):
            OnlinePreference(start).update(latent, True, flip_probability=0.1)


@given(
    t=st.floats(-700.0, 700.0),
    s=st.sampled_from([-1.0, 1.0]),
    rho=st.one_of(st.just(0.0), st.floats(0.0, 0.5, exclude_max=True)),
)
def test_the_scalar_likelihood_is_the_array_one(t: float, s: float, rho: float) -> None:
    """The online step's scalar twins compute the same numbers as the array functions the fit uses."""
    log_p, slope = rr_log_likelihood(np.array([t]), np.array([s]), np.array([rho]))
    information = rr_information(np.array([t]), np.array([rho]))[1]
    scalar_log_p, scalar_slope = rr_log_likelihood_scalar(t, s, rho)
    np.testing.assert_allclose([scalar_log_p, scalar_slope], [log_p[0], slope[0]], rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(rr_information_scalar(t, rho), information[0], rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("t", [-1e300, -750.0, -700.0, -36.0, -1e-9, 0.0, 1e-9, 36.0, 700.0, 750.0, 1e300])
@pytest.mark.parametrize("rho", [0.0, 1e-300, 0.119, 0.5 - 1e-12])
def test_the_scalar_likelihood_is_the_array_one_at_the_extremes(t: float, rho: float) -> None:
    for s in (-1.0, 1.0):
        log_p, slope = rr_log_likelihood(np.array([t]), np.array([s]), np.array([rho]))
        assert rr_log_likelihood_scalar(t, s, rho) == pytest.approx((log_p[0], slope[0]), rel=1e-12, abs=1e-300)
    assert rr_information_scalar(t, rho) == pytest.approx(rr_information(np.array([t]), np.array([rho]))[1][0], rel=1e-12, abs=1e-300)


def test_the_online_covariance_stays_symmetric_positive_definite() -> None:
    """The online step skips the posterior's validation (its result is SPD by construction): after
    500 updates at mixed scales and flip rates the covariance must still pass it exactly."""
    rng = np.random.default_rng(11)
    dim = 24
    online = OnlinePreference(Posterior.from_prior(PreferencePrior.isotropic(dim)))
    for _ in range(500):
        z = rng.normal(size=dim) * rng.choice([0.1, 1.0, 3.0, 30.0])
        online.update(z, bool(rng.random() < 0.5), flip_probability=float(rng.choice([0.0, 0.119, 0.4])))
    posterior = online.posterior
    assert np.array_equal(posterior.covariance, posterior.covariance.T)
    assert np.linalg.eigvalsh(posterior.covariance)[0] > 0
    assert np.isfinite(posterior.mean).all() and math.isfinite(posterior.log_evidence)
    assert not posterior.mean.flags.writeable and not posterior.covariance.flags.writeable
    validated = Posterior(mean=posterior.mean, covariance=posterior.covariance, log_evidence=posterior.log_evidence)
    assert np.array_equal(validated.covariance, posterior.covariance)
    assert online.model == posterior.model()


@pytest.mark.parametrize("scale", [1e9, 1e160])
def test_an_update_that_overflow_or_round_off_broke_is_refused(scale: float) -> None:
    """At an absurd |z| the step loses positive definiteness (round-off) or finiteness (overflow):
    the update raises, as the validated construction always did, and keeps the last posterior."""
    rng = np.random.default_rng(12)
    online = OnlinePreference(Posterior.from_prior(PreferencePrior.isotropic(24)))
    with pytest.raises(InvalidInputError, match="positive definite|finite"), np.errstate(over="ignore"):
        for _ in range(50):
            before = online.posterior
            online.update(rng.normal(size=24) * scale, bool(rng.random() < 0.5), flip_probability=0.119)
    assert online.posterior is before
    Posterior.from_state(online.posterior.to_state())


# --- fit_private and guarantees ----------------------------------------------------------------


def test_fit_private_rr_is_randomized_response_then_fit_noisy() -> None:
    rng = np.random.default_rng(10)
    Z, y, _, _ = _user_data(6, 40, rng)
    negatives = rng.normal(size=(5, 6))
    released = fit_private(Z, y, epsilon=1.0, rng=np.random.default_rng(11), public_negatives=negatives)
    rr = RandomizedResponse(epsilon=1.0)
    by_hand = fit_noisy(
        Z,
        rr.privatise(y, np.random.default_rng(11).random(40)),
        flip_probability=rr.flip_probability,
        public_negatives=negatives,
    )
    assert released == by_hand


def test_fit_private_without_noise_is_the_clean_fit() -> None:
    rng = np.random.default_rng(12)
    Z, y, _, _ = _user_data(6, 40, rng)
    clean = fit_noisy(Z, y, flip_probability=0.0)
    assert fit_private(Z, y, epsilon=math.inf, rng=rng) == clean
    assert fit_private(Z, y, epsilon=1.0, mechanism="none") == clean


@pytest.mark.parametrize(("mechanism", "delta"), [("randomized_response", 0.0), ("objective_perturbation", 0.0), ("dpsgd", 1e-5)])
def test_fit_private_is_deterministic_given_the_rng(mechanism: str, delta: float) -> None:
    rng = np.random.default_rng(13)
    Z, y, _, _ = _user_data(6, 40, rng)
    first = fit_private(Z, y, epsilon=2.0, delta=delta, mechanism=mechanism, rng=np.random.default_rng(14))
    again = fit_private(Z, y, epsilon=2.0, delta=delta, mechanism=mechanism, rng=np.random.default_rng(14))
    other = fit_private(Z, y, epsilon=2.0, delta=delta, mechanism=mechanism, rng=np.random.default_rng(15))
    assert first == again
    assert first != other
    assert first.dim == 6


def test_objective_perturbation_learns_with_enough_ratings() -> None:
    rng = np.random.default_rng(16)
    dim, n = 4, 20_000
    w, b = np.array([1.5, -1.0, 0.5, 0.0]), 0.0
    Z = sample_truncated_prior(n, dim, rng)
    y = rng.random(n) < expit(Z @ w + b)
    model = fit_private(Z, y, epsilon=1.0, mechanism="objective_perturbation", rng=rng)
    cosine = model.coef @ w / (np.linalg.norm(model.coef) * np.linalg.norm(w))
    assert cosine > 0.95


def test_mechanism_guarantees_are_what_each_mechanism_claims() -> None:
    assert mechanism_guarantee("randomized_response", epsilon=2.0, delta=0.0) == Guarantee(2.0, 0.0, LABEL_CHANGE, "randomized_response")
    assert mechanism_guarantee("objective_perturbation", epsilon=1.0, delta=1e-6) == Guarantee(
        1.0, 0.0, REPLACE_ONE, "objective_perturbation"
    )
    assert mechanism_guarantee("dpsgd", epsilon=1.0, delta=1e-5) == Guarantee(1.0, 1e-5, ADD_REMOVE_ONE, "dpsgd")
    assert not mechanism_guarantee("none", epsilon=1.0, delta=0.0).is_private
    assert SERVICE_MECHANISMS == ("randomized_response", "objective_perturbation", "dpsgd")
    assert set(MECHANISMS) - set(SERVICE_MECHANISMS) == {"none"}


@pytest.mark.parametrize(
    ("mechanism", "epsilon", "delta", "message"),
    [
        ("laplace", 1.0, 0.0, "mechanism"),
        ("randomized_response", 0.0, 0.0, "epsilon"),
        ("randomized_response", 1.0, 1.0, "delta"),
        ("objective_perturbation", math.inf, 0.0, "epsilon"),
        ("dpsgd", 1.0, 0.0, "delta"),
        ("dpsgd", math.inf, 1e-5, "epsilon"),
    ],
)
def test_fit_private_rejects_bad_arguments_before_touching_the_labels(
    mechanism: str, epsilon: float, delta: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        fit_private(np.zeros((2, 2)), [1, 0], epsilon=epsilon, delta=delta, mechanism=mechanism)


def test_fit_private_rejects_a_legacy_random_state() -> None:
    with pytest.raises(TypeError, match="rng"):
        fit_private(np.zeros((2, 2)), [1, 0], epsilon=1.0, rng=np.random.RandomState(0))  # type: ignore[arg-type]
