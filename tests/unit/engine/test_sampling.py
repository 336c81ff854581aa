"""Tests for the active-learning face feed (engine.sampling)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import expit

from engine.latent.base import PRIOR_BOUND, LatentSpace
from engine.sampling import (
    MAX_BATCH_SIZE,
    FeedBatch,
    FeedConfig,
    SlotRole,
    farthest_point_indices,
    linear_params,
    next_batch,
)
from tests.support.latent import SPACES, Linear, min_pairwise_distance
from tests.support.latent import axis, space, space_name  # fixtures, found by name

CONFIG = FeedConfig()
LEARNING = CONFIG.warmup_ratings + 10


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


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, MAX_BATCH_SIZE),
    n_rated=st.integers(0, 400),
    with_model=st.booleans(),
    toward=st.floats(0.0, 1.0),
    scale=st.floats(0.05, 30.0),
    intercept=st.floats(-5.0, 5.0),
    m=st.integers(0, 150),
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
) -> None:
    rng = np.random.default_rng(seed)
    model = _model(rng, into_safety, toward=toward, scale=scale, intercept=intercept) if with_model else None
    cached = _cached(space, rng, m)
    batch = next_batch(space, n=n, model=model, n_rated=n_rated, cached=cached, rng=rng)
    _check_invariants(space, batch, n, cached)
    warmup = model is None or n_rated < CONFIG.warmup_ratings
    assert (batch.count(SlotRole.SPREAD) == n) is warmup
    assert batch.count(SlotRole.SPREAD) + batch.count(SlotRole.EXPLOIT) + batch.count(SlotRole.EXPLORE) == n
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
    ],
)
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        FeedConfig(**{field: value})


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
