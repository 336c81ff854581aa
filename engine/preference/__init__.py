"""Private preference learning: the user's released model ``sigmoid(coef . z + intercept)``."""

from engine.preference._model import PreferenceModel
from engine.preference._noisy import DEFAULT_L2, INTERCEPT_L2, fit_noisy
from engine.preference._online import OnlinePreference
from engine.preference._private import MECHANISMS, SERVICE_MECHANISMS, fit_private, mechanism_guarantee

__all__ = [
    "DEFAULT_L2",
    "INTERCEPT_L2",
    "MECHANISMS",
    "SERVICE_MECHANISMS",
    "OnlinePreference",
    "PreferenceModel",
    "fit_noisy",
    "fit_private",
    "mechanism_guarantee",
]
