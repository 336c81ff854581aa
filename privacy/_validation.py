"""Validation of privacy parameters, shared by mechanisms and accountants (which never import each other)."""

from __future__ import annotations

import math
import numbers

__all__ = ["check_delta", "check_epsilon"]


def check_epsilon(value: object, *, allow_zero: bool = False) -> float:
    """A real ``epsilon > 0`` (``>= 0`` with ``allow_zero``); ``math.inf`` passes (no privacy)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"epsilon must be a real number, got {value!r}")
    epsilon = float(value)
    if math.isnan(epsilon) or epsilon < 0 or (epsilon == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"epsilon must be {bound} (or math.inf), got {value!r}")
    return epsilon


def check_delta(value: object) -> float:
    """A real ``delta`` in ``[0, 1)``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"delta must be a real number, got {value!r}")
    delta = float(value)
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must be in [0, 1), got {value!r}")
    return delta
