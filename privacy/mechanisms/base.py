"""What a privacy mechanism claims: the :class:`Guarantee` value every mechanism hands out.

A differential-privacy claim is only meaningful together with its neighbouring relation (which
pairs of datasets must be indistinguishable). Faces and their latents are public. The relations
used in matchsvc at the level of ONE rating of ONE user, for a user's own preference model:

``LABEL_CHANGE``
    the two datasets rate the same faces and differ in the answer (like/pass) to one face.
``REPLACE_ONE``
    the two datasets differ in one rating, face and answer both (implies ``LABEL_CHANGE``).
``ADD_REMOVE_ONE``
    one dataset has one rating more than the other. An (eps, delta) guarantee under this
    relation gives (2 eps, (1 + e^eps) delta) for ``LABEL_CHANGE`` by group privacy, since a
    changed answer is one removal plus one addition.

and at the level of ONE user, for models learned across users (the population model):

``ADD_REMOVE_USER``
    one dataset has one user more than the other: that user's whole rating history is present
    or absent. Any change to one user's ratings (adding, removing or changing any number of
    them) is at most one removal plus one addition of that user, so an (eps, delta) guarantee
    under this relation gives (2 eps, (1 + e^eps) delta) for each relation above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from privacy._validation import check_delta, check_epsilon

__all__ = [
    "ADD_REMOVE_ONE",
    "ADD_REMOVE_USER",
    "LABEL_CHANGE",
    "NEIGHBOURING_RELATIONS",
    "REPLACE_ONE",
    "Guarantee",
]

LABEL_CHANGE = "label-change"
REPLACE_ONE = "replace-one"
ADD_REMOVE_ONE = "add-remove-one"
ADD_REMOVE_USER = "add-remove-user"

#: The sentence subject :meth:`Guarantee.describe` uses for each relation.
_SUBJECTS = {
    LABEL_CHANGE: "Changing your answer to any single face",
    REPLACE_ONE: "Replacing any single rating (face and answer)",
    ADD_REMOVE_ONE: "Adding or removing any single rating",
    ADD_REMOVE_USER: "Adding or removing your whole rating history",
}
NEIGHBOURING_RELATIONS: tuple[str, ...] = tuple(_SUBJECTS)


@dataclass(frozen=True)
class Guarantee:
    """An (epsilon, delta)-differential-privacy claim for one release.

    For every pair of datasets that are neighbours under ``neighbouring`` and every set ``S`` of
    outputs, ``P[M(D) in S] <= exp(epsilon) * P[M(D') in S] + delta``. ``epsilon = inf`` means
    no guarantee at all (only the non-private benchmark baseline produces it).

    Attributes
    ----------
    epsilon : float
        Privacy loss bound, ``>= 0``; ``math.inf`` for "no guarantee".
    delta : float
        Failure probability, in ``[0, 1)``.
    neighbouring : str
        One of :data:`NEIGHBOURING_RELATIONS`.
    mechanism : str
        Name of the mechanism that makes the claim, as recorded in the privacy ledger.
    """

    epsilon: float
    delta: float
    neighbouring: str
    mechanism: str

    def __post_init__(self) -> None:
        check_epsilon(self.epsilon, allow_zero=True)
        check_delta(self.delta)
        if self.neighbouring not in _SUBJECTS:
            raise ValueError(f"neighbouring must be one of {NEIGHBOURING_RELATIONS}, got {self.neighbouring!r}")
        if not isinstance(self.mechanism, str) or not self.mechanism:
            raise ValueError(f"mechanism must be a non-empty string, got {self.mechanism!r}")
        object.__setattr__(self, "epsilon", float(self.epsilon))
        object.__setattr__(self, "delta", float(self.delta))

    @property
    def is_private(self) -> bool:
        """Whether the claim bounds anything (finite epsilon)."""
        return math.isfinite(self.epsilon)

    def describe(self) -> str:
        """One plain-language sentence for users, stating the bound and what it protects."""
        if not self.is_private:
            return "This release has no differential-privacy guarantee: it may reveal your individual ratings."
        factor = math.exp(self.epsilon) if self.epsilon < 700 else math.inf
        sentence = (
            f"{_SUBJECTS[self.neighbouring]} changes the probability of anything we store or release "
            f"by at most a factor e^{self.epsilon:g} (about {factor:.3g})"
        )
        if self.delta > 0:
            sentence += f", except with probability at most {self.delta:.3g}"
        return sentence + "."
