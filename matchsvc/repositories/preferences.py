"""Stored (encrypted) preference states."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from matchsvc.db.models import PreferenceState

__all__ = ["get_state", "put_state"]


def get_state(session: Session, user_id: uuid.UUID, *, for_update: bool = False) -> PreferenceState | None:
    query = select(PreferenceState).where(PreferenceState.user_id == user_id)
    if for_update:
        query = query.with_for_update()
    return session.scalar(query)


def put_state(
    session: Session, *, user_id: uuid.UUID, state_ct: bytes, n_ratings: int, pending_updates: int
) -> None:
    statement = insert(PreferenceState).values(
        user_id=user_id, state_ct=state_ct, n_ratings=n_ratings, pending_updates=pending_updates
    )
    statement = statement.on_conflict_do_update(
        index_elements=[PreferenceState.user_id],
        set_={
            "state_ct": statement.excluded.state_ct,
            "n_ratings": statement.excluded.n_ratings,
            "pending_updates": statement.excluded.pending_updates,
            "updated_at": statement.excluded.updated_at,
        },
    )
    session.execute(statement)
