"""Stored (encrypted) preference states."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from matchsvc.db.models import PreferenceState

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


_STATE_AND_RELEASE = text(
    """
    SELECT s.state_ct, s.n_ratings, s.pending_updates,
           (SELECT max(version) FROM population_releases) AS release_version
    FROM (SELECT 1) AS one LEFT JOIN preference_states AS s ON s.user_id = :user_id
    """
)
# Prebuilt (rating path): as cheap to send as the bare insert.
_PUT_STATE = text(
    """
    INSERT INTO preference_states (user_id, state_ct, n_ratings, pending_updates)
    VALUES (:user_id, :state_ct, :n_ratings, :pending_updates)
    ON CONFLICT (user_id) DO UPDATE SET
        state_ct = EXCLUDED.state_ct, n_ratings = EXCLUDED.n_ratings,
        pending_updates = EXCLUDED.pending_updates, updated_at = EXCLUDED.updated_at
    """
)


def get_state_and_release_version(session: Session, user_id: uuid.UUID) -> tuple[StateRow | None, int | None]:
    """The user's state and the newest population release's version, in one statement."""
    row = session.execute(_STATE_AND_RELEASE, {"user_id": user_id}).one()
    found = None if row.state_ct is None else StateRow(row.state_ct, row.n_ratings, row.pending_updates)
    return found, row.release_version


def put_state(
    session: Session, *, user_id: uuid.UUID, state_ct: bytes, n_ratings: int, pending_updates: int
) -> None:
    session.execute(
        _PUT_STATE,
        {"user_id": user_id, "state_ct": state_ct, "n_ratings": n_ratings, "pending_updates": pending_updates},
    )
