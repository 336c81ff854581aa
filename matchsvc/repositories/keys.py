"""Wrapped user data keys."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from matchsvc.db.models import UserKey
from matchsvc.db.statements import Statement

__all__ = [
    "KEY_RING_LOCK",
    "add_user_key",
    "count_keys_not_under",
    "count_stale_keys",
    "get_wrapped_key",
    "lock_key_ring",
    "lock_keys_not_under",
    "lock_stale_keys",
    "replace_wrapped_key",
]

#: ``pg_advisory_xact_lock`` key of the key ring (any fixed 64-bit number unique in the database).
KEY_RING_LOCK = 0x6D61_7463_686B_6B72  # "matchkkr"


def lock_key_ring(session: Session, *, exclusive: bool) -> None:
    """Lock the key ring until the transaction ends: shared to wrap data keys under the current
    KEK, exclusive to change the ring (rotate, retire). Every process shares the one database, so
    this orders a registration in one worker against a deletion in another."""
    function = func.pg_advisory_xact_lock if exclusive else func.pg_advisory_xact_lock_shared
    session.execute(select(function(KEY_RING_LOCK)))


def add_user_key(session: Session, *, user_id: uuid.UUID, wrapped_key: bytes, kek_version: int) -> None:
    session.add(UserKey(user_id=user_id, wrapped_key=wrapped_key, kek_version=kek_version))
    session.flush()


# Prebuilt: read on almost every request and twice per refit (docs/decisions.md D39 has the cost
# of SQLAlchemy's execution layer against psycopg's).
_WRAPPED_KEY = Statement("SELECT wrapped_key FROM user_keys WHERE user_id = :user_id")
_WRAPPED_KEY_FOR_UPDATE = Statement("SELECT wrapped_key FROM user_keys WHERE user_id = :user_id FOR UPDATE")


def get_wrapped_key(session: Session, user_id: uuid.UUID, *, for_update: bool = False) -> bytes | None:
    """The wrapped key; ``for_update`` also serialises the user's concurrent writes (budget checks)."""
    statement = _WRAPPED_KEY_FOR_UPDATE if for_update else _WRAPPED_KEY
    row = statement.execute(session, {"user_id": user_id}).fetchone()
    return None if row is None else row.wrapped_key


def lock_stale_keys(session: Session, *, current_version: int, limit: int) -> Sequence[UserKey]:
    """Keys wrapped under an older KEK, locked; rows other workers hold are skipped, not waited on."""
    query = (
        select(UserKey)
        .where(UserKey.kek_version < current_version)
        .order_by(UserKey.user_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return session.scalars(query).all()


def replace_wrapped_key(session: Session, *, user_id: uuid.UUID, wrapped_key: bytes, kek_version: int) -> None:
    session.execute(
        update(UserKey)
        .where(UserKey.user_id == user_id)
        .values(wrapped_key=wrapped_key, kek_version=kek_version, rotated_at=func.now())
    )


def count_stale_keys(session: Session, *, current_version: int) -> int:
    query = select(func.count()).select_from(UserKey).where(UserKey.kek_version < current_version)
    return int(session.scalar(query) or 0)


def lock_keys_not_under(session: Session, *, version: int) -> Sequence[UserKey]:
    """Every key wrapped under another KEK version, locked (waiting for rows in use)."""
    query = select(UserKey).where(UserKey.kek_version != version).order_by(UserKey.user_id).with_for_update()
    return session.scalars(query).all()


def count_keys_not_under(session: Session, *, version: int) -> int:
    query = select(func.count()).select_from(UserKey).where(UserKey.kek_version != version)
    return int(session.scalar(query) or 0)
