"""The released population model and what a user's own data makes of it.

:class:`PopulationModel` is a mixture of ``K`` Gaussians ("personas") over ``theta = [w, b]``
with means ``mu_k``, weights ``pi_k`` and one within-persona covariance
``C = F F^T + diag(c)``. It is a user-level DP release (:func:`engine.population.fit_population`);
everything below is post-processing of it and of one user's stored labels, so it costs nothing
more in privacy, neither the user's nor anyone else's.

Per-user posterior. Under persona ``k`` the user's posterior is the Laplace posterior of
:func:`engine.preference.fit_posterior` with prior ``N(mu_k, C)``, and its Laplace evidence
``log p(labels | k)`` weighs the personas: ``r_k ~ pi_k p(labels | k)``, normalised in log space.
The posterior over ``theta`` is then the mixture ``sum_k r_k N(m_k, S_k)``; :class:`Posterior` is
one Gaussian, so the mixture is moment matched (mean ``sum r_k m_k``, covariance
``sum r_k (S_k + (m_k - m)(m_k - m)^T)``), which keeps the spread between personas that are still
in play as uncertainty instead of dropping it. Before any rating ``r = pi`` and each component is
its persona's prior, the same formulas with zero data.

Public negatives (the service's safety anchor) are a constraint, not evidence about the user:
they enter every persona's prior (``N(mu_k, C)`` conditioned on them) and so every component, but
the personas are weighed by the user's labels alone, ``r_k ~ pi_k p(labels | k, negatives)``,
the evidence with the negatives divided by the evidence of the negatives alone. Weighing them
too would favour, for every user alike, the personas that happen to dislike the anchor's
direction, and put users in the wrong persona noticeably more often (docs/benchmarks.md,
"Engine tuning").
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import logsumexp

from engine._validation import InvalidInputError, check_count, check_positive
from engine.preference import Posterior, PreferencePrior, fit_posterior
from privacy.accounting import RDPAccountant
from privacy.mechanisms import ADD_REMOVE_USER, Guarantee

__all__ = ["ACCOUNTING_KEYS", "PersonaPosterior", "PopulationModel", "population_epsilon"]

_STATE_VERSION = 1
#: Keys of :attr:`PopulationModel.accounting`, in the order the ledger stores them.
ACCOUNTING_KEYS: tuple[str, ...] = ("noise_multiplier", "sample_rate", "steps", "max_grad_norm", "n_users")
#: Tolerance on ``sum(weights) == 1``: the softmax of float64 logits is within a few ulps.
_WEIGHT_SUM_TOLERANCE = 1e-9


def check_accounting(accounting: Mapping[str, Any]) -> dict[str, float | int]:
    """The accounting record with checked, normalised values (the ledger's constraints)."""
    if not isinstance(accounting, Mapping) or set(accounting) != set(ACCOUNTING_KEYS):
        raise InvalidInputError(f"accounting must be a mapping with exactly the keys {ACCOUNTING_KEYS}")
    return {
        "noise_multiplier": check_positive("noise_multiplier", accounting["noise_multiplier"]),
        "sample_rate": check_positive("sample_rate", accounting["sample_rate"], at_most=1.0),
        "steps": check_count("steps", accounting["steps"]),
        "max_grad_norm": check_positive("max_grad_norm", accounting["max_grad_norm"]),
        "n_users": check_count("n_users", accounting["n_users"]),
    }


def _array(name: str, value: npt.ArrayLike, shape: tuple[int | None, ...]) -> np.ndarray:
    """A finite, read-only float64 copy of ``value`` whose shape matches ``shape`` (None: any >= 1)."""
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} must be a numeric array: {exc}") from None
    if array.ndim != len(shape) or any(
        size < 1 if want is None else size != want for size, want in zip(array.shape, shape, strict=True)
    ):
        expected = ", ".join("n" if want is None else str(want) for want in shape)
        raise InvalidInputError(f"{name} must have shape ({expected}), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise InvalidInputError(f"{name} must be finite")
    array.flags.writeable = False
    return array


@dataclass(frozen=True, eq=False)
class PersonaPosterior:
    """One user's posterior under the population model (module docstring).

    Attributes
    ----------
    responsibilities : numpy.ndarray, shape (K,)
        Posterior probability of each persona given the user's labels; the persona weights
        before any rating. Sums to 1.
    components : tuple of Posterior
        The user's posterior under each persona's prior, in persona order.
    posterior : Posterior
        The moment-matched mixture; ``posterior.model()`` is the user's released model. Its
        ``log_evidence`` is the mixture's, ``log sum_k pi_k p(labels | k)``.
    """

    responsibilities: np.ndarray
    components: tuple[Posterior, ...]
    posterior: Posterior

    @property
    def dominant(self) -> int:
        """Index of the most probable persona."""
        return int(np.argmax(self.responsibilities))


@dataclass(frozen=True, eq=False)
class PopulationModel:
    """A mixture of personas over ``theta = [w, b]``: the user-level DP population release.

    Attributes
    ----------
    means : numpy.ndarray, shape (K, d+1)
        Persona means ``[w, b]``, ordered by decreasing weight when made by ``fit_population``.
    weights : numpy.ndarray, shape (K,)
        Persona weights, all ``> 0``, summing to 1.
    factor : numpy.ndarray, shape (d+1, r)
        Low-rank part of the within-persona covariance. Its last row is 0: within a persona the
        intercept is independent of ``w``, as :class:`engine.preference.PreferencePrior` has it.
    diagonal : numpy.ndarray, shape (d+1,)
        Diagonal part, all ``> 0``; the covariance is ``factor @ factor.T + diag(diagonal)``.
    guarantee : Guarantee
        The release's claim, under :data:`privacy.mechanisms.ADD_REMOVE_USER`.
    accounting : dict
        What RDP composition needs (:func:`population_epsilon`) and the ledger records:
        ``noise_multiplier``, ``sample_rate``, ``steps``, ``max_grad_norm`` and ``n_users``,
        the number of users with ratings the release was trained on. That count is exact and
        is not covered by the guarantee: it is operator metadata, not to be shown to users.
    """

    means: np.ndarray
    weights: np.ndarray
    factor: np.ndarray
    diagonal: np.ndarray
    guarantee: Guarantee
    accounting: dict[str, float | int]

    def __post_init__(self) -> None:
        means = _array("means", self.means, (None, None))
        k, p = means.shape
        if p < 2:
            raise InvalidInputError(f"means must have shape (K, d + 1) with d >= 1, got shape {means.shape}")
        weights = _array("weights", self.weights, (k,))
        if (weights <= 0).any() or abs(float(weights.sum()) - 1.0) > _WEIGHT_SUM_TOLERANCE:
            raise InvalidInputError("weights must be > 0 and sum to 1")
        factor = _array("factor", self.factor, (p, None))
        if (factor[-1] != 0).any():
            raise InvalidInputError("factor's last row (the intercept) must be 0")
        diagonal = _array("diagonal", self.diagonal, (p,))
        if (diagonal <= 0).any():
            raise InvalidInputError("diagonal must be > 0")
        if not isinstance(self.guarantee, Guarantee) or self.guarantee.neighbouring != ADD_REMOVE_USER:
            raise InvalidInputError(f"guarantee must be a Guarantee under {ADD_REMOVE_USER!r}, got {self.guarantee!r}")
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "factor", factor)
        object.__setattr__(self, "diagonal", diagonal)
        object.__setattr__(self, "accounting", check_accounting(self.accounting))

    @property
    def n_personas(self) -> int:
        """Number of personas ``K``."""
        return int(self.means.shape[0])

    @property
    def dim(self) -> int:
        """Latent dimension ``d``."""
        return int(self.means.shape[1] - 1)

    def covariance(self) -> np.ndarray:
        """Within-persona covariance of ``theta``, shape (d+1, d+1)."""
        return self.factor @ self.factor.T + np.diag(self.diagonal)

    def persona_prior(self, k: int) -> PreferencePrior:
        """Persona ``k`` as a prior for :func:`engine.preference.fit_posterior`: ``N(mu_k, C)``, exactly."""
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= k < self.n_personas:
            raise InvalidInputError(f"k must be an integer in [0, {self.n_personas}), got {k!r}")
        return _prior(self.means[int(k)], self.covariance())

    def prior(self) -> PreferencePrior:
        """The moment-matched single Gaussian of the whole mixture.

        Its ``w`` block and intercept variance are exact; the covariance between ``w`` and ``b``
        that the spread of the persona means creates is dropped, since a
        :class:`PreferencePrior` keeps them independent. Use the personas (:meth:`posterior`)
        where that matters.
        """
        within = self.covariance()
        mean, covariance = _moment_match(
            self.weights, self.means, np.broadcast_to(within, (self.n_personas, *within.shape))
        )
        return _prior(mean, covariance)

    def posterior(
        self,
        Z: npt.ArrayLike,
        y_private: npt.ArrayLike,
        *,
        flip_probability: float | npt.ArrayLike,
        weights: npt.ArrayLike | None = None,
        public_negatives: npt.ArrayLike | None = None,
    ) -> PersonaPosterior:
        """One user's persona mix and posterior from their stored labels (module docstring).

        Parameters
        ----------
        Z : array_like, shape (n, d)
            Latents of the rated faces; ``n = 0`` (no ratings yet) is allowed.
        y_private, flip_probability, weights, public_negatives
            As for :func:`engine.preference.fit_posterior`.

        Returns
        -------
        PersonaPosterior
        """
        z = np.asarray(Z, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise InvalidInputError(f"Z must have shape (n, {self.dim}), got shape {z.shape}")
        priors = [self.persona_prior(k) for k in range(self.n_personas)]
        negatives = None
        if public_negatives is not None:
            negatives = np.asarray(public_negatives, dtype=np.float64)
            if negatives.ndim != 2 or negatives.shape[0] < 1 or negatives.shape[1] != self.dim:
                raise InvalidInputError(f"public_negatives must have shape (m, {self.dim}), got shape {negatives.shape}")
            # Each persona's prior conditioned on the public negatives: clean passes, as fit_posterior adds them.
            constrained = [
                fit_posterior(negatives, np.zeros(len(negatives), dtype=bool), flip_probability=0.0, prior=prior)
                for prior in priors
            ]
        else:
            constrained = [Posterior.from_prior(prior) for prior in priors]
        if z.shape[0] > 0:
            components = [
                fit_posterior(
                    z,
                    y_private,
                    flip_probability=flip_probability,
                    prior=prior,
                    public_negatives=negatives,
                    weights=weights,
                )
                for prior in priors
            ]
        else:
            _check_no_ratings(y_private, flip_probability, weights)
            components = constrained
        # The user's labels alone weigh the personas: p(labels | k, negatives) = p(all | k) / p(negatives | k).
        log_joint = np.log(self.weights) + np.array(
            [c.log_evidence - base.log_evidence for c, base in zip(components, constrained, strict=True)]
        )
        log_evidence = float(logsumexp(log_joint))
        responsibilities = np.exp(log_joint - log_evidence)
        responsibilities /= responsibilities.sum()
        mean, covariance = _moment_match(
            responsibilities, np.stack([c.mean for c in components]), np.stack([c.covariance for c in components])
        )
        responsibilities.flags.writeable = False
        return PersonaPosterior(
            responsibilities=responsibilities,
            components=tuple(components),
            posterior=Posterior(mean=mean, covariance=covariance, log_evidence=log_evidence),
        )

    def to_state(self) -> dict[str, Any]:
        """Plain lists, floats and strings; :meth:`from_state` restores the model exactly."""
        return {
            "version": _STATE_VERSION,
            "means": self.means.tolist(),
            "weights": self.weights.tolist(),
            "factor": self.factor.tolist(),
            "diagonal": self.diagonal.tolist(),
            "guarantee": {
                "epsilon": self.guarantee.epsilon,
                "delta": self.guarantee.delta,
                "neighbouring": self.guarantee.neighbouring,
                "mechanism": self.guarantee.mechanism,
            },
            "accounting": dict(self.accounting),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PopulationModel:
        """Inverse of :meth:`to_state`.

        Raises
        ------
        InvalidInputError
            If the state has another version or is malformed.
        """
        if not isinstance(state, Mapping) or state.get("version") != _STATE_VERSION:
            raise InvalidInputError(f"state must be a mapping with version {_STATE_VERSION}")
        try:
            guarantee = Guarantee(**state["guarantee"])
            return cls(
                means=state["means"],
                weights=state["weights"],
                factor=state["factor"],
                diagonal=state["diagonal"],
                guarantee=guarantee,
                accounting=state["accounting"],
            )
        except (KeyError, TypeError) as exc:
            raise InvalidInputError(f"population state is malformed: {exc!r}") from exc

    def __repr__(self) -> str:
        return (
            f"PopulationModel(n_personas={self.n_personas}, dim={self.dim}, rank={self.factor.shape[1]}, "
            f"epsilon={self.guarantee.epsilon:g}, delta={self.guarantee.delta:g})"
        )


def _prior(mean: np.ndarray, covariance: np.ndarray) -> PreferencePrior:
    return PreferencePrior(
        mean=mean[:-1],
        cov=covariance[:-1, :-1],
        intercept_mean=float(mean[-1]),
        intercept_variance=float(covariance[-1, -1]),
    )


def _moment_match(weights: np.ndarray, means: np.ndarray, covariances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the mixture ``sum_k weights_k N(means_k, covariances_k)``."""
    mean = weights @ means
    spread = means - mean
    covariance = np.einsum("k,kij->ij", weights, covariances) + (spread.T * weights) @ spread
    return mean, (covariance + covariance.T) / 2.0


def _check_no_ratings(
    y_private: npt.ArrayLike, flip_probability: float | npt.ArrayLike, weights: npt.ArrayLike | None
) -> None:
    """With ``n = 0`` the per-rating arguments must be empty (or a scalar flip rate)."""
    if np.shape(y_private) != (0,):
        raise InvalidInputError(f"y_private must have shape (0,) when Z has no rows, got shape {np.shape(y_private)}")
    if np.ndim(flip_probability) != 0 and np.shape(flip_probability) != (0,):
        raise InvalidInputError("flip_probability must be a scalar or have shape (0,) when Z has no rows")
    if weights is not None and np.shape(weights) != (0,):
        raise InvalidInputError("weights must have shape (0,) when Z has no rows")


def population_epsilon(releases: Sequence[Mapping[str, Any]], *, delta: float) -> float:
    """Epsilon at ``delta`` of all population releases together, by RDP composition.

    Every release is user-level DP-SGD (:data:`privacy.mechanisms.ADD_REMOVE_USER`), so their
    sampled-Gaussian steps compose in Renyi DP, which is much tighter than adding the epsilons.

    Parameters
    ----------
    releases : sequence of mapping
        Each release's :attr:`PopulationModel.accounting`.
    delta : float
        In ``(0, 1)``.

    Returns
    -------
    float
        0 for no releases.

    Raises
    ------
    InvalidInputError
        If a release's accounting is malformed or ``delta`` is out of range.
    """
    accountant = RDPAccountant()
    for release in releases:
        record = check_accounting(release)
        accountant.step(
            noise_multiplier=record["noise_multiplier"], sample_rate=record["sample_rate"], steps=record["steps"]
        )
    return accountant.get_epsilon(delta)
