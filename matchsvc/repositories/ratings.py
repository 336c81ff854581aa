"""Stored ratings: one row per (user, face)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from matchsvc.db.models import Rating

__all__ = ["list_ratings", "upsert_rating"]


def upsert_rating(
    session: Session, *, user_id: uuid.UUID, face_id: uuid.UUID, liked: bool, dwell_ms: int | None
) -> tuple[Rating, bool]:
    """Insert or replace the user's rating of a face; returns the row and whether it is new."""
    statement = insert(Rating).values(user_id=user_id, face_id=face_id, liked=liked, dwell_ms=dwell_ms)
    statement = statement.on_conflict_do_update(
        index_elements=[Rating.user_id, Rating.face_id],
        set_={"liked": statement.excluded.liked, "dwell_ms": statement.excluded.dwell_ms, "updated_at": func.now()},
    ).returning(Rating.id, (Rating.created_at == Rating.updated_at).label("created"))
    rating_id, created = session.execute(statement).one()
    rating = session.get(Rating, rating_id, populate_existing=True)
    assert rating is not None  # just written in this transaction
    return rating, bool(created)


def list_ratings(session: Session, *, user_id: uuid.UUID, after_id: int | None, limit: int) -> Sequence[Rating]:
    """Keyset pagination by id, oldest first: stable under concurrent inserts."""
    query = select(Rating).where(Rating.user_id == user_id)
    if after_id is not None:
        query = query.where(Rating.id > after_id)
    return session.scalars(query.order_by(Rating.id).limit(limit)).all()
