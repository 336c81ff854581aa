"""Appearance, filter profile, candidates and matches."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

from matchsvc.services.filters import MAX_AGE, MIN_AGE, Gender

__all__ = [
    "AppearanceSpace",
    "AppearanceUpdate",
    "CandidatePage",
    "CandidatePublic",
    "DecisionResult",
    "MatchList",
    "MatchPublic",
    "ProfilePublic",
    "ProfileUpdate",
]


class AppearanceSpace(BaseModel):
    dim: int = Field(ge=1, description="Values in an appearance latent")
    lower: list[float] = Field(description="Per value, the least a look drawn on the device should take")
    upper: list[float] = Field(
        description="Per value, the most; every latent inside [lower, upper] is a valid, adult appearance"
    )


class AppearanceUpdate(BaseModel):
    """Numbers are strict everywhere in request bodies: ``true`` is not 1.0 (JSON integers are fine)."""

    model_config = ConfigDict(extra="forbid")

    latent: list[StrictFloat] = Field(
        min_length=1,
        max_length=1024,
        description="Your look as a latent built on your device (e.g. sliders over the named dimensions)",
    )


class ProfileUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gender: Gender
    seeks: list[Gender] = Field(min_length=1, max_length=len(Gender))
    age_min: StrictInt = Field(ge=MIN_AGE, le=MAX_AGE)
    age_max: StrictInt = Field(ge=MIN_AGE, le=MAX_AGE)


class ProfilePublic(ProfileUpdate):
    pass


class CandidatePublic(BaseModel):
    user_id: uuid.UUID
    avatar_url: str


class CandidatePage(BaseModel):
    items: list[CandidatePublic]
    next_cursor: str | None


class DecisionResult(BaseModel):
    matched: bool
    match_id: uuid.UUID | None = None


class MatchPublic(BaseModel):
    id: uuid.UUID
    user_id: uuid.UUID
    avatar_url: str
    created_at: datetime


class MatchList(BaseModel):
    items: list[MatchPublic]
