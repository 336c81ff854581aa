"""Latent-space test doubles and fixtures shared by the engine tests that run on every backend.

The fixtures live here, not in a ``conftest.py``: ``tests/unit/engine`` has other modules with
their own ``space`` fixture (the diffusion backend), so a module opts in by importing
``space_name``, ``space`` and ``axis`` from here. Each importing module gets its own
module-scoped instances, parametrised over :data:`SPACES`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from engine.latent import AGE_INDEX, create_latent_space
from engine.latent.base import PRIOR_BOUND, LatentSpace

__all__ = [
    "SAFETY_AXIS",
    "SPACES",
    "GaussianBoxSpace",
    "Linear",
    "axis",
    "min_pairwise_distance",
    "space",
    "space_name",
]


class GaussianBoxSpace:
    """Truncated ``N(0, I)`` on the box with a half-space safety rule ``z[0] < threshold``.

    A real, second implementation of :class:`~engine.latent.base.LatentSpace`: smaller dimension
    and a larger safety region (about 16 % of the prior at the default threshold) than the
    procedural backend, so engine code is exercised on more than one backend.

    Parameters
    ----------
    dim : int
        Latent dimension ``d``, at least 3 (``render`` colours the image from ``z[:3]``).
    threshold : float
        Latents with ``z[0] < threshold`` are in the safety region.
    """

    name = "gaussian-box"

    def __init__(self, *, dim: int = 20, threshold: float = -1.0) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 3:
            raise ValueError(f"dim must be an integer of at least 3, got {dim!r}")
        finite_number = isinstance(threshold, (int, float)) and not isinstance(threshold, bool)
        if not (finite_number and math.isfinite(threshold)):
            raise ValueError(f"threshold must be a finite number, got {threshold!r}")
        self.dim = dim
        self.threshold = float(threshold)
        self.dimension_names = tuple(f"x{k}" for k in range(dim))

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` prior latents, shape ``(n, dim)``, by redrawing coordinates outside the box."""
        out = rng.standard_normal((n, self.dim))
        outside = np.abs(out) > PRIOR_BOUND
        while outside.any():
            out[outside] = rng.standard_normal(int(outside.sum()))
            outside = np.abs(out) > PRIOR_BOUND
        return out

    def render(self, z: np.ndarray) -> Image.Image:
        """A flat 256x256 RGB image coloured by ``z[:3]`` of one latent of shape ``(dim,)``."""
        rgb = (np.tanh(self.project(z)[:3]) + 1.0) * 127.5
        return Image.new("RGB", (256, 256), tuple(int(c) for c in rgb))

    def in_safety_region(self, z: np.ndarray) -> np.ndarray:
        """Boolean mask of shape ``z.shape[:-1]``: True where ``z[..., 0] < threshold``."""
        return np.asarray(z, dtype=np.float64)[..., 0] < self.threshold

    def project(self, z: np.ndarray) -> np.ndarray:
        """Clamp latents of shape ``(..., dim)`` into the box (same shape, float64)."""
        return np.clip(np.asarray(z, dtype=np.float64), -PRIOR_BOUND, PRIOR_BOUND)


@dataclass(frozen=True)
class Linear:
    """A released linear model as engine code sees it: direction ``coef`` (d,) and ``intercept``."""

    coef: np.ndarray
    intercept: float


SPACES: dict[str, LatentSpace] = {"box": GaussianBoxSpace(), "procedural": create_latent_space("procedural")}
#: Both backends put the safety rule on coordinate 0 (the procedural ``apparent_age``).
SAFETY_AXIS: dict[str, int] = {"box": 0, "procedural": AGE_INDEX}


def min_pairwise_distance(z: np.ndarray) -> float:
    """Smallest Euclidean distance between two distinct rows of ``z``, shape ``(n, d)`` with n >= 2."""
    d = np.sqrt(((z[:, None, :] - z[None, :, :]) ** 2).sum(-1))
    return float(d[np.triu_indices(z.shape[0], 1)].min())


@pytest.fixture(scope="module", params=sorted(SPACES))
def space_name(request: pytest.FixtureRequest) -> str:
    """Key into :data:`SPACES`; every test that uses a space runs once per backend."""
    return request.param


@pytest.fixture(scope="module")
def space(space_name: str) -> LatentSpace:
    """The latent space named by ``space_name``."""
    return SPACES[space_name]


@pytest.fixture(scope="module")
def axis(space_name: str) -> int:
    """The coordinate the space's safety rule reads; lower values move towards the safety region."""
    return SAFETY_AXIS[space_name]
