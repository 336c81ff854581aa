"""The population model: a user-level DP mixture of preference personas, and each user's posterior under it.

Learned with Opacus DP-SGD from every user's stored private labels (:func:`fit_population`),
it is the only thing that crosses users; a user's own posterior under it
(:meth:`PopulationModel.posterior`) is post-processing. Releases compose in RDP
(:func:`population_epsilon`) for the population ledger.
"""

from engine.population._fit import (
    DEFAULT_LEARNING_RATE,
    DEFAULT_MAX_GRAD_NORM,
    DEFAULT_PERSONAS,
    DEFAULT_RANK,
    DEFAULT_SAMPLE_RATE,
    DEFAULT_STEPS,
    MECHANISM,
    fit_population,
)
from engine.population._model import ACCOUNTING_KEYS, PersonaPosterior, PopulationModel, population_epsilon

__all__ = [
    "ACCOUNTING_KEYS",
    "DEFAULT_LEARNING_RATE",
    "DEFAULT_MAX_GRAD_NORM",
    "DEFAULT_PERSONAS",
    "DEFAULT_RANK",
    "DEFAULT_SAMPLE_RATE",
    "DEFAULT_STEPS",
    "MECHANISM",
    "PersonaPosterior",
    "PopulationModel",
    "fit_population",
    "population_epsilon",
]
