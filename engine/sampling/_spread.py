"""The point-estimate feed: spread-out faces, then exploit and boundary faces, kept diverse.

Used without a posterior (a release-time mechanism gives the service only a released model):
warm-up batches are greedy farthest-point picks over the prior and the cache; once learning,
exploit faces come from the top of the released model's ranking and explore faces from nearest
its decision boundary, each shortlist thinned by farthest-point selection against everything
already in the batch.
"""

from __future__ import annotations

import numpy as np

from engine._validation import InvalidInputError, check_int
from engine.sampling._pools import candidates
from engine.sampling._types import FeedConfig, SlotRole

__all__ = ["SpreadFeed", "farthest_point_indices"]


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
    InvalidInputError
        If fewer than ``k`` rows are distinct from each other and from ``anchors``.
    """
    m = points.shape[0]
    k = check_int("k", k, low=0, high=m)
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
            raise InvalidInputError("start is required when no anchors are given")
        start = check_int("start", start, low=0, high=m - 1)
        picks[0] = start
        diff = points - points[start]
        min_d2 = np.einsum("md,md->m", diff, diff)
        first = 1
    for i in range(first, k):
        best = int(np.argmax(min_d2))
        if min_d2[best] <= 0.0:
            raise InvalidInputError(f"points has fewer than k={k} distinct rows")
        picks[i] = best
        diff = points - points[best]
        np.minimum(min_d2, np.einsum("md,md->m", diff, diff), out=min_d2)
    return picks


class SpreadFeed:
    """Roles and picks of the point-estimate feed for one batch.

    ``params`` is the released model's ``(coef, intercept)`` once learning (None in warm-up:
    every slot is ``SPREAD``).
    """

    def __init__(
        self,
        pools: dict[bool, np.ndarray],
        params: tuple[np.ndarray, float] | None,
        *,
        config: FeedConfig,
        rng: np.random.Generator,
    ) -> None:
        self.pools, self.config, self.rng = pools, config, rng
        self.priorities: dict[SlotRole, dict[bool, np.ndarray]] = {}
        self.roles: list[SlotRole] = [SlotRole.SPREAD]
        self.fractions: list[float] = []
        if params is not None:
            coef, intercept = params
            margins = {key: pool @ coef + intercept for key, pool in pools.items()}
            self.priorities[SlotRole.EXPLOIT] = margins
            self.priorities[SlotRole.EXPLORE] = {key: -np.abs(margin) for key, margin in margins.items()}
            self.roles, self.fractions = [SlotRole.EXPLOIT, SlotRole.EXPLORE], [config.exploit_fraction]

    def pick(self, role: SlotRole, key: bool, avail: np.ndarray, count: int, chosen: list[np.ndarray]) -> np.ndarray:
        """``count`` rows of pool ``key`` among ``avail``, far from the latents already ``chosen``."""
        pool = self.pools[key]
        priority = self.priorities[role][key] if role in self.priorities else None
        rows = candidates(avail, count, priority=priority, config=self.config, rng=self.rng)
        if chosen:
            local = farthest_point_indices(pool[rows], count, anchors=np.concatenate(chosen))
        else:  # the first face: the best one when ranked, a random one in warm-up
            first = 0 if priority is not None else int(self.rng.integers(rows.size))
            local = farthest_point_indices(pool[rows], count, start=first)
        return rows[local]
