"""Faces shown to a user."""

from __future__ import annotations

import uuid

from pydantic import BaseModel

__all__ = ["FaceBatch", "FacePublic"]


class FacePublic(BaseModel):
    id: uuid.UUID
    image_url: str


class FaceBatch(BaseModel):
    faces: list[FacePublic]
