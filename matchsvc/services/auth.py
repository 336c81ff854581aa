"""Accounts, password login and password change (sessions and tokens: :mod:`matchsvc.services.sessions`)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from matchsvc.db.models import User
from matchsvc.errors import AuthenticationFailed, Conflict, InvalidInput, MatchsvcError, PermissionDenied
from matchsvc.keys import KeyRingStore
from matchsvc.repositories import users as users_repo
from matchsvc.repositories import sessions as sessions_repo
from matchsvc.security import Scope, hash_password, verify_password
from matchsvc.services import audit, login_throttle
from matchsvc.services.keys import create_user_key
from matchsvc.services.sessions import IssuedTokens, TokenPolicy, open_session

__all__ = [
    "MINIMUM_AGE",
    "MIN_PASSWORD_LENGTH",
    "USERNAME_PATTERN",
    "authenticate",
    "change_password",
    "grant_scopes",
    "login",
    "register",
]

MINIMUM_AGE = 18
MIN_PASSWORD_LENGTH = 10
USERNAME_PATTERN = r"^[A-Za-z0-9_.-]{3,32}$"
_USERNAME = re.compile(USERNAME_PATTERN)


def _certainly_adult(birth_year: int, today: date) -> bool:
    """With only a birth year, someone born in ``Y`` may still be ``today.year - Y - 1``.

    We take that lower bound: a dating service must not admit anyone who might be under age.
    """
    return today.year - birth_year - 1 >= MINIMUM_AGE


def register(
    session: Session,
    *,
    keys: KeyRingStore,
    username: str,
    password: str,
    birth_year: int,
    scopes: frozenset[Scope] = frozenset({Scope.user}),
    today: date | None = None,
) -> User:
    """Create an account and its data key. Usernames are case-insensitive (stored lower-case)."""
    today = today or datetime.now(UTC).date()
    if not _USERNAME.fullmatch(username):
        raise InvalidInput("username must be 3-32 letters, digits, '_', '.' or '-'")
    _check_password(password)
    if birth_year > today.year:
        raise InvalidInput(f"birth_year {birth_year} is in the future")
    if not _certainly_adult(birth_year, today):
        raise InvalidInput(f"users must be at least {MINIMUM_AGE}; birth_year {birth_year} does not guarantee that")
    try:
        user = users_repo.add_user(
            session,
            username=username.lower(),
            password_hash=hash_password(password),
            birth_year=birth_year,
            scopes=sorted(scope.value for scope in scopes),
        )
        create_user_key(session, keys=keys, user_id=user.id)
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"username {username.lower()!r} is already taken") from None
    return user


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password must be at least {MIN_PASSWORD_LENGTH} characters")


def authenticate(session: Session, *, username: str, password: str) -> User:
    """Same work and the same error whether the username or the password is wrong."""
    # A name that could never have been registered is an unknown user (and never reaches SQL).
    user = users_repo.get_user_by_username(session, username.lower()) if _USERNAME.fullmatch(username) else None
    if not verify_password(password, user.password_hash if user else None) or user is None:
        raise AuthenticationFailed("incorrect username or password")
    return user


def grant_scopes(user: User, *, requested: frozenset[str]) -> frozenset[str]:
    """OAuth2 scopes: grant what was asked for if the account holds it; nothing asked means all held."""
    held = frozenset(user.scopes)
    unknown = requested - {scope.value for scope in Scope}
    if unknown:
        raise InvalidInput(f"unknown scope(s): {', '.join(sorted(unknown))}")
    if not requested <= held:
        raise PermissionDenied(f"account does not hold scope(s): {', '.join(sorted(requested - held))}")
    return requested or held


def login(
    session: Session,
    *,
    username: str,
    password: str,
    requested: frozenset[str],
    device_name: str | None,
    policy: TokenPolicy,
    pseudonym_key: bytes,
) -> IssuedTokens:
    """:func:`authenticate`, :func:`grant_scopes`, then a new session, with the outcome audited.

    Failures are throttled per username (:mod:`matchsvc.services.login_throttle`: 429 while it
    backs off). A failure is logged and committed before the error propagates. Wrong credentials
    name no subject (the attempted username may be mistyped, or someone else's, and is never
    stored); a refused scope names the account, which has then proved its password.
    """
    try:
        with login_throttle.guarded(session, username=username, key=pseudonym_key):
            user = authenticate(session, username=username, password=password)
    except AuthenticationFailed:
        audit.record(
            session,
            action=audit.AuditAction.login_failed,
            actor=None,
            subject_user_id=None,
            details={"reason": "bad-credentials"},
            actor_scope="anonymous",
        )
        session.commit()
        raise
    try:
        granted = grant_scopes(user, requested=requested)
    except MatchsvcError as exc:
        audit.record(
            session,
            action=audit.AuditAction.login_failed,
            actor=user,
            subject_user_id=user.id,
            details={"reason": exc.code},
            pseudonym_key=pseudonym_key,
        )
        session.commit()
        raise
    issued = open_session(session, user=user, scopes=granted, device_name=device_name, policy=policy)
    audit.record(
        session,
        action=audit.AuditAction.login,
        actor=user,
        subject_user_id=user.id,
        details={"granted": sorted(issued.scopes)},
        pseudonym_key=pseudonym_key,
    )
    session.commit()
    return issued


def change_password(
    session: Session, *, user: User, current_password: str, new_password: str, pseudonym_key: bytes
) -> int:
    """Replace the password and revoke every session of the account; returns how many were active.

    All sessions go, the caller's included: whoever may have learnt the old password may also
    hold a token, and the client simply logs in again with the new one. Both outcomes are audited.

    Raises
    ------
    PermissionDenied
        ``current_password`` is wrong. 403, not 401: the bearer token itself is fine, and a 401
        would send a client into its refresh-and-retry path.
    InvalidInput
        ``new_password`` fails the registration rules.
    TooManyAttempts
        The account backs off after failed password checks. A wrong ``current_password`` counts
        exactly as a failed login (it is the same secret being guessed, here by whoever holds a
        token), so a stolen access token gives no more guesses than the login form.
    """
    try:
        with login_throttle.guarded(session, username=user.username, key=pseudonym_key):
            if not verify_password(current_password, user.password_hash):
                raise AuthenticationFailed("current_password is not this account's password")
    except AuthenticationFailed as exc:
        audit.record(
            session,
            action=audit.AuditAction.password_change,
            actor=user,
            subject_user_id=user.id,
            details={"refused": "wrong current password"},
            pseudonym_key=pseudonym_key,
        )
        session.commit()
        raise PermissionDenied(exc.detail) from None
    _check_password(new_password)
    users_repo.set_password_hash(session, user=user, password_hash=hash_password(new_password))
    revoked = sessions_repo.revoke(session, user_id=user.id, reason="password-change")
    audit.record(
        session,
        action=audit.AuditAction.password_change,
        actor=user,
        subject_user_id=user.id,
        details={"sessions_revoked": revoked},
        pseudonym_key=pseudonym_key,
    )
    session.commit()
    return revoked
