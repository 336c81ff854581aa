"""Per-account throttle on failed logins, shared by every API process through PostgreSQL.

Password guessing is limited per attempted username, not per IP (an attacker has many), so
changing address does not help. Counting is by an HMAC of the normalised username and does not
look at whether the account exists: an unknown username is throttled exactly like a real one, so
the throttle cannot be used to find accounts. ``THRESHOLD`` failures within ``WINDOW`` are free;
each further failure doubles a back-off (from ``FIRST_DELAY`` up to ``MAX_DELAY``) during which
every login for that username is answered 429 with Retry-After, without checking the password.
At the cap that is 4 guesses an hour per account, whatever the number of addresses or workers.
The cost (documented in docs/threat-model.md): anyone can make a victim wait up to
``MAX_DELAY`` to log in by failing on purpose; a lockout would cost far more.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from matchsvc.errors import AuthenticationFailed, TooManyAttempts
from matchsvc.repositories import login_throttle as throttle_repo
from matchsvc.services import audit

__all__ = ["FIRST_DELAY", "MAX_DELAY", "THRESHOLD", "WINDOW", "guarded"]

THRESHOLD = 5
WINDOW = timedelta(hours=1)
FIRST_DELAY = timedelta(seconds=30)
MAX_DELAY = timedelta(minutes=15)


def _account_key(username: str, *, key: bytes) -> bytes:
    """Usernames are case-insensitive (registration stores them lower-case); nothing typed is stored."""
    return hmac.new(key, b"matchsvc/login-throttle/" + username.lower().encode(), hashlib.sha256).digest()


def _delay(failures: int) -> timedelta | None:
    if failures < THRESHOLD:
        return None
    return min(FIRST_DELAY * 2 ** min(failures - THRESHOLD, 20), MAX_DELAY)


@contextmanager
def guarded(session: Session, *, username: str, key: bytes) -> Iterator[None]:
    """Wrap one password check: refuse while the username backs off, count a failure, forget on success.

    The username's row stays locked until the caller's transaction ends, so parallel guesses at
    one account are counted one after another. A refusal is audited (``login_throttled``, no
    subject: the username may not exist) and committed before :class:`TooManyAttempts` is raised.
    """
    now = datetime.now(UTC)
    account = _account_key(username, key=key)
    row = throttle_repo.lock(session, account, now=now)
    if row.blocked_until is not None and row.blocked_until > now:
        wait = math.ceil((row.blocked_until - now).total_seconds())
        audit.record(
            session,
            action=audit.AuditAction.login_throttled,
            actor=None,
            subject_user_id=None,
            details={"retry_after": wait},
            actor_scope="anonymous",
        )
        session.commit()
        raise TooManyAttempts("too many failed logins for this username: try again later", retry_after=wait)
    failures = row.failures if now - row.last_attempt < WINDOW else 0
    try:
        yield
    except AuthenticationFailed:
        delay = _delay(failures + 1)
        throttle_repo.record_failure(
            session, account, failures=failures + 1, now=now, blocked_until=now + delay if delay else None
        )
        throttle_repo.prune(session, before=now - WINDOW)
        raise
    throttle_repo.clear(session, account)
