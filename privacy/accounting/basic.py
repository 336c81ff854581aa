"""Basic (sequential) composition: the rule the privacy ledger enforces its lifetime cap with.

If release ``i`` is ``(eps_i, delta_i)``-DP, all of them together (adaptively chosen, same
neighbouring relation) are ``(sum eps_i, sum delta_i)``-DP (Dwork & Roth 2014, Theorem 3.16).
It is loose for many small releases, but it holds for every mechanism, pure or approximate,
and it is what a user can check by adding up their budget report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from privacy._validation import check_delta, check_epsilon
from privacy.accounting.base import Accountant

__all__ = ["BasicCompositionAccountant"]


def _check_release(epsilon: float, delta: float) -> tuple[float, float]:
    return check_epsilon(epsilon, allow_zero=True), check_delta(delta)


class BasicCompositionAccountant(Accountant):
    """Sums epsilons and deltas of recorded releases.

    Totals use :func:`math.fsum`, so they are exactly rounded and do not depend on the order in
    which releases were recorded or restored.
    """

    name: ClassVar[str] = "basic"

    def __init__(self) -> None:
        self._history: list[tuple[float, float]] = []

    def step(self, *, epsilon: float, delta: float) -> None:
        """Record one ``(epsilon, delta)``-DP release (``epsilon = inf`` for a non-private one)."""
        self._history.append(_check_release(epsilon, delta))

    @property
    def epsilon(self) -> float:
        """Total epsilon spent."""
        return math.fsum(eps for eps, _ in self._history)

    @property
    def delta(self) -> float:
        """Total delta spent."""
        return math.fsum(delta for _, delta in self._history)

    def get_epsilon(self, delta: float) -> float:
        """Total epsilon if ``delta`` covers the total delta spent, else ``math.inf``."""
        if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0.0 <= delta < 1.0:
            raise ValueError(f"delta must be in [0, 1), got {delta!r}")
        return self.epsilon if delta >= self.delta else math.inf

    def state_dict(self) -> dict[str, Any]:
        return {"accountant": self.name, "history": [[eps, delta] for eps, delta in self._history]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        history = self._check_state(state)
        loaded: list[tuple[float, float]] = []
        for entry in history:
            if not isinstance(entry, (list, tuple)) or len(entry) != 2:
                raise ValueError(f"each history entry must be [epsilon, delta], got {entry!r}")
            try:
                loaded.append(_check_release(*entry))
            except TypeError as exc:
                raise ValueError(str(exc)) from exc
        self._history = loaded

    def __len__(self) -> int:
        return len(self._history)
