"""Population model: persona recovery under user-level DP-SGD, the posterior it gives a user, accounting, state.

The recovery tests fit one synthetic population (4 personas, d = 8, 2000 users x 30 ratings
stored at eps 2, population eps 2) once per module; everything else uses small hand-built models
or tiny populations.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.optimize import linear_sum_assignment
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from engine.latent._prior import sample_truncated_prior
from engine.population import (
    ACCOUNTING_KEYS,
    PopulationModel,
    fit_population,
    population_epsilon,
)
from engine.population._training import MixtureLikelihood, _per_user_gradients, initial_parameters
from engine.preference import Posterior, fit_posterior
from benchmarks.preference import expected_accuracy
from privacy.accounting import RDPAccountant, calibrate_noise_multiplier
from privacy.mechanisms import ADD_REMOVE_ONE, ADD_REMOVE_USER, Guarantee
from tests.support.population import SyntheticPopulation, persona_population, rate

DIM = 8
EPSILON, DELTA = 2.0, 1e-5
N_USERS, N_RATINGS = 2000, 30


# --- the synthetic population ------------------------------------------------------------------


@pytest.fixture(scope="module")
def population() -> SyntheticPopulation:
    return persona_population(np.random.default_rng(0), dim=DIM)


@pytest.fixture(scope="module")
def fitted(population: SyntheticPopulation) -> PopulationModel:
    rng = np.random.default_rng(1)
    theta, _ = population.draw(N_USERS, rng)
    users = [rate(t, N_RATINGS, epsilon=2.0, rng=rng).likelihood() for t in theta]
    return fit_population(users, epsilon=EPSILON, delta=DELTA, rng=np.random.default_rng(2))


def test_fit_recovers_the_three_heavier_personas(population: SyntheticPopulation, fitted: PopulationModel) -> None:
    """Direction and weight of each persona with at least 20 % of the users.

    Measured on this population (true weights 0.4, 0.3, 0.2), over fits with four seeds: cosines
    0.84-0.99, weights off by at most 0.14, lengths 0.41-0.79 of the truth. The lengths are short
    because each user's Gaussian summary of 30 randomized labels is shrunk towards the isotropic
    prior it was taken under; a non-private fit of the same summaries is as short. The lightest
    persona (10 %) is not asserted: DP-SGD finds it in some fits and not in others.
    """
    distance = np.linalg.norm(fitted.means[:, None, :] - population.means[None, :, :], axis=2)
    rows, columns = linear_sum_assignment(distance)
    for k, j in zip(rows, columns, strict=True):
        if population.weights[j] < 0.2:
            continue
        learned, true = fitted.means[k, :-1], population.means[j, :-1]
        assert learned @ true / (np.linalg.norm(learned) * np.linalg.norm(true)) > 0.75
        assert 0.3 < np.linalg.norm(learned) / np.linalg.norm(true) < 1.1
        assert abs(fitted.weights[k] - population.weights[j]) < 0.2


def test_population_prior_beats_the_isotropic_prior_on_new_users(
    population: SyntheticPopulation, fitted: PopulationModel
) -> None:
    """New users with 10 ratings each. Measured: 0.628-0.630 with the population (four fits), 0.575 isotropic."""
    rng = np.random.default_rng(3)
    theta, _ = population.draw(200, rng)
    faces = sample_truncated_prior(500, DIM, rng)
    X = np.hstack([faces, np.ones((len(faces), 1))])
    with_population, isotropic = [], []
    for t in theta:
        r = rate(t, 10, epsilon=2.0, rng=rng)
        posterior = fitted.posterior(r.Z, r.stored, flip_probability=r.flip_probability).posterior
        with_population.append(expected_accuracy(X @ posterior.mean, X @ t))
        alone = fit_posterior(r.Z, r.stored, flip_probability=r.flip_probability)
        isotropic.append(expected_accuracy(X @ alone.mean, X @ t))
    assert np.mean(with_population) > np.mean(isotropic) + 0.03


def test_release_states_its_user_level_guarantee_and_accounting(fitted: PopulationModel) -> None:
    assert fitted.guarantee == Guarantee(EPSILON, DELTA, ADD_REMOVE_USER, "dpsgd")
    assert fitted.guarantee.describe().startswith("Adding or removing your whole rating history")
    accounting = fitted.accounting
    assert tuple(accounting) == ACCOUNTING_KEYS
    assert accounting["n_users"] == N_USERS
    assert accounting["noise_multiplier"] == calibrate_noise_multiplier(
        target_epsilon=EPSILON,
        target_delta=DELTA,
        sample_rate=accounting["sample_rate"],
        steps=accounting["steps"],
    )
    spent = population_epsilon([accounting], delta=DELTA)
    assert 0.95 * EPSILON < spent <= EPSILON  # calibrated to within Opacus' search tolerance


def test_release_is_a_valid_mixture_ordered_by_weight(fitted: PopulationModel) -> None:
    assert (fitted.n_personas, fitted.dim) == (4, DIM)
    assert np.all(np.diff(fitted.weights) <= 0)
    assert math.isclose(fitted.weights.sum(), 1.0)
    assert np.all(fitted.factor[-1] == 0) and np.all(fitted.diagonal > 0)
    assert np.all(np.linalg.eigvalsh(fitted.covariance()) > 0)


# --- fitting: determinism, skipped users, input validation --------------------------------------


def _small_users(n: int, seed: int, dim: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [rate(0.5 * rng.standard_normal(dim + 1), 15, epsilon=2.0, rng=rng).likelihood() for _ in range(n)]


_SMALL = {"epsilon": 1.0, "delta": 1e-5, "n_personas": 2, "rank": 1, "steps": 20, "sample_rate": 0.25}


def test_fit_is_a_function_of_its_rng() -> None:
    users = _small_users(30, seed=4)
    first = fit_population(users, rng=np.random.default_rng(5), **_SMALL)
    again = fit_population(users, rng=np.random.default_rng(5), **_SMALL)
    other = fit_population(users, rng=np.random.default_rng(6), **_SMALL)
    assert first.to_state() == again.to_state()
    assert not np.array_equal(first.means, other.means)


def test_users_without_ratings_are_skipped() -> None:
    users = _small_users(30, seed=7)
    empty = (np.zeros(4), np.zeros((4, 4)))
    plain = fit_population(users, rng=np.random.default_rng(8), **_SMALL)
    padded = fit_population([empty, *users, empty], rng=np.random.default_rng(8), **_SMALL)
    assert padded.to_state() == plain.to_state()
    assert padded.accounting["n_users"] == 30


_GOOD_USER = (np.ones(3), np.eye(3))


@pytest.mark.parametrize(
    ("users", "kwargs", "error", "message"),
    [
        ([], {}, ValueError, "non-empty sequence"),
        ("abc", {}, ValueError, "non-empty sequence"),
        ([(np.ones(3),)], {}, ValueError, "pairs"),
        ([_GOOD_USER, (np.ones(2), np.eye(2))], {}, ValueError, "the same for every user"),
        ([(np.ones(1), np.eye(1))], {}, ValueError, "d >= 1"),
        ([(np.ones(3), np.eye(3) * math.nan)], {}, ValueError, "finite"),
        ([(np.ones(3), np.triu(np.ones((3, 3))))], {}, ValueError, "symmetric"),
        ([(np.ones(3), -np.eye(3))], {}, ValueError, "positive semi-definite"),
        ([(np.zeros(3), np.zeros((3, 3)))], {}, ValueError, "no user has ratings"),
        ([_GOOD_USER], {"epsilon": math.inf}, ValueError, "finite"),
        ([_GOOD_USER], {"epsilon": 0.0}, ValueError, "epsilon"),
        ([_GOOD_USER], {"delta": 0.0}, ValueError, "delta must be > 0"),
        ([_GOOD_USER], {"delta": 1.0}, ValueError, "delta"),
        ([_GOOD_USER], {"rng": 0}, TypeError, "numpy.random.Generator"),
        ([_GOOD_USER], {"n_personas": 0}, ValueError, "n_personas"),
        ([_GOOD_USER], {"rank": 1.5}, ValueError, "rank"),
        ([_GOOD_USER], {"steps": True}, ValueError, "steps"),
        ([_GOOD_USER], {"sample_rate": 0.3}, ValueError, "1 / m"),
        ([_GOOD_USER], {"sample_rate": 1.5}, ValueError, "sample_rate"),
        ([_GOOD_USER], {"max_grad_norm": 0.0}, ValueError, "max_grad_norm"),
        ([_GOOD_USER], {"learning_rate": math.nan}, ValueError, "learning_rate"),
    ],
)
def test_fit_rejects_bad_input(users: object, kwargs: dict[str, object], error: type[Exception], message: str) -> None:
    arguments: dict[str, object] = {"epsilon": 1.0, "delta": 1e-5, "rng": np.random.default_rng(0), **kwargs}
    with pytest.raises(error, match=message):
        fit_population(users, **arguments)  # type: ignore[arg-type]


# --- the training objective ----------------------------------------------------------------------


def _mixture(dim: int, seed: int) -> MixtureLikelihood:
    """A mixture with non-trivial parameters (the public starting point is too symmetric)."""
    rng = np.random.default_rng(seed)
    initial = initial_parameters(3, dim, 2)
    initial["means"] = 0.5 * rng.standard_normal(initial["means"].shape)
    initial["logits"] = rng.standard_normal(3)
    initial["factor"] = 0.4 * rng.standard_normal(initial["factor"].shape)
    initial["log_scale"] = np.log(0.3 + rng.random(dim + 1))
    return MixtureLikelihood(initial)


@pytest.mark.parametrize("singular", [False, True])
def test_loss_is_the_exact_marginal_likelihood(singular: bool) -> None:
    """-log sum_k pi_k int exp(h.theta - theta^T H theta / 2) N(theta; mu_k, C) dtheta, on a grid (d = 1).

    The integrand is smooth and decays like a Gaussian, so the trapezoidal rule on a fine grid is
    accurate far beyond the tolerance.
    """
    module = _mixture(1, seed=9)
    rng = np.random.default_rng(10)
    A = rng.standard_normal((2, 1 if singular else 2))
    H = A @ A.T
    h = H @ rng.standard_normal(2) if singular else rng.standard_normal(2)
    with torch.no_grad():
        loss = float(module(torch.as_tensor(h[None]), torch.as_tensor(H[None]))[0])
        weights = torch.softmax(module.logits, 0).numpy()
        means, C = module.means.numpy(), module.covariance().numpy()
    axis = np.linspace(-12.0, 12.0, 1201)
    theta = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1)
    density = sum(w * multivariate_normal(m, C).pdf(theta) for w, m in zip(weights, means, strict=True))
    integrand = np.exp(theta @ h - 0.5 * np.einsum("...i,ij,...j->...", theta, H, theta)) * density
    value = integrate.trapezoid(integrate.trapezoid(integrand, axis, axis=1), axis)
    assert loss == pytest.approx(-math.log(value), abs=1e-9)


def test_closed_form_per_user_gradients_are_the_autograd_gradients() -> None:
    """The registered grad sampler against torch's own gradient of each user's loss, singular H included."""
    dim, n = 4, 6
    module = _mixture(dim, seed=11)
    rng = np.random.default_rng(12)
    A = rng.standard_normal((n, dim + 1, 3))  # rank 3 < 5: every H is singular
    H = torch.as_tensor(A @ A.transpose(0, 2, 1))
    h = torch.as_tensor(rng.standard_normal((n, dim + 1)))
    scale = torch.as_tensor(rng.random(n))
    per_user = _per_user_gradients(module, [h, H], scale)
    for u in range(n):
        module.zero_grad()
        (scale[u] * module(h[u : u + 1], H[u : u + 1])).sum().backward()
        for parameter in module.parameters():
            assert torch.allclose(per_user[parameter][u], parameter.grad, atol=1e-12, rtol=1e-10)


# --- the posterior a user gets -------------------------------------------------------------------


def _model(**overrides: object) -> PopulationModel:
    """Two personas in d = 2 that prefer opposite directions of the first latent axis."""
    fields: dict[str, object] = {
        "means": np.array([[1.5, 0.0, 0.3], [-1.5, 0.5, -0.2]]),
        "weights": np.array([0.7, 0.3]),
        "factor": np.array([[0.3], [0.1], [0.0]]),
        "diagonal": np.array([0.05, 0.08, 0.5]),
        "guarantee": Guarantee(1.0, 1e-5, ADD_REMOVE_USER, "dpsgd"),
        "accounting": {"noise_multiplier": 1.2, "sample_rate": 0.05, "steps": 300, "max_grad_norm": 1.0, "n_users": 50},
    }
    fields.update(overrides)
    return PopulationModel(**fields)  # type: ignore[arg-type]


def test_persona_prior_is_the_persona_exactly() -> None:
    model = _model()
    for k in range(2):
        prior = model.persona_prior(k)
        assert np.array_equal(prior.mean_vector(), model.means[k])
        assert np.allclose(prior.covariance(), model.covariance(), rtol=0, atol=1e-15)


def test_prior_is_the_moment_matched_mixture() -> None:
    model = _model()
    mean = model.weights @ model.means
    spread = model.means - mean
    covariance = model.covariance() + (spread.T * model.weights) @ spread
    prior = model.prior()
    assert np.allclose(prior.mean_vector(), mean)
    assert np.allclose(prior.cov, covariance[:-1, :-1])
    assert prior.intercept_variance == pytest.approx(covariance[-1, -1])


def test_posterior_without_ratings_is_the_prior_mixture() -> None:
    model = _model()
    result = model.posterior(np.zeros((0, 2)), np.zeros(0, dtype=bool), flip_probability=0.1)
    assert np.allclose(result.responsibilities, model.weights, rtol=1e-12)
    assert all(isinstance(c, Posterior) for c in result.components)
    mean = model.weights @ model.means
    spread = model.means - mean
    assert np.allclose(result.posterior.mean, mean)
    assert np.allclose(result.posterior.covariance, model.covariance() + (spread.T * model.weights) @ spread)
    assert result.posterior.log_evidence == pytest.approx(0.0, abs=1e-12)


def test_posterior_is_the_moment_matched_mixture_of_the_persona_posteriors() -> None:
    model = _model()
    rng = np.random.default_rng(13)
    r = rate(np.array([-1.0, 0.5, 0.0]), 12, epsilon=1.0, rng=rng)
    result = model.posterior(r.Z, r.stored, flip_probability=r.flip_probability)
    expected = [
        fit_posterior(r.Z, r.stored, flip_probability=r.flip_probability, prior=model.persona_prior(k))
        for k in range(2)
    ]
    log_joint = np.log(model.weights) + [e.log_evidence for e in expected]
    responsibilities = np.exp(log_joint - logsumexp(log_joint))
    assert np.allclose(result.responsibilities, responsibilities)
    mean = sum(p * e.mean for p, e in zip(responsibilities, expected, strict=True))
    covariance = sum(
        p * (e.covariance + np.outer(e.mean - mean, e.mean - mean))
        for p, e in zip(responsibilities, expected, strict=True)
    )
    assert np.allclose(result.posterior.mean, mean)
    assert np.allclose(result.posterior.covariance, covariance)
    assert result.posterior.log_evidence == pytest.approx(logsumexp(log_joint))
    for component, e in zip(result.components, expected, strict=True):
        assert np.allclose(component.mean, e.mean)


def test_ratings_move_a_user_to_their_persona() -> None:
    """A user of the lighter persona (30 %) is recognised from 40 ratings stored at eps 1."""
    model = _model()
    rng = np.random.default_rng(14)
    recognised = 0
    for _ in range(20):
        theta = model.means[1] + 0.2 * rng.standard_normal(3)
        r = rate(theta, 40, epsilon=1.0, rng=rng)
        recognised += model.posterior(r.Z, r.stored, flip_probability=r.flip_probability).dominant == 1
    assert recognised >= 18


def test_posterior_passes_weights_and_public_negatives_through() -> None:
    model = _model()
    rng = np.random.default_rng(15)
    r = rate(np.array([1.0, 0.0, 0.0]), 10, epsilon=1.0, rng=rng)
    negatives = np.array([[2.5, 0.0], [2.0, 1.0]])
    weights = np.linspace(0.2, 1.0, 10)
    result = model.posterior(
        r.Z, r.stored, flip_probability=r.flip_probability, weights=weights, public_negatives=negatives
    )
    expected = fit_posterior(
        r.Z,
        r.stored,
        flip_probability=r.flip_probability,
        prior=model.persona_prior(0),
        weights=weights,
        public_negatives=negatives,
    )
    assert np.allclose(result.components[0].mean, expected.mean)
    only_negatives = model.posterior(
        np.zeros((0, 2)), np.zeros(0, dtype=bool), flip_probability=0.1, public_negatives=negatives
    )
    clean_passes = fit_posterior(negatives, [0, 0], flip_probability=0.0, prior=model.persona_prior(1))
    assert np.allclose(only_negatives.components[1].mean, clean_passes.mean)


def test_public_negatives_constrain_the_personas_without_weighing_them() -> None:
    """The personas are weighed by p(labels | k, negatives) = p(labels, negatives | k) / p(negatives | k)."""
    model = _model()
    rng = np.random.default_rng(16)
    r = rate(model.means[1], 20, epsilon=1.0, rng=rng)
    negatives = np.array([[2.5, 0.0]])
    result = model.posterior(r.Z, r.stored, flip_probability=r.flip_probability, public_negatives=negatives)
    priors = [model.persona_prior(k) for k in range(model.n_personas)]
    joint = [
        fit_posterior(r.Z, r.stored, flip_probability=r.flip_probability, prior=p, public_negatives=negatives).log_evidence
        for p in priors
    ]
    alone = [fit_posterior(negatives, [0], flip_probability=0.0, prior=p).log_evidence for p in priors]
    log_joint = np.log(model.weights) + np.subtract(joint, alone)
    np.testing.assert_allclose(result.responsibilities, np.exp(log_joint - logsumexp(log_joint)), rtol=1e-9)
    assert result.posterior.log_evidence == pytest.approx(logsumexp(log_joint))
    before = model.posterior(np.zeros((0, 2)), np.zeros(0, dtype=bool), flip_probability=0.1, public_negatives=negatives)
    np.testing.assert_allclose(before.responsibilities, model.weights, rtol=1e-12)


@pytest.mark.parametrize(
    ("Z", "y", "kwargs", "message"),
    [
        (np.zeros((3, 3)), np.zeros(3), {}, r"Z must have shape \(n, 2\)"),
        (np.zeros(2), np.zeros(1), {}, r"Z must have shape \(n, 2\)"),
        (np.zeros((0, 2)), np.zeros(1), {}, "y_private"),
        (np.zeros((0, 2)), np.zeros(0), {"flip_probability": [0.1]}, "flip_probability"),
        (np.zeros((0, 2)), np.zeros(0), {"weights": [1.0]}, "weights"),
        (np.zeros((0, 2)), np.zeros(0), {"public_negatives": np.zeros((0, 2))}, "public_negatives"),
        (np.zeros((2, 2)), np.zeros(3), {}, "y_private"),
    ],
)
def test_posterior_rejects_bad_input(Z: np.ndarray, y: np.ndarray, kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"flip_probability": 0.1, **kwargs}
    with pytest.raises(ValueError, match=message):
        _model().posterior(Z, y, **arguments)  # type: ignore[arg-type]


# --- state and validation ------------------------------------------------------------------------


def test_state_round_trips_exactly_through_json(fitted: PopulationModel) -> None:
    state = json.loads(json.dumps(fitted.to_state()))
    restored = PopulationModel.from_state(state)
    for name in ("means", "weights", "factor", "diagonal"):
        assert np.array_equal(getattr(restored, name), getattr(fitted, name))
    assert restored.guarantee == fitted.guarantee
    assert restored.accounting == fitted.accounting
    assert restored.to_state() == fitted.to_state()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.update(version=2),
        lambda s: s.pop("means"),
        lambda s: s.update(means="x"),
        lambda s: s["guarantee"].pop("delta"),
        lambda s: s["accounting"].pop("steps"),
    ],
)
def test_state_is_validated(mutate: object) -> None:
    state = _model().to_state()
    mutate(state)  # type: ignore[operator]
    with pytest.raises(ValueError):
        PopulationModel.from_state(state)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"means": np.zeros((2, 1))}, "d >= 1"),
        ({"means": np.full((2, 3), math.nan)}, "finite"),
        ({"weights": np.array([0.7, 0.4])}, "sum to 1"),
        ({"weights": np.array([1.0, 0.0])}, "> 0"),
        ({"weights": np.array([1.0])}, "weights must have shape"),
        ({"factor": np.array([[0.3], [0.1], [0.2]])}, "last row"),
        ({"factor": np.zeros((2, 1))}, "factor must have shape"),
        ({"diagonal": np.array([0.1, 0.0, 0.1])}, "> 0"),
        ({"guarantee": Guarantee(1.0, 1e-5, ADD_REMOVE_ONE, "dpsgd")}, ADD_REMOVE_USER),
        ({"accounting": {"noise_multiplier": 1.0}}, "keys"),
        (
            {"accounting": dict.fromkeys(ACCOUNTING_KEYS, 1) | {"sample_rate": 2.0}},
            "sample_rate",
        ),
        ({"accounting": dict.fromkeys(ACCOUNTING_KEYS, 1) | {"n_users": 0}}, "n_users"),
        ({"accounting": dict.fromkeys(ACCOUNTING_KEYS, 1) | {"noise_multiplier": math.inf}}, "noise_multiplier"),
    ],
)
def test_model_rejects_bad_fields(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _model(**overrides)


def test_persona_prior_rejects_a_bad_index() -> None:
    with pytest.raises(ValueError, match="k must be"):
        _model().persona_prior(2)


# --- the population ledger -----------------------------------------------------------------------


def test_population_epsilon_composes_releases_in_rdp() -> None:
    release = _model().accounting
    one = population_epsilon([release], delta=1e-5)
    accountant = RDPAccountant()
    accountant.step(noise_multiplier=1.2, sample_rate=0.05, steps=300)
    assert one == accountant.get_epsilon(1e-5)
    two = population_epsilon([release, release], delta=1e-5)
    assert one < two < 2 * one  # RDP composition is tighter than adding epsilons
    assert population_epsilon([], delta=1e-5) == 0.0


@pytest.mark.parametrize(
    ("releases", "delta"),
    [([{"noise_multiplier": 1.0}], 1e-5), ([_model().accounting], 0.0), ([_model().accounting], 1.0)],
)
def test_population_epsilon_rejects_bad_input(releases: list[dict[str, object]], delta: float) -> None:
    with pytest.raises(ValueError):
        population_epsilon(releases, delta=delta)
