"""The public known negative every preference fit gets: one face at the centre of the safety region."""

from __future__ import annotations

import numpy as np

from engine.latent import ProceduralFaceSpace
from matchsvc.services.preferences import safety_anchors


def test_the_anchor_is_the_typical_safety_region_face() -> None:
    space = ProceduralFaceSpace()
    anchor = safety_anchors(space)
    assert anchor.shape == (1, space.dim) and not anchor.flags.writeable
    assert space.in_safety_region(anchor).all()
    # The mean of prior faces under 18: apparent age coordinate E[z | z < (18 - 39) / 13], about -2.0,
    # every other coordinate at the prior mean 0 (up to Monte Carlo error over 4096 draws).
    draws = space.sample(200_000, np.random.default_rng(1))
    inside = draws[space.in_safety_region(draws)]
    np.testing.assert_allclose(anchor[0], inside.mean(axis=0), atol=0.06)


def test_the_anchor_is_the_same_in_every_process() -> None:
    safety_anchors.cache_clear()
    first = safety_anchors(ProceduralFaceSpace()).copy()
    safety_anchors.cache_clear()
    np.testing.assert_array_equal(safety_anchors(ProceduralFaceSpace()), first)
