"""Ratings."""

from __future__ import annotations

import uuid
from datetime import datetime

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, Strict, StrictBool, StrictInt, model_validator

from matchsvc.services.ratings import MAX_BATCH, RatingInput

__all__ = [
    "BatchItemResult",
    "BatchResult",
    "RatingBatch",
    "RatingCreate",
    "RatingPage",
    "RatingPublic",
    "RatingReceipt",
]

#: Dwell beyond ten minutes is a phone left on the table, not a signal.
MAX_DWELL_MS = 600_000


class RatingCreate(BaseModel):
    """Exactly one of ``liked`` (the server randomizes it) and ``randomized_like`` + ``epsilon``."""

    model_config = ConfigDict(extra="forbid")

    face_id: uuid.UUID
    liked: StrictBool | None = Field(
        default=None, description="Your true answer; the server randomizes it before storing it"
    )
    randomized_like: StrictBool | None = Field(
        default=None,
        description="An answer you already randomized on the device with `epsilon` (randomized response: "
        "keep the true answer with probability e^eps / (1 + e^eps)); stored exactly as sent",
    )
    epsilon: Annotated[float, Strict(), Field(allow_inf_nan=False)] | None = Field(
        default=None,
        description="The epsilon `randomized_like` was randomized with, within the range GET /v1/me/privacy "
        "gives (`on_device_epsilon_min` .. `on_device_epsilon_max`)",
    )
    dwell_ms: StrictInt | None = Field(
        default=None, ge=0, le=MAX_DWELL_MS, description="Accepted for client compatibility; never stored"
    )

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        if (self.liked is None) == (self.randomized_like is None):
            raise ValueError("send exactly one of `liked` and `randomized_like`")
        if (self.randomized_like is None) != (self.epsilon is None):
            raise ValueError("`epsilon` goes with `randomized_like`, and only with it")
        return self

    def to_input(self) -> RatingInput:
        if self.randomized_like is not None:
            return RatingInput(self.face_id, self.randomized_like, on_device_epsilon=self.epsilon, dwell_ms=self.dwell_ms)
        assert self.liked is not None
        return RatingInput(self.face_id, self.liked, dwell_ms=self.dwell_ms)


class RatingBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[RatingCreate] = Field(
        min_length=1, max_length=MAX_BATCH, description=f"1 to {MAX_BATCH} ratings, each face at most once"
    )


class BatchItemResult(BaseModel):
    face_id: uuid.UUID
    status: Literal["created", "replaced", "not_found", "budget_exhausted"] = Field(
        description="created / replaced: stored and charged; not_found: the face was not served to you; "
        "budget_exhausted: another rating of this face would pass the lifetime privacy cap. "
        "Nothing is stored or charged for the last two."
    )
    recorded_at: datetime | None


class BatchResult(BaseModel):
    items: list[BatchItemResult] = Field(description="One result per item, in request order")


class RatingReceipt(BaseModel):
    face_id: uuid.UUID
    created: bool = Field(description="False when this replaced an earlier rating of the same face")
    recorded_at: datetime


class RatingPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    face_id: uuid.UUID
    recorded_like: bool = Field(
        description="The label as stored. With randomized response it was randomised before storage "
        "and may differ from your answer: that is what protects you (see GET /v1/me/privacy)."
    )
    privatised: bool = Field(description="True when the label was randomised before it was stored")
    created_at: datetime
    updated_at: datetime


class RatingPage(BaseModel):
    items: list[RatingPublic]
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null on the last page")
