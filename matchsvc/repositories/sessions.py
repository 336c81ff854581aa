"""Sign-in sessions and their refresh tokens (stored as SHA-256 digests only).

"Active" is decided by the database clock in one SQL predicate, so the per-request check, the
session list and a refresh all agree on when a session ends.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ColumnElement, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from matchsvc.db.models import RefreshToken, User, UserSession

__all__ = [
    "ACTIVE_SESSION_SCOPES",
    "active_sessions",
    "add_refresh_token",
    "add_session",
    "find_refresh_token",
    "purge_ended",
    "revoke",
    "user_with_active_session",
]


def _active() -> ColumnElement[bool]:
    now = func.now()
    return and_(UserSession.revoked_at.is_(None), UserSession.expires_at > now, UserSession.idle_expires_at > now)


def add_session(
    session: Session,
    *,
    user_id: uuid.UUID,
    device_name: str | None,
    scopes: list[str],
    expires_at: datetime,
    idle_expires_at: datetime,
) -> UserSession:
    row = UserSession(
        user_id=user_id,
        device_name=device_name,
        scopes=scopes,
        expires_at=expires_at,
        idle_expires_at=idle_expires_at,
    )
    session.add(row)
    session.flush()
    return row


def add_refresh_token(session: Session, *, session_id: uuid.UUID, token_hash: bytes) -> None:
    session.add(RefreshToken(session_id=session_id, token_hash=token_hash))
    session.flush()


def find_refresh_token(session: Session, token_hash: bytes) -> tuple[RefreshToken, UserSession, bool] | None:
    """The token, its session (both locked until the transaction ends) and whether the session is active.

    The lock serialises two refreshes with the same token: the second one sees it spent.
    """
    query = (
        select(RefreshToken, UserSession, _active())
        .join(UserSession, UserSession.id == RefreshToken.session_id)
        .where(RefreshToken.token_hash == token_hash)
        .with_for_update()
    )
    row = session.execute(query).first()
    return None if row is None else (row[0], row[1], bool(row[2]))


#: Built once at import: on every request, building and keying a fresh ``select`` cost more than
#: running it (docs/benchmarks.md, "Engine tuning").
_USER_WITH_ACTIVE_SESSION = (
    select(User)
    .join(UserSession, UserSession.user_id == User.id)
    .where(User.id == bindparam("user_id"), UserSession.id == bindparam("session_id"), _active())
)


def user_with_active_session(session: Session, *, user_id: uuid.UUID, session_id: uuid.UUID) -> User | None:
    """The user, if ``session_id`` is one of their active sessions: one join of two primary-key lookups."""
    return session.scalar(_USER_WITH_ACTIVE_SESSION, {"user_id": user_id, "session_id": session_id})


#: The same check as SQL, for a statement that makes it along with its own work (the rating
#: path's lock, :func:`matchsvc.repositories.idempotency.lock_user_with_record`, D44): a scalar
#: subquery on ``:user_id`` and ``:session_id``, the user's scopes or NULL. The predicate is
#: :func:`_active`'s own SQL, so both agree on when a session ends.
ACTIVE_SESSION_SCOPES = f"""(
    SELECT users.scopes FROM users JOIN user_sessions ON user_sessions.user_id = users.id
    WHERE users.id = :user_id AND user_sessions.id = :session_id
      AND {_active().compile(dialect=postgresql.dialect())}
)"""


def active_sessions(session: Session, *, user_id: uuid.UUID) -> list[UserSession]:
    query = (
        select(UserSession)
        .where(UserSession.user_id == user_id, _active())
        .order_by(UserSession.last_used_at.desc(), UserSession.id)
    )
    return list(session.scalars(query))


def revoke(session: Session, *, user_id: uuid.UUID, reason: str, session_id: uuid.UUID | None = None) -> int:
    """Revoke the user's active sessions (or just ``session_id``); returns how many were active."""
    statement = (
        update(UserSession)
        .where(UserSession.user_id == user_id, _active())
        .values(revoked_at=func.now(), revoked_reason=reason)
    )
    if session_id is not None:
        statement = statement.where(UserSession.id == session_id)
    return session.execute(statement).rowcount


def purge_ended(session: Session, *, user_id: uuid.UUID) -> int:
    """Delete the user's sessions past either lifetime (their tokens go with them).

    Revoked sessions stay until then, so a spent token of theirs is still recognised as reuse.
    """
    now = func.now()
    statement = delete(UserSession).where(
        UserSession.user_id == user_id, or_(UserSession.expires_at <= now, UserSession.idle_expires_at <= now)
    )
    return session.execute(statement).rowcount
