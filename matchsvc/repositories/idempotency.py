"""Idempotency keys: the first response to a (user, key) pair is stored and replayed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy.orm import Session

from matchsvc.db.statements import Statement, Write
from matchsvc.repositories.sessions import ACTIVE_SESSION_SCOPES

__all__ = ["LockedUser", "StoredResponse", "lock_user_with_record", "record_write"]

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
    f"""
    SELECT k.wrapped_key, r.request_mac, r.response_body, {ACTIVE_SESSION_SCOPES} AS session_scopes
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


@dataclass(frozen=True)
class LockedUser:
    """What :func:`lock_user_with_record` read with the lock."""

    wrapped_key: bytes | None  # None: no such user
    record: StoredResponse | None  # None: the key is new
    session_scopes: frozenset[str] | None  # the user's scopes; None: not an active session of theirs


def record_write(*, user_id: uuid.UUID, key: str, request_mac: bytes, status_code: int, body: dict) -> Write:
    """Store the response under the key; it returns no row when the key was already used.

    That happens when another request with the same key committed after :func:`lock_user_with_record`
    began: the lock waited for it, but the statement read the records as they were when it began.
    The caller rolls back its work and replays the stored response.
    """
    params = {"user_id": user_id, "key": key, "request_mac": request_mac, "status_code": status_code, "body": Jsonb(body)}
    return Write(_RECORD, params)


def lock_user_with_record(session: Session, *, user_id: uuid.UUID, key: str, session_id: uuid.UUID) -> LockedUser:
    """Lock the user's key row (their writer lock), read the record under ``key`` and check that
    ``session_id`` is an active session of the user, in one statement.

    The record and the session are read as they were when the statement began, before any wait
    for the lock: a record that a request holding the lock commits meanwhile is missed, and
    :func:`record_write` reports it; the session is checked as of the request's start.
    """
    row = _LOCK_WITH_RECORD.execute(session, {"user_id": user_id, "key": key, "session_id": session_id}).fetchone()
    if row is None:
        return LockedUser(None, None, None)
    record = None if row.request_mac is None else StoredResponse(row.request_mac, row.response_body)
    return LockedUser(row.wrapped_key, record, None if row.session_scopes is None else frozenset(row.session_scopes))
