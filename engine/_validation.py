"""The engine's one validation vocabulary: one error type, one set of argument checks.

Every public function of ``engine`` checks its arguments on entry and raises
:class:`InvalidInputError` for any it cannot use, whether the value has the wrong type (a float
``k``, an ``int`` seed where a ``numpy.random.Generator`` is required) or the right type and a
wrong value (a negative count, a NaN, a shape mismatch). As scikit-learn's
``InvalidParameterError`` does, the type derives from both ``ValueError`` and ``TypeError``: a
caller catches one exception for "bad input", and code written against either builtin keeps
working. Errors that are not about the caller's input (a failed compile, a safety region that
rejects every sample) keep their own types (``RuntimeError``, ...). The checks below are the
shared ones; a subpackage adds checks of its own objects (latents, labels, posteriors) built on
them, raising the same type. ``privacy`` is a separate package with its own rules.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["InvalidInputError", "check_count", "check_int", "check_positive", "check_real", "check_rng"]


class InvalidInputError(ValueError, TypeError):
    """An argument of an ``engine`` function has the wrong type or an unusable value."""


def check_int(name: str, value: object, *, low: int, high: int | None = None) -> int:
    """An integer (not a bool) in ``[low, high]`` (no upper bound when ``high`` is None)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidInputError(f"{name} must be an integer, got {value!r}")
    result = int(value)
    if result < low or (high is not None and result > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise InvalidInputError(f"{name} must be {bound}, got {result}")
    return result


def check_count(name: str, value: object) -> int:
    """An integer ``>= 1`` (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InvalidInputError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_real(
    name: str,
    value: object,
    *,
    low: float,
    high: float,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real number (not a bool) in the interval from ``low`` to ``high``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInputError(f"{name} must be a real number, got {value!r}")
    result = float(value)
    too_low = result <= low if low_open else result < low
    too_high = result >= high if high_open else result > high
    if not math.isfinite(result) or too_low or too_high:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise InvalidInputError(f"{name} must be in {interval}, got {result}")
    return result


def check_positive(name: str, value: object, *, at_most: float = math.inf) -> float:
    """A finite real number in ``(0, at_most]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInputError(f"{name} must be a real number, got {value!r}")
    result = float(value)
    if not (0.0 < result <= at_most and math.isfinite(result)):
        raise InvalidInputError(f"{name} must be finite and in (0, {at_most:g}], got {value!r}")
    return result


def check_rng(rng: object, *, name: str = "rng") -> np.random.Generator:
    """A ``numpy.random.Generator``: the engine takes randomness only as one, never as a seed."""
    if not isinstance(rng, np.random.Generator):
        raise InvalidInputError(f"{name} must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng
