"""Idempotency keys: the first response to a (user, key) pair is stored and replayed."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from matchsvc.db.models import IdempotencyRecord

__all__ = ["get_record", "record_response"]


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


def get_record(session: Session, *, user_id: uuid.UUID, key: str) -> IdempotencyRecord | None:
    query = select(IdempotencyRecord).where(IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key)
    return session.scalar(query)
