"""The accountant interface: a running record of releases that answers "how much so far?".

Accountants are apart from mechanisms (neither imports the other): a mechanism states what one
release costs, the caller records it with the accountant's ``step``, whose keywords depend on
what the accountant composes (``(epsilon, delta)`` pairs, or sampled-Gaussian steps).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = ["Accountant"]


class Accountant(abc.ABC):
    """A composition rule over recorded releases.

    Subclasses define ``step(**event)`` with keyword-only arguments for their kind of event, and
    a class attribute ``name`` under which :func:`privacy.accounting.create_accountant` builds them.
    """

    name: ClassVar[str]

    @abc.abstractmethod
    def get_epsilon(self, delta: float) -> float:
        """Smallest epsilon this rule proves for the recorded releases at the given ``delta``.

        ``math.inf`` when the rule proves no finite epsilon at that ``delta``.
        """

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """JSON-able state (plain lists and floats) from which :meth:`load_state_dict` restores."""

    @abc.abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the recorded history with ``state``.

        Raises
        ------
        ValueError
            If ``state`` was written by another kind of accountant or is malformed.
        """

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of recorded releases (steps)."""

    def _check_state(self, state: Mapping[str, Any]) -> list[Any]:
        """Return ``state["history"]`` after checking that ``state`` belongs to this accountant."""
        if not isinstance(state, Mapping):
            raise ValueError(f"state must be a mapping, got {type(state).__name__}")
        if state.get("accountant") != self.name:
            raise ValueError(f"state is for accountant {state.get('accountant')!r}, not {self.name!r}")
        history = state.get("history")
        if not isinstance(history, list):
            raise ValueError(f"state['history'] must be a list, got {type(history).__name__}")
        return history
