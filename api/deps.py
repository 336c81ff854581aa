"""Dependencies shared by the routers: the runtime, a database session, and the authenticated user."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar

import anyio
import structlog
from fastapi import Depends, Request, Security
from fastapi.security import OAuth2PasswordBearer, SecurityScopes
from sqlalchemy.orm import Session

from matchsvc.db.models import User
from matchsvc.db.session import DATABASE_ERRORS, error_name, is_database_unavailable
from matchsvc.errors import AuthenticationFailed, PermissionDenied
from matchsvc.repositories.sessions import user_with_active_session
from matchsvc.runtime import Runtime
from matchsvc.security import InvalidToken, Scope, TokenClaims, decode_access_token

__all__ = [
    "AdminUser",
    "AnyCaller",
    "AuditorUser",
    "AnyUser",
    "Caller",
    "CurrentUser",
    "RuntimeDep",
    "SessionDep",
    "TokenCaller",
    "UserToken",
    "in_session",
]

T = TypeVar("T")

log = structlog.get_logger(__name__)

oauth2_scheme = OAuth2PasswordBearer(
    tokenUrl="/v1/auth/token",
    scopes={
        Scope.user.value: "Rate faces, manage your own profile and matches",
        Scope.auditor.value: "Read audit data, export and delete users (every access is logged)",
        Scope.admin.value: "Operate the service",
    },
    auto_error=False,
)


async def get_runtime(request: Request) -> Runtime:
    """``async`` because it does no I/O: run on the event loop, it spares every request a worker-thread hop."""
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def _close(session: Session) -> None:
    """Close ``session``, rolling back whatever was not committed.

    When the database went away meanwhile, that rollback fails, and the failure is dropped here:
    the connection is already discarded, and raising now, with the response started, would make
    the server cut the client's connection (and turn a success the client may already hold into
    an error in the logs).
    """
    try:
        session.close()
    except DATABASE_ERRORS as exc:
        if not is_database_unavailable(exc):
            raise
        log.warning("database_unavailable_on_close", error=error_name(exc))


async def get_session(runtime: RuntimeDep) -> AsyncIterator[Session]:
    """A session per request, closed after the response is built (or sent).

    ``async`` because opening a session does no I/O, and closing one does only while it holds a
    connection (an open transaction to roll back): only then is the close sent to a worker
    thread. A request that committed, such as a rating, so spares two thread hops (D39).
    """
    session = runtime.sessions()
    try:
        yield session
    finally:
        if session.in_transaction():
            await anyio.to_thread.run_sync(_close, session)
        else:
            _close(session)


SessionDep = Annotated[Session, Depends(get_session)]


async def in_session(runtime: Runtime, work: Callable[[Session], T]) -> T:
    """``work(session)`` in one worker thread, the session closed there too.

    For hot endpoints that do all their database work in one go: a sync endpoint with a sync
    authentication dependency costs two thread hops (D40).
    """

    def run() -> T:
        session = runtime.sessions()
        try:
            return work(session)
        finally:
            _close(session)

    return await anyio.to_thread.run_sync(run)


@dataclass(frozen=True)
class Caller:
    """The authenticated account and the session its access token belongs to."""

    user: User
    session_id: uuid.UUID


def _check_scopes(required: list[str] | frozenset[str], claims: TokenClaims, held: frozenset[str]) -> None:
    """A token never grants more than the account (``held``) holds now: removing a scope takes effect at once."""
    missing = set(required) - (claims.scopes & held)
    if missing:
        raise PermissionDenied(f"token lacks scope(s): {', '.join(sorted(missing))}")


def _bearer(runtime: Runtime, token: str | None) -> TokenClaims:
    """The token's verified claims (remembered once verified, so the rate limiter's check and this
    one cost a single verification, D40)."""
    if not token:
        raise AuthenticationFailed("not authenticated: send a bearer token")
    try:
        return decode_access_token(token, secret=runtime.secrets.token_key, max_minutes=runtime.settings.access_token_minutes)
    except InvalidToken:
        raise AuthenticationFailed("invalid or expired token") from None


def authenticated_caller(
    security_scopes: SecurityScopes,
    runtime: RuntimeDep,
    session: SessionDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
) -> Caller:
    """The token's user and session, re-read together on every request (one query, two primary keys).

    A deleted user, or a revoked, logged-out or expired session, loses access at the next request,
    not when the access token expires.
    """
    claims = _bearer(runtime, token)
    user = user_with_active_session(session, user_id=claims.user_id, session_id=claims.session_id)
    if user is None:
        raise AuthenticationFailed("invalid or expired token")
    _check_scopes(security_scopes.scopes, claims, frozenset(user.scopes))
    return Caller(user=user, session_id=claims.session_id)


@dataclass(frozen=True)
class TokenCaller:
    """A verified access token whose session the endpoint checks itself, in its own database work:
    one worker-thread hop for the whole request (D40), and no statement of its own (D44).

    The check is the one :func:`authenticated_caller` makes, with the same errors.
    """

    claims: TokenClaims
    required: frozenset[str]

    def authorize(self, held: frozenset[str] | None) -> None:
        """Refuse unless the token's session was found active (``held``: the account's scopes as the
        endpoint's statement read them, None when the session is not an active one) and the token
        and the account both hold the required scopes."""
        if held is None:
            raise AuthenticationFailed("invalid or expired token")
        _check_scopes(self.required, self.claims, held)


async def token_caller(
    security_scopes: SecurityScopes,
    runtime: RuntimeDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
) -> TokenCaller:
    """``async``: verifying a token's signature is no I/O; the session check waits for the endpoint."""
    return TokenCaller(_bearer(runtime, token), frozenset(security_scopes.scopes))


async def authenticated_user(caller: Annotated[Caller, Security(authenticated_caller)]) -> User:
    """``async`` only because it does no I/O: FastAPI runs it on the event loop, not in a worker thread."""
    return caller.user


#: Any authenticated account (user, auditor or admin), with its session.
AnyCaller = Annotated[Caller, Security(authenticated_caller)]
#: Any authenticated account (user, auditor or admin).
AnyUser = Annotated[User, Security(authenticated_user)]
#: A rating, matching user.
CurrentUser = Annotated[User, Security(authenticated_user, scopes=[Scope.user.value])]
#: A rating, matching user, checked by the endpoint in its own database work (:class:`TokenCaller`).
UserToken = Annotated[TokenCaller, Security(token_caller, scopes=[Scope.user.value])]
#: A privacy auditor.
AuditorUser = Annotated[User, Security(authenticated_user, scopes=[Scope.auditor.value])]
#: An operator (``matchsvc users create NAME --scope admin``).
AdminUser = Annotated[User, Security(authenticated_user, scopes=[Scope.admin.value])]
