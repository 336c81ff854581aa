"""``next_batch``: validate, fill the cached and fresh pools, plan the slots, let one feed pick."""

from __future__ import annotations

import numpy as np

from engine._validation import InvalidInputError, check_int, check_rng
from engine.latent.base import LatentSpace, sample_outside_safety
from engine.sampling._design import InformativeFeed, check_gaussian, persona_means
from engine.sampling._pools import check_cached, plan, stochastic_round, usable_cached
from engine.sampling._spread import SpreadFeed
from engine.sampling._types import (
    MAX_BATCH_SIZE,
    FeedBatch,
    FeedConfig,
    PersonaView,
    PosteriorView,
    ReleasedModel,
    SlotRole,
    linear_params,
)

__all__ = ["next_batch"]


def next_batch(
    space: LatentSpace,
    *,
    n: int,
    model: ReleasedModel | None,
    n_rated: int,
    cached: np.ndarray | None,
    rng: np.random.Generator,
    config: FeedConfig = FeedConfig(),
    posterior: PosteriorView | None = None,
    personas: PersonaView | None = None,
) -> FeedBatch:
    """Pick the next ``n`` faces for one user.

    Parameters
    ----------
    space : LatentSpace
        The generator's latent space (dimension ``d``).
    n : int
        Batch size, in ``[1, MAX_BATCH_SIZE]``.
    model : ReleasedModel or None
        The user's released (private) preference model, or None before the first fit. Not read
        when ``posterior`` is given: the released model is the posterior mean scaled by a
        positive factor, so the posterior ranks faces the same way and knows its uncertainty.
    n_rated : int
        How many faces the user has rated (public count, >= 0).
    cached : np.ndarray or None
        Latents of the shared cached faces, shape ``(m, d)``; None means no cache. Rows in the
        safety region and repeated rows are skipped.
    rng : np.random.Generator
        Public randomness; the batch is a deterministic function of its state and the inputs.
    config : FeedConfig
        Tuning.
    posterior : PosteriorView or None
        The user's Gaussian posterior over ``theta = [w, b]``: enables cold start and
        information-driven exploration (module docstring). None keeps the warm-up and boundary
        exploration of a point estimate.
    personas : PersonaView or None
        The user's posterior over population personas; with ``K >= 2`` personas, after cold start
        a share of the slots goes to faces outside the dominant one. Needs ``posterior``.

    Returns
    -------
    FeedBatch
        ``n`` distinct faces, none in the safety region, in a random display order (so position
        says nothing about a face's role).

    Raises
    ------
    InvalidInputError
        On an input out of range or of the wrong type or shape, a cached latent outside the box,
        or ``personas`` without ``posterior``.
    RuntimeError
        If the space's safety region rejects almost every prior sample.
    """
    n = check_int("n", n, low=1, high=MAX_BATCH_SIZE)
    n_rated = check_int("n_rated", n_rated, low=0)
    rng = check_rng(rng)
    if not isinstance(config, FeedConfig):
        raise InvalidInputError(f"config must be a FeedConfig, got {type(config).__name__}")
    belief = None
    if posterior is not None:
        belief = check_gaussian(posterior.mean, posterior.covariance, dim=space.dim, prefix="posterior.")
    elif personas is not None:
        raise InvalidInputError("personas needs a posterior")
    means = None if personas is None else persona_means(personas, dim=space.dim)
    params = None if model is None or belief is not None else linear_params(model, dim=space.dim)
    cached_arr = check_cached(space, cached)

    usable = usable_cached(space, cached_arr)
    n_cached = min(stochastic_round(config.cached_share(n_rated) * n, rng), usable.size)
    fresh = sample_outside_safety(space, size=config.pool_size, need=n - n_cached, rng=rng)
    pools = {True: cached_arr[usable], False: fresh}
    feed: InformativeFeed | SpreadFeed
    if belief is not None:
        feed = InformativeFeed(pools, belief, means, n_rated=n_rated, config=config, rng=rng)
    else:
        feed = SpreadFeed(pools, params if n_rated >= config.warmup_ratings else None, config=config, rng=rng)
    groups = plan(n, n_cached, feed.roles, feed.fractions, rng)

    chosen: list[np.ndarray] = []
    chosen_index: list[np.ndarray] = []
    slot_roles: list[SlotRole] = []
    taken = {key: np.zeros(pool.shape[0], dtype=bool) for key, pool in pools.items()}
    for group in groups:
        if group.count == 0:
            continue
        key = group.from_cache
        picked = feed.pick(group.role, key, np.flatnonzero(~taken[key]), group.count, chosen)
        taken[key][picked] = True
        if key:
            chosen_index.append(usable[picked])
        else:
            chosen_index.append(np.full(group.count, -1, dtype=np.int64))
        chosen.append(pools[key][picked])
        slot_roles.extend([group.role] * group.count)

    order = rng.permutation(n)
    latents = np.concatenate(chosen)[order]
    cached_index = np.concatenate(chosen_index)[order]
    latents.setflags(write=False)
    cached_index.setflags(write=False)
    return FeedBatch(latents=latents, cached_index=cached_index, roles=tuple(slot_roles[i] for i in order))
