"""The posterior feed: faces chosen by the information their ratings would give.

With a Gaussian posterior over ``theta = [w, b]`` every adaptive or explore slot goes to the
face with the largest expected information gain (greedy Bayesian D-optimal design, folding each
pick into the covariance), and exploit and outside-persona slots to the most informative faces of
a shortlist ranked by the posterior mean logit or the persona gap (the package docstring).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.special import expit

from engine._validation import InvalidInputError, check_int, check_real
from engine.preference import rr_information
from engine.sampling._pools import candidates
from engine.sampling._types import FeedConfig, PersonaView, SlotRole

__all__ = ["InformativeFeed", "check_gaussian", "informative_indices", "persona_means"]


def _features(latents: np.ndarray) -> np.ndarray:
    """``x = [z, 1]`` per row, shape ``(m, d + 1)``: the features ``theta = [w, b]`` acts on."""
    return np.hstack([latents, np.ones((latents.shape[0], 1))])


def check_gaussian(
    mean: npt.ArrayLike, covariance: npt.ArrayLike, *, dim: int, prefix: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(mean, covariance)`` of a Gaussian over ``theta = [w, b]`` in dimension ``dim``.

    Returns float64 copies of shapes ``(dim + 1,)`` and ``(dim + 1, dim + 1)``, the covariance
    symmetrised (a matrix inverse is symmetric only up to rounding, and the rank-one updates of
    :class:`_Design` rely on exact symmetry).
    """
    size = dim + 1
    mu = np.array(mean, dtype=np.float64)
    if mu.shape != (size,):
        raise InvalidInputError(f"{prefix}mean must have shape ({size},), got {mu.shape}")
    if not np.all(np.isfinite(mu)):
        raise InvalidInputError(f"{prefix}mean must be finite")
    cov = np.array(covariance, dtype=np.float64)
    if cov.shape != (size, size):
        raise InvalidInputError(f"{prefix}covariance must have shape ({size}, {size}), got {cov.shape}")
    if not np.all(np.isfinite(cov)):
        raise InvalidInputError(f"{prefix}covariance must be finite")
    scale = float(np.abs(cov).max())
    if np.abs(cov - cov.T).max() > 1e-10 * scale:
        raise InvalidInputError(f"{prefix}covariance must be symmetric")
    cov = (cov + cov.T) / 2.0
    if np.linalg.eigvalsh(cov)[0] < -1e-10 * scale:
        raise InvalidInputError(f"{prefix}covariance must be positive semi-definite")
    return mu, cov


class _Design:
    """The covariance of ``theta`` as a batch fills, with each chosen face's rating folded in.

    A rating of a face with features ``x`` and expected Fisher information ``c`` about its logit
    adds ``c x x^T`` to the precision, so the covariance ``S`` becomes (Sherman-Morrison)

        S - c (S x)(S x)^T / (1 + c x^T S x)

    in ``O(d^2)``, and the logit variance ``v(y) = y^T S y`` of any other face drops by
    ``c (y . S x)^2 / (1 + c x^T S x)``.
    """

    def __init__(self, covariance: np.ndarray) -> None:
        self.covariance = covariance  # a validated copy, updated in place

    def _fold(self, x: np.ndarray, information: float) -> tuple[np.ndarray, float]:
        """Fold one rating in; returns ``S x`` (before) and the factor ``c / (1 + c x^T S x)``."""
        sx = self.covariance @ x
        factor = information / (1.0 + information * float(x @ sx))
        self.covariance -= factor * np.outer(sx, sx)
        return sx, factor

    def pick(self, features: np.ndarray, information: np.ndarray, count: int) -> np.ndarray:
        """Greedily pick ``count`` distinct rows of ``features`` by information gain; fold each in.

        Row ``i`` gains ``0.5 log(1 + information[i] * v_i)``, maximised by the largest
        ``information[i] * v_i``. Returns row indices, shape ``(count,)``, int64, in pick order.
        """
        variance = np.einsum("md,md->m", features @ self.covariance, features)
        gain = np.empty_like(variance)
        open_ = np.ones(features.shape[0], dtype=bool)
        picks = np.empty(count, dtype=np.int64)
        for i in range(count):
            np.multiply(information, np.maximum(variance, 0.0), out=gain)
            gain[~open_] = -np.inf
            best = int(np.argmax(gain))
            picks[i] = best
            open_[best] = False
            sx, factor = self._fold(features[best], float(information[best]))
            variance -= factor * np.square(features @ sx)
        return picks


def informative_indices(
    X: npt.ArrayLike,
    *,
    mean: npt.ArrayLike,
    covariance: npt.ArrayLike,
    flip_probability: float,
    n: int,
) -> np.ndarray:
    """The ``n`` rows of ``X`` whose ratings would together tell most about ``theta = [w, b]``.

    Greedy Bayesian D-optimal design (module docstring): each step takes the face with the largest
    expected information gain ``0.5 log(1 + I_rr(t) x^T S x)``, with ``x = [z, 1]``,
    ``t = mean . x`` and ``I_rr`` the Fisher information of a randomized-response label about its
    logit, then folds that face into ``S`` by a rank-one update so that the next pick asks about
    what is still unknown. The batch's joint gain (a log-determinant) is at least ``1 - 1/e`` of
    the best possible. ``O(m d^2 + n m d)`` for ``m`` candidates.

    Parameters
    ----------
    X : array_like
        Candidate latents, shape ``(m, d)``, finite.
    mean : array_like
        Posterior mean of ``theta``, shape ``(d + 1,)``.
    covariance : array_like
        Posterior covariance of ``theta``, shape ``(d + 1, d + 1)``, symmetric positive
        semi-definite.
    flip_probability : float
        Flip rate of the stored labels, in ``[0, 0.5)``; 0 for clean labels.
    n : int
        How many to pick, ``0 <= n <= m``.

    Returns
    -------
    np.ndarray
        Distinct row indices into ``X``, shape ``(n,)``, int64, in pick order (most informative
        first).

    Raises
    ------
    InvalidInputError
        On a wrong shape, a non-finite value, an asymmetric or indefinite covariance, or ``n`` or
        ``flip_probability`` out of range.
    """
    z = np.asarray(X, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 1:
        raise InvalidInputError(f"X must have shape (m, d) with d >= 1, got {z.shape}")
    if not np.all(np.isfinite(z)):
        raise InvalidInputError("X must be finite")
    mu, cov = check_gaussian(mean, covariance, dim=z.shape[1])
    rho = check_real("flip_probability", flip_probability, low=0.0, high=0.5, high_open=True)
    n = check_int("n", n, low=0, high=z.shape[0])
    features = _features(z)
    information = rr_information(features @ mu, rho)[1]
    return _Design(cov).pick(features, information, n)


def persona_means(personas: PersonaView, *, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated persona means: the dominant one's ``(d + 1,)``, the others' ``(K - 1, d + 1)``."""
    resp = np.asarray(personas.responsibilities, dtype=np.float64)
    if resp.ndim != 1 or resp.size < 1:
        raise InvalidInputError(
            f"personas.responsibilities must have shape (K,) with K >= 1, got {resp.shape}"
        )
    if not (np.all(np.isfinite(resp)) and np.all(resp >= 0.0) and abs(resp.sum() - 1.0) <= 1e-6):
        raise InvalidInputError("personas.responsibilities must be non-negative and sum to 1")
    components = tuple(personas.components)
    if len(components) != resp.size:
        raise InvalidInputError(
            f"personas has {resp.size} responsibilities but {len(components)} components"
        )
    means = np.empty((resp.size, dim + 1))
    for k, component in enumerate(components):
        mean = np.asarray(component.mean, dtype=np.float64)
        if mean.shape != (dim + 1,):
            raise InvalidInputError(
                f"personas.components[{k}].mean must have shape ({dim + 1},), got {mean.shape}"
            )
        means[k] = mean
    if not np.all(np.isfinite(means)):
        raise InvalidInputError("personas.components means must be finite")
    dominant = int(np.argmax(resp))
    return means[dominant], np.delete(means, dominant, axis=0)


def _persona_gap(features: np.ndarray, dominant: np.ndarray, others: np.ndarray) -> np.ndarray:
    """How much more another persona likes each face than the dominant one, shape ``(m,)``.

    ``max_{k != dom} sigmoid(mu_k . x) - sigmoid(mu_dom . x)``: high where a change of taste
    towards some other persona would show in the answers.
    """
    return expit(features @ others.T).max(axis=1) - expit(features @ dominant)


class InformativeFeed:
    """Roles and picks of the posterior feed for one batch.

    Every face picked, whatever its role, is folded into one :class:`_Design`, so later picks
    ask about what the batch has not asked yet.
    """

    def __init__(
        self,
        pools: dict[bool, np.ndarray],
        belief: tuple[np.ndarray, np.ndarray],
        personas: tuple[np.ndarray, np.ndarray] | None,
        *,
        n_rated: int,
        config: FeedConfig,
        rng: np.random.Generator,
    ) -> None:
        mean, covariance = belief
        self.config, self.rng = config, rng
        self.design = _Design(covariance)
        self.features = {key: _features(pool) for key, pool in pools.items()}
        margins = {key: x @ mean for key, x in self.features.items()}
        self.information = {key: rr_information(margin, config.flip_probability)[1] for key, margin in margins.items()}
        self.priorities: dict[SlotRole, dict[bool, np.ndarray]] = {}
        self.roles: list[SlotRole] = [SlotRole.ADAPTIVE]
        self.fractions: list[float] = []
        if n_rated >= config.coldstart_ratings:
            self.priorities[SlotRole.EXPLOIT] = margins
            self.roles, self.fractions = [SlotRole.EXPLOIT, SlotRole.EXPLORE], [config.exploit_fraction]
            if personas is not None and personas[1].shape[0] > 0:
                self.priorities[SlotRole.OUTSIDE_PERSONA] = {
                    key: _persona_gap(x, *personas) for key, x in self.features.items()
                }
                self.roles.insert(1, SlotRole.OUTSIDE_PERSONA)
                self.fractions.append(config.outside_persona_fraction)

    def pick(self, role: SlotRole, key: bool, avail: np.ndarray, count: int, chosen: list[np.ndarray]) -> np.ndarray:
        """``count`` rows of pool ``key`` among ``avail`` by information gain (``chosen`` is
        already folded into the design)."""
        rows = avail
        if role not in (SlotRole.ADAPTIVE, SlotRole.EXPLORE):  # ranked: the shortlist by score first
            rows = candidates(avail, count, priority=self.priorities[role][key], config=self.config, rng=self.rng)
        return rows[self.design.pick(self.features[key][rows], self.information[key][rows], count)]
