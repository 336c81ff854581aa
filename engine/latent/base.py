"""The contract every face generator implements.

A latent space is the public coordinate system in which preferences (``w``), appearances and
faces live. Everything downstream (sampling, preference learning, scoring, reverse search) only
sees vectors of shape ``(..., dim)``; only ``render`` knows what a coordinate looks like.

Shared conventions, so that all backends are interchangeable:

* The prior is the standard normal ``N(0, I_dim)`` truncated to the valid set, the box
  ``[-PRIOR_BOUND, PRIOR_BOUND] ** dim``. ``sample`` draws from it; ``project`` clamps into it.
* ``in_safety_region`` marks latents that must never be shown or stored as an appearance
  (for example an apparent age under 18). It is evaluated on latents, so it is cheap enough to
  filter every candidate batch.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from engine._validation import InvalidInputError

__all__ = ["PRIOR_BOUND", "LatentSpace", "LatentSpaceError", "sample_outside_safety"]

#: Half-width of the valid box; +-3 standard deviations keeps 99.7 % of the prior per axis.
PRIOR_BOUND: float = 3.0


class LatentSpaceError(InvalidInputError):
    """A latent of the wrong shape, a non-finite value, or a backend that cannot be built."""


@runtime_checkable
class LatentSpace(Protocol):
    """A generator of faces from ``dim``-dimensional latents.

    Attributes
    ----------
    name : str
        Registry name of the backend (``"procedural"``, ``"diffusion"``).
    dim : int
        Latent dimension ``d``.
    dimension_names : tuple of str
        One human-readable name per coordinate, length ``dim``.
    """

    name: str
    dim: int
    dimension_names: tuple[str, ...]

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` latents from the prior, shape ``(n, dim)``, float64, all in the valid set."""
        ...

    def render(self, z: np.ndarray) -> Image.Image:
        """Render one latent of shape ``(dim,)`` as a 256x256 RGB image, deterministically."""
        ...

    def in_safety_region(self, z: np.ndarray) -> np.ndarray:
        """Boolean mask of shape ``z.shape[:-1]``: True where the latent must never be shown."""
        ...

    def project(self, z: np.ndarray) -> np.ndarray:
        """Clamp latents of shape ``(..., dim)`` into the valid set (same shape, float64)."""
        ...


def sample_outside_safety(
    space: LatentSpace, *, size: int, need: int, rng: np.random.Generator, max_draws: int = 8
) -> np.ndarray:
    """Prior samples that may be shown: draws of ``size`` until at least ``need`` are kept.

    Returns shape ``(k, dim)`` with ``k >= need``. Raises ``LatentSpaceError`` when the safety
    region rejects almost everything (a misconfigured space), instead of looping forever.
    """
    kept: list[np.ndarray] = []
    total = 0
    for _ in range(max_draws):
        z = space.sample(size, rng)
        kept.append(z[~space.in_safety_region(z)])
        total += kept[-1].shape[0]
        if total >= need:
            return np.concatenate(kept)
    raise LatentSpaceError(
        f"the safety region of space {space.name!r} rejected almost every prior sample: "
        f"{total} of {max_draws * size} kept, {need} needed"
    )
