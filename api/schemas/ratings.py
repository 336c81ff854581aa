"""Ratings."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

__all__ = ["RatingCreate", "RatingPage", "RatingPublic", "RatingReceipt"]

#: Dwell beyond ten minutes is a phone left on the table, not a signal.
MAX_DWELL_MS = 600_000


class RatingCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    face_id: uuid.UUID
    liked: StrictBool
    dwell_ms: StrictInt | None = Field(
        default=None, ge=0, le=MAX_DWELL_MS, description="Accepted for client compatibility; never stored"
    )


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
