"""Stored (encrypted) preference states."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from matchsvc.db.models import PreferenceState
from matchsvc.db.statements import Statement

__all__ = ["StateRow", "get_state", "put_state"]


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


# Prebuilt (rating path): as cheap to send as the bare insert.
_PUT_STATE = Statement(
    """
    INSERT INTO preference_states (user_id, state_ct, n_ratings, pending_updates)
    VALUES (:user_id, :state_ct, :n_ratings, :pending_updates)
    ON CONFLICT (user_id) DO UPDATE SET
        state_ct = EXCLUDED.state_ct, n_ratings = EXCLUDED.n_ratings,
        pending_updates = EXCLUDED.pending_updates, updated_at = EXCLUDED.updated_at
    """
)


def put_state(
    session: Session, *, user_id: uuid.UUID, state_ct: bytes, n_ratings: int, pending_updates: int
) -> None:
    _PUT_STATE.execute(
        session,
        {"user_id": user_id, "state_ct": state_ct, "n_ratings": n_ratings, "pending_updates": pending_updates},
    )
