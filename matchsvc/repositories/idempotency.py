"""Idempotency keys: the first response to a (user, key) pair is stored and replayed."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from matchsvc.db.models import IdempotencyRecord, UserKey

__all__ = ["lock_user_with_record", "record_response"]


def record_response(
    session: Session, *, user_id: uuid.UUID, key: str, request_mac: bytes, status_code: int, body: dict
) -> bool:
    """Store the response under the key in the current transaction; False when the key was already used.

    A concurrent request with the same key blocks on the primary key until the first transaction
    ends, then sees the conflict: the unique index is the lock, and the loser rolls back its work.
    """
    statement = (
        insert(IdempotencyRecord)
        .values(user_id=user_id, key=key, request_mac=request_mac, status_code=status_code, response_body=body)
        .on_conflict_do_nothing()
        .returning(IdempotencyRecord.key)
    )
    return session.execute(statement).first() is not None


def lock_user_with_record(
    session: Session, *, user_id: uuid.UUID, key: str
) -> tuple[bytes | None, IdempotencyRecord | None]:
    """Lock the user's key row (their writer lock) and read the record under ``key``, in one statement.

    Returns the wrapped data key (None: no such user) and the record (None: the key is new).
    """
    query = (
        select(UserKey.wrapped_key, IdempotencyRecord)
        .outerjoin(IdempotencyRecord, (IdempotencyRecord.user_id == UserKey.user_id) & (IdempotencyRecord.key == key))
        .where(UserKey.user_id == user_id)
        .with_for_update(of=UserKey)
    )
    row = session.execute(query).first()
    return (None, None) if row is None else (row[0], row[1])
