"""Password hashing and access tokens.

Passwords: argon2id (argon2-cffi defaults, RFC 9106 "low memory" profile). Tokens: short-lived JWTs
(HS256) carrying the user id, the session id (``sid``) and OAuth2 scopes. A token is only as good
as the rows behind it: ``CurrentUser`` re-reads the user together with the session, so a deleted
user's or a revoked session's tokens stop working at once.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = [
    "CLOCK_LEEWAY",
    "InvalidToken",
    "Scope",
    "TokenClaims",
    "create_access_token",
    "decode_access_token",
    "hash_password",
    "verify_password",
]

_hasher = PasswordHasher()
#: Verified when the username does not exist, so response time does not reveal which usernames exist.
_DUMMY_HASH = _hasher.hash("matchsvc-timing-equaliser")
_ALGORITHM = "HS256"
_AUDIENCE = "matchsvc"


class Scope(str, Enum):
    user = "user"
    auditor = "auditor"
    admin = "admin"


class InvalidToken(Exception):
    """Expired, forged, malformed, or otherwise unusable token (no detail on purpose)."""


@dataclass(frozen=True)
class TokenClaims:
    user_id: uuid.UUID
    session_id: uuid.UUID
    scopes: frozenset[str]
    expires_at: datetime


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    """Constant-work check; ``None`` (unknown user) still costs one argon2 verification."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def create_access_token(
    *,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    scopes: frozenset[str],
    secret: str,
    minutes: int,
    now: datetime | None = None,
) -> tuple[str, datetime]:
    """Return the encoded token and its expiry."""
    issued = now or datetime.now(UTC)
    expires = issued + timedelta(minutes=minutes)
    claims = {
        "sub": str(user_id),
        "sid": str(session_id),
        "scope": " ".join(sorted(scopes)),
        "aud": _AUDIENCE,
        "iat": issued,
        "exp": expires,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, secret, algorithm=_ALGORITHM), expires


#: Clock skew tolerated between issuer and verifier (several processes, several hosts).
CLOCK_LEEWAY = timedelta(seconds=30)


def decode_access_token(token: str, *, secret: str, max_minutes: int) -> TokenClaims:
    """Verify signature, audience and expiry, and that the token lives no longer than we issue them.

    A correctly signed token with a far ``exp`` (a leaked key used once, or a bug in an old
    issuer) is refused: ``exp - iat`` must stay within ``max_minutes`` and ``iat`` must not be in
    the future, both up to :data:`CLOCK_LEEWAY`.

    A token that passed is remembered (:func:`_verified`, bounded): the same string verifies the
    same way until it expires, so a phone's next requests only re-check the expiry. That spares
    every request a JWT decode and an HMAC (D40); a revoked session is the database's to refuse.
    """
    claims = _verified(token, secret, max_minutes)
    if claims.expires_at <= datetime.now(UTC):
        raise InvalidToken()
    return claims


@functools.lru_cache(maxsize=4096)
def _verified(token: str, secret: str, max_minutes: int) -> TokenClaims:
    """The token's claims; raises (and so remembers nothing) for any token that fails a check."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[_ALGORITHM],
            audience=_AUDIENCE,
            options={"require": ["sub", "sid", "exp", "iat", "aud", "scope"]},
        )
        user_id = uuid.UUID(claims["sub"])
        session_id = uuid.UUID(claims["sid"])
        scopes = frozenset(str(claims["scope"]).split())
        expires = datetime.fromtimestamp(claims["exp"], UTC)
        issued = datetime.fromtimestamp(claims["iat"], UTC)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError, OverflowError, OSError) as exc:
        raise InvalidToken() from exc
    future = issued > datetime.now(UTC) + CLOCK_LEEWAY
    if future or expires - issued > timedelta(minutes=max_minutes) + CLOCK_LEEWAY:
        raise InvalidToken()
    return TokenClaims(user_id=user_id, session_id=session_id, scopes=scopes, expires_at=expires)
