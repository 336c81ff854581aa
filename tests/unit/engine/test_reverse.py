"""Tests for reverse classification, the faces a model scores at a given level (engine.reverse)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import expit, logit

from engine.latent.base import PRIOR_BOUND, LatentSpace
from engine.reverse import MAX_IDEAL, IdealLatents, ideal_latents
from tests.support.latent import Linear, min_pairwise_distance
from tests.support.latent import axis, space, space_name  # fixtures, found by name

TOP_LEVEL = 0.9


def _neutral_model(rng: np.random.Generator, dim: int, axis: int, *, scale: float, intercept: float) -> Linear:
    """A model that ignores the safety coordinate, so the safety rule cannot block any level."""
    coef = rng.standard_normal(dim)
    coef[axis] = 0.0
    return Linear(coef=scale * coef / np.linalg.norm(coef), intercept=intercept)


def _young_loving_model(
    rng: np.random.Generator, dim: int, axis: int, *, toward: float, scale: float, intercept: float
) -> Linear:
    """A model whose direction mixes a random one with ``-e_axis`` (towards young faces)."""
    direction = rng.standard_normal(dim)
    direction *= (1.0 - toward) / np.linalg.norm(direction)
    direction[axis] -= toward
    return Linear(coef=scale * direction / np.linalg.norm(direction), intercept=intercept)


def _reach(model: Linear) -> float:
    """Half-width of the reachable logit range around the intercept."""
    return TOP_LEVEL * PRIOR_BOUND * float(np.abs(model.coef).sum())


def _safe_prior_probabilities(space: LatentSpace, model: Linear, rng: np.random.Generator) -> np.ndarray:
    z = space.sample(4000, rng)
    z = z[~space.in_safety_region(z)]
    return expit(z @ model.coef + model.intercept)


def _check_valid(space: LatentSpace, result: IdealLatents, n: int, model: Linear) -> None:
    z = result.latents
    assert isinstance(result, IdealLatents)
    assert z.shape == (n, space.dim) and result.probabilities.shape == (n,)
    assert not space.in_safety_region(z).any()
    np.testing.assert_array_equal(space.project(z), z)
    assert np.unique(z, axis=0).shape[0] == n
    np.testing.assert_allclose(result.probabilities, expit(z @ model.coef + model.intercept), rtol=1e-12)
    assert 0.0 <= result.target <= 1.0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, MAX_IDEAL),
    scale=st.floats(0.05, 1.5),
    intercept=st.floats(-3.0, 3.0),
    position=st.floats(-0.95, 0.95),
)
def test_reachable_levels_are_hit(
    space: LatentSpace, axis: int, seed: int, n: int, scale: float, intercept: float, position: float
) -> None:
    rng = np.random.default_rng(seed)
    model = _neutral_model(rng, space.dim, axis, scale=scale, intercept=intercept)
    score = float(expit(intercept + position * _reach(model)))  # logit at most ~22: not saturated
    result = ideal_latents(space, model, n=n, score=score, rng=rng)
    _check_valid(space, result, n, model)
    assert result.target == pytest.approx(score, rel=1e-12)
    np.testing.assert_allclose(logit(result.probabilities), logit(score), atol=1e-6)


def test_levels_from_point_one_to_point_nine_are_ordered(space: LatentSpace, axis: int) -> None:
    rng = np.random.default_rng(1)
    model = _neutral_model(rng, space.dim, axis, scale=1.0, intercept=0.3)
    scores = [0.1, 0.3, 0.5, 0.7, 0.9]
    results = [ideal_latents(space, model, n=8, score=s, rng=rng) for s in scores]
    for s, r in zip(scores, results):
        _check_valid(space, r, 8, model)
        np.testing.assert_allclose(r.probabilities, s, atol=1e-6)
    for lower, upper in zip(results, results[1:]):
        assert lower.probabilities.max() < upper.probabilities.min()
    # The faces move along the preference direction as the level rises.
    positions = [float((r.latents @ model.coef).mean()) for r in results]
    assert all(a < b for a, b in zip(positions, positions[1:]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), scale=st.floats(0.05, 1.5), intercept=st.floats(-3.0, 3.0))
def test_top_mode_beats_random_prior_faces(
    space: LatentSpace, axis: int, seed: int, scale: float, intercept: float
) -> None:
    rng = np.random.default_rng(seed)
    model = _neutral_model(rng, space.dim, axis, scale=scale, intercept=intercept)
    result = ideal_latents(space, model, n=8, rng=rng)
    _check_valid(space, result, 8, model)
    assert result.target == pytest.approx(float(expit(intercept + _reach(model))), rel=1e-12)
    np.testing.assert_allclose(logit(result.probabilities), logit(result.target), atol=1e-6)
    assert result.probabilities.min() > np.quantile(_safe_prior_probabilities(space, model, rng), 0.99)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, MAX_IDEAL),
    toward=st.floats(0.3, 1.0),
    scale=st.floats(0.2, 40.0),
    intercept=st.floats(-4.0, 4.0),
    score=st.one_of(st.none(), st.floats(0.001, 0.999)),
)
def test_never_in_the_safety_region_even_when_the_model_wants_it(
    space: LatentSpace,
    axis: int,
    seed: int,
    n: int,
    toward: float,
    scale: float,
    intercept: float,
    score: float | None,
) -> None:
    rng = np.random.default_rng(seed)
    model = _young_loving_model(rng, space.dim, axis, toward=toward, scale=scale, intercept=intercept)
    result = ideal_latents(space, model, n=n, score=score, rng=rng)
    _check_valid(space, result, n, model)


def test_blocked_top_is_reported_and_sits_at_the_safety_boundary(space: LatentSpace, axis: int) -> None:
    rng = np.random.default_rng(2)
    model = _young_loving_model(rng, space.dim, axis, toward=0.8, scale=3.0, intercept=0.0)
    result = ideal_latents(space, model, n=8, rng=rng)
    _check_valid(space, result, 8, model)
    assert np.all(result.probabilities < result.target)  # honest: the top was not reached
    young = space.project(result.latents - 1e-6 * np.eye(space.dim)[axis])
    assert space.in_safety_region(young).all()  # a hair younger would be unsafe: as far as allowed
    assert result.probabilities.min() > np.quantile(_safe_prior_probabilities(space, model, rng), 0.99)


def test_unreachable_levels_give_the_closest_reachable_level(space: LatentSpace, axis: int) -> None:
    rng = np.random.default_rng(3)
    model = _neutral_model(rng, space.dim, axis, scale=0.05, intercept=0.2)
    high = ideal_latents(space, model, n=6, score=0.999, rng=rng)
    low = ideal_latents(space, model, n=6, score=0.001, rng=rng)
    for result, sign in ((high, 1.0), (low, -1.0)):
        _check_valid(space, result, 6, model)
        assert result.target == pytest.approx(float(expit(0.2 + sign * _reach(model))), rel=1e-12)
        np.testing.assert_allclose(result.probabilities, result.target, atol=1e-9)
    assert high.target < 0.999 and low.target > 0.001
    prior = _safe_prior_probabilities(space, model, rng)
    assert high.probabilities.min() > prior.max() and low.probabilities.max() < prior.min()


def test_zero_direction_gives_diverse_faces_at_the_intercept(space: LatentSpace) -> None:
    model = Linear(coef=np.zeros(space.dim), intercept=-0.7)
    result = ideal_latents(space, model, n=10, score=0.9, rng=np.random.default_rng(4))
    _check_valid(space, result, 10, model)
    np.testing.assert_allclose(result.probabilities, expit(-0.7))
    assert result.target == pytest.approx(float(expit(-0.7)))


def test_faces_are_more_spread_out_than_random_prior_faces(space: LatentSpace, axis: int) -> None:
    rng = np.random.default_rng(5)
    found, baseline = [], []
    for _ in range(10):
        model = _neutral_model(rng, space.dim, axis, scale=1.0, intercept=0.0)
        found.append(min_pairwise_distance(ideal_latents(space, model, n=8, score=0.6, rng=rng).latents))
        prior = space.sample(512, rng)
        prior = prior[~space.in_safety_region(prior)]
        baseline.append(min_pairwise_distance(prior[rng.choice(prior.shape[0], 8, replace=False)]))
    assert np.median(found) > 1.2 * np.median(baseline)


def test_same_rng_state_gives_the_same_faces(space: LatentSpace, axis: int) -> None:
    model = _neutral_model(np.random.default_rng(6), space.dim, axis, scale=1.0, intercept=0.0)
    a, b = (ideal_latents(space, model, n=5, score=0.7, rng=np.random.default_rng(9)) for _ in range(2))
    np.testing.assert_array_equal(a.latents, b.latents)
    with pytest.raises(ValueError):
        a.latents[0, 0] = 0.0
    with pytest.raises(ValueError):
        a.probabilities[0] = 0.0


def test_missing_model_is_refused(space: LatentSpace) -> None:
    with pytest.raises(ValueError, match="model is required"):
        ideal_latents(space, None, rng=np.random.default_rng(0))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"n": 0}, "n must"),
        ({"n": MAX_IDEAL + 1}, "n must"),
        ({"n": True}, "n must"),
        ({"score": 0.0}, "score"),
        ({"score": 1.0}, "score"),
        ({"score": float("nan")}, "score"),
        ({"score": "0.5"}, "score"),
        ({"pool_size": 10}, "pool_size"),
        ({"top_level": 1.0}, "top_level"),
        ({"rng": 0}, "rng"),
    ],
)
def test_bad_options_are_rejected(space: LatentSpace, override: dict, message: str) -> None:
    model = Linear(coef=np.ones(space.dim), intercept=0.0)
    options = {"n": 4, "score": 0.5, "rng": np.random.default_rng(0), **override}
    with pytest.raises(ValueError, match=message):
        ideal_latents(space, model, **options)


def test_model_of_the_wrong_dimension_is_rejected(space: LatentSpace) -> None:
    with pytest.raises(ValueError, match="model.coef"):
        ideal_latents(space, Linear(np.ones(space.dim - 1), 0.0), rng=np.random.default_rng(0))
