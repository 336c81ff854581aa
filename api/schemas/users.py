"""Accounts and tokens."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from matchsvc.services.auth import MIN_PASSWORD_LENGTH, USERNAME_PATTERN

__all__ = ["Token", "UserCreate", "UserPublic"]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: StrictStr = Field(pattern=USERNAME_PATTERN, description="3-32 letters, digits, _ . -")
    password: StrictStr = Field(min_length=MIN_PASSWORD_LENGTH, max_length=128)
    birth_year: StrictInt = Field(ge=1900, le=2100)


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    username: str
    birth_year: int
    scopes: list[str]
    created_at: datetime


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires")
    scope: str = Field(description="Space-separated granted scopes")
    refresh_token: str = Field(description="Opaque; spend it once at POST /v1/auth/refresh for a new pair")
    refresh_expires_in: int = Field(description="Seconds until the refresh token expires unless spent")
    session_id: uuid.UUID = Field(description="This sign-in, as listed by GET /v1/me/sessions")
