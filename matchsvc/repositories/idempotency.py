"""Idempotency keys: the first response to a (user, key) pair is stored and replayed."""

from __future__ import annotations

import uuid

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from matchsvc.db.models import IdempotencyRecord

__all__ = ["claim_key", "complete_key", "get_record"]


def claim_key(session: Session, *, user_id: uuid.UUID, key: str, request_mac: bytes) -> bool:
    """Reserve the key in the current transaction; False when it was already used.

    A concurrent request with the same key blocks on the primary key until this transaction ends,
    then sees the completed record: the unique index is the lock.
    """
    statement = (
        insert(IdempotencyRecord)
        .values(user_id=user_id, key=key, request_mac=request_mac, status_code=0, response_body={})
        .on_conflict_do_nothing()
        .returning(IdempotencyRecord.key)
    )
    return session.execute(statement).first() is not None


def complete_key(session: Session, *, user_id: uuid.UUID, key: str, status_code: int, body: dict) -> None:
    session.execute(
        update(IdempotencyRecord)
        .where(IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key)
        .values(status_code=status_code, response_body=body)
    )


def get_record(session: Session, *, user_id: uuid.UUID, key: str) -> IdempotencyRecord | None:
    query = select(IdempotencyRecord).where(IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key)
    return session.scalar(query)
