"""The released preference model: a small immutable value, not the estimator that made it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import expit

from engine._validation import InvalidInputError

__all__ = ["PreferenceModel"]


@dataclass(frozen=True, eq=False)
class PreferenceModel:
    """A user's released preference: ``P(like | z) = sigmoid(coef . z + intercept)``.

    ``coef`` and ``intercept`` are on the calibrated logit scale: the sigmoid of the decision
    function *is* the model's like-probability, with no further calibration step, because
    matching computes ``sigmoid(pref . looks + bias)`` from exactly these two numbers.

    Attributes
    ----------
    coef : numpy.ndarray of float64, shape (d,)
        Preference direction in latent space; stored read-only.
    intercept : float
        Bias (log-odds of a like at ``z = 0``).
    """

    coef: np.ndarray
    intercept: float

    def __post_init__(self) -> None:
        coef = np.array(self.coef, dtype=np.float64)
        if coef.ndim != 1 or coef.size == 0:
            raise InvalidInputError(f"coef must have shape (d,) with d >= 1, got shape {coef.shape}")
        if not np.isfinite(coef).all():
            raise InvalidInputError("coef must be finite")
        if isinstance(self.intercept, bool) or not isinstance(self.intercept, (int, float, np.floating, np.integer)):
            raise InvalidInputError(f"intercept must be a real number, got {self.intercept!r}")
        if not math.isfinite(self.intercept):
            raise InvalidInputError(f"intercept must be finite, got {self.intercept!r}")
        coef.flags.writeable = False
        object.__setattr__(self, "coef", coef)
        object.__setattr__(self, "intercept", float(self.intercept))

    @property
    def dim(self) -> int:
        """Latent dimension ``d``."""
        return int(self.coef.size)

    def decision_function(self, Z: npt.ArrayLike) -> np.ndarray:
        """Calibrated log-odds of a like, ``Z @ coef + intercept``.

        Parameters
        ----------
        Z : array_like, shape (n, d)

        Returns
        -------
        numpy.ndarray of float64, shape (n,)
        """
        z = np.asarray(Z, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != self.coef.size:
            raise InvalidInputError(f"Z must have shape (n, {self.coef.size}), got shape {z.shape}")
        return z @ self.coef + self.intercept

    def predict_proba(self, Z: npt.ArrayLike) -> np.ndarray:
        """Like-probability ``sigmoid(decision_function(Z))``, shape (n,)."""
        return expit(self.decision_function(Z))

    def to_vector(self) -> np.ndarray:
        """``[coef..., intercept]``, shape (d + 1,), float64: the form stored encrypted."""
        return np.append(self.coef, self.intercept)

    @classmethod
    def from_vector(cls, vector: npt.ArrayLike) -> PreferenceModel:
        """Inverse of :meth:`to_vector`; ``vector`` has shape (d + 1,) with ``d >= 1``."""
        v = np.asarray(vector, dtype=np.float64)
        if v.ndim != 1 or v.size < 2:
            raise InvalidInputError(f"vector must have shape (d + 1,) with d >= 1, got shape {v.shape}")
        return cls(coef=v[:-1], intercept=float(v[-1]))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PreferenceModel):
            return NotImplemented
        return self.intercept == other.intercept and np.array_equal(self.coef, other.coef)

    def __hash__(self) -> int:
        return hash(((self.coef + 0.0).tobytes(), self.intercept))  # + 0.0 maps -0.0 to 0.0, as == does

    def __repr__(self) -> str:
        return f"PreferenceModel(dim={self.dim}, intercept={self.intercept:.4g})"
