"""Second-order online updates of the noise-aware preference fit between exact refits.

The service refits exactly (:func:`engine.preference.fit_noisy`) on a schedule; in between, each
new rating moves the model by one Newton step on the objective with that rating added. The
Hessian and the Laplace posterior covariance each gain one rank-one term ``c x x^T`` per rating,
so their inverses are updated with the Sherman-Morrison formula

    (A + c x x^T)^-1 = A^-1 - c (A^-1 x)(A^-1 x)^T / (1 + c x^T A^-1 x),

in ``O(d^2)``. Approximations, all removed by the next exact refit: the curvature of earlier
ratings stays at the logits where it was last evaluated, the penalty keeps the scale of the last
exact fit, and a step is one Newton step, not a full minimisation. :meth:`OnlinePreference.update`
adds a rating of a face not yet in the fit; when the user changes the answer to a face already
in it, refit exactly instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import expit

from engine.preference._model import PreferenceModel
from engine.preference._noisy import (
    DEFAULT_L2,
    NoisyFit,
    calibrated_model,
    check_flip_probability,
    check_labels,
    check_latents,
    rr_information,
    solve_noisy,
)

__all__ = ["OnlinePreference"]

_STATE_VERSION = 1


def _add_rank_one(inverse: np.ndarray, x: np.ndarray, weight: float) -> None:
    """In place: ``inverse <- (inverse^-1 + weight x x^T)^-1`` (Sherman-Morrison), ``weight >= 0``."""
    u = inverse @ x
    inverse -= np.outer(u, u) * (weight / (1.0 + weight * float(x @ u)))


class OnlinePreference:
    """A noise-aware preference fit that absorbs one rating at a time.

    Build it with :meth:`from_fit` (an exact fit) or :meth:`from_state_dict`; ``model`` is the
    released, calibrated :class:`PreferenceModel`.
    """

    def __init__(self, fit: NoisyFit) -> None:
        self._theta = np.array(fit.theta, dtype=np.float64)
        self._inverse_hessian = np.array(fit.inverse_hessian, dtype=np.float64)
        self._covariance = np.array(fit.posterior_covariance, dtype=np.float64)
        self._model = calibrated_model(self._theta, self._covariance)

    @classmethod
    def from_fit(
        cls,
        Z: npt.ArrayLike,
        y_private: npt.ArrayLike,
        *,
        flip_probability: float | npt.ArrayLike,
        public_negatives: npt.ArrayLike | None = None,
        l2: float = DEFAULT_L2,
    ) -> OnlinePreference:
        """Start from the exact fit; arguments as for :func:`engine.preference.fit_noisy`."""
        return cls(
            solve_noisy(Z, y_private, flip_probability=flip_probability, public_negatives=public_negatives, l2=l2)
        )

    @property
    def dim(self) -> int:
        """Latent dimension ``d``."""
        return self._theta.size - 1

    @property
    def model(self) -> PreferenceModel:
        """The current released model (calibrated, like :func:`engine.preference.fit_noisy`'s)."""
        return self._model

    def update(self, z: npt.ArrayLike, y_private: bool, *, flip_probability: float) -> PreferenceModel:
        """Add one rating of a new face and return the updated model.

        Parameters
        ----------
        z : array_like, shape (d,)
            Latent of the rated face.
        y_private : bool
            Its stored (private) label.
        flip_probability : float
            The flip rate it was privatised with, in ``[0, 1/2)``.
        """
        x = np.append(check_latents(np.reshape(z, (1, -1)), name="z", dim=self.dim)[0], 1.0)
        s = 1.0 if check_labels(np.array([y_private]), 1, name="y_private")[0] else -1.0
        rho = check_flip_probability(flip_probability, 1)
        t = float(x @ self._theta)
        clean, private = rr_information(np.array([t]), rho)
        gradient = x * (-s * (float(expit(-s * t)) + float(rho[0] / (1.0 - 2.0 * rho[0]))))
        _add_rank_one(self._inverse_hessian, x, float(clean[0]))
        _add_rank_one(self._covariance, x, float(private[0]))
        self._theta -= self._inverse_hessian @ gradient
        self._model = calibrated_model(self._theta, self._covariance)
        return self._model

    def state_dict(self) -> dict[str, Any]:
        """Plain lists and floats, to be stored encrypted; :meth:`from_state_dict` restores."""
        return {
            "version": _STATE_VERSION,
            "theta": self._theta.tolist(),
            "inverse_hessian": self._inverse_hessian.tolist(),
            "posterior_covariance": self._covariance.tolist(),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> OnlinePreference:
        """Restore from :meth:`state_dict`.

        Raises
        ------
        ValueError
            If the state has another version, wrong shapes, or non-finite values.
        """
        if not isinstance(state, Mapping) or state.get("version") != _STATE_VERSION:
            raise ValueError(f"state must be a mapping with version {_STATE_VERSION}")
        try:
            theta = np.asarray(state["theta"], dtype=np.float64)
            inverse_hessian = np.asarray(state["inverse_hessian"], dtype=np.float64)
            covariance = np.asarray(state["posterior_covariance"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"state is malformed: {exc!r}") from exc
        p = theta.size
        if theta.shape != (p,) or p < 2:
            raise ValueError(f"state['theta'] must have shape (d + 1,) with d >= 1, got shape {theta.shape}")
        for name, matrix in (("inverse_hessian", inverse_hessian), ("posterior_covariance", covariance)):
            if matrix.shape != (p, p):
                raise ValueError(f"state[{name!r}] must have shape ({p}, {p}), got shape {matrix.shape}")
        if not all(np.isfinite(a).all() for a in (theta, inverse_hessian, covariance)):
            raise ValueError("state must hold finite values")
        return cls(NoisyFit(theta=theta, inverse_hessian=inverse_hessian, posterior_covariance=covariance))
