"""One-rating-at-a-time updates of the preference posterior between exact refits.

Each new rating is absorbed by one Laplace (assumed-density) step that treats the current
posterior ``N(m, S)`` as the prior. The maximiser of ``log N(theta; m, S) + log P(s | theta . x)``
lies on the line ``m + a S x``, where the scalar ``a`` solves ``a = g(m . x + a x^T S x)`` (``g``
the derivative of the rating's log-likelihood); a few Fisher-scoring iterations find it. Then

    S' = (S^-1 + I_rr(t) x x^T)^-1 = S - I_rr (S x)(S x)^T / (1 + I_rr x^T S x)

at the new logit ``t``, with ``I_rr`` the Fisher information (:mod:`engine.preference._noisy`):
``O(d^2)`` per rating (Sherman-Morrison). The
evidence gains the log predictive probability of the stored label (probit approximation). What
it leaves out -- earlier ratings' curvature re-evaluated at the new mean, a full maximisation, the
drift weights -- the next exact refit (:func:`engine.preference.fit_posterior`) restores. Use it
for a face not yet in the fit; a changed answer to a face already in it needs an exact refit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from engine._validation import InvalidInputError
from engine.preference._model import PreferenceModel
from engine.preference._noisy import (
    check_flip_probability,
    check_labels,
    check_latents,
    rr_information_scalar,
    rr_log_likelihood_scalar,
)
from engine.preference._posterior import Posterior, PreferencePrior, fit_posterior, positive_definite

__all__ = ["OnlinePreference", "absorb"]

_STATE_VERSION = 2
_PROBIT = math.pi / 8.0
#: Fisher-scoring iterations of the scalar step; the map is a contraction, four reach round-off.
_SCALAR_ITERATIONS = 4


def absorb(posterior: Posterior, x: np.ndarray, like: bool, rho: float) -> Posterior:
    """The posterior after one rating (module docstring), for inputs already validated.

    ``x = [z, 1]`` is the rating's feature vector (finite, ``d + 1`` entries), ``like`` its
    stored label and ``rho`` its flip rate in ``[0, 1/2)``. :meth:`OnlinePreference.update`
    validates and calls it; the drift test's replays call it directly.
    """
    s = 1.0 if like else -1.0
    mean, covariance = posterior.mean, posterior.covariance
    u = covariance @ x
    prior_t = float(x @ mean)
    variance = float(x @ u)
    predictive, _ = rr_log_likelihood_scalar(prior_t / math.sqrt(1.0 + _PROBIT * variance), s, rho)
    step = 0.0  # the new mean is mean + step * u; Fisher scoring on this one scalar
    for _ in range(_SCALAR_ITERATIONS):
        t = prior_t + variance * step
        slope = rr_log_likelihood_scalar(t, s, rho)[1]
        step -= (step - slope) / (1.0 + variance * rr_information_scalar(t, rho))
    information = rr_information_scalar(prior_t + variance * step, rho)
    updated = covariance - np.outer(u, u) * (information / (1.0 + information * variance))
    mean = mean + step * u
    covariance = (updated + updated.T) / 2.0
    evidence = posterior.log_evidence + predictive
    # S' = (S^-1 + I x x^T)^-1 with I >= 0 is symmetric positive definite whenever S is, and the
    # symmetrisation is exact; only overflow or round-off at an |z| far outside the latent box can
    # break that, and then the validating constructor raises InvalidInputError as it always did.
    if (
        np.isfinite(mean).all()
        and np.isfinite(covariance).all()
        and not math.isinf(evidence)
        and positive_definite(covariance)
    ):
        return Posterior._trusted(mean, covariance, evidence)
    return Posterior(mean=mean, covariance=covariance, log_evidence=evidence)


class OnlinePreference:
    """A preference posterior that absorbs one rating at a time.

    Build it from a :class:`Posterior` (usually an exact fit), with :meth:`from_fit`, or with
    :meth:`from_state`; ``model`` is the released, calibrated :class:`PreferenceModel`.
    """

    def __init__(self, posterior: Posterior) -> None:
        if not isinstance(posterior, Posterior):
            raise InvalidInputError(f"posterior must be a Posterior, got {type(posterior).__name__}")
        self._posterior = posterior
        self._model: PreferenceModel | None = None  # built on first use: callers often want only the posterior

    @classmethod
    def from_fit(
        cls,
        Z: npt.ArrayLike,
        y_private: npt.ArrayLike,
        *,
        flip_probability: float | npt.ArrayLike,
        public_negatives: npt.ArrayLike | None = None,
        prior: PreferencePrior | None = None,
        weights: npt.ArrayLike | None = None,
    ) -> OnlinePreference:
        """Start from the exact fit; arguments as for :func:`engine.preference.fit_posterior`."""
        return cls(
            fit_posterior(
                Z, y_private, flip_probability=flip_probability, prior=prior,
                public_negatives=public_negatives, weights=weights,
            )
        )

    @property
    def dim(self) -> int:
        """Latent dimension ``d``."""
        return self._posterior.dim

    @property
    def posterior(self) -> Posterior:
        """The current posterior."""
        return self._posterior

    @property
    def model(self) -> PreferenceModel:
        """The current released model (``posterior.model()``)."""
        if self._model is None:
            self._model = self._posterior.model()
        return self._model

    def update(self, z: npt.ArrayLike, y_private: bool, *, flip_probability: float) -> PreferenceModel:
        """Add one rating of a new face and return the updated model (:meth:`step`, then :attr:`model`)."""
        self.step(z, y_private, flip_probability=flip_probability)
        return self.model

    def step(self, z: npt.ArrayLike, y_private: bool, *, flip_probability: float) -> Posterior:
        """Add one rating of a new face and return the updated posterior.

        The released model is derived only when asked for: a caller that stores the posterior
        (the rating path) does not pay for it.

        Parameters
        ----------
        z : array_like, shape (d,)
            Latent of the rated face.
        y_private : bool
            Its stored (private) label.
        flip_probability : float
            The flip rate it was privatised with, in ``[0, 1/2)``.
        """
        x = np.empty(self.dim + 1)
        x[:-1] = check_latents(np.reshape(z, (1, -1)), name="z", dim=self.dim)[0]
        x[-1] = 1.0
        if isinstance(y_private, (bool, np.bool_)):
            like = bool(y_private)
        else:
            like = bool(check_labels(np.array([y_private]), 1, name="y_private")[0])
        if isinstance(flip_probability, float) and 0.0 <= flip_probability < 0.5:
            rho = float(flip_probability)
        else:
            rho = float(check_flip_probability(flip_probability, 1)[0])
        self._posterior = absorb(self._posterior, x, like, rho)
        self._model = None
        return self._posterior

    def to_state(self) -> dict[str, Any]:
        """Plain lists and floats, to be stored encrypted; :meth:`from_state` restores."""
        return {"version": _STATE_VERSION, "posterior": self._posterior.to_state()}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> OnlinePreference:
        """Restore from :meth:`to_state`.

        Version 1 states (the earlier noise-corrected fit: ``theta`` and its Laplace
        ``posterior_covariance``) load as a posterior with that mean and covariance and an
        untracked evidence; the next exact refit replaces them.

        Raises
        ------
        InvalidInputError
            If the state has an unknown version, wrong shapes, or non-finite values.
        """
        if not isinstance(state, Mapping) or state.get("version") not in (1, _STATE_VERSION):
            raise InvalidInputError(f"state must be a mapping with version 1 or {_STATE_VERSION}")
        if state["version"] == _STATE_VERSION:
            if not isinstance(state.get("posterior"), Mapping):
                raise InvalidInputError("state['posterior'] must be a mapping")
            return cls(Posterior.from_state(state["posterior"]))
        try:
            mean = np.asarray(state["theta"], dtype=np.float64)
            covariance = np.asarray(state["posterior_covariance"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"state is malformed: {exc!r}") from exc
        return cls(Posterior(mean=mean, covariance=covariance))
