"""What every Opacus DP-SGD run in the engine shares: the warnings its seeded set-up raises, silenced with reasons."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["LARGEST_ORDER_WARNING", "seeded_opacus"]

#: Opacus warns when the best Renyi order for a noise level is the largest it tries. That can only
#: make the epsilon it reports larger than the truth (more noise than needed), never smaller.
LARGEST_ORDER_WARNING = "Optimal order is the largest alpha"


@contextmanager
def seeded_opacus() -> Iterator[None]:
    """Silence, inside the block, the two warnings a seeded Opacus engine raises by design.

    * ``secure_mode=False``: Opacus then draws noise from a seeded ``torch.Generator`` (derived from
      the caller's numpy rng, so audits replay exactly) instead of torchcsprng, which is not a
      dependency. The gap it leaves -- an attacker who can observe the generator state or exploit
      float rounding of the Gaussian sampler -- is outside the threat model of releases kept
      encrypted at rest (per-user models) or released once per fit (the population model).
    * Opacus' per-sample-gradient hooks fire on a module whose inputs need no gradient; torch notes
      that on every backward pass. The gradients Opacus reads are unaffected.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off", category=UserWarning)
        warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
        yield
