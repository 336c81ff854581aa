"""Reverse classification: the faces a preference model scores at a chosen like-probability.

Given a released linear model ``p(z) = sigmoid(w . z + b)``, the faces it scores at probability
``score`` form the level set ``{z : w . z + b = logit(score)}`` intersected with the valid box
``[-B, B] ** d`` (``B = PRIOR_BOUND``). :func:`ideal_latents` returns a diverse set of points on it:

1. Draw a pool of prior samples ``z0`` outside the safety region; they carry the variety.
2. Move every sample to its *nearest* point of the level set inside the box. For a hyperplane
   intersected with a box that point is ``clip(z0 + lam * w, -B, B)`` for the one ``lam`` at which
   the clipped point reaches the level (the KKT conditions of the projection), and
   ``lam -> w . clip(z0 + lam * w) + b`` is non-decreasing and piecewise linear, so ``lam`` is
   found by bisection on the bracket where every coordinate sits on a wall, finished by one exact
   linear step. This is an exact Euclidean projection, not a project-then-clamp heuristic that
   drifts off the level set.
3. Safety: where the projected point falls in the safety region, walk back along the same clipped
   path towards ``z0`` (which is safe) and keep the furthest safe point found by bisection. Such
   a point stops short of the level; its achieved probability is reported as is.
4. Keep the candidates closest to the level and choose ``n`` of them by farthest-point selection.

Reachable range. The model's logit over the box spans ``b -+ B * ||w||_1``, but its ends are
single corners of the box: n faces at the exact optimum would all be the same face. Levels are
therefore aimed inside ``b -+ top_level * B * ||w||_1`` (``top_level = 0.9`` by default), where the
level set still has room for variety. ``score=None`` ("the top") aims at the upper end of that
range; an explicit ``score`` beyond it (for example 0.999 under a weak model) gets the closest
level inside it. :class:`IdealLatents` reports the level aimed at and the probability each face
achieves, so the caller can tell the user what was and was not reachable.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
from scipy.special import expit, logit

from engine._validation import InvalidInputError, check_rng
from engine.latent.base import PRIOR_BOUND, LatentSpace, sample_outside_safety
from engine.sampling import ReleasedModel, farthest_point_indices, linear_params

__all__ = ["MAX_IDEAL", "IdealLatents", "ideal_latents"]

#: Most faces one call returns.
MAX_IDEAL: int = 64

#: Bisection steps for the level-set multiplier before the final (exact) interpolation.
_LEVEL_STEPS: int = 48
#: Bisection steps when backing off the safety region along a path (resolution 2**-40 of it).
_SAFETY_STEPS: int = 40
#: Candidates within this many logits of the target count as on the level.
_LEVEL_TOL: float = 1e-6


@dataclass(frozen=True)
class IdealLatents:
    """Faces a model scores at (or as close as possible to) a requested like-probability.

    Attributes
    ----------
    latents : np.ndarray
        Shape ``(n, d)``, float64, read-only; in the valid box, none in the safety region.
    probabilities : np.ndarray
        Shape ``(n,)``, read-only: the model's like-probability of each latent.
    target : float
        The like-probability aimed at: the requested ``score`` clamped into the reachable range,
        or the top of that range when no score was requested.
    """

    latents: np.ndarray
    probabilities: np.ndarray
    target: float


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_options(n: int, score: float | None, pool_size: int, top_level: float) -> None:
    """Raise InvalidInputError naming the first option of the wrong type or out of range."""
    if not (_is_int(n) and 1 <= n <= MAX_IDEAL):
        raise InvalidInputError(f"n must be an integer in [1, {MAX_IDEAL}], got {n!r}")
    if score is not None and not (_is_real(score) and 0.0 < score < 1.0):
        raise InvalidInputError(f"score must be None or a real number in (0, 1), got {score!r}")
    if not (_is_int(pool_size) and MAX_IDEAL <= pool_size <= 1_000_000):
        raise InvalidInputError(
            f"pool_size must be an integer in [{MAX_IDEAL}, 1000000], got {pool_size!r}"
        )
    if not (_is_real(top_level) and 0.0 < top_level < 1.0):
        raise InvalidInputError(f"top_level must be a real number in (0, 1), got {top_level!r}")


def _level_multipliers(z0: np.ndarray, coef: np.ndarray, level: float) -> np.ndarray:
    """``lam`` per row with ``coef . clip(z0 + lam * coef) == level`` (shape ``(m,)``).

    Bisection on the bracket where every moving coordinate sits on a wall, then one linear
    interpolation inside the final bracket: the function is piecewise linear, so that step is
    exact unless a wall is crossed within the last ``2 ** -_LEVEL_STEPS`` of the bracket.

    Parameters
    ----------
    z0 : np.ndarray
        Start points in the box, shape ``(m, d)``.
    coef : np.ndarray
        Direction, shape ``(d,)``, not all zero.
    level : float
        Target of ``coef . z``, strictly inside ``(-B ||coef||_1, B ||coef||_1)``.
    """
    active = coef != 0.0
    walls = np.stack([-PRIOR_BOUND - z0, PRIOR_BOUND - z0])[..., active] / coef[active]
    low = walls.min(axis=(0, 2))
    high = walls.max(axis=(0, 2))
    extreme = PRIOR_BOUND * float(np.abs(coef).sum())
    f_low = np.full(low.shape, -extreme)
    f_high = np.full(high.shape, extreme)
    moved = np.empty_like(z0)
    for _ in range(_LEVEL_STEPS):
        mid = 0.5 * (low + high)
        np.multiply(mid[:, None], coef, out=moved)
        moved += z0
        np.clip(moved, -PRIOR_BOUND, PRIOR_BOUND, out=moved)
        f_mid = moved @ coef
        below = f_mid < level
        low = np.where(below, mid, low)
        f_low = np.where(below, f_mid, f_low)
        high = np.where(below, high, mid)
        f_high = np.where(below, f_high, f_mid)
    rise = f_high - f_low
    share = np.divide(level - f_low, rise, out=np.full(rise.shape, 0.5), where=rise > 0.0)
    return low + np.clip(share, 0.0, 1.0) * (high - low)


def _back_off_safety(
    space: LatentSpace, z0: np.ndarray, coef: np.ndarray, lam: np.ndarray
) -> np.ndarray:
    """Points ``clip(z0 + t * lam * coef)`` with the largest safe ``t`` in ``[0, 1]`` found.

    Bisection keeps ``low`` safe and ``high`` unsafe; ``t = 0`` is ``z0`` itself, which is safe,
    so every returned row is outside the safety region whatever the region's shape (for a region
    that the path enters once, such as a half-space, ``low`` converges to the boundary).
    Shape ``(m, d)``.
    """

    def path(t: np.ndarray) -> np.ndarray:
        return np.clip(z0 + (t * lam)[:, None] * coef, -PRIOR_BOUND, PRIOR_BOUND)

    low = np.zeros(lam.shape)
    high = np.ones(lam.shape)
    for _ in range(_SAFETY_STEPS):
        mid = 0.5 * (low + high)
        safe = ~space.in_safety_region(path(mid))
        low = np.where(safe, mid, low)
        high = np.where(safe, high, mid)
    return path(low)


def ideal_latents(
    space: LatentSpace,
    model: ReleasedModel | None,
    *,
    n: int = 8,
    score: float | None = None,
    rng: np.random.Generator,
    pool_size: int = 512,
    top_level: float = 0.9,
) -> IdealLatents:
    """Diverse latents that ``model`` scores at like-probability ``score``.

    Parameters
    ----------
    space : LatentSpace
        The generator's latent space (dimension ``d``).
    model : ReleasedModel
        The user's released preference model. None raises: there is nothing to invert yet.
    n : int
        How many latents, in ``[1, MAX_IDEAL]``.
    score : float, optional
        Requested like-probability in (0, 1); None asks for the top of the reachable range.
    rng : np.random.Generator
        Public randomness for the prior pool; the result is deterministic given its state.
    pool_size : int
        Prior samples projected per call, in ``[MAX_IDEAL, 1000000]``; more gives more variety.
    top_level : float
        In (0, 1): how far towards the box's best (worst) corner the reachable range extends,
        as a share of ``B * ||coef||_1`` measured from the intercept. See the module docstring.

    Returns
    -------
    IdealLatents
        ``n`` distinct latents in the valid box, outside the safety region, with their achieved
        probabilities and the target aimed at.

    Raises
    ------
    InvalidInputError
        On a missing model, a model of the wrong dimension, or an option out of range.
    RuntimeError
        If the safety region leaves too few distinct candidates.
    """
    if model is None:
        raise InvalidInputError("model is required: the user has no released preference model yet")
    _check_options(n, score, pool_size, top_level)
    rng = check_rng(rng)
    coef, intercept = linear_params(model, dim=space.dim)

    reach = top_level * PRIOR_BOUND * float(np.abs(coef).sum())
    wanted = reach if score is None else float(logit(score)) - intercept
    level = min(max(wanted, -reach), reach)

    z0 = sample_outside_safety(space, size=pool_size, need=n, rng=rng)
    if reach > 0.0:
        lam = _level_multipliers(z0, coef, level)
        z = np.clip(z0 + lam[:, None] * coef, -PRIOR_BOUND, PRIOR_BOUND)
        unsafe = space.in_safety_region(z)
        if unsafe.any():
            z[unsafe] = _back_off_safety(space, z0[unsafe], coef, lam[unsafe])
    else:
        z = z0
    z = space.project(z)
    margins = z @ coef
    gap = np.abs(margins - level)

    k = min(n, gap.size) - 1
    cutoff = max(float(np.partition(gap, k)[k]), _LEVEL_TOL)
    candidates = np.flatnonzero(gap <= cutoff)
    candidates = candidates[np.argsort(gap[candidates], kind="stable")]
    if candidates.size < n:
        raise RuntimeError(
            f"only {candidates.size} usable candidates for n={n}: increase pool_size "
            f"(now {pool_size}) or check the safety region of space {space.name!r}"
        )
    try:
        picks = candidates[farthest_point_indices(z[candidates], n, start=0)]
    except ValueError as exc:
        raise RuntimeError(f"fewer than n={n} distinct candidates: {exc}") from exc

    latents = z[picks]
    probabilities = expit(margins[picks] + intercept)
    latents.setflags(write=False)
    probabilities.setflags(write=False)
    return IdealLatents(
        latents=latents, probabilities=probabilities, target=float(expit(level + intercept))
    )
