"""Randomized response on like/pass labels: the service's default mechanism.

Mechanism
---------
Each stored label is the true label, flipped with probability ``p = 1 / (1 + e^eps)``. For one
rating, ``P[stored = y | true = y] / P[stored = y | true = 1 - y] = (1 - p) / p = e^eps``, so the
stored bit is eps-differentially private for that rating's answer. Labels of different faces use
independent randomness, and a rating only influences its own stored bit, so the whole stored
dataset (and everything computed from it alone, e.g. a refit model) is eps-DP under the
``LABEL_CHANGE`` relation: two datasets rating the same (public) faces and differing in the answer
to one of them.

Randomness
----------
The caller supplies the uniforms, so one function serves every caller: the service draws each
rating's uniform from the operating system's CSPRNG at ingestion, audits draw them from a seeded
``numpy`` generator. The comparison ``u < p`` on a 53-bit uniform realises ``P[flip] =
ceil(p * 2^53) / 2^53``, i.e. ``p`` rounded up by less than ``2^-53``, which only lowers the
privacy loss; with the float rounding of ``p`` itself the realised loss exceeds ``eps`` by less
than ``1e-15``. :func:`uniform_from_bytes` turns PRF output into such a uniform for callers that
want noise reproducible from a secret key (the guarantee is then computational: it holds only
against whoever does not hold the key).

Re-rating
---------
Two sound ways to stop repeated ratings of one face from averaging the noise away:

* fresh randomness per release, each release charged to that face (sequential composition: k
  releases of one face are ``k * eps``-DP for its answer). The service does this, so the noise can
  never be undone, not even by the operator holding every key; a ledger cap bounds ``k``;
* a flip decision drawn once per (user, face) from a keyed PRF (``uniform_from_bytes``): every
  stored value is ``answer XOR F``, so the whole history for one face is eps-DP for the answers
  (neighbouring histories: an answer sequence and its complement), re-ratings are free, and what
  is not protected is *whether* the user changed their answer.
"""

from __future__ import annotations

import math
import secrets

import numpy as np
import numpy.typing as npt

from privacy._validation import check_epsilon
from privacy.mechanisms.base import LABEL_CHANGE, Guarantee

__all__ = ["RandomizedResponse", "os_uniform", "uniform_from_bytes"]

_MECHANISM = "randomized_response"
_UNIFORM_BITS = 53


class RandomizedResponse:
    """Binary randomized response with flip probability ``1 / (1 + e^epsilon)``.

    Parameters
    ----------
    epsilon : float
        Privacy parameter, ``> 0``. ``math.inf`` gives flip probability 0 (no noise, no
        guarantee) and exists only for the non-private benchmark baseline.

    Notes
    -----
    Guarantee: pure ``epsilon``-DP (``delta = 0``) under ``LABEL_CHANGE``; see the module
    docstring for re-ratings.
    """

    def __init__(self, *, epsilon: float) -> None:
        self._epsilon = check_epsilon(epsilon)
        # 1 / (1 + e^eps) written as e^-eps / (1 + e^-eps): no overflow for large eps, and
        # exactly 0.0 for eps = inf.
        tail = math.exp(-self._epsilon)
        self._flip_probability = tail / (1.0 + tail)

    @property
    def epsilon(self) -> float:
        """The privacy parameter this instance was built with."""
        return self._epsilon

    @property
    def flip_probability(self) -> float:
        """Probability ``1 / (1 + e^epsilon)`` that a stored label differs from the true one."""
        return self._flip_probability

    @property
    def guarantee(self) -> Guarantee:
        """The claim: ``(epsilon, 0)``-DP for one rating's answer (``LABEL_CHANGE``)."""
        return Guarantee(epsilon=self._epsilon, delta=0.0, neighbouring=LABEL_CHANGE, mechanism=_MECHANISM)

    def privatise(self, labels: npt.ArrayLike, uniforms: npt.ArrayLike) -> np.ndarray:
        """Return the private labels: ``labels[i]`` flipped exactly where ``uniforms[i] < p``.

        Parameters
        ----------
        labels : array_like of bool or {0, 1}, shape (n,)
            True answers (1 = like).
        uniforms : array_like of float, shape (n,)
            One independent uniform in ``[0, 1)`` per label; see the module docstring for where
            they come from.

        Returns
        -------
        numpy.ndarray of bool, shape (n,)
        """
        y = np.asarray(labels)
        if y.ndim != 1:
            raise ValueError(f"labels must have shape (n,), got shape {y.shape}")
        if y.dtype != np.bool_:
            if y.dtype.kind not in "iuf" or not np.isin(y, (0, 1)).all():
                raise ValueError("labels must be booleans or 0/1 values")
            y = y.astype(bool)
        u = np.asarray(uniforms, dtype=np.float64)
        if u.shape != y.shape:
            raise ValueError(f"uniforms must have the shape of labels {y.shape}, got shape {u.shape}")
        if not ((u >= 0.0) & (u < 1.0)).all():
            raise ValueError("uniforms must lie in [0, 1)")
        return y ^ (u < self.flip_probability)

    def privatise_one(self, label: bool, uniform: float) -> bool:
        """Private label of a single rating; the same mechanism as :meth:`privatise`.

        The service passes :func:`os_uniform`: fresh OS randomness, so no one, the operator
        included, can undo the noise later.
        """
        return bool(self.privatise(np.array([label]), np.array([uniform]))[0])

    def __repr__(self) -> str:
        return f"RandomizedResponse(epsilon={self._epsilon!r})"


def os_uniform() -> float:
    """A uniform float in ``[0, 1)`` on the grid ``k / 2^53`` from the operating system's CSPRNG."""
    return secrets.randbits(_UNIFORM_BITS) / float(1 << _UNIFORM_BITS)


def uniform_from_bytes(data: bytes) -> float:
    """Map pseudorandom bytes (e.g. a 32-byte PRF output) to a uniform float in ``[0, 1)``.

    Uses the first 8 bytes, big-endian, keeping the top 53 bits: the result is exactly uniform
    on the grid ``k / 2^53`` if the bytes are uniform, like ``numpy``'s ``Generator.random``.

    Raises
    ------
    TypeError
        If ``data`` is not ``bytes``.
    ValueError
        If ``data`` is shorter than 8 bytes.
    """
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    if len(data) < 8:
        raise ValueError(f"data must hold at least 8 bytes, got {len(data)}")
    return (int.from_bytes(data[:8], "big") >> (64 - _UNIFORM_BITS)) / float(1 << _UNIFORM_BITS)
