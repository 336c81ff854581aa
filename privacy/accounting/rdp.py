"""Renyi-DP accounting for the sampled Gaussian mechanism (DP-SGD), over Opacus' analysis.

The math is Opacus' (``opacus.accountants.analysis.rdp``: Mironov, Talwar & Zhang 2019 for the
RDP of Poisson-subsampled Gaussian steps, Balle et al. 2020 for the conversion to
``(epsilon, delta)``); this module only keeps the history and the state format. The guarantee is
for the ``ADD_REMOVE_ONE`` relation over the examples being sampled.

Opacus is imported on first use, not at import time: it pulls in torch (seconds), and the
service's ledger only needs basic composition.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from privacy.accounting.base import Accountant

__all__ = ["RDPAccountant", "calibrate_noise_multiplier"]


def _check_real(name: str, value: float, *, low: float, high: float, low_open: bool, high_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    result = float(value)
    above = result > low if low_open else result >= low
    below = result < high if high_open else result <= high
    if not (above and below):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return result


def _check_delta(delta: float) -> float:
    return _check_real("delta", delta, low=0.0, high=1.0, low_open=True, high_open=True)


def _check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    return steps


def _default_orders() -> list[float]:
    from opacus.accountants.rdp import RDPAccountant as _OpacusRDP

    return list(_OpacusRDP.DEFAULT_ALPHAS)


class RDPAccountant(Accountant):
    """Composes Poisson-subsampled Gaussian steps in Renyi DP.

    ``step(noise_multiplier=sigma, sample_rate=q, steps=k)`` records ``k`` steps whose per-example
    contribution was clipped to norm ``C`` and noised with ``N(0, (sigma C)^2)``, each example
    included independently with probability ``q``.
    """

    name: ClassVar[str] = "rdp"

    def __init__(self) -> None:
        self._history: list[tuple[float, float, int]] = []

    def step(self, *, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        """Record ``steps`` sampled-Gaussian steps (merged with the last entry when identical)."""
        sigma = _check_real("noise_multiplier", noise_multiplier, low=0.0, high=math.inf, low_open=True, high_open=True)
        q = _check_real("sample_rate", sample_rate, low=0.0, high=1.0, low_open=True, high_open=False)
        count = _check_steps(steps)
        if self._history and self._history[-1][:2] == (sigma, q):
            self._history[-1] = (sigma, q, self._history[-1][2] + count)
        else:
            self._history.append((sigma, q, count))

    def get_epsilon(self, delta: float) -> float:
        """Epsilon at ``delta`` (in ``(0, 1)``), minimised over Opacus' default RDP orders."""
        target = _check_delta(delta)
        if not self._history:
            return 0.0
        from opacus.accountants.analysis import rdp as analysis

        orders = _default_orders()
        rdp = sum(
            analysis.compute_rdp(q=q, noise_multiplier=sigma, steps=count, orders=orders)
            for sigma, q, count in self._history
        )
        epsilon, _ = analysis.get_privacy_spent(orders=orders, rdp=rdp, delta=target)
        return float(epsilon)

    def state_dict(self) -> dict[str, Any]:
        return {"accountant": self.name, "history": [[sigma, q, count] for sigma, q, count in self._history]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        history = self._check_state(state)
        restored = RDPAccountant()
        for entry in history:
            if not isinstance(entry, (list, tuple)) or len(entry) != 3:
                raise ValueError(f"each history entry must be [noise_multiplier, sample_rate, steps], got {entry!r}")
            try:
                restored.step(noise_multiplier=entry[0], sample_rate=entry[1], steps=entry[2])
            except TypeError as exc:
                raise ValueError(str(exc)) from exc
        self._history = restored._history

    def __len__(self) -> int:
        return sum(count for _, _, count in self._history)


def calibrate_noise_multiplier(*, target_epsilon: float, target_delta: float, sample_rate: float, steps: int) -> float:
    """Smallest noise multiplier (to Opacus' 0.01-in-epsilon search tolerance) meeting the target.

    ``steps`` sampled-Gaussian steps at ``sample_rate`` with the returned ``sigma`` are
    ``(epsilon, target_delta)``-DP under ``ADD_REMOVE_ONE`` with ``epsilon <= target_epsilon``
    (the search returns the upper end of its bracket).

    Raises
    ------
    ValueError
        If an argument is out of range, or no ``sigma <= 1e6`` meets the target.
    """
    eps = _check_real("target_epsilon", target_epsilon, low=0.0, high=math.inf, low_open=True, high_open=True)
    delta = _check_delta(target_delta)
    q = _check_real("sample_rate", sample_rate, low=0.0, high=1.0, low_open=True, high_open=False)
    count = _check_steps(steps)
    from opacus.accountants.utils import get_noise_multiplier

    return float(
        get_noise_multiplier(target_epsilon=eps, target_delta=delta, sample_rate=q, steps=count, accountant="rdp")
    )
