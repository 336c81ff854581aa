"""Faces shown to a user."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, Field

__all__ = ["FaceBatch", "FacePublic", "IdealFace", "IdealFaces"]


class FacePublic(BaseModel):
    id: uuid.UUID
    image_url: str


class FaceBatch(BaseModel):
    faces: list[FacePublic]


class IdealFace(BaseModel):
    image: str = Field(description="The rendered face as a data: URL (PNG); never stored")
    like_probability: float


class IdealFaces(BaseModel):
    faces: list[IdealFace]
