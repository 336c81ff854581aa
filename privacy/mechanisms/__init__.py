"""Differential-privacy mechanisms: pure functions and small values with an explicit RNG.

Mechanisms know nothing of accounting (:mod:`privacy.accounting`); each one states the
:class:`Guarantee` it provides per release, and the caller records it.
"""

from privacy._validation import check_delta, check_epsilon
from privacy.mechanisms import objective_perturbation
from privacy.mechanisms.base import (
    ADD_REMOVE_ONE,
    ADD_REMOVE_USER,
    LABEL_CHANGE,
    NEIGHBOURING_RELATIONS,
    REPLACE_ONE,
    Guarantee,
)
from privacy.mechanisms.randomized_response import RandomizedResponse, os_uniform, uniform_from_bytes

__all__ = [
    "ADD_REMOVE_ONE",
    "ADD_REMOVE_USER",
    "LABEL_CHANGE",
    "NEIGHBOURING_RELATIONS",
    "REPLACE_ONE",
    "Guarantee",
    "check_delta",
    "check_epsilon",
    "RandomizedResponse",
    "objective_perturbation",
    "os_uniform",
    "uniform_from_bytes",
]
