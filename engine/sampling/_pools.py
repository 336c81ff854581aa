"""What both feeds share: the cached and fresh pools, the slot plan, the ranked shortlists."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine._validation import InvalidInputError
from engine.latent.base import LatentSpace
from engine.sampling._types import FeedConfig, SlotRole

__all__ = ["Group", "candidates", "check_cached", "plan", "stochastic_round", "usable_cached"]


def stochastic_round(x: float, rng: np.random.Generator) -> int:
    """``floor(x)`` or ``ceil(x)``, unbiased: expectation exactly ``x``."""
    return _round_at(x, rng.random())


def _round_at(x: float, u: float) -> int:
    """``floor(x) + [u < x - floor(x)]``: unbiased for ``u ~ U[0, 1)``, non-decreasing in ``x``."""
    low = math.floor(x)
    return low + int(u < x - low)


def check_cached(space: LatentSpace, cached: np.ndarray | None) -> np.ndarray:
    """Validated cached latents, shape ``(m, d)``, float64 (``m`` may be 0)."""
    if cached is None:
        return np.empty((0, space.dim), dtype=np.float64)
    arr = np.asarray(cached, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != space.dim:
        raise InvalidInputError(f"cached must have shape (m, {space.dim}), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InvalidInputError("cached latents must be finite")
    if arr.shape[0] and not np.array_equal(space.project(arr), arr):
        raise InvalidInputError("cached latents must lie in the valid set (space.project is a no-op)")
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


def usable_cached(space: LatentSpace, cached: np.ndarray) -> np.ndarray:
    """Indices of cached rows that may be shown: outside the safety region, first of duplicates."""
    if cached.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    first = _distinct_rows(cached)
    return first[~space.in_safety_region(cached[first])].astype(np.int64)


@dataclass(frozen=True)
class Group:
    """``count`` slots of one role, filled from the cache or from the fresh pool."""

    role: SlotRole
    from_cache: bool
    count: int


def plan(
    n: int,
    n_cached: int,
    roles: Sequence[SlotRole],
    fractions: Sequence[float],
    rng: np.random.Generator,
) -> list[Group]:
    """Split ``n`` slots into groups; cached groups come first so fresh faces avoid them.

    ``fractions`` are the expected shares of all roles but the last, which takes the rest. The
    cumulative shares are rounded stochastically with one shared uniform, so each role's count is
    its share in expectation, no count is negative and they add up to ``n`` (a single share
    rounds exactly like :func:`stochastic_round`). Cached faces go to the roles in proportion,
    within what each role can hold.
    """
    counts = [n]
    if len(roles) > 1:
        u = rng.random()
        edges = [min(_round_at(sum(fractions[: k + 1]) * n, u), n) for k in range(len(fractions))]
        counts = np.diff([0, *edges, n]).tolist()
    cached_counts = []
    cached_left, slots_left = n_cached, n
    for count in counts:
        slots_left -= count
        share = round(cached_left * count / (slots_left + count)) if count else 0
        take = min(count, max(cached_left - slots_left, share))
        cached_counts.append(take)
        cached_left -= take
    slots = list(zip(roles, counts, cached_counts, strict=True))
    return [
        *(Group(role, True, cached) for role, _, cached in slots),
        *(Group(role, False, count - cached) for role, count, cached in slots),
    ]


def _shortlist(priority: np.ndarray, keep: int) -> np.ndarray:
    """Indices of the ``keep`` highest priorities, best first."""
    if keep < priority.size:
        top = np.argpartition(-priority, keep - 1)[:keep]
    else:
        top = np.arange(priority.size)
    return top[np.argsort(-priority[top], kind="stable")]


def candidates(
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
