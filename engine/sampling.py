"""Active-learning face feed: which faces a user is shown next.

The feed only ever sees public inputs: the latent space, the user's *released* preference model
(already private, so using it is post-processing and spends no budget), how many faces the user
has rated, the shared cache of already rendered faces, and public randomness. It never reads raw
ratings.

One entry point, :func:`next_batch`, works in two phases:

* **Warm-up** (no released model yet, or fewer than ``FeedConfig.warmup_ratings`` ratings): every
  slot is ``SPREAD``. Faces are chosen by greedy farthest-point selection (Gonzalez's 2-approximate
  k-center) over a large prior sample and the cache, starting from a random face, so the first
  ratings cover the prior. Farthest-point selection leans towards the outskirts of the prior;
  for fitting a linear direction that is what an optimal design wants (extreme points pin the
  slope down best).
* **Learning**: a share ``exploit_fraction`` (default 70 %) of the slots are ``EXPLOIT`` faces, the
  rest ``EXPLORE``. Exploit faces come from the top ``shortlist_fraction`` of candidates by the
  model's score; explore faces from the candidates nearest the decision boundary (``p`` close to
  0.5, where ``p(1 - p)``, the Bernoulli variance of the next rating, is largest: uncertainty
  sampling). The released model is a point estimate with no posterior, so the boundary distance is
  the only honest informativeness measure available. Within each shortlist the faces are picked by
  farthest-point selection against everything already in the batch, which keeps the batch diverse.

Shared cached faces (already rendered, so cheap to serve) fill a share of every batch given by
:meth:`FeedConfig.cached_share`::

    share(n_rated) = floor + (start - floor) * 2 ** (-n_rated / half_life)

80 % for a new user by default, halving its distance to the 10 % floor every 40 ratings: a new
user's faces are mostly shared ones, and as the model firms up the feed moves to fresh faces
drawn for that user's direction. Fractional slot counts are rounded stochastically with ``rng``
so the shares hold in expectation even for tiny batches.

Safety: every candidate, fresh or cached, is passed through ``space.in_safety_region`` and
dropped if flagged, before any selection. A face in the safety region is never returned, however
strongly the model prefers that direction. Repeated cache rows count once, and the batch is shown
in a random order so that a face's position says nothing about its role.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import numpy as np

from engine.latent.base import LatentSpace, sample_outside_safety

__all__ = [
    "MAX_BATCH_SIZE",
    "FeedBatch",
    "FeedConfig",
    "ReleasedModel",
    "SlotRole",
    "farthest_point_indices",
    "linear_params",
    "next_batch",
]

#: Largest batch one call may ask for.
MAX_BATCH_SIZE: int = 64


class ReleasedModel(Protocol):
    """What the feed needs from a released preference model: a linear logit.

    ``sigmoid(coef @ z + intercept)`` is the calibrated like-probability of latent ``z``.
    """

    @property
    def coef(self) -> np.ndarray:
        """Preference direction, shape ``(d,)``."""
        ...

    @property
    def intercept(self) -> float:
        """Logit offset."""
        ...


class SlotRole(str, Enum):
    """Why a face is in the batch (for metrics; never shown to the user)."""

    SPREAD = "spread"
    EXPLOIT = "exploit"
    EXPLORE = "explore"


def _check_int(name: str, value: object, *, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def _check_real(
    name: str, value: object, *, low: float, high: float, low_open: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    too_low = value <= low if low_open else value < low
    if not math.isfinite(value) or too_low or value > high:
        interval = f"{'(' if low_open else '['}{low}, {high}]"
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return value


@dataclass(frozen=True)
class FeedConfig:
    """Tuning of the feed; validated on construction.

    Attributes
    ----------
    pool_size : int
        Fresh prior samples drawn per batch as candidates (>= ``MAX_BATCH_SIZE``).
    warmup_ratings : int
        Ratings below which the model is ignored and the batch is pure spread.
    exploit_fraction : float
        Expected share of exploit slots once learning, in [0, 1]; the rest explore.
    shortlist_fraction : float
        Share of a source's candidates kept as the exploit (top scores) or explore (closest to
        the boundary) shortlist before diversity selection, in (0, 1].
    cached_share_start : float
        Share of cached faces for a user with no ratings, in [0, 1].
    cached_share_floor : float
        Share the cached faces decay to, in [0, ``cached_share_start``].
    cached_half_life : float
        Ratings after which the cached share has covered half the way to the floor (> 0).
    """

    pool_size: int = 2048
    warmup_ratings: int = 20
    exploit_fraction: float = 0.7
    shortlist_fraction: float = 0.1
    cached_share_start: float = 0.8
    cached_share_floor: float = 0.1
    cached_half_life: float = 40.0

    def __post_init__(self) -> None:
        _check_int("pool_size", self.pool_size, low=MAX_BATCH_SIZE, high=1_000_000)
        _check_int("warmup_ratings", self.warmup_ratings, low=0)
        _check_real("exploit_fraction", self.exploit_fraction, low=0.0, high=1.0)
        _check_real(
            "shortlist_fraction", self.shortlist_fraction, low=0.0, high=1.0, low_open=True
        )
        _check_real("cached_share_start", self.cached_share_start, low=0.0, high=1.0)
        _check_real(
            "cached_share_floor", self.cached_share_floor, low=0.0, high=self.cached_share_start
        )
        _check_real(
            "cached_half_life", self.cached_half_life, low=0.0, high=math.inf, low_open=True
        )

    def cached_share(self, n_rated: int) -> float:
        """Expected share of cached faces in a batch for a user with ``n_rated`` ratings.

        Decays geometrically from ``cached_share_start`` to ``cached_share_floor`` with half-life
        ``cached_half_life`` ratings; non-increasing in ``n_rated``.
        """
        n_rated = _check_int("n_rated", n_rated, low=0)
        excess = self.cached_share_start - self.cached_share_floor
        return self.cached_share_floor + excess * math.pow(0.5, n_rated / self.cached_half_life)


@dataclass(frozen=True)
class FeedBatch:
    """The faces to show next, in display order.

    Attributes
    ----------
    latents : np.ndarray
        Shape ``(n, d)``, float64, read-only. For cached slots a copy of the cached latent.
    cached_index : np.ndarray
        Shape ``(n,)``, int64, read-only: row of the caller's ``cached`` array, or -1 for a fresh
        face the caller must render and store.
    roles : tuple of SlotRole
        Length ``n``: why each face was picked.
    """

    latents: np.ndarray
    cached_index: np.ndarray
    roles: tuple[SlotRole, ...]

    @property
    def is_cached(self) -> np.ndarray:
        """Boolean mask of shape ``(n,)``: True where the face comes from the shared cache."""
        return self.cached_index >= 0

    def count(self, role: SlotRole) -> int:
        """Number of slots with ``role``."""
        return sum(r is role for r in self.roles)


def linear_params(model: ReleasedModel, *, dim: int) -> tuple[np.ndarray, float]:
    """Validated ``(coef, intercept)`` of a released model for a ``dim``-dimensional space.

    Returns
    -------
    coef : np.ndarray
        Shape ``(dim,)``, float64, finite.
    intercept : float
        Finite.
    """
    coef = np.asarray(model.coef, dtype=np.float64)
    if coef.shape != (dim,):
        raise ValueError(f"model.coef must have shape ({dim},), got {coef.shape}")
    if not np.all(np.isfinite(coef)):
        raise ValueError("model.coef must be finite")
    intercept = np.asarray(model.intercept, dtype=np.float64)
    if intercept.shape != () or not np.isfinite(intercept):
        raise ValueError(f"model.intercept must be a finite scalar, got {model.intercept!r}")
    return coef, float(intercept)


def farthest_point_indices(
    points: np.ndarray,
    k: int,
    *,
    start: int | None = None,
    anchors: np.ndarray | None = None,
) -> np.ndarray:
    """Greedy farthest-point (k-center) selection of ``k`` distinct rows of ``points``.

    Each step takes the row farthest (Euclidean) from everything chosen so far, which is within a
    factor 2 of the best possible minimum pairwise distance (Gonzalez 1985).

    Parameters
    ----------
    points : np.ndarray
        Candidates, shape ``(m, d)``.
    k : int
        How many to pick, ``0 <= k <= m``.
    start : int, optional
        Row picked first. Required when there are no ``anchors``; ignored otherwise.
    anchors : np.ndarray, optional
        Already chosen points, shape ``(a, d)``: the picks keep away from them too.

    Returns
    -------
    np.ndarray
        Row indices into ``points``, shape ``(k,)``, int64, in pick order.

    Raises
    ------
    ValueError
        If fewer than ``k`` rows are distinct from each other and from ``anchors``.
    """
    m = points.shape[0]
    k = _check_int("k", k, low=0, high=m)
    picks = np.empty(k, dtype=np.int64)
    if k == 0:
        return picks
    if anchors is not None and anchors.shape[0] > 0:
        min_d2 = np.full(m, np.inf)
        for anchor in anchors:
            diff = points - anchor
            np.minimum(min_d2, np.einsum("md,md->m", diff, diff), out=min_d2)
        first = 0
    else:
        if start is None:
            raise ValueError("start is required when no anchors are given")
        start = _check_int("start", start, low=0, high=m - 1)
        picks[0] = start
        diff = points - points[start]
        min_d2 = np.einsum("md,md->m", diff, diff)
        first = 1
    for i in range(first, k):
        best = int(np.argmax(min_d2))
        if min_d2[best] <= 0.0:
            raise ValueError(f"points has fewer than k={k} distinct rows")
        picks[i] = best
        diff = points - points[best]
        np.minimum(min_d2, np.einsum("md,md->m", diff, diff), out=min_d2)
    return picks


def _stochastic_round(x: float, rng: np.random.Generator) -> int:
    """``floor(x)`` or ``ceil(x)``, unbiased: expectation exactly ``x``."""
    low = math.floor(x)
    return low + int(rng.random() < x - low)


def _check_cached(space: LatentSpace, cached: np.ndarray | None) -> np.ndarray:
    """Validated cached latents, shape ``(m, d)``, float64 (``m`` may be 0)."""
    if cached is None:
        return np.empty((0, space.dim), dtype=np.float64)
    arr = np.asarray(cached, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != space.dim:
        raise ValueError(f"cached must have shape (m, {space.dim}), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("cached latents must be finite")
    if arr.shape[0] and not np.array_equal(space.project(arr), arr):
        raise ValueError("cached latents must lie in the valid set (space.project is a no-op)")
    return arr


def _distinct_rows(arr: np.ndarray) -> np.ndarray:
    """Sorted indices of the first occurrence of every distinct row of ``arr`` (shape ``(m, d)``).

    Rows are bucketed by an exact integer hash of their bytes (``-0.0`` folded into ``0.0``), so
    the common all-distinct case costs one sort of ``m`` integers instead of a row-wise sort;
    only rows that share a hash are compared in full.
    """
    bits = np.ascontiguousarray(arr + 0.0).view(np.uint64)
    weights = np.arange(1, 2 * arr.shape[1], 2, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    keys = bits @ weights
    order = np.argsort(keys, kind="stable")
    same = keys[order[1:]] == keys[order[:-1]]
    if not same.any():
        return np.arange(arr.shape[0])
    drop: list[int] = []
    run_starts = np.flatnonzero(same & ~np.r_[False, same[:-1]])
    for begin in run_starts:
        end = begin + 1
        while end < same.size and same[end]:
            end += 1
        members = np.sort(order[begin : end + 1])
        _, first = np.unique(arr[members] + 0.0, axis=0, return_index=True)
        drop.extend(np.setdiff1d(members, members[first]).tolist())
    return np.setdiff1d(np.arange(arr.shape[0]), drop)


def _usable_cached(space: LatentSpace, cached: np.ndarray) -> np.ndarray:
    """Indices of cached rows that may be shown: outside the safety region, first of duplicates."""
    if cached.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    first = _distinct_rows(cached)
    return first[~space.in_safety_region(cached[first])].astype(np.int64)


@dataclass(frozen=True)
class _Group:
    """``count`` slots of one role, filled from the cache or from the fresh pool."""

    role: SlotRole
    from_cache: bool
    count: int


def _plan(
    n: int, n_cached: int, *, learning: bool, config: FeedConfig, rng: np.random.Generator
) -> list[_Group]:
    """Split ``n`` slots into groups; cached groups come first so fresh faces avoid them."""
    if not learning:
        return [
            _Group(SlotRole.SPREAD, True, n_cached),
            _Group(SlotRole.SPREAD, False, n - n_cached),
        ]
    n_exploit = _stochastic_round(config.exploit_fraction * n, rng)
    n_explore = n - n_exploit
    # Cached faces go to both roles in proportion, within what each role can hold.
    cached_exploit = min(n_exploit, max(n_cached - n_explore, round(n_cached * n_exploit / n)))
    cached_explore = n_cached - cached_exploit
    return [
        _Group(SlotRole.EXPLOIT, True, cached_exploit),
        _Group(SlotRole.EXPLORE, True, cached_explore),
        _Group(SlotRole.EXPLOIT, False, n_exploit - cached_exploit),
        _Group(SlotRole.EXPLORE, False, n_explore - cached_explore),
    ]


def _shortlist(priority: np.ndarray, keep: int) -> np.ndarray:
    """Indices of the ``keep`` highest priorities, best first."""
    if keep < priority.size:
        top = np.argpartition(-priority, keep - 1)[:keep]
    else:
        top = np.arange(priority.size)
    return top[np.argsort(-priority[top], kind="stable")]


def _candidates(
    avail: np.ndarray,
    count: int,
    *,
    priority: np.ndarray | None,
    config: FeedConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """Rows of a source to choose ``count`` faces from, best first when there is a priority.

    With a priority (learning) the top ``shortlist_fraction`` of the available rows; without
    (warm-up) all of them, capped at ``pool_size`` random rows so a huge cache stays cheap.
    """
    if priority is not None:
        keep = max(math.ceil(config.shortlist_fraction * avail.size), count)
        return avail[_shortlist(priority[avail], keep)]
    if avail.size > config.pool_size:
        return np.sort(rng.choice(avail, config.pool_size, replace=False))
    return avail


def next_batch(
    space: LatentSpace,
    *,
    n: int,
    model: ReleasedModel | None,
    n_rated: int,
    cached: np.ndarray | None,
    rng: np.random.Generator,
    config: FeedConfig = FeedConfig(),
) -> FeedBatch:
    """Pick the next ``n`` faces for one user.

    Parameters
    ----------
    space : LatentSpace
        The generator's latent space (dimension ``d``).
    n : int
        Batch size, in ``[1, MAX_BATCH_SIZE]``.
    model : ReleasedModel or None
        The user's released (private) preference model, or None before the first fit.
    n_rated : int
        How many faces the user has rated (public count, >= 0).
    cached : np.ndarray or None
        Latents of the shared cached faces, shape ``(m, d)``; None means no cache. Rows in the
        safety region and repeated rows are skipped.
    rng : np.random.Generator
        Public randomness; the batch is a deterministic function of its state and the inputs.
    config : FeedConfig
        Tuning.

    Returns
    -------
    FeedBatch
        ``n`` distinct faces, none in the safety region, in a random display order (so position
        says nothing about a face's role).

    Raises
    ------
    ValueError
        On an input out of range or of the wrong shape, or a cached latent outside the box.
    RuntimeError
        If the space's safety region rejects almost every prior sample.
    """
    n = _check_int("n", n, low=1, high=MAX_BATCH_SIZE)
    n_rated = _check_int("n_rated", n_rated, low=0)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if not isinstance(config, FeedConfig):
        raise ValueError(f"config must be a FeedConfig, got {type(config).__name__}")
    params = None if model is None else linear_params(model, dim=space.dim)
    cached_arr = _check_cached(space, cached)

    usable = _usable_cached(space, cached_arr)
    n_cached = min(_stochastic_round(config.cached_share(n_rated) * n, rng), usable.size)
    fresh = sample_outside_safety(space, size=config.pool_size, need=n - n_cached, rng=rng)
    pools = {True: cached_arr[usable], False: fresh}
    margins = None
    if params is not None and n_rated >= config.warmup_ratings:
        coef, intercept = params
        margins = {key: pool @ coef + intercept for key, pool in pools.items()}
    groups = _plan(n, n_cached, learning=margins is not None, config=config, rng=rng)

    chosen: list[np.ndarray] = []
    chosen_index: list[np.ndarray] = []
    roles: list[SlotRole] = []
    taken = {key: np.zeros(pool.shape[0], dtype=bool) for key, pool in pools.items()}
    for group in groups:
        if group.count == 0:
            continue
        pool = pools[group.from_cache]
        avail = np.flatnonzero(~taken[group.from_cache])
        priority = None
        if margins is not None:
            margin = margins[group.from_cache]
            priority = margin if group.role is SlotRole.EXPLOIT else -np.abs(margin)
        candidates = _candidates(avail, group.count, priority=priority, config=config, rng=rng)
        if chosen:
            local = farthest_point_indices(
                pool[candidates], group.count, anchors=np.concatenate(chosen)
            )
        else:  # the first face: the best one when learning, a random one in warm-up
            first = 0 if priority is not None else int(rng.integers(candidates.size))
            local = farthest_point_indices(pool[candidates], group.count, start=first)
        picked = candidates[local]
        taken[group.from_cache][picked] = True
        if group.from_cache:
            chosen_index.append(usable[picked])
        else:
            chosen_index.append(np.full(group.count, -1, dtype=np.int64))
        chosen.append(pool[picked])
        roles.extend([group.role] * group.count)

    order = rng.permutation(n)
    latents = np.concatenate(chosen)[order]
    cached_index = np.concatenate(chosen_index)[order]
    latents.setflags(write=False)
    cached_index.setflags(write=False)
    return FeedBatch(
        latents=latents, cached_index=cached_index, roles=tuple(roles[i] for i in order)
    )
