"""The caller's preference profile: persona mix, certainty, and how many ratings would help."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from matchsvc.services.preference_profile import MAX_RATINGS_TO_IMPROVE

__all__ = ["Certainty", "PersonaShare", "PreferenceProfile"]


class PersonaShare(BaseModel):
    persona: int = Field(ge=0, description="Index of a persona of the population model")
    share: float = Field(ge=0, le=1, description="Posterior probability that your taste is this persona's")


class Certainty(BaseModel):
    logit_sd: float = Field(
        ge=0,
        description="Root mean square, over public prior faces, of the posterior standard deviation of your "
        "like log-odds",
    )
    score: float = Field(
        ge=0,
        le=1,
        description="Share of the log-odds variance of knowing nothing about you that the population prior and "
        "your ratings have removed: 1 - (logit_sd / logit_sd with no knowledge)^2",
    )
    level: Literal["low", "medium", "high"] = Field(description="low below 0.5, medium below 0.8, high from 0.8")


class PreferenceProfile(BaseModel):
    ratings: int = Field(ge=0, description="Ratings behind the model")
    personas: list[PersonaShare] = Field(
        description="Your persona mix, shares summing to 1; a single persona without a population model"
    )
    dominant_persona: int = Field(ge=0, description="The persona with the largest share")
    certainty: Certainty
    ratings_to_improve: int | None = Field(
        description="Further ratings, chosen as the feed chooses its most informative faces, after which the "
        f"expected logit_sd is half of now's; null when more than {MAX_RATINGS_TO_IMPROVE} would be needed",
    )
    population_version: int | None = Field(
        description="Version of the population model your profile is fitted against; null when there is none"
    )
    drift_detected: bool = Field(description="Your recent ratings differ from your older ones; older ones count less")
