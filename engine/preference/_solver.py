"""Newton's method for L2-regularised logistic regression plus a linear term.

Every learner in this package minimises an objective of the same shape,

    F(theta) = sum_i log(1 + exp(-s_i x_i . theta)) + g . theta + 1/2 sum_j p_j theta_j^2,

with labels ``s_i`` in {-1, +1}, a fixed vector ``g`` and a positive diagonal penalty ``p``: the
noise-aware loss for randomized-response labels (``g`` from the label-noise correction) and
objective perturbation (``g`` the privacy noise). ``F`` is smooth and strongly convex, so damped
Newton converges from zero in a handful of steps; each costs ``O(n p^2 + p^3)``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

__all__ = ["minimise"]

_MAX_ITERATIONS = 100
#: Stop when half the squared Newton decrement, an estimate of ``F - min F``, is below this
#: fraction of ``max(1, |F|)``: far below anything that moves a prediction, and well above the
#: rounding error of evaluating ``F`` (so the line search never stalls on round-off).
_TOLERANCE = 1e-12
_ARMIJO = 0.25


def _objective(margins: np.ndarray, theta: np.ndarray, linear: np.ndarray, penalty: np.ndarray) -> float:
    return float(np.logaddexp(0.0, -margins).sum() + linear @ theta + 0.5 * (penalty * theta) @ theta)


def minimise(
    X: np.ndarray, s: np.ndarray, *, linear: np.ndarray, penalty: np.ndarray, start: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Minimise ``F`` and return the minimiser and the Hessian there.

    Parameters
    ----------
    X : numpy.ndarray of float64, shape (n, p)
    s : numpy.ndarray of float64, shape (n,)
        Labels in {-1, +1}.
    linear : numpy.ndarray of float64, shape (p,)
        ``g``.
    penalty : numpy.ndarray of float64, shape (p,)
        ``p``, all entries ``> 0``.
    start : numpy.ndarray of float64, shape (p,), optional
        Starting point (zero when omitted); a nearby one saves iterations.

    Returns
    -------
    theta : numpy.ndarray of float64, shape (p,)
    hessian : numpy.ndarray of float64, shape (p, p)
        ``X^T diag(sigma(t) sigma(-t)) X + diag(p)`` at ``theta``.

    Raises
    ------
    ArithmeticError
        If Newton's method does not converge (only for non-finite or absurdly scaled input).
    """
    Xs = X * s[:, None]
    theta = np.zeros(X.shape[1]) if start is None else np.array(start, dtype=np.float64)
    margins = Xs @ theta
    value = _objective(margins, theta, linear, penalty)
    diagonal = np.diag_indices(X.shape[1])
    for _ in range(_MAX_ITERATIONS):
        tail = expit(-margins)
        gradient = linear + penalty * theta - Xs.T @ tail
        hessian = (X.T * (tail * (1.0 - tail))) @ X
        hessian[diagonal] += penalty
        step = np.linalg.solve(hessian, gradient)
        decrement = float(gradient @ step)
        if decrement <= 2.0 * _TOLERANCE * max(1.0, abs(value)):
            return theta, hessian
        size = 1.0
        while True:
            candidate = theta - size * step
            candidate_margins = Xs @ candidate
            candidate_value = _objective(candidate_margins, candidate, linear, penalty)
            if candidate_value <= value - _ARMIJO * size * decrement:
                break
            size *= 0.5
            if size < 1e-12:
                raise ArithmeticError("Newton line search failed: the objective is not finite or not convex")
        theta, margins, value = candidate, candidate_margins, candidate_value
    raise ArithmeticError(f"Newton's method did not converge in {_MAX_ITERATIONS} iterations")
