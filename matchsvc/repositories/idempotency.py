"""Idempotency keys: the first response to a (user, key) pair is stored and replayed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy.orm import Session

from matchsvc.db.statements import Statement

__all__ = ["StoredResponse", "lock_user_with_record", "record_response"]

# Prebuilt: both run on every rating request.
_RECORD = Statement(
    """
    INSERT INTO idempotency_keys (user_id, key, request_mac, status_code, response_body)
    VALUES (:user_id, :key, :request_mac, :status_code, :body)
    ON CONFLICT DO NOTHING
    RETURNING key
    """
)
_LOCK_WITH_RECORD = Statement(
    """
    SELECT k.wrapped_key, r.request_mac, r.response_body
    FROM user_keys AS k
    LEFT JOIN idempotency_keys AS r ON r.user_id = k.user_id AND r.key = :key
    WHERE k.user_id = :user_id
    FOR UPDATE OF k
    """
)


@dataclass(frozen=True)
class StoredResponse:
    """What was stored under a key: the request's MAC and the response body."""

    request_mac: bytes
    response_body: Any


def record_response(
    session: Session, *, user_id: uuid.UUID, key: str, request_mac: bytes, status_code: int, body: dict
) -> bool:
    """Store the response under the key in the current transaction; False when the key was already used.

    A concurrent request with the same key blocks on the primary key until the first transaction
    ends, then sees the conflict: the unique index is the lock, and the loser rolls back its work.
    """
    params = {"user_id": user_id, "key": key, "request_mac": request_mac, "status_code": status_code, "body": Jsonb(body)}
    return _RECORD.execute(session, params).fetchone() is not None


def lock_user_with_record(
    session: Session, *, user_id: uuid.UUID, key: str
) -> tuple[bytes | None, StoredResponse | None]:
    """Lock the user's key row (their writer lock) and read the record under ``key``, in one statement.

    Returns the wrapped data key (None: no such user) and the record (None: the key is new).
    """
    row = _LOCK_WITH_RECORD.execute(session, {"user_id": user_id, "key": key}).fetchone()
    if row is None:
        return None, None
    record = None if row.request_mac is None else StoredResponse(row.request_mac, row.response_body)
    return row.wrapped_key, record
