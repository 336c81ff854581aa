"""Sessions: refresh tokens with rotation and reuse detection, logout, and revocation (decision D20).

A password login opens a session (one per device). Each refresh spends the presented refresh
token and issues a new one in the same session (rotation, RFC 6749 section 6 and the OAuth 2.0
Security BCP section 4.14). A spent token presented again means two parties hold copies of it,
so the whole session is revoked and the event audited; the legitimate client logs in again.

Refresh tokens are 256 random bits, so an unsalted SHA-256 digest is all that is stored: it
cannot be inverted or brute-forced, and a database reader learns nothing usable. Access tokens
carry the session id and are checked against it on every request (:mod:`api.deps`).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from matchsvc.db.models import User, UserSession
from matchsvc.errors import AuthenticationFailed, NotFound
from matchsvc.repositories import sessions as sessions_repo
from matchsvc.repositories.users import get_user
from matchsvc.security import create_access_token
from matchsvc.services import audit
from matchsvc.settings import Settings

__all__ = [
    "IssuedTokens",
    "TokenPolicy",
    "list_sessions",
    "logout",
    "open_session",
    "refresh",
    "revoke_session",
]

#: One answer for an unknown, spent, expired or revoked refresh token: nothing to probe.
_REFUSED = "invalid or expired refresh token"


@dataclass(frozen=True, repr=False)
class TokenPolicy:
    """How long each credential lives, and the key access tokens are signed with."""

    secret: str
    access_minutes: int
    session_lifetime: timedelta
    refresh_idle: timedelta

    @classmethod
    def from_settings(cls, settings: Settings, *, secret: str) -> TokenPolicy:
        return cls(
            secret=secret,
            access_minutes=settings.access_token_minutes,
            session_lifetime=timedelta(days=settings.session_days),
            refresh_idle=timedelta(days=settings.refresh_idle_days),
        )


@dataclass(frozen=True, repr=False)
class IssuedTokens:
    access_token: str
    expires_at: datetime
    scopes: frozenset[str]
    refresh_token: str
    refresh_expires_at: datetime
    session_id: uuid.UUID


def _digest(refresh_token: str) -> bytes:
    return hashlib.sha256(refresh_token.encode()).digest()


def _issue(
    session: Session, *, family: UserSession, scopes: frozenset[str], policy: TokenPolicy, now: datetime
) -> IssuedTokens:
    """A fresh refresh token in ``family`` (its idle deadline moves) and an access token naming it."""
    refresh_token = secrets.token_urlsafe(32)
    sessions_repo.add_refresh_token(session, session_id=family.id, token_hash=_digest(refresh_token))
    family.idle_expires_at = min(now + policy.refresh_idle, family.expires_at)
    family.last_used_at = now
    access_token, expires_at = create_access_token(
        user_id=family.user_id,
        session_id=family.id,
        scopes=scopes,
        secret=policy.secret,
        minutes=policy.access_minutes,
        now=now,
    )
    session.flush()
    return IssuedTokens(
        access_token=access_token,
        expires_at=min(expires_at, family.idle_expires_at),
        scopes=scopes,
        refresh_token=refresh_token,
        refresh_expires_at=family.idle_expires_at,
        session_id=family.id,
    )


def open_session(
    session: Session, *, user: User, scopes: frozenset[str], device_name: str | None, policy: TokenPolicy
) -> IssuedTokens:
    """Start a session for a user who has just proved their password (the caller commits).

    The user's ended sessions are deleted on the way, so the table holds live and recently
    revoked sessions only. A blank device name is stored as none.
    """
    now = datetime.now(UTC)
    sessions_repo.purge_ended(session, user_id=user.id)
    family = sessions_repo.add_session(
        session,
        user_id=user.id,
        device_name=(device_name or "").strip() or None,
        scopes=sorted(scopes),
        expires_at=now + policy.session_lifetime,
        idle_expires_at=now + policy.refresh_idle,
    )
    return _issue(session, family=family, scopes=scopes, policy=policy, now=now)


def refresh(session: Session, *, refresh_token: str, policy: TokenPolicy, pseudonym_key: bytes) -> IssuedTokens:
    """Spend ``refresh_token`` for a new pair in the same session; a spent one revokes the session.

    Raises
    ------
    AuthenticationFailed
        Unknown, spent, expired or revoked token, or an account that no longer holds any of the
        session's scopes: the same message for all.
    """
    found = sessions_repo.find_refresh_token(session, _digest(refresh_token))
    if found is None:
        raise AuthenticationFailed(_REFUSED)
    token, family, active = found
    if token.used_at is not None:
        revoked = sessions_repo.revoke(
            session, user_id=family.user_id, session_id=family.id, reason="refresh-token-reuse"
        )
        audit.record(
            session,
            action=audit.AuditAction.refresh_token_reuse,
            actor=None,
            subject_user_id=family.user_id,
            details={"session": str(family.id), "session_revoked": bool(revoked)},
            actor_scope="anonymous",
            pseudonym_key=pseudonym_key,
        )
        session.commit()
        raise AuthenticationFailed(_REFUSED)
    user = get_user(session, family.user_id)
    scopes = frozenset(family.scopes) & frozenset(user.scopes if user else ())
    if not active or not scopes:
        raise AuthenticationFailed(_REFUSED)
    now = datetime.now(UTC)
    token.used_at = now
    issued = _issue(session, family=family, scopes=scopes, policy=policy, now=now)
    session.commit()
    return issued


def list_sessions(session: Session, *, user_id: uuid.UUID) -> list[UserSession]:
    """The user's active sessions, most recently used first."""
    return sessions_repo.active_sessions(session, user_id=user_id)


def revoke_session(session: Session, *, user_id: uuid.UUID, session_id: uuid.UUID, reason: str = "revoked") -> None:
    """End one of the user's active sessions; its access and refresh tokens stop working at once.

    Raises
    ------
    NotFound
        Not an active session of this user (someone else's looks exactly like an unknown id).
    """
    if not sessions_repo.revoke(session, user_id=user_id, session_id=session_id, reason=reason):
        raise NotFound(f"session {session_id} not found")
    session.commit()


def logout(session: Session, *, user_id: uuid.UUID, session_id: uuid.UUID) -> None:
    """Revoke the session the caller's access token belongs to."""
    revoke_session(session, user_id=user_id, session_id=session_id, reason="logout")
