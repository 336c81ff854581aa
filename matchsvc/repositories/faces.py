"""Generated faces, who was shown which, and the rendered-PNG cache."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import numpy as np
from sqlalchemy import bindparam, exists, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from matchsvc.db.models import Face, FaceImage, FaceImpression

__all__ = [
    "add_faces",
    "add_image",
    "count_shared",
    "get_image",
    "record_impressions",
    "served_face",
    "unseen_shared_faces",
]


def add_faces(session: Session, *, backend: str, latents: np.ndarray, shared: bool = False) -> list[Face]:
    faces = [Face(backend=backend, latent=[float(x) for x in row], shared=shared) for row in latents]
    session.add_all(faces)
    session.flush()
    return faces


def record_impressions(session: Session, *, user_id: uuid.UUID, face_ids: Sequence[uuid.UUID]) -> None:
    if not face_ids:
        return
    rows = [{"user_id": user_id, "face_id": face_id} for face_id in face_ids]
    session.execute(insert(FaceImpression).values(rows).on_conflict_do_nothing())


# Prebuilt: the rating path checks this on every request.
_SERVED_FACE = (
    select(Face)
    .join(FaceImpression, FaceImpression.face_id == Face.id)
    .where(FaceImpression.user_id == bindparam("user_id"), Face.id == bindparam("face_id"))
)


def served_face(session: Session, *, user_id: uuid.UUID, face_id: uuid.UUID) -> Face | None:
    """The face, if it was served to this user; None for unknown faces and other users' faces alike."""
    return session.scalar(_SERVED_FACE, {"user_id": user_id, "face_id": face_id})


def get_image(session: Session, face_id: uuid.UUID) -> FaceImage | None:
    return session.get(FaceImage, face_id)


def add_image(session: Session, *, face_id: uuid.UUID, png: bytes, etag: str) -> None:
    """Idempotent: two workers rendering the same face concurrently store it once."""
    statement = insert(FaceImage).values(face_id=face_id, png=png, etag=etag)
    session.execute(statement.on_conflict_do_nothing(index_elements=[FaceImage.face_id]))


def count_shared(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Face).where(Face.shared)) or 0)


def unseen_shared_faces(session: Session, *, user_id: uuid.UUID, limit: int) -> list[Face]:
    """A random sample of shared (cached) faces this user has not been served yet."""
    seen = exists().where(FaceImpression.user_id == user_id, FaceImpression.face_id == Face.id)
    query = select(Face).where(Face.shared, ~seen).order_by(func.random()).limit(limit)
    return list(session.scalars(query))
