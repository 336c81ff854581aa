"""Stored ratings: one row per (user, face)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from matchsvc.db.models import Face, Rating

__all__ = ["count_ratings", "list_ratings", "training_rows", "upsert_served_rating"]


# Prebuilt (rating path). ``created``: a new row has ``created_at = updated_at`` (both the
# transaction's ``now()``); a replaced one keeps its older ``created_at``.
_UPSERT_SERVED = text(
    """
    INSERT INTO ratings (user_id, face_id, label_ct, label_epsilon)
    SELECT :user_id, :face_id, :label_ct, CAST(:label_epsilon AS double precision)
    WHERE EXISTS (SELECT 1 FROM face_impressions WHERE user_id = :user_id AND face_id = :face_id)
    ON CONFLICT (user_id, face_id) DO UPDATE SET
        label_ct = EXCLUDED.label_ct, label_epsilon = EXCLUDED.label_epsilon, updated_at = now()
    RETURNING updated_at, created_at = updated_at AS created
    """
)


def upsert_served_rating(
    session: Session, *, user_id: uuid.UUID, face_id: uuid.UUID, label_ct: bytes, label_epsilon: float | None
) -> tuple[datetime, bool] | None:
    """Insert or replace the user's rating of a face that was served to them, in one statement.

    Returns ``(recorded_at, created)``, or None when the face was never served to the user.
    """
    params = {"user_id": user_id, "face_id": face_id, "label_ct": label_ct, "label_epsilon": label_epsilon}
    row = session.execute(_UPSERT_SERVED, params).first()
    return None if row is None else (row.updated_at, bool(row.created))


def list_ratings(session: Session, *, user_id: uuid.UUID, after_id: int | None, limit: int) -> Sequence[Rating]:
    """Keyset pagination by id, oldest first: stable under concurrent inserts."""
    query = select(Rating).where(Rating.user_id == user_id)
    if after_id is not None:
        query = query.where(Rating.id > after_id)
    return session.scalars(query.order_by(Rating.id).limit(limit)).all()


def training_rows(
    session: Session, *, user_id: uuid.UUID, after_id: int | None = None
) -> Sequence[tuple[int, uuid.UUID, list[float], bytes, float | None]]:
    """(rating id, face id, face latent, sealed label, label epsilon) of every rating (after ``after_id``), oldest first."""
    query = (
        select(Rating.id, Rating.face_id, Face.latent, Rating.label_ct, Rating.label_epsilon)
        .join(Face, Face.id == Rating.face_id)
        .where(Rating.user_id == user_id)
        .order_by(Rating.id)
    )
    if after_id is not None:
        query = query.where(Rating.id > after_id)
    return [tuple(row) for row in session.execute(query)]


def count_ratings(session: Session, *, user_id: uuid.UUID) -> int:
    return int(session.scalar(select(func.count()).select_from(Rating).where(Rating.user_id == user_id)) or 0)
