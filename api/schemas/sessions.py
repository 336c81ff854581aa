"""Sign-in sessions and password change."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from matchsvc.services.auth import MIN_PASSWORD_LENGTH

__all__ = ["PasswordChange", "SessionList", "SessionPublic"]


class SessionPublic(BaseModel):
    id: uuid.UUID
    device_name: str | None
    created_at: datetime = Field(description="When the password login that started it happened")
    last_used_at: datetime = Field(description="The last login or refresh (not the last request)")
    expires_at: datetime = Field(description="When it ends at the latest, however often it is refreshed")
    current: bool = Field(description="Whether the access token of this request belongs to it")


class SessionList(BaseModel):
    items: list[SessionPublic]


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: StrictStr = Field(min_length=1, max_length=128)
    new_password: StrictStr = Field(min_length=MIN_PASSWORD_LENGTH, max_length=128)
