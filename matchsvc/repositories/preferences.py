"""Stored (encrypted) preference states."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session

from matchsvc.db.statements import Statement, Write

__all__ = ["StateRow", "get_state", "state_write"]


@dataclass(frozen=True)
class StateRow:
    state_ct: bytes
    n_ratings: int
    pending_updates: int


# Prebuilt (read by the feed, the profile and every refit).
_GET_STATE = Statement("SELECT state_ct, n_ratings, pending_updates FROM preference_states WHERE user_id = :user_id")


def get_state(session: Session, user_id: uuid.UUID) -> StateRow | None:
    row = _GET_STATE.execute(session, {"user_id": user_id}).fetchone()
    return None if row is None else StateRow(row.state_ct, row.n_ratings, row.pending_updates)


# Prebuilt (rating path): as cheap to send as the bare insert.
_PUT_STATE = Statement(
    """
    INSERT INTO preference_states (user_id, state_ct, n_ratings, pending_updates)
    VALUES (:user_id, :state_ct, :n_ratings, :pending_updates)
    ON CONFLICT (user_id) DO UPDATE SET
        state_ct = EXCLUDED.state_ct, n_ratings = EXCLUDED.n_ratings,
        pending_updates = EXCLUDED.pending_updates, updated_at = EXCLUDED.updated_at
    RETURNING user_id
    """
)


def state_write(*, user_id: uuid.UUID, state_ct: bytes, n_ratings: int, pending_updates: int) -> Write:
    return Write(
        _PUT_STATE, {"user_id": user_id, "state_ct": state_ct, "n_ratings": n_ratings, "pending_updates": pending_updates}
    )
