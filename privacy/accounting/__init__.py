"""Privacy accounting: composition of recorded releases, apart from the mechanisms.

``create_accountant(name)`` builds one by name: ``"basic"`` (sum of epsilons and deltas; the
ledger's cap) or ``"rdp"`` (Renyi DP of sampled-Gaussian steps, for DP-SGD).
"""

from __future__ import annotations

from privacy.accounting.base import Accountant
from privacy.accounting.basic import BasicCompositionAccountant
from privacy.accounting.rdp import RDPAccountant, calibrate_noise_multiplier

__all__ = [
    "ACCOUNTANTS",
    "Accountant",
    "BasicCompositionAccountant",
    "RDPAccountant",
    "calibrate_noise_multiplier",
    "create_accountant",
]

_REGISTRY: dict[str, type[Accountant]] = {cls.name: cls for cls in (BasicCompositionAccountant, RDPAccountant)}
#: Names :func:`create_accountant` accepts.
ACCOUNTANTS: tuple[str, ...] = tuple(_REGISTRY)


def create_accountant(name: str) -> Accountant:
    """A fresh, empty accountant of the named kind.

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`ACCOUNTANTS`.
    """
    try:
        cls = _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"name must be one of {ACCOUNTANTS}, got {name!r}") from None
    return cls()
