"""Privacy mechanisms: pinned parameters, the exact flip rule, the noise law, input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from privacy.mechanisms import (
    ADD_REMOVE_ONE,
    ADD_REMOVE_USER,
    LABEL_CHANGE,
    NEIGHBOURING_RELATIONS,
    REPLACE_ONE,
    Guarantee,
    RandomizedResponse,
    objective_perturbation,
    uniform_from_bytes,
)

# --- Guarantee ---------------------------------------------------------------------------------


def test_guarantee_describes_the_bound_in_one_sentence() -> None:
    text = Guarantee(epsilon=2.0, delta=0.0, neighbouring=LABEL_CHANGE, mechanism="randomized_response").describe()
    assert text == (
        "Changing your answer to any single face changes the probability of anything we store or "
        "release by at most a factor e^2 (about 7.39)."
    )


def test_guarantee_mentions_delta_and_the_relation() -> None:
    text = Guarantee(epsilon=1.0, delta=1e-5, neighbouring=ADD_REMOVE_ONE, mechanism="dpsgd").describe()
    assert text.startswith("Adding or removing any single rating")
    assert text.endswith("except with probability at most 1e-05.")


def test_non_private_guarantee_says_so() -> None:
    g = Guarantee(epsilon=math.inf, delta=0.0, neighbouring=LABEL_CHANGE, mechanism="none")
    assert not g.is_private
    assert "no differential-privacy guarantee" in g.describe()


def test_neighbouring_relations_are_the_four_documented_ones() -> None:
    assert NEIGHBOURING_RELATIONS == (LABEL_CHANGE, REPLACE_ONE, ADD_REMOVE_ONE, ADD_REMOVE_USER)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"epsilon": -0.1}, ValueError),
        ({"epsilon": math.nan}, ValueError),
        ({"epsilon": True}, TypeError),
        ({"epsilon": "1"}, TypeError),
        ({"delta": 1.0}, ValueError),
        ({"delta": -1e-9}, ValueError),
        ({"neighbouring": "one-user"}, ValueError),
        ({"mechanism": ""}, ValueError),
    ],
)
def test_guarantee_rejects_bad_values(kwargs: dict[str, object], error: type[Exception]) -> None:
    base: dict[str, object] = {"epsilon": 1.0, "delta": 0.0, "neighbouring": LABEL_CHANGE, "mechanism": "rr"}
    with pytest.raises(error):
        Guarantee(**{**base, **kwargs})  # type: ignore[arg-type]


# --- randomized response -----------------------------------------------------------------------


def test_flip_probability_is_pinned() -> None:
    assert RandomizedResponse(epsilon=1.0).flip_probability == pytest.approx(0.2689414213699951, abs=1e-16)
    assert RandomizedResponse(epsilon=2.0).flip_probability == pytest.approx(0.11920292202211755, abs=1e-16)
    assert RandomizedResponse(epsilon=math.inf).flip_probability == 0.0


@pytest.mark.parametrize("epsilon", [0.1, 0.5, 1.0, 2.0, 4.0, 8.0, 30.0])
def test_likelihood_ratio_is_exactly_e_to_the_epsilon(epsilon: float) -> None:
    p = RandomizedResponse(epsilon=epsilon).flip_probability
    assert math.log((1.0 - p) / p) == pytest.approx(epsilon, rel=1e-12)


def test_guarantee_of_randomized_response() -> None:
    assert RandomizedResponse(epsilon=2.0).guarantee == Guarantee(
        epsilon=2.0, delta=0.0, neighbouring=LABEL_CHANGE, mechanism="randomized_response"
    )


@pytest.mark.parametrize("epsilon", [0.0, -1.0, math.nan, -math.inf])
def test_randomized_response_rejects_non_positive_epsilon(epsilon: float) -> None:
    with pytest.raises(ValueError, match="epsilon"):
        RandomizedResponse(epsilon=epsilon)


def test_randomized_response_rejects_non_numbers() -> None:
    with pytest.raises(TypeError, match="epsilon"):
        RandomizedResponse(epsilon="2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="epsilon"):
        RandomizedResponse(epsilon=True)


def test_flips_exactly_where_the_uniform_is_below_the_flip_probability() -> None:
    rr = RandomizedResponse(epsilon=1.0)
    p = rr.flip_probability
    uniforms = np.array([0.0, np.nextafter(p, 0.0), p, 0.5, 0.9999])
    labels = np.array([True, False, True, False, True])
    assert rr.privatise(labels, uniforms).tolist() == [False, True, True, False, True]
    assert rr.privatise(labels.astype(int), uniforms).dtype == np.bool_


def test_empirical_flip_rate_matches() -> None:
    rr = RandomizedResponse(epsilon=1.0)
    n = 200_000
    flipped = rr.privatise(np.zeros(n, dtype=bool), np.random.default_rng(0).random(n))
    p = rr.flip_probability
    assert abs(flipped.mean() - p) < 4.0 * math.sqrt(p * (1.0 - p) / n)


@given(
    st.lists(st.tuples(st.booleans(), st.floats(min_value=0.0, max_value=1.0, exclude_max=True)), max_size=40),
    st.floats(min_value=0.01, max_value=20.0),
)
def test_rerating_with_the_same_uniform_is_stable_and_a_changed_answer_flips_the_bit(
    pairs: list[tuple[bool, float]], epsilon: float
) -> None:
    rr = RandomizedResponse(epsilon=epsilon)
    labels = np.array([label for label, _ in pairs], dtype=bool)
    uniforms = np.array([u for _, u in pairs], dtype=np.float64)
    stored = rr.privatise(labels, uniforms)
    assert np.array_equal(rr.privatise(labels, uniforms), stored)
    assert np.array_equal(rr.privatise(~labels, uniforms), ~stored)


def test_privatise_one_agrees_with_privatise() -> None:
    rr = RandomizedResponse(epsilon=2.0)
    assert rr.privatise_one(True, 0.05) is False
    assert rr.privatise_one(True, 0.5) is True


@pytest.mark.parametrize(
    ("labels", "uniforms", "message"),
    [
        ([1, 0], [0.1], "shape"),
        ([[1, 0]], [[0.1, 0.2]], "shape"),
        ([1, 2], [0.1, 0.2], "0/1"),
        (["a", "b"], [0.1, 0.2], "0/1"),
        ([1, 0], [0.1, 1.0], r"\[0, 1\)"),
        ([1, 0], [-0.1, 0.5], r"\[0, 1\)"),
        ([1, 0], [math.nan, 0.5], r"\[0, 1\)"),
    ],
)
def test_privatise_rejects_bad_input(labels: list[object], uniforms: list[object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RandomizedResponse(epsilon=1.0).privatise(np.array(labels), np.array(uniforms))


def test_uniform_from_bytes_uses_the_top_53_bits() -> None:
    assert uniform_from_bytes(bytes(32)) == 0.0
    assert uniform_from_bytes(b"\x80" + bytes(31)) == 0.5
    assert uniform_from_bytes(b"\xff" * 32) == (2**53 - 1) / 2**53
    assert uniform_from_bytes(b"\x00" * 6 + b"\x08\x00") == 1 / 2**53
    assert uniform_from_bytes(b"\x00" * 6 + b"\x07\xff") == 0.0


@given(st.binary(min_size=8, max_size=64))
def test_uniform_from_bytes_is_in_the_unit_interval(data: bytes) -> None:
    assert 0.0 <= uniform_from_bytes(data) < 1.0


def test_uniform_from_bytes_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="8 bytes"):
        uniform_from_bytes(b"\x01" * 7)
    with pytest.raises(TypeError, match="bytes"):
        uniform_from_bytes("0123456789")  # type: ignore[arg-type]


# --- objective perturbation --------------------------------------------------------------------


def test_objective_perturbation_parameters_are_pinned() -> None:
    plain = objective_perturbation.perturbation_parameters(epsilon=1.0, n=100, l2=0.01)
    # eps' = 1 - log(1 + 2 * 0.25 + 0.25^2) = 1 - log(1.5625)
    assert plain.epsilon_prime == pytest.approx(0.5537128973715805, abs=1e-15)
    assert plain.extra_l2 == 0.0
    assert plain.total_l2 == 0.01

    forced = objective_perturbation.perturbation_parameters(epsilon=1.0, n=100, l2=0.001)
    # eps' = 1 - log(1 + 5 + 6.25) < 0, so Delta = 0.25 / (100 (e^(1/4) - 1)) - 0.001, eps' = 1/2
    assert forced.epsilon_prime == 0.5
    assert forced.extra_l2 == pytest.approx(0.007802029160469495, abs=1e-15)
    assert forced.total_l2 == pytest.approx(0.25 / (100 * math.expm1(0.25)), rel=1e-12)


def test_objective_perturbation_with_a_large_sample_spends_almost_all_epsilon_on_noise() -> None:
    params = objective_perturbation.perturbation_parameters(epsilon=1.0, n=1_000_000, l2=0.01)
    assert params.extra_l2 == 0.0
    assert 0.9999 < params.epsilon_prime < 1.0


@pytest.mark.parametrize(("share", "epsilon", "n"), [(0.5, 1.0, 50), (0.9, 1.0, 50), (0.9, 4.0, 5000), (0.7, 0.3, 7)])
def test_l2_for_noise_share_gives_that_share(share: float, epsilon: float, n: int) -> None:
    l2 = objective_perturbation.l2_for_noise_share(epsilon=epsilon, n=n, noise_share=share)
    params = objective_perturbation.perturbation_parameters(epsilon=epsilon, n=n, l2=l2 * (1 + 1e-9))
    assert params.extra_l2 == 0.0
    assert params.epsilon_prime == pytest.approx(share * epsilon, rel=1e-6)


def test_l2_for_noise_share_is_pinned() -> None:
    assert objective_perturbation.l2_for_noise_share(epsilon=1.0, n=50, noise_share=0.9) == pytest.approx(
        0.09752083246532947, abs=1e-15
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epsilon": 0.0, "n": 10, "l2": 0.1},
        {"epsilon": math.inf, "n": 10, "l2": 0.1},
        {"epsilon": 1.0, "n": 0, "l2": 0.1},
        {"epsilon": 1.0, "n": 2.5, "l2": 0.1},
        {"epsilon": 1.0, "n": 10, "l2": 0.0},
        {"epsilon": 1.0, "n": 10, "l2": 0.1, "curvature": -1.0},
    ],
)
def test_perturbation_parameters_reject_bad_input(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        objective_perturbation.perturbation_parameters(**kwargs)  # type: ignore[arg-type]


def test_l2_for_noise_share_rejects_a_share_of_one() -> None:
    with pytest.raises(ValueError, match="noise_share"):
        objective_perturbation.l2_for_noise_share(epsilon=1.0, n=10, noise_share=1.0)


def test_noise_norm_is_gamma_and_direction_is_uniform() -> None:
    rng = np.random.default_rng(0)
    dim, eps_prime = 17, 0.5
    draws = np.array([objective_perturbation.sample_noise(dim, epsilon_prime=eps_prime, rng=rng) for _ in range(4000)])
    norms = np.linalg.norm(draws, axis=1)
    assert stats.kstest(norms, stats.gamma(a=dim, scale=2.0 / eps_prime).cdf).pvalue > 0.01
    directions = draws / norms[:, None]
    assert np.abs(directions.mean(axis=0)).max() < 4.0 / math.sqrt(4000 * dim)
    assert np.allclose(directions.T @ directions / 4000, np.eye(dim) / dim, atol=0.02)


def test_sample_noise_rejects_bad_input() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="dim"):
        objective_perturbation.sample_noise(0, epsilon_prime=1.0, rng=rng)
    with pytest.raises(ValueError, match="epsilon_prime"):
        objective_perturbation.sample_noise(3, epsilon_prime=0.0, rng=rng)
    with pytest.raises(TypeError, match="rng"):
        objective_perturbation.sample_noise(3, epsilon_prime=1.0, rng=np.random.RandomState(0))  # type: ignore[arg-type]


def test_unit_ball_features_map_the_box_into_the_ball() -> None:
    d, bound = 4, 3.0
    corner = np.full((1, d), bound)
    inside = np.random.default_rng(0).uniform(-bound, bound, size=(100, d))
    outside = np.full((1, d), 10.0)
    X = objective_perturbation.unit_ball_features(np.vstack([corner, inside, outside]), coordinate_bound=bound)
    scale = objective_perturbation.feature_scale(d, coordinate_bound=bound)
    assert scale == math.sqrt(37.0)
    assert X.shape == (102, d + 1)
    norms = np.linalg.norm(X, axis=1)
    assert norms[0] == pytest.approx(1.0)
    assert (norms[1:-1] < 1.0).all()
    assert norms[-1] == pytest.approx(1.0)
    assert np.allclose(X[:-1, -1], 1.0 / scale)
    assert np.allclose(X[1:-1, :d] * scale, inside)


def test_unit_ball_features_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="shape"):
        objective_perturbation.unit_ball_features(np.zeros(3), coordinate_bound=3.0)
    with pytest.raises(ValueError, match="finite"):
        objective_perturbation.unit_ball_features(np.array([[math.nan]]), coordinate_bound=3.0)
    with pytest.raises(ValueError, match="coordinate_bound"):
        objective_perturbation.unit_ball_features(np.zeros((1, 2)), coordinate_bound=0.0)


def test_objective_perturbation_guarantee() -> None:
    assert objective_perturbation.guarantee(1.5) == Guarantee(
        epsilon=1.5, delta=0.0, neighbouring=REPLACE_ONE, mechanism="objective_perturbation"
    )
