"""Private preference learning: a Gaussian posterior over ``[w, b]`` and the released model ``sigmoid(coef . z + intercept)``."""

from engine.preference._drift import (
    DRIFT_ALPHA,
    DRIFT_OLD_WEIGHT,
    DRIFT_WINDOW,
    DriftCheckpoint,
    DriftResult,
    drift_test,
    drift_weights,
)
from engine.preference._model import PreferenceModel
from engine.preference._noisy import DEFAULT_L2, INTERCEPT_L2, rr_information
from engine.preference._online import OnlinePreference
from engine.preference._posterior import (
    Posterior,
    PreferencePrior,
    fit_noisy,
    fit_posterior,
    gaussian_likelihood,
    rr_flip_probability,
)
from engine.preference._private import MECHANISMS, SERVICE_MECHANISMS, fit_private, mechanism_guarantee

__all__ = [
    "DEFAULT_L2",
    "DRIFT_ALPHA",
    "DRIFT_OLD_WEIGHT",
    "DRIFT_WINDOW",
    "INTERCEPT_L2",
    "MECHANISMS",
    "SERVICE_MECHANISMS",
    "DriftCheckpoint",
    "DriftResult",
    "OnlinePreference",
    "Posterior",
    "PreferenceModel",
    "PreferencePrior",
    "drift_test",
    "drift_weights",
    "fit_noisy",
    "fit_posterior",
    "fit_private",
    "gaussian_likelihood",
    "mechanism_guarantee",
    "rr_flip_probability",
    "rr_information",
]
