"""Tests for the active-learning face feed (engine.sampling)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import expit

from engine.latent.base import PRIOR_BOUND, LatentSpace
from engine.preference import Posterior, PreferencePrior
from engine.sampling import (
    MAX_BATCH_SIZE,
    FeedBatch,
    FeedConfig,
    SlotRole,
    farthest_point_indices,
    informative_indices,
    linear_params,
    next_batch,
)
from tests.support.latent import SPACES, Linear, min_pairwise_distance
from tests.support.latent import axis, space, space_name  # fixtures, found by name

CONFIG = FeedConfig()
LEARNING = CONFIG.warmup_ratings + 10
RHO = CONFIG.flip_probability


@dataclass(frozen=True)
class Gaussian:
    """A posterior over ``theta = [w, b]`` as the feed reads it (the fields of ``Posterior``)."""

    mean: np.ndarray
    covariance: np.ndarray


@dataclass(frozen=True)
class Personas:
    """A persona posterior as the feed reads it (the fields of ``PersonaPosterior``)."""

    responsibilities: np.ndarray
    components: tuple[Gaussian, ...]


@pytest.fixture(scope="module")
def into_safety(space: LatentSpace, axis: int) -> np.ndarray:
    """Unit direction pointing into the safety region (towards young faces)."""
    direction = np.zeros(space.dim)
    direction[axis] = -1.0
    return direction


def _unit(rng: np.random.Generator, dim: int) -> np.ndarray:
    v = rng.standard_normal(dim)
    return v / np.linalg.norm(v)


def _model(
    rng: np.random.Generator, into_safety: np.ndarray, *, toward: float, scale: float, intercept: float
) -> Linear:
    direction = (1.0 - toward) * _unit(rng, into_safety.size) + toward * into_safety
    return Linear(coef=scale * direction / np.linalg.norm(direction), intercept=intercept)


def _covariance(rng: np.random.Generator, size: int, *, scale: float) -> np.ndarray:
    """A random SPD covariance of shape ``(size, size)`` with eigenvalues spread over ~2 decades."""
    q, _ = np.linalg.qr(rng.standard_normal((size, size)))
    return scale * (q * np.geomspace(0.01, 1.0, size)) @ q.T


def _prior_covariance(dim: int) -> np.ndarray:
    """Covariance of the default isotropic prior: ``w ~ N(0, I / 4)``, ``b ~ N(0, 1)``."""
    cov = np.eye(dim + 1) / 4.0
    cov[-1, -1] = 1.0
    return cov


def _posterior(model: Linear, covariance: np.ndarray) -> Gaussian:
    return Gaussian(mean=np.append(model.coef, model.intercept), covariance=covariance)


def _rr_information(x: np.ndarray, mean: np.ndarray, rho: float) -> np.ndarray:
    """Fisher information of a randomized-response label about the logit ``t = mean . x``, written out.

    ``I_rr = (1 - 2 rho)^2 p^2 (1 - p)^2 / (q (1 - q))`` with ``p = sigmoid(t)``,
    ``q = rho + (1 - 2 rho) p``.
    """
    p = expit(x @ mean)
    q = rho + (1 - 2 * rho) * p
    return (1 - 2 * rho) ** 2 * p**2 * (1 - p) ** 2 / (q * (1 - q))


def _features(z: np.ndarray) -> np.ndarray:
    return np.hstack([z, np.ones((z.shape[0], 1))])


def _gain(z: np.ndarray, mean: np.ndarray, covariance: np.ndarray, rho: float = RHO) -> np.ndarray:
    """Reference expected information gain of one rating of each face: ``0.5 log(1 + I_rr x^T S x)``."""
    x = _features(z)
    return 0.5 * np.log1p(_rr_information(x, mean, rho) * np.einsum("ij,jk,ik->i", x, covariance, x))


def _joint_gain(
    z: np.ndarray, picks: list[int] | np.ndarray, mean: np.ndarray, covariance: np.ndarray, rho: float
) -> float:
    """Entropy drop of the Gaussian posterior from rating all of ``picks``: a log-determinant."""
    x = _features(z[list(picks)])
    root = np.sqrt(_rr_information(x, mean, rho))[:, None] * x
    return 0.5 * float(np.linalg.slogdet(np.eye(len(picks)) + root @ covariance @ root.T)[1])


def _cached(space: LatentSpace, rng: np.random.Generator, m: int) -> np.ndarray:
    """Prior samples as a shared cache, safety not applied, with some rows repeated."""
    rows = space.sample(m, rng)
    if m:
        rows = np.concatenate([rows, rows[rng.integers(m, size=m // 5)]])
    return rows


def _check_invariants(space: LatentSpace, batch: FeedBatch, n: int, cached: np.ndarray) -> None:
    z = batch.latents
    assert z.shape == (n, space.dim)
    assert not space.in_safety_region(z).any()
    np.testing.assert_array_equal(space.project(z), z)
    assert np.unique(z, axis=0).shape[0] == n
    assert len(batch.roles) == n and batch.cached_index.shape == (n,)
    idx = batch.cached_index[batch.is_cached]
    assert np.all((batch.cached_index >= -1) & (batch.cached_index < cached.shape[0]))
    assert np.unique(idx).size == idx.size
    np.testing.assert_array_equal(z[batch.is_cached], cached[idx])


def test_gaussian_box_space_implements_the_protocol() -> None:
    space = SPACES["box"]
    assert isinstance(space, LatentSpace)
    z = space.sample(5000, np.random.default_rng(0))
    assert np.all(np.abs(z) <= PRIOR_BOUND)
    assert 0.12 < space.in_safety_region(z).mean() < 0.20
    assert space.render(z[0]).size == (256, 256)


def test_into_safety_direction_really_points_into_the_safety_region(
    space: LatentSpace, into_safety: np.ndarray
) -> None:
    z = space.sample(200, np.random.default_rng(1))
    moved = space.project(z + 2 * PRIOR_BOUND * into_safety)
    assert space.in_safety_region(moved).all()


def _personas(
    rng: np.random.Generator, dominant: np.ndarray, k: int, *, scale: float, toward: np.ndarray | None = None
) -> Personas:
    """``k`` personas, the first (dominant) at ``dominant``; the others random, or at ``toward`` when given."""
    dim = dominant.size - 1
    others = [
        np.append(scale * (_unit(rng, dim) if toward is None else toward), rng.uniform(-1, 1)) for _ in range(k - 1)
    ]
    weights = np.append(0.6, np.full(k - 1, 0.4 / (k - 1))) if k > 1 else np.ones(1)
    return Personas(
        responsibilities=weights,
        components=tuple(Gaussian(mean=m, covariance=_prior_covariance(dim)) for m in [dominant, *others]),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, MAX_BATCH_SIZE),
    n_rated=st.one_of(st.integers(0, 15), st.integers(0, 400)),
    with_model=st.booleans(),
    toward=st.floats(0.0, 1.0),
    scale=st.floats(0.05, 30.0),
    intercept=st.floats(-5.0, 5.0),
    m=st.integers(0, 150),
    belief=st.sampled_from(("none", "posterior", "personas")),
    spread=st.floats(0.001, 10.0),
    n_personas=st.integers(1, 4),
)
def test_batch_invariants(
    space: LatentSpace,
    into_safety: np.ndarray,
    seed: int,
    n: int,
    n_rated: int,
    with_model: bool,
    toward: float,
    scale: float,
    intercept: float,
    m: int,
    belief: str,
    spread: float,
    n_personas: int,
) -> None:
    rng = np.random.default_rng(seed)
    model = _model(rng, into_safety, toward=toward, scale=scale, intercept=intercept) if with_model else None
    cached = _cached(space, rng, m)
    posterior = personas = None
    if belief != "none":
        centre = model if model is not None else Linear(np.zeros(space.dim), 0.0)
        posterior = _posterior(centre, _covariance(rng, space.dim + 1, scale=spread))
    if belief == "personas":
        personas = _personas(rng, posterior.mean, n_personas, scale=scale, toward=into_safety)
    batch = next_batch(
        space, n=n, model=model, n_rated=n_rated, cached=cached, rng=rng, posterior=posterior, personas=personas
    )
    _check_invariants(space, batch, n, cached)
    if belief == "none":
        warmup = model is None or n_rated < CONFIG.warmup_ratings
        assert (batch.count(SlotRole.SPREAD) == n) is warmup
        allowed = {SlotRole.SPREAD, SlotRole.EXPLOIT, SlotRole.EXPLORE}
    elif n_rated < CONFIG.coldstart_ratings:
        allowed = {SlotRole.ADAPTIVE}
    else:
        allowed = {SlotRole.EXPLOIT, SlotRole.EXPLORE}
        if belief == "personas" and n_personas >= 2:
            allowed.add(SlotRole.OUTSIDE_PERSONA)
    assert set(batch.roles) <= allowed
    assert not space.in_safety_region(cached[batch.cached_index[batch.is_cached]]).any()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1),
    scale=st.floats(1.0, 50.0),
    intercept=st.floats(-3.0, 3.0),
    n_rated=st.integers(LEARNING, 1000),
)
def test_model_loving_the_safety_region_never_gets_unsafe_faces(
    space: LatentSpace, into_safety: np.ndarray, seed: int, scale: float, intercept: float, n_rated: int
) -> None:
    rng = np.random.default_rng(seed)
    model = _model(rng, into_safety, toward=0.9, scale=scale, intercept=intercept)
    cached = space.sample(300, rng)
    prior = space.sample(2000, rng)
    best = prior[np.argsort(prior @ model.coef)[-20:]]
    assert space.in_safety_region(best).mean() > 0.5  # the model really wants unsafe faces
    batch = next_batch(space, n=24, model=model, n_rated=n_rated, cached=cached, rng=rng)
    _check_invariants(space, batch, 24, cached)


def test_same_rng_state_gives_the_same_batch(space: LatentSpace, into_safety: np.ndarray) -> None:
    model = _model(np.random.default_rng(3), into_safety, toward=0.3, scale=2.0, intercept=0.1)
    cached = space.sample(100, np.random.default_rng(4))
    a, b, c = (
        next_batch(space, n=12, model=model, n_rated=LEARNING, cached=cached, rng=np.random.default_rng(s))
        for s in (7, 7, 8)
    )
    np.testing.assert_array_equal(a.latents, b.latents)
    np.testing.assert_array_equal(a.cached_index, b.cached_index)
    assert a.roles == b.roles
    assert not np.array_equal(a.latents, c.latents)


def test_exploit_explore_split_is_seventy_thirty(space: LatentSpace, into_safety: np.ndarray) -> None:
    rng = np.random.default_rng(5)
    model = _model(rng, into_safety, toward=0.0, scale=2.0, intercept=0.0)
    cached = space.sample(200, rng)
    tens = [next_batch(space, n=10, model=model, n_rated=LEARNING, cached=cached, rng=rng) for _ in range(10)]
    assert all(b.count(SlotRole.EXPLOIT) == 7 and b.count(SlotRole.EXPLORE) == 3 for b in tens)
    # 0.7 * 7 = 4.9 exploit slots: stochastic rounding keeps the share in expectation.
    sevens = [next_batch(space, n=7, model=model, n_rated=LEARNING, cached=cached, rng=rng) for _ in range(200)]
    counts = np.array([b.count(SlotRole.EXPLOIT) for b in sevens])
    assert set(counts) == {4, 5}
    assert abs(counts.mean() - 4.9) < 0.1  # binomial sd of the mean is 0.021


def test_cached_share_schedule() -> None:
    cfg = FeedConfig()
    shares = [cfg.cached_share(k) for k in range(0, 1000, 10)]
    assert shares[0] == pytest.approx(0.8)
    assert all(a > b for a, b in zip(shares, shares[1:]))
    assert cfg.cached_share(40) == pytest.approx(0.1 + 0.7 / 2)
    assert cfg.cached_share(10_000) == pytest.approx(0.1)
    flat = FeedConfig(cached_share_start=0.3, cached_share_floor=0.3)
    assert flat.cached_share(0) == flat.cached_share(500) == pytest.approx(0.3)


def test_cached_share_in_batches_decays_with_n_rated(space: LatentSpace, into_safety: np.ndarray) -> None:
    rng = np.random.default_rng(6)
    model = _model(rng, into_safety, toward=0.0, scale=1.0, intercept=0.0)
    cached = space.sample(400, rng)
    means = []
    for n_rated in (0, 30, 80, 200):
        counts = [
            next_batch(space, n=10, model=model, n_rated=n_rated, cached=cached, rng=rng).is_cached.sum()
            for _ in range(40)
        ]
        assert abs(np.mean(counts) - 10 * CONFIG.cached_share(n_rated)) < 0.35
        means.append(np.mean(counts))
    assert means[0] == 8.0
    assert all(a > b for a, b in zip(means, means[1:]))


def test_no_usable_cache_means_all_fresh(space: LatentSpace, into_safety: np.ndarray) -> None:
    rng = np.random.default_rng(9)
    unsafe = space.project(space.sample(50, rng) + 2 * PRIOR_BOUND * into_safety)
    assert space.in_safety_region(unsafe).all()
    batch = next_batch(space, n=10, model=None, n_rated=0, cached=unsafe, rng=rng)
    assert not batch.is_cached.any()
    _check_invariants(space, batch, 10, unsafe)
    repeated = np.repeat(space.sample(1, rng), 30, axis=0)
    batch = next_batch(space, n=10, model=None, n_rated=0, cached=repeated, rng=rng)
    assert batch.is_cached.sum() <= 1  # 30 copies of one face are one face
    _check_invariants(space, batch, 10, repeated)


def test_exploit_faces_score_higher_and_explore_faces_sit_near_the_boundary(
    space: LatentSpace, into_safety: np.ndarray
) -> None:
    rng = np.random.default_rng(10)
    cached = space.sample(300, rng)
    exploit, explore, prior = [], [], []
    for _ in range(20):
        model = _model(rng, into_safety, toward=0.0, scale=1.5, intercept=float(rng.uniform(-0.5, 0.5)))
        batch = next_batch(space, n=10, model=model, n_rated=LEARNING, cached=cached, rng=rng)
        margin = batch.latents @ model.coef + model.intercept
        roles = np.array([r.value for r in batch.roles])
        exploit.append(margin[roles == "exploit"])
        explore.append(margin[roles == "explore"])
        prior.append(space.sample(500, rng) @ model.coef + model.intercept)
    exploit_m, explore_m, prior_m = (np.concatenate(m) for m in (exploit, explore, prior))
    assert expit(exploit_m).mean() > 0.8
    assert abs(expit(explore_m).mean() - 0.5) < 0.1
    assert expit(exploit_m).mean() > expit(explore_m).mean() + 0.25
    assert np.abs(explore_m).mean() < 0.5 * np.abs(exploit_m).mean()
    assert np.abs(explore_m).mean() < 0.5 * np.abs(prior_m).mean()


def test_warmup_batches_are_more_spread_out_than_random_prior_faces(space: LatentSpace) -> None:
    rng = np.random.default_rng(11)
    feed, baseline = [], []
    for _ in range(15):
        batch = next_batch(space, n=10, model=None, n_rated=0, cached=None, rng=rng)
        feed.append(min_pairwise_distance(batch.latents))
        prior = space.sample(2048, rng)
        prior = prior[~space.in_safety_region(prior)]
        baseline.append(min_pairwise_distance(prior[rng.choice(prior.shape[0], 10, replace=False)]))
    assert min(feed) > np.median(baseline)
    assert np.median(feed) > 1.3 * np.median(baseline)


def test_exploit_faces_are_more_diverse_than_random_top_faces(
    space: LatentSpace, into_safety: np.ndarray
) -> None:
    rng = np.random.default_rng(12)
    model = _model(rng, into_safety, toward=0.0, scale=2.0, intercept=0.0)
    feed, baseline = [], []
    for _ in range(15):
        batch = next_batch(space, n=20, model=model, n_rated=10_000, cached=None, rng=rng)
        feed.append(min_pairwise_distance(batch.latents[[r is SlotRole.EXPLOIT for r in batch.roles]]))
        prior = space.sample(CONFIG.pool_size, rng)
        prior = prior[~space.in_safety_region(prior)]
        top = prior[np.argsort(prior @ model.coef)[-round(CONFIG.shortlist_fraction * prior.shape[0]) :]]
        baseline.append(min_pairwise_distance(top[rng.choice(top.shape[0], 14, replace=False)]))
    assert np.median(feed) > 1.2 * np.median(baseline)


def test_batch_arrays_are_read_only(space: LatentSpace) -> None:
    batch = next_batch(space, n=3, model=None, n_rated=0, cached=None, rng=np.random.default_rng(0))
    with pytest.raises(ValueError):
        batch.latents[0, 0] = 1.0
    with pytest.raises(ValueError):
        batch.cached_index[0] = 5


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pool_size", 10),
        ("pool_size", 2.5),
        ("warmup_ratings", -1),
        ("exploit_fraction", 1.5),
        ("exploit_fraction", float("nan")),
        ("shortlist_fraction", 0.0),
        ("cached_share_start", -0.1),
        ("cached_share_floor", 0.9),
        ("cached_half_life", 0.0),
        ("warmup_ratings", True),
        ("coldstart_ratings", -1),
        ("coldstart_ratings", 1.5),
        ("outside_persona_fraction", -0.1),
        ("outside_persona_fraction", 0.35),  # more than the 30 % explore share
        ("flip_probability", 0.5),
        ("flip_probability", -0.01),
        ("flip_probability", float("nan")),
    ],
)
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        FeedConfig(**{field: value})


def test_config_defaults_for_the_posterior_feed() -> None:
    assert CONFIG.coldstart_ratings == 10 and CONFIG.outside_persona_fraction == 0.1
    assert CONFIG.flip_probability == pytest.approx(1.0 / (1.0 + math.e))  # randomized response at epsilon 1
    FeedConfig(exploit_fraction=0.9, outside_persona_fraction=0.1)
    FeedConfig(exploit_fraction=1.0, outside_persona_fraction=0.0, flip_probability=0.0)


def test_next_batch_rejects_bad_inputs(space: LatentSpace) -> None:
    rng = np.random.default_rng(0)
    ok = {"n": 4, "model": None, "n_rated": 0, "cached": None, "rng": rng}
    bad = [
        ({"n": 0}, "n must"),
        ({"n": MAX_BATCH_SIZE + 1}, "n must"),
        ({"n": 2.0}, "n must"),
        ({"n_rated": -1}, "n_rated"),
        ({"rng": 42}, "rng"),
        ({"config": {"pool_size": 100}}, "config"),
        ({"model": Linear(np.ones(space.dim + 1), 0.0)}, "model.coef"),
        ({"model": Linear(np.full(space.dim, np.nan), 0.0)}, "model.coef"),
        ({"model": Linear(np.ones(space.dim), float("inf"))}, "model.intercept"),
        ({"cached": np.zeros((3, space.dim + 1))}, "cached"),
        ({"cached": np.full((3, space.dim), np.nan)}, "cached"),
        ({"cached": np.full((3, space.dim), PRIOR_BOUND + 1.0)}, "cached"),
    ]
    for override, message in bad:
        with pytest.raises(ValueError, match=message):
            next_batch(space, **{**ok, **override})


def test_linear_params_accepts_numpy_scalars() -> None:
    coef, intercept = linear_params(Linear(np.arange(3.0), np.float32(0.5)), dim=3)
    assert coef.dtype == np.float64 and intercept == 0.5


def test_farthest_point_indices() -> None:
    rng = np.random.default_rng(0)
    pts = rng.standard_normal((200, 4))
    picks = farthest_point_indices(pts, 10, start=3)
    assert picks[0] == 3 and np.unique(picks).size == 10
    # Each pick is the farthest remaining point from the earlier ones.
    for i in range(1, 10):
        d = np.sqrt(((pts[:, None] - pts[picks[:i]][None]) ** 2).sum(-1)).min(axis=1)
        assert d[picks[i]] == pytest.approx(d.max())
    anchors = pts[:5]
    with_anchors = farthest_point_indices(pts, 195, anchors=anchors)
    assert set(with_anchors.tolist()) == set(range(5, 200))  # rows equal to an anchor are never picked
    assert farthest_point_indices(pts, 0, start=0).size == 0
    with pytest.raises(ValueError, match="start"):
        farthest_point_indices(pts, 2)
    with pytest.raises(ValueError, match="distinct"):
        farthest_point_indices(np.zeros((5, 2)), 2, start=0)
    with pytest.raises(ValueError, match="k must"):
        farthest_point_indices(pts, 201, start=0)


def test_full_batch_from_a_minimal_pool(space: LatentSpace, into_safety: np.ndarray) -> None:
    """Exploit and explore draw on the same small fresh pool without picking a face twice."""
    config = FeedConfig(pool_size=MAX_BATCH_SIZE, shortlist_fraction=0.01)
    rng = np.random.default_rng(13)
    for _ in range(20):
        model = _model(rng, into_safety, toward=0.5, scale=2.0, intercept=0.0)
        cached = space.sample(int(rng.integers(0, 40)), rng)
        batch = next_batch(
            space, n=MAX_BATCH_SIZE, model=model, n_rated=10_000, cached=cached, rng=rng, config=config
        )
        _check_invariants(space, batch, MAX_BATCH_SIZE, cached)


# Posterior-driven feed: cold start, information-driven exploration, outside-persona faces.


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1),
    pull=st.sampled_from(("mean", "variance")),
    scale=st.floats(1.0, 30.0),
    stretch=st.floats(5.0, 100.0),
    n_rated=st.one_of(st.integers(0, CONFIG.coldstart_ratings), st.integers(0, 1000)),
)
def test_posterior_drawn_to_the_safety_region_never_gets_unsafe_faces(
    space: LatentSpace,
    into_safety: np.ndarray,
    seed: int,
    pull: str,
    scale: float,
    stretch: float,
    n_rated: int,
) -> None:
    """The posterior mean (exploit), its uncertainty (adaptive, explore) and another persona lead into it."""
    rng = np.random.default_rng(seed)
    covariance = _prior_covariance(space.dim)
    prior = space.sample(2000, rng)
    if pull == "mean":
        posterior = _posterior(_model(rng, into_safety, toward=0.9, scale=scale, intercept=0.0), covariance)
        top = prior[np.argsort(_features(prior) @ posterior.mean)[-20:]]
        assert space.in_safety_region(top).mean() > 0.5  # the mean really wants unsafe faces
    else:
        direction = np.append(into_safety, 0.0)
        covariance += stretch * np.outer(direction, direction)  # most uncertain along the safety axis
        posterior = _posterior(Linear(0.1 * _unit(rng, space.dim), 0.0), covariance)
        top = prior[np.argsort(_gain(prior, posterior.mean, covariance))[-20:]]
        assert space.in_safety_region(top).mean() >= 0.1  # information alone would pick unsafe faces
    personas = _personas(rng, posterior.mean, 3, scale=scale, toward=into_safety)
    cached = space.sample(300, rng)
    batch = next_batch(
        space, n=24, model=None, n_rated=n_rated, cached=cached, rng=rng, posterior=posterior, personas=personas
    )
    _check_invariants(space, batch, 24, cached)


def test_informative_indices_first_pick_has_the_highest_information() -> None:
    rng = np.random.default_rng(20)
    for rho in (0.0, RHO, 0.45):
        for _ in range(10):
            z = np.clip(rng.standard_normal((300, 6)), -PRIOR_BOUND, PRIOR_BOUND)
            mean = rng.standard_normal(7)
            covariance = _covariance(rng, 7, scale=2.0)
            picks = informative_indices(z, mean=mean, covariance=covariance, flip_probability=rho, n=5)
            gain = _gain(z, mean, covariance, rho)
            assert picks[0] == int(np.argmax(gain))
            assert picks.dtype == np.int64 and np.unique(picks).size == 5


def test_informative_batch_asks_new_questions_where_the_naive_top_n_repeats_one() -> None:
    """Four near-copies of the most informative face, then slightly weaker faces in other directions."""
    rng = np.random.default_rng(21)
    copies = np.array([2.5, 0.0, 0.0]) + 1e-3 * rng.standard_normal((4, 3))
    others = np.array([[0.0, 2.4, 0.0], [0.0, 0.0, 2.3], [0.0, -2.2, 0.0]])
    z = np.vstack([copies, others])
    mean, covariance = np.zeros(4), np.eye(4)
    naive = np.argsort(-_gain(z, mean, covariance))[:3]
    picks = informative_indices(z, mean=mean, covariance=covariance, flip_probability=RHO, n=3)
    assert set(naive.tolist()) <= {0, 1, 2, 3}  # the naive batch asks the same question three times
    assert picks[0] == naive[0]
    assert set(picks[1:].tolist()) == {4, 5}  # the second and third picks ask about new directions

    def cosine(a: int, b: int) -> float:
        return float(z[a] @ z[b] / np.linalg.norm(z[a]) / np.linalg.norm(z[b]))

    assert cosine(naive[0], naive[1]) > 0.99 and abs(cosine(picks[0], picks[1])) < 0.01
    assert _joint_gain(z, picks, mean, covariance, RHO) > 1.1 * _joint_gain(z, naive, mean, covariance, RHO)


def test_informative_batches_beat_the_naive_top_n_on_prior_faces() -> None:
    rng = np.random.default_rng(22)
    ratios = []
    for _ in range(20):
        z = np.clip(rng.standard_normal((400, 8)), -PRIOR_BOUND, PRIOR_BOUND)
        mean = 0.5 * rng.standard_normal(9)
        covariance = _covariance(rng, 9, scale=4.0)
        picks = informative_indices(z, mean=mean, covariance=covariance, flip_probability=RHO, n=8)
        naive = np.argsort(-_gain(z, mean, covariance))[:8]
        ratios.append(_joint_gain(z, picks, mean, covariance, RHO) / _joint_gain(z, naive, mean, covariance, RHO))
    assert min(ratios) >= 0.99
    assert np.median(ratios) > 1.05


def test_informative_indices_match_a_brute_force_reference() -> None:
    """Greedy on the joint log-determinant, recomputed from scratch, and the best batch by exhaustion."""
    rng = np.random.default_rng(23)
    bound = 1.0 - 1.0 / math.e
    for case in range(30):
        rho = (0.0, RHO, 0.4)[case % 3]
        z = 1.5 * rng.standard_normal((9, 3))
        mean = 0.7 * rng.standard_normal(4)
        covariance = _covariance(rng, 4, scale=3.0)
        picks = informative_indices(z, mean=mean, covariance=covariance, flip_probability=rho, n=4)
        reference: list[int] = []
        for _ in range(4):
            rest = [j for j in range(9) if j not in reference]
            reference.append(max(rest, key=lambda j: _joint_gain(z, [*reference, j], mean, covariance, rho)))
        assert picks.tolist() == reference
        best = max(_joint_gain(z, list(c), mean, covariance, rho) for c in combinations(range(9), 4))
        assert _joint_gain(z, picks, mean, covariance, rho) >= bound * best


def test_informative_picks_follow_the_high_variance_direction() -> None:
    rng = np.random.default_rng(24)
    z = np.clip(rng.standard_normal((2048, 10)), -PRIOR_BOUND, PRIOR_BOUND)
    for axis_ in (3, 7):
        covariance = np.diag(np.full(11, 0.01))
        covariance[axis_, axis_] = 4.0
        picks = informative_indices(z, mean=np.zeros(11), covariance=covariance, flip_probability=RHO, n=10)
        along = np.abs(z[picks, axis_])
        assert along.min() > 1.5 and along.mean() > 2.5 * np.abs(z[:, axis_]).mean()
        others = np.delete(np.abs(z[picks]), axis_, axis=1)
        assert along.mean() > 2.0 * others.mean()


def test_informative_indices_edge_cases() -> None:
    z = np.random.default_rng(25).standard_normal((5, 2))
    ok = {"mean": np.zeros(3), "covariance": np.eye(3), "flip_probability": 0.1}
    assert informative_indices(z, n=0, **ok).shape == (0,)
    assert sorted(informative_indices(z, n=5, **ok).tolist()) == [0, 1, 2, 3, 4]
    assert informative_indices(np.empty((0, 2)), n=0, **ok).shape == (0,)
    # A singular (PSD) covariance is fine: nothing to learn along the null direction.
    flat = np.diag([1.0, 0.0, 0.0])
    assert informative_indices(z, n=1, **{**ok, "covariance": flat})[0] == int(np.argmax(np.abs(z[:, 0])))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"X": np.zeros(4)}, "X must have shape"),
        ({"X": np.zeros((4, 0))}, "X must have shape"),
        ({"X": np.full((4, 2), np.nan)}, "X must be finite"),
        ({"mean": np.zeros(2)}, "mean must have shape"),
        ({"mean": np.array([0.0, np.inf, 0.0])}, "mean must be finite"),
        ({"covariance": np.eye(2)}, "covariance must have shape"),
        ({"covariance": np.full((3, 3), np.nan)}, "covariance must be finite"),
        ({"covariance": np.triu(np.ones((3, 3)))}, "symmetric"),
        ({"covariance": np.diag([1.0, -1.0, 1.0])}, "positive semi-definite"),
        ({"flip_probability": 0.5}, "flip_probability"),
        ({"flip_probability": -0.1}, "flip_probability"),
        ({"flip_probability": np.array([0.1, 0.2])}, "flip_probability"),
        ({"n": 5}, "n must"),
        ({"n": -1}, "n must"),
        ({"n": 2.0}, "n must"),
    ],
)
def test_informative_indices_rejects_bad_inputs(override: dict[str, object], message: str) -> None:
    args = {"X": np.zeros((4, 2)), "mean": np.zeros(3), "covariance": np.eye(3), "flip_probability": 0.1, "n": 2}
    with pytest.raises(ValueError, match=message):
        informative_indices(**{**args, **override})


def test_cold_start_is_adaptive_and_beats_random_faces(space: LatentSpace) -> None:
    rng = np.random.default_rng(26)
    covariance = _prior_covariance(space.dim)
    cached = space.sample(300, rng)
    ratios = []
    for n_rated in range(CONFIG.coldstart_ratings):
        posterior = _posterior(Linear(_unit(rng, space.dim), float(rng.uniform(-0.5, 0.5))), covariance)
        batch = next_batch(space, n=10, model=None, n_rated=n_rated, cached=cached, rng=rng, posterior=posterior)
        _check_invariants(space, batch, 10, cached)
        assert batch.count(SlotRole.ADAPTIVE) == 10
        prior = space.sample(2048, rng)
        prior = prior[~space.in_safety_region(prior)]
        feed = _gain(batch.latents, posterior.mean, covariance).mean()
        ratios.append(feed / _gain(prior, posterior.mean, covariance).mean())
    assert min(ratios) > 1.5  # measured 1.8 to 2.0
    batch = next_batch(
        space, n=10, model=None, n_rated=CONFIG.coldstart_ratings, cached=cached, rng=rng, posterior=posterior
    )
    assert batch.count(SlotRole.ADAPTIVE) == 0


def test_cold_start_follows_the_high_variance_direction(space: LatentSpace, axis: int) -> None:
    rng = np.random.default_rng(27)
    high = (axis + 5) % space.dim
    covariance = np.diag(np.full(space.dim + 1, 0.01))
    covariance[high, high] = 4.0
    posterior = Gaussian(mean=np.zeros(space.dim + 1), covariance=covariance)
    cached = space.sample(300, rng)
    along, prior = [], []
    for n_rated in (0, 5, 9):
        batch = next_batch(space, n=10, model=None, n_rated=n_rated, cached=cached, rng=rng, posterior=posterior)
        along.append(np.abs(batch.latents[:, high]))
        prior.append(np.abs(space.sample(2048, rng)[:, high]))
    along_, prior_ = np.concatenate(along), np.concatenate(prior)
    assert along_.min() > 1.0 and along_.mean() > 2.0 * prior_.mean()


def test_learning_shares_with_a_posterior_and_personas(space: LatentSpace, into_safety: np.ndarray) -> None:
    rng = np.random.default_rng(28)
    model = _model(rng, into_safety, toward=0.0, scale=2.0, intercept=0.0)
    posterior = _posterior(model, _prior_covariance(space.dim) / 4)
    cached = space.sample(200, rng)
    n_rated = CONFIG.coldstart_ratings

    def batches(n: int, count: int, personas: Personas | None) -> list[FeedBatch]:
        return [
            next_batch(
                space, n=n, model=None, n_rated=n_rated, cached=cached, rng=rng, posterior=posterior, personas=personas
            )
            for _ in range(count)
        ]

    three = _personas(rng, posterior.mean, 3, scale=2.0)
    for batch in batches(10, 10, three):
        assert (batch.count(SlotRole.EXPLOIT), batch.count(SlotRole.OUTSIDE_PERSONA)) == (7, 1)
        assert batch.count(SlotRole.EXPLORE) == 2
    for personas in (None, _personas(rng, posterior.mean, 1, scale=2.0)):  # no other persona to look at
        for batch in batches(10, 5, personas):
            assert (batch.count(SlotRole.EXPLOIT), batch.count(SlotRole.EXPLORE)) == (7, 3)
    # n = 7: 4.9 exploit, 0.7 outside and 1.4 explore slots in expectation.
    sevens = batches(7, 300, three)
    for role, expected in ((SlotRole.EXPLOIT, 4.9), (SlotRole.OUTSIDE_PERSONA, 0.7), (SlotRole.EXPLORE, 1.4)):
        counts = np.array([b.count(role) for b in sevens])
        assert set(counts) == {math.floor(expected), math.ceil(expected)}
        assert abs(counts.mean() - expected) < 0.1  # sd of the mean at most 0.029
    cached_counts = [b.is_cached.sum() for b in sevens]
    assert abs(np.mean(cached_counts) - 7 * CONFIG.cached_share(n_rated)) < 0.2


def test_each_role_does_its_job_with_a_posterior(space: LatentSpace, into_safety: np.ndarray) -> None:
    """Exploit faces are liked, outside-persona faces liked more by another persona, explore faces informative."""
    rng = np.random.default_rng(29)
    cached = space.sample(300, rng)
    gaps, likes, gains, prior_gaps, prior_likes, prior_gains = [], [], [], [], [], []
    for _ in range(20):
        model = _model(rng, into_safety, toward=0.0, scale=1.5, intercept=float(rng.uniform(-0.5, 0.5)))
        posterior = _posterior(model, _prior_covariance(space.dim) / 2)
        personas = _personas(rng, posterior.mean, 3, scale=1.5)
        batch = next_batch(
            space, n=20, model=None, n_rated=50, cached=cached, rng=rng, posterior=posterior, personas=personas
        )
        x = _features(batch.latents)
        means = np.array([c.mean for c in personas.components])
        gap = expit(x @ means[1:].T).max(axis=1) - expit(x @ means[0])
        roles = np.array([r.value for r in batch.roles])
        gaps.append(gap[roles == SlotRole.OUTSIDE_PERSONA.value])
        likes.append(expit(x @ posterior.mean)[roles == SlotRole.EXPLOIT.value])
        gains.append(_gain(batch.latents, posterior.mean, posterior.covariance)[roles == SlotRole.EXPLORE.value])
        prior = space.sample(1000, rng)
        prior = prior[~space.in_safety_region(prior)]
        xp = _features(prior)
        prior_gaps.append(expit(xp @ means[1:].T).max(axis=1) - expit(xp @ means[0]))
        prior_gains.append(_gain(prior, posterior.mean, posterior.covariance))
        prior_likes.append(expit(xp @ posterior.mean))
    gap_m, gain_m = np.concatenate(gaps), np.concatenate(gains)
    assert gap_m.mean() > 0.4 and gap_m.mean() > np.concatenate(prior_gaps).mean() + 0.3
    assert np.concatenate(likes).mean() > np.concatenate(prior_likes).mean() + 0.25
    assert gain_m.mean() > 1.3 * np.concatenate(prior_gains).mean()


def test_same_rng_state_gives_the_same_batch_with_a_posterior(space: LatentSpace, into_safety: np.ndarray) -> None:
    rng = np.random.default_rng(30)
    model = _model(rng, into_safety, toward=0.3, scale=2.0, intercept=0.1)
    posterior = _posterior(model, _covariance(rng, space.dim + 1, scale=0.5))
    personas = _personas(rng, posterior.mean, 3, scale=2.0)
    cached = space.sample(100, rng)
    for n_rated in (0, 40):
        a, b, c = (
            next_batch(
                space, n=12, model=None, n_rated=n_rated, cached=cached, rng=np.random.default_rng(s),
                posterior=posterior, personas=personas,
            )
            for s in (7, 7, 8)
        )
        np.testing.assert_array_equal(a.latents, b.latents)
        np.testing.assert_array_equal(a.cached_index, b.cached_index)
        assert a.roles == b.roles
        assert not np.array_equal(a.latents, c.latents)


def test_the_real_posterior_drives_the_feed(space: LatentSpace) -> None:
    """``engine.preference.Posterior`` fits the feed's protocol: a new user's prior gives adaptive faces."""
    posterior = Posterior.from_prior(PreferencePrior.isotropic(space.dim))
    batch = next_batch(
        space, n=10, model=None, n_rated=0, cached=None, rng=np.random.default_rng(31), posterior=posterior
    )
    assert batch.count(SlotRole.ADAPTIVE) == 10
    _check_invariants(space, batch, 10, np.empty((0, space.dim)))


def test_next_batch_rejects_bad_beliefs(space: LatentSpace) -> None:
    d = space.dim
    good = Gaussian(mean=np.zeros(d + 1), covariance=_prior_covariance(d))
    ok = {"n": 4, "model": None, "n_rated": 20, "cached": None, "rng": np.random.default_rng(0), "posterior": good}

    def personas(weights: list[float], means: list[np.ndarray]) -> Personas:
        return Personas(np.array(weights), tuple(Gaussian(m, _prior_covariance(d)) for m in means))

    zero = np.zeros(d + 1)
    bad = [
        ({"posterior": Gaussian(np.zeros(d), _prior_covariance(d))}, "posterior.mean"),
        ({"posterior": Gaussian(zero, np.eye(d))}, "posterior.covariance"),
        ({"posterior": Gaussian(zero, -_prior_covariance(d))}, "posterior.covariance"),
        ({"posterior": None, "personas": personas([0.5, 0.5], [zero, zero])}, "needs a posterior"),
        ({"personas": personas([0.5, 0.4], [zero, zero])}, "responsibilities"),
        ({"personas": personas([1.5, -0.5], [zero, zero])}, "responsibilities"),
        ({"personas": Personas(np.ones((1, 1)), (good,))}, "responsibilities"),
        ({"personas": personas([0.5, 0.5], [zero])}, "components"),
        ({"personas": personas([0.5, 0.5], [zero, np.zeros(d)])}, r"components\[1\]"),
        ({"personas": personas([0.5, 0.5], [zero, np.full(d + 1, np.nan)])}, "components"),
    ]
    for override, message in bad:
        with pytest.raises(ValueError, match=message):
            next_batch(space, **{**ok, **override})
