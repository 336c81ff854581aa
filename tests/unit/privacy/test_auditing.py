"""Empirical auditing: exact Clopper-Pearson intervals and valid, powerful epsilon lower bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from privacy.auditing import clopper_pearson, epsilon_lower_bound


def test_clopper_pearson_known_values() -> None:
    low, high = clopper_pearson(5, 10, alpha=0.05)
    assert low == pytest.approx(0.18708602844739855, abs=1e-12)
    assert high == pytest.approx(0.8129139715526015, abs=1e-12)


def test_clopper_pearson_edges_are_closed_form() -> None:
    n, alpha = 10, 0.05
    assert clopper_pearson(0, n, alpha=alpha) == (0.0, pytest.approx(1 - (alpha / 2) ** (1 / n)))
    assert clopper_pearson(n, n, alpha=alpha) == (pytest.approx((alpha / 2) ** (1 / n)), 1.0)


def test_clopper_pearson_covers_at_least_its_level() -> None:
    rng = np.random.default_rng(0)
    p, n, trials = 0.3, 40, 2000
    covered = sum(
        low <= p <= high
        for low, high in (clopper_pearson(int(rng.binomial(n, p)), n, alpha=0.1) for _ in range(trials))
    )
    assert covered / trials >= 0.9


@pytest.mark.parametrize(
    ("k", "n", "alpha"),
    [(-1, 10, 0.05), (11, 10, 0.05), (1, 0, 0.05), (1, 10, 0.0), (1, 10, 1.0), (1.5, 10, 0.05)],
)
def test_clopper_pearson_rejects_bad_input(k: int, n: int, alpha: float) -> None:
    with pytest.raises(ValueError):
        clopper_pearson(k, n, alpha=alpha)


def _randomized_response_scores(epsilon: float, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The released bit of a canary under randomized response, in both worlds."""
    p = 1.0 / (1.0 + math.exp(epsilon))
    return (rng.random(n) >= p).astype(float), (rng.random(n) < p).astype(float)


def test_bound_approaches_the_true_epsilon_of_randomized_response() -> None:
    scores_in, scores_out = _randomized_response_scores(1.0, 40_000, np.random.default_rng(0))
    assert 0.9 < epsilon_lower_bound(scores_in, scores_out) <= 1.0


def test_bound_is_valid_at_its_confidence_level() -> None:
    rng = np.random.default_rng(1)
    bounds = [epsilon_lower_bound(*_randomized_response_scores(1.0, 400, rng), alpha=0.05) for _ in range(300)]
    assert np.mean(np.array(bounds) > 1.0) <= 0.05
    assert np.mean(bounds) > 0.3  # and still informative at this sample size


def test_identical_distributions_give_no_evidence() -> None:
    rng = np.random.default_rng(2)
    assert epsilon_lower_bound(rng.normal(size=2000), rng.normal(size=2000)) < 0.15


def test_bound_finds_the_leak_in_either_direction_and_tail() -> None:
    rng = np.random.default_rng(3)
    shifted, plain = rng.normal(3.0, 1.0, size=2000), rng.normal(0.0, 1.0, size=2000)
    assert epsilon_lower_bound(shifted, plain) > 2.0
    assert epsilon_lower_bound(plain, shifted) > 2.0
    assert epsilon_lower_bound(-shifted, -plain) > 2.0


def test_perfect_separation_is_limited_only_by_the_sample_size() -> None:
    n, alpha = 1000, 0.05
    bound = epsilon_lower_bound(np.full(n, math.inf), np.zeros(n), alpha=alpha)
    half = n // 2
    assert bound == pytest.approx(math.log((alpha / 2) ** (1 / half) / (1 - (alpha / 2) ** (1 / half))), rel=1e-9)


def test_delta_lowers_the_bound() -> None:
    scores_in, scores_out = _randomized_response_scores(2.0, 20_000, np.random.default_rng(4))
    assert epsilon_lower_bound(scores_in, scores_out, delta=0.05) < epsilon_lower_bound(scores_in, scores_out)


@pytest.mark.parametrize(
    ("scores_in", "scores_out", "kwargs"),
    [
        ([0.0], [0.0, 1.0], {}),
        ([[0.0, 1.0]], [0.0, 1.0], {}),
        ([0.0, math.nan], [0.0, 1.0], {}),
        ([0.0, 1.0], [0.0, 1.0], {"alpha": 0.0}),
        ([0.0, 1.0], [0.0, 1.0], {"delta": 1.0}),
    ],
)
def test_epsilon_lower_bound_rejects_bad_input(
    scores_in: list[float], scores_out: list[float], kwargs: dict[str, float]
) -> None:
    with pytest.raises(ValueError):
        epsilon_lower_bound(scores_in, scores_out, **kwargs)
