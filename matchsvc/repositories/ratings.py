"""Stored ratings: one row per (user, face)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Float, Select, exists, func, literal, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from matchsvc.db.models import Face, FaceImpression, Rating

__all__ = [
    "UpsertedRating",
    "TrainingRow",
    "count_ratings",
    "list_ratings",
    "training_query",
    "training_rows",
    "upsert_served_rating",
]


class UpsertedRating(NamedTuple):
    recorded_at: datetime
    created: bool


class TrainingRow(NamedTuple):
    """One stored rating as the learners read it: the face's latent and the sealed, already private label."""

    rating_id: int
    user_id: uuid.UUID
    face_id: uuid.UUID
    latent: list[float]
    label_ct: bytes
    label_epsilon: float | None


def training_query() -> Select[tuple[int, uuid.UUID, uuid.UUID, list[float], bytes, float | None]]:
    """The columns of :class:`TrainingRow`, every user's ratings; callers add the filter and order."""
    return select(
        Rating.id, Rating.user_id, Rating.face_id, Face.latent, Rating.label_ct, Rating.label_epsilon
    ).join(Face, Face.id == Rating.face_id)


def upsert_served_rating(
    session: Session, *, user_id: uuid.UUID, face_id: uuid.UUID, label_ct: bytes, label_epsilon: float | None
) -> UpsertedRating | None:
    """Insert or replace the user's rating of a face that was served to them, in one statement.

    Returns when it was recorded and whether it is new, or None when the face was never served to the user.
    """
    served = exists().where(FaceImpression.user_id == user_id, FaceImpression.face_id == face_id)
    source = select(
        literal(user_id), literal(face_id), literal(label_ct), literal(label_epsilon, type_=Float)
    ).where(served)
    statement = insert(Rating).from_select(["user_id", "face_id", "label_ct", "label_epsilon"], source)
    statement = statement.on_conflict_do_update(
        index_elements=[Rating.user_id, Rating.face_id],
        set_={
            "label_ct": statement.excluded.label_ct,
            "label_epsilon": statement.excluded.label_epsilon,
            "updated_at": func.now(),
        },
    ).returning(Rating.updated_at, (Rating.created_at == Rating.updated_at).label("created"))
    row = session.execute(statement).first()
    return None if row is None else UpsertedRating(row.updated_at, bool(row.created))


def list_ratings(session: Session, *, user_id: uuid.UUID, after_id: int | None, limit: int) -> Sequence[Rating]:
    """Keyset pagination by id, oldest first: stable under concurrent inserts."""
    query = select(Rating).where(Rating.user_id == user_id)
    if after_id is not None:
        query = query.where(Rating.id > after_id)
    return session.scalars(query.order_by(Rating.id).limit(limit)).all()


def training_rows(session: Session, *, user_id: uuid.UUID, after_id: int | None = None) -> list[TrainingRow]:
    """Every rating of the user (after rating ``after_id`` only, when given), oldest first."""
    query = training_query().where(Rating.user_id == user_id).order_by(Rating.id)
    if after_id is not None:
        query = query.where(Rating.id > after_id)
    return [TrainingRow(*row) for row in session.execute(query)]


def count_ratings(session: Session, *, user_id: uuid.UUID) -> int:
    return int(session.scalar(select(func.count()).select_from(Rating).where(Rating.user_id == user_id)) or 0)
