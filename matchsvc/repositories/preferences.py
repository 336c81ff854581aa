"""Stored (encrypted) preference states."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import func, literal, select, true
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from matchsvc.db.models import PopulationRelease, PreferenceState

__all__ = ["StateRow", "get_state", "get_state_and_release_version", "put_state"]


def get_state(session: Session, user_id: uuid.UUID, *, for_update: bool = False) -> PreferenceState | None:
    query = select(PreferenceState).where(PreferenceState.user_id == user_id)
    if for_update:
        query = query.with_for_update()
    return session.scalar(query)


@dataclass(frozen=True)
class StateRow:
    state_ct: bytes
    n_ratings: int
    pending_updates: int


def get_state_and_release_version(session: Session, user_id: uuid.UUID) -> tuple[StateRow | None, int | None]:
    """The user's state and the newest population release's version, in one statement."""
    version = select(func.max(PopulationRelease.version)).scalar_subquery()
    state = select(PreferenceState).where(PreferenceState.user_id == user_id).subquery()
    query = (
        select(state, version.label("release_version"))
        .select_from(select(literal(1).label("one")).subquery())
        .outerjoin(state, true())
    )
    row = session.execute(query).one()
    found = None if row.user_id is None else StateRow(row.state_ct, row.n_ratings, row.pending_updates)
    return found, row.release_version


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
