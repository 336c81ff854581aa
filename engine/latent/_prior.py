"""Prior, box and safety-rule helpers shared by every backend.

The conventions live in :mod:`engine.latent.base`; this module is their single implementation so
that the backends cannot drift apart (one truncation rule, one clamp, one age rule).
"""

from __future__ import annotations

import numpy as np

from engine.latent.base import PRIOR_BOUND, LatentSpaceError

__all__ = [
    "ADULT_AGE_YEARS",
    "AGE_OFFSET_YEARS",
    "AGE_SCALE_YEARS",
    "apparent_age_from_coordinate",
    "check_batch",
    "check_single",
    "project_into_box",
    "sample_truncated_prior",
    "underage_or_invalid",
]

#: Apparent age in years is ``AGE_OFFSET_YEARS + AGE_SCALE_YEARS * z_age``; about 5 % of the
#: prior falls under ``ADULT_AGE_YEARS`` (``z_age < -21 / 13``, inside the box).
AGE_OFFSET_YEARS: float = 39.0
AGE_SCALE_YEARS: float = 13.0
ADULT_AGE_YEARS: float = 18.0


def check_batch(z: np.ndarray, dim: int) -> np.ndarray:
    """Return ``z`` as float64 of shape ``(..., dim)``; non-finite values are allowed.

    Raises
    ------
    LatentSpaceError
        If ``z`` is not numeric or its last axis is not ``dim``.
    """
    try:
        arr = np.asarray(z, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise LatentSpaceError(f"z must be a numeric array of shape (..., {dim}); {exc}") from exc
    if arr.ndim == 0 or arr.shape[-1] != dim:
        raise LatentSpaceError(f"z must have shape (..., {dim}), got shape {arr.shape}")
    return arr


def check_single(z: np.ndarray, dim: int) -> np.ndarray:
    """Return one finite latent as float64 of shape ``(dim,)``, clamped into the box.

    Renderers clamp rather than reject out-of-box values so that round-off from downstream
    arithmetic (``3.0000000001``) does not fail a request; a non-finite value is a bug upstream
    and is rejected.

    Raises
    ------
    LatentSpaceError
        If ``z`` does not have shape ``(dim,)`` or contains NaN or infinity.
    """
    arr = check_batch(z, dim)
    if arr.ndim != 1:
        raise LatentSpaceError(f"z must have shape ({dim},) to render one face, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise LatentSpaceError(f"z must be finite to render, got {arr.tolist()}")
    return np.clip(arr, -PRIOR_BOUND, PRIOR_BOUND)


def sample_truncated_prior(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` exact samples of ``N(0, I_dim)`` truncated to the box, shape ``(n, dim)``.

    Coordinates outside ``[-PRIOR_BOUND, PRIOR_BOUND]`` are redrawn (rejection per coordinate,
    0.27 % per round), which is exact for a product of truncated normals; clipping would instead
    pile probability mass onto the faces of the box.

    Raises
    ------
    LatentSpaceError
        If ``n`` is not a non-negative integer or ``rng`` is not a ``numpy.random.Generator``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise LatentSpaceError(f"n must be a non-negative integer, got {n!r}")
    if not isinstance(rng, np.random.Generator):
        raise LatentSpaceError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    out = rng.standard_normal((int(n), dim))
    outside = np.abs(out) > PRIOR_BOUND
    while outside.any():
        out[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(out) > PRIOR_BOUND
    return out


def project_into_box(z: np.ndarray, dim: int) -> np.ndarray:
    """Clamp ``z`` of shape ``(..., dim)`` into the box; NaN and infinities become 0 (the prior mode).

    Mapping non-finite values to the mode rather than to a face of the box keeps a corrupted
    coordinate from landing on an extreme appearance.
    """
    arr = check_batch(z, dim)
    return np.clip(np.where(np.isfinite(arr), arr, 0.0), -PRIOR_BOUND, PRIOR_BOUND)


def apparent_age_from_coordinate(z_age: np.ndarray) -> np.ndarray:
    """Apparent age in years from the age coordinate, elementwise (NaN stays NaN)."""
    return AGE_OFFSET_YEARS + AGE_SCALE_YEARS * np.asarray(z_age, dtype=np.float64)


def underage_or_invalid(z: np.ndarray, age_index: int) -> np.ndarray:
    """Mask of shape ``z.shape[:-1]``: apparent age under 18 or any non-finite coordinate.

    ``z`` is float64 of shape ``(..., dim)``, already checked. Clamping into the box never changes
    the answer because the age threshold lies strictly inside it.
    """
    with np.errstate(invalid="ignore"):
        underage = apparent_age_from_coordinate(z[..., age_index]) < ADULT_AGE_YEARS
    return underage | ~np.all(np.isfinite(z), axis=-1)
