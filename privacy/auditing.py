"""Empirical privacy auditing: statistically valid lower bounds on a mechanism's epsilon.

An audit runs the mechanism many times on two neighbouring datasets ("in": the canary is
present / has label 1, "out": the alternative), reduces each release to a score, and tests how
well a threshold on the score tells the two worlds apart. If the mechanism is (eps, delta)-DP,
every set ``S`` of scores obeys ``P_in[S] <= e^eps P_out[S] + delta`` and the same with in/out
swapped, so ``eps >= log((P_in[S] - delta) / P_out[S])``. Replacing the two probabilities by a
Clopper-Pearson lower bound on the numerator and upper bound on the denominator turns the
observed ratio into a lower bound on eps that holds with confidence ``1 - alpha`` (Jagielski,
Ullman & Oprea 2020; Nasr et al. 2021). A bound above the claimed epsilon proves, at that
confidence, that the claim is false.

Multiple comparisons: searching over thresholds and then evaluating the winner on the same
samples would overstate the bound. :func:`epsilon_lower_bound` splits the samples instead: the
threshold and direction are chosen on the first half of each sample and the bound is evaluated
once, on the held-out second half, so the reported bound needs no correction over thresholds.
(The choice itself ranks candidates by their Bonferroni-corrected bound on the first half, which
steers it away from thin tails whose ratio is mostly luck; any choice made without the second
half keeps the result valid.)
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import stats

__all__ = ["clopper_pearson", "epsilon_lower_bound"]


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return float(alpha)


def _bounds(k: np.ndarray, n: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised two-sided Clopper-Pearson bounds for counts ``k`` out of ``n``."""
    low = np.where(k > 0, stats.beta.ppf(alpha / 2.0, k, n - k + 1), 0.0)
    high = np.where(k < n, stats.beta.ppf(1.0 - alpha / 2.0, k + 1, n - k), 1.0)
    return low, high


def clopper_pearson(k: int, n: int, *, alpha: float) -> tuple[float, float]:
    """Exact two-sided ``(1 - alpha)`` confidence interval for a binomial proportion.

    Each side fails with probability at most ``alpha / 2``, so the lower end alone is a
    ``1 - alpha/2`` one-sided bound (and likewise the upper end).

    Parameters
    ----------
    k : int
        Successes, ``0 <= k <= n``.
    n : int
        Trials, ``>= 1``.
    alpha : float
        Error probability, in ``(0, 1)``.

    Returns
    -------
    (low, high) : tuple of float
        ``low = 0`` when ``k = 0`` and ``high = 1`` when ``k = n``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= n:
        raise ValueError(f"k must be an integer in [0, n={n}], got {k!r}")
    low, high = _bounds(np.array([k]), int(n), _check_alpha(alpha))
    return float(low[0]), float(high[0])


def _check_scores(name: str, scores: npt.ArrayLike) -> np.ndarray:
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 1 or array.size < 2:
        raise ValueError(f"{name} must have shape (n,) with n >= 2, got shape {array.shape}")
    if np.isnan(array).any():
        raise ValueError(f"{name} must not contain NaN")
    return array


def _tail_counts(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Number of ``scores >= t`` for each threshold ``t``."""
    return scores.size - np.searchsorted(np.sort(scores), thresholds, side="left")


def _log_ratios(
    counts_in: np.ndarray, n_in: int, counts_out: np.ndarray, n_out: int, alpha: float, delta: float
) -> np.ndarray:
    """Lower-bound log-ratios, shape (4, m), for the four (set, direction) tests per threshold.

    Rows: ``{score >= t}`` in vs out, out vs in; ``{score < t}`` in vs out, out vs in.
    """
    low_in, high_in = _bounds(counts_in, n_in, alpha)
    low_out, high_out = _bounds(counts_out, n_out, alpha)
    below_low_in, below_high_in = 1.0 - high_in, 1.0 - low_in
    below_low_out, below_high_out = 1.0 - high_out, 1.0 - low_out
    numerators = np.stack([low_in, low_out, below_low_in, below_low_out]) - delta
    denominators = np.stack([high_out, high_in, below_high_out, below_high_in])
    # Denominators are Clopper-Pearson upper bounds (or one minus a lower bound), always > 0.
    ratios = np.full(numerators.shape, -np.inf)
    positive = numerators > 0
    ratios[positive] = np.log(numerators[positive] / denominators[positive])
    return ratios


def epsilon_lower_bound(
    scores_in: npt.ArrayLike, scores_out: npt.ArrayLike, *, alpha: float = 0.05, delta: float = 0.0
) -> float:
    """Lower bound on epsilon, valid with probability ``>= 1 - alpha``, from a threshold attack.

    The first ``n // 2`` entries of each sample choose the threshold and direction (the largest
    Clopper-Pearson bound, Bonferroni-corrected over the ``4 m`` candidates: ``m`` thresholds at
    the observed scores, both tails, both orders of the worlds); the remaining entries evaluate
    that single test. Its two one-sided Clopper-Pearson bounds are each at level ``alpha / 2``,
    so by a union bound the result is a lower bound on the true epsilon with probability at
    least ``1 - alpha``. Which half is which is fixed by position, so the scores must be
    independent draws in run order.

    Parameters
    ----------
    scores_in, scores_out : array_like of float, shapes (n_in,), (n_out,)
        One score per independent run of the mechanism on each neighbouring dataset;
        ``n >= 2`` each. ``+-inf`` are allowed (e.g. a deterministic leak), NaN is not.
    alpha : float
        Error probability of the bound, in ``(0, 1)``.
    delta : float
        The ``delta`` of the claim under test, in ``[0, 1)``.

    Returns
    -------
    float
        ``>= 0``; ``0.0`` when no test beats chance.
    """
    a = _check_scores("scores_in", scores_in)
    b = _check_scores("scores_out", scores_out)
    level = _check_alpha(alpha)
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must be in [0, 1), got {delta!r}")
    a_pick, a_eval = a[: a.size // 2], a[a.size // 2 :]
    b_pick, b_eval = b[: b.size // 2], b[b.size // 2 :]
    thresholds = np.unique(np.concatenate([a_pick, b_pick]))
    picking_level = level / (4 * thresholds.size)
    picked = _log_ratios(
        _tail_counts(a_pick, thresholds),
        a_pick.size,
        _tail_counts(b_pick, thresholds),
        b_pick.size,
        picking_level,
        delta,
    )
    row, column = np.unravel_index(int(np.argmax(picked)), picked.shape)
    if not np.isfinite(picked[row, column]):
        return 0.0
    threshold = thresholds[column : column + 1]
    evaluated = _log_ratios(
        _tail_counts(a_eval, threshold), a_eval.size, _tail_counts(b_eval, threshold), b_eval.size, level, delta
    )
    return max(float(evaluated[row, 0]), 0.0)
