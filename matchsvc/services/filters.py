"""What a user seeks: their gender, the genders they seek and an age range, and the two-way rule.

A value type shared by the profile service (which stores it sealed), the sealed-data codec and the
matching job (which opens every user's filters and checks pairs with :func:`mutually_accept`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from matchsvc.errors import InvalidInput

__all__ = ["MAX_AGE", "MIN_AGE", "Filters", "Gender", "mutually_accept"]

MIN_AGE = 18
MAX_AGE = 120


class Gender(str, Enum):
    woman = "woman"
    man = "man"
    nonbinary = "nonbinary"
    other = "other"


@dataclass(frozen=True)
class Filters:
    gender: Gender
    seeks: frozenset[Gender]
    age_min: int
    age_max: int

    def __post_init__(self) -> None:
        if not self.seeks:
            raise InvalidInput("seeks must name at least one gender")
        if not MIN_AGE <= self.age_min <= self.age_max <= MAX_AGE:
            raise InvalidInput(
                f"age range must satisfy {MIN_AGE} <= age_min <= age_max <= {MAX_AGE}, "
                f"got {self.age_min}..{self.age_max}"
            )

    def to_state(self) -> dict[str, object]:
        """Plain JSON values (genders as their names, ``seeks`` sorted); :meth:`from_state` restores."""
        data = asdict(self)
        data["gender"] = self.gender.value
        data["seeks"] = sorted(g.value for g in self.seeks)
        return data

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> Filters:
        return cls(
            gender=Gender(data["gender"]),
            seeks=frozenset(Gender(g) for g in data["seeks"]),
            age_min=int(data["age_min"]),
            age_max=int(data["age_max"]),
        )

    def accepts_age(self, age: int) -> bool:
        return self.age_min <= age <= self.age_max

    def accepts(self, *, gender: Gender, age: int) -> bool:
        return gender in self.seeks and self.accepts_age(age)


def mutually_accept(a: Filters, a_age: int, b: Filters, b_age: int) -> bool:
    """The two-way rule every stored pair must satisfy: each one's filters accept the other, exact ages."""
    return a.accepts(gender=b.gender, age=b_age) and b.accepts(gender=a.gender, age=a_age)
